"""HTML for the dashboard from text that people and LLMs wrote: the Markdown report and
unified diffs. Everything is escaped; raw HTML in Markdown is shown as text, not rendered."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from markdown_it import MarkdownIt
from markdown_it.common.utils import escapeHtml
from markdown_it.token import Token
from markupsafe import Markup

from service.reports.report import FIGURE_NAME


def diff_lines(diff: str) -> list[tuple[str, str]]:
    """(css class, line) for each line of a unified diff: add, del, hunk, meta or ctx."""
    out = []
    for line in diff.splitlines():
        if line.startswith(("+++", "---")):
            kind = "meta"
        elif line.startswith("+"):
            kind = "add"
        elif line.startswith("-"):
            kind = "del"
        elif line.startswith("@@"):
            kind = "hunk"
        else:
            kind = "ctx"
        out.append((kind, line))
    return out


def diff_html(diff: str) -> Markup:
    """A unified diff as escaped ``<span class="d-…">`` lines (for a ``<pre>``); each line
    keeps its newline inside its span, so that copied text is the diff itself."""
    spans = (
        f'<span class="d-{kind}">{escapeHtml(line)}\n</span>' for kind, line in diff_lines(diff)
    )
    return Markup("".join(spans))


def _fence(self: Any, tokens: Sequence[Token], idx: int, options: Any, env: Any) -> str:
    token = tokens[idx]
    lang = token.info.strip().split(" ")[0] if token.info else ""
    if lang == "diff":
        return f'<pre class="diff"><code>{diff_html(token.content)}</code></pre>\n'
    return f"<pre><code>{escapeHtml(token.content)}</code></pre>\n"


def _image(self: Any, tokens: Sequence[Token], idx: int, options: Any, env: Any) -> str:
    """Only the run's own figure is shown as an image (no request to another site from a
    report an LLM helped write); any other image becomes its alt text."""
    token = tokens[idx]
    alt = escapeHtml(token.content or "")
    if token.attrGet("src") == FIGURE_NAME and env.get("figure_url"):
        return f'<img class="figure" src="{escapeHtml(env["figure_url"])}" alt="{alt}">'
    return f"<em>[image: {alt}]</em>"


def _markdown() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    md.add_render_rule("fence", _fence)
    md.add_render_rule("image", _image)
    return md


_md = _markdown()


def report_html(markdown: str, *, figure_url: str | None = None) -> Markup:
    """The report as safe HTML; its relative ``figure.png`` link points at ``figure_url``."""
    return Markup(_md.render(markdown, {"figure_url": figure_url}))


def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str)
