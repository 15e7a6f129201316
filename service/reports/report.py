"""The run's Markdown report: what was diagnosed, each change and why, scores before and
after, test accuracy of the final model, which advisor decided, the four-panel figure and the
diff of every architecture version."""

from __future__ import annotations

import logging
import re
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from service.db.models import Architecture, Decision, Job, Run
from service.errors import GradpilotError
from service.runs import unified_diff

log = logging.getLogger(__name__)

#: the figure is stored beside the report, so the report links it relatively
FIGURE_NAME = "figure.png"


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


def _issues(diagnostics: dict[str, Any]) -> str:
    issues = diagnostics.get("issues") or []
    return ", ".join(issues) if issues else "none"


def _change(name: str, value: Any) -> str:
    """``name`` → value (reason); tune changes are stored as {"value": …, "reason": …}."""
    if isinstance(value, dict) and "value" in value:
        reason = f" ({value['reason']})" if value.get("reason") else ""
        return f"`{name}` → {value['value']}{reason}"
    return f"`{name}` → {value}"


def _rows(session: Session, stmt: Select[Any]) -> list[Any]:
    return list(session.execute(stmt).scalars())


def _fence(text: str) -> str:
    """A code fence longer than any run of backticks in ``text`` (model code may hold some)."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def architecture_section(archs: list[Architecture]) -> list[str]:
    """Each architecture version after the first: why it was written and its diff."""
    lines = ["## Architecture changes", ""]
    if len(archs) <= 1:
        return [*lines, "The architecture was not changed.", ""]
    by_version = {a.version: a for a in archs}
    for arch in archs[1:]:
        parent = by_version.get(
            arch.parent_version if arch.parent_version is not None else arch.version - 1
        )
        base = parent.version if parent is not None else None
        params = f", {arch.parameters:,} parameters" if arch.parameters else ""
        lines.append(
            f"### v{arch.version}"
            + (f" (from v{base})" if base is not None else "")
            + f" — {arch.author}{params}"
        )
        lines += ["", arch.rationale or "(no rationale recorded)", ""]
        diff = unified_diff(
            parent.source if parent is not None else "",
            arch.source,
            f"v{base}/model.py" if base is not None else "/dev/null",
            f"v{arch.version}/model.py",
        )
        fence = _fence(diff)
        lines += [f"{fence}diff", diff.rstrip("\n") or "(identical sources)", fence, ""]
    return lines


def figure_section(session: Session, run: Run, artifacts: Any) -> list[str]:
    """Store the figure beside the report and link it; the report is still written when the
    figure cannot be (it is the run's last word, and the figure is also served live)."""
    if artifacts is None:
        return []
    from service.reports.figure import render_run_figure

    try:
        png = render_run_figure(session, run)
        artifacts.put(f"runs/{run.id}/{FIGURE_NAME}", png, "image/png")
    except GradpilotError as e:
        log.warning("could not store the figure of run %s: %s", run.id, e.message)
        return ["## Figure", "", f"(the figure could not be stored: {e.message})", ""]
    except Exception:  # a plotting bug must not lose the report
        log.exception("could not draw the figure of run %s", run.id)
        return ["## Figure", "", "(the figure could not be drawn; see the server log)", ""]
    return [
        "## Figure",
        "",
        f"![Loss, accuracy, total and per-layer gradient norms of run {run.id}]({FIGURE_NAME})",
        "",
        "Dashed lines mark where the agent changed the hyperparameters (tune), the architecture "
        "(redesign) or repaired the model's code (repair), labelled with the generation.",
        "",
    ]


def build_report(session: Session, run: Run, artifacts: Any = None) -> str:
    """Markdown for a run; ``<!-- summary -->`` is replaced by the advisor's narrative.

    With an artifact store, the four-panel figure is stored as ``runs/<id>/figure.png`` beside
    the report (``runs/<id>/report.md``) and embedded by a relative link.
    """
    jobs = _rows(
        session, select(Job).where(Job.run_id == run.id).order_by(Job.generation, Job.attempt)
    )
    decisions = _rows(
        session, select(Decision).where(Decision.run_id == run.id).order_by(Decision.sequence)
    )
    archs = _rows(
        session,
        select(Architecture).where(Architecture.run_id == run.id).order_by(Architecture.version),
    )
    lines = [
        f"# gradpilot report — run `{run.id}`" + (f" ({run.name})" if run.name else ""),
        "",
        f"- **Status:** {run.status}" + (f" — {run.error}" if run.error else ""),
        f"- **Dataset:** {run.dataset.get('name')}; **advisor:** `{run.advisor}`; "
        f"**approval:** {run.approval}",
        f"- **Validation accuracy:** baseline {_pct(run.baseline_val_accuracy)} → "
        f"best {_pct(run.best_val_accuracy)}",
        f"- **Test accuracy of the final model:** {_pct(run.final_test_accuracy)} "
        "(scored once, never used for decisions)",
        f"- **Jobs:** {len(jobs)}; **architecture versions:** {len(archs)}",
    ]
    levels = list(dict.fromkeys(j.isolation for j in jobs if j.isolation))
    if levels:
        lines.append("- **Isolation of the trainers:** " + "; ".join(f"`{v}`" for v in levels))
    if run.input_tokens or run.output_tokens:
        lines.append(f"- **LLM tokens:** {run.input_tokens} in, {run.output_tokens} out")
    lines += ["", "## Summary", "", "<!-- summary -->", ""]
    lines += figure_section(session, run, artifacts)
    lines += [
        "## Jobs",
        "",
        "| gen | attempt | arch | epochs | optimizer | lr | status | best val acc |",
        "|---:|---:|---:|---|---|---:|---|---:|",
    ]
    for j in jobs:
        hp = j.hyperparameters
        lines.append(
            f"| {j.generation} | {j.attempt} | v{j.architecture_version} "
            f"| {j.epoch_start}–{j.epoch_start + j.epochs - 1} "
            f"| {hp.get('optimizer')} | {hp.get('learning_rate')} | {j.status}"
            f"{' (' + j.error_kind + ')' if j.error_kind else ''} | {_pct(j.best_val_accuracy)} |"
        )
    lines += ["", "## Decisions", ""]
    for d in decisions:
        who = d.advisor + (" (fallback to rules)" if d.fallback else "")
        lines.append(f"### {d.sequence}. `{d.action}` after generation {d.generation} — {who}")
        lines.append("")
        lines.append(d.rationale or "")
        if d.diagnostics:
            lines.append("")
            lines.append(f"Diagnosed issues: {_issues(d.diagnostics)}.")
        if d.changes:
            lines.append("")
            lines.append("Changes: " + ", ".join(_change(k, v) for k, v in d.changes.items()))
        if d.latency_ms or d.input_tokens:
            lines.append("")
            lines.append(
                f"Latency {d.latency_ms} ms, tokens {d.input_tokens} in / {d.output_tokens} out."
            )
        lines.append("")
    lines += architecture_section(archs)
    return "\n".join(lines) + "\n"
