"""Run ids as people type them: a full id, or a unique prefix of one (like git's hashes).

``runs list`` prints the first 12 characters of each id; every command that takes a run id
accepts those (or any unique prefix) and resolves them through the list API.
"""

from __future__ import annotations

import re

from service.cli.client import ApiClient, CliError

#: a full run id: 32 lowercase hex digits (``uuid4().hex``)
_FULL_ID = re.compile(r"[0-9a-f]{32}")
_PAGE = 500  # the list API's largest page
#: candidates named in an "ambiguous prefix" error
_SHOWN = 5


def resolve_run_id(client: ApiClient, given: str) -> str:
    """The full id of the run whose id is ``given`` or starts with it; a ``CliError`` (exit 2)
    naming the candidates when the prefix is ambiguous, or saying that none matches."""
    text = given.strip().lower()
    if _FULL_ID.fullmatch(text):
        return text
    if not text:
        raise CliError("the run id is empty: pass an id from `gradpilot runs list`", 2)
    matches: list[str] = []
    offset = 0
    while True:
        page = client.get("/v1/runs", params={"limit": _PAGE, "offset": offset})
        matches += [r["id"] for r in page["data"] if str(r["id"]).startswith(text)]
        offset += len(page["data"])
        if not page["data"] or offset >= int(page["count"]):
            break
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise CliError(
            f"no run id starts with {given!r}: `gradpilot runs list` shows the runs' ids", 2
        )
    shown = ", ".join(m[:12] for m in matches[:_SHOWN])
    more = f" and {len(matches) - _SHOWN} more" if len(matches) > _SHOWN else ""
    raise CliError(
        f"run id prefix {given!r} is ambiguous: it matches {shown}{more}; type more characters",
        2,
    )
