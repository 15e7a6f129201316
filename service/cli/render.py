"""How the CLI shows runs, jobs and decisions with rich (and ``--json`` as plain JSON).

Everything that comes from the server (names, errors, rationales, ids) is put on the screen as
``rich.text.Text``, never as a markup string: a run named ``[/]`` must not crash the table, and
one named ``[link=file:///etc/passwd]x[/link]`` must not become a terminal hyperlink. Only the
literal strings written in this package carry markup.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from service.schemas.statuses import (
    TERMINAL_JOB_STATUSES,
    TERMINAL_RUN_STATUSES,
    ExecutorState,
    JobStatus,
    RunStatus,
)

TERMINAL = TERMINAL_RUN_STATUSES | TERMINAL_JOB_STATUSES

#: colours of the statuses we know by name; any other status still gets ``DEFAULT_STATUS_STYLE``
_COLOURS = {
    "succeeded": "green",
    "failed": "red",
    "cancelled": "yellow",
    "running": "cyan",
    "pending": "white",
    "submitted": "blue",
    "awaiting_approval": "magenta",
    "unknown": "dim",
}
DEFAULT_STATUS_STYLE = "bold"
#: a style for every value of every status enum: a status added to ``service.schemas.statuses``
#: is in this table the moment it exists (with the default style until it is given a colour).
STATUS_STYLE: dict[str, str] = {
    s.value: _COLOURS.get(s.value, DEFAULT_STATUS_STYLE)
    for s in itertools.chain(RunStatus, JobStatus, ExecutorState)
}


def status_text(status: object) -> Text:
    """A status in its colour; a status this CLI does not know (a newer server) in bold."""
    value = str(status)
    return Text(value, style=STATUS_STYLE.get(value, DEFAULT_STATUS_STYLE))


def plain(value: object) -> Text:
    """Server text as literal text (``None`` as empty)."""
    return Text("" if value is None else str(value))


def pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


def print_json(console: Console, data: Any) -> None:
    console.file.write(json.dumps(data, indent=2, default=str) + "\n")


def runs_table(runs: list[dict[str, Any]]) -> Table:
    table = Table(title="gradpilot runs", header_style="bold")
    for col in (
        "id",
        "name",
        "status",
        "dataset",
        "advisor",
        "jobs",
        "epochs",
        "baseline",
        "best",
        "created",
    ):
        table.add_column(
            col, justify="right" if col in ("jobs", "epochs", "baseline", "best") else "left"
        )
    for r in runs:
        table.add_row(
            plain(r["id"][:12]),  # a unique prefix: every command accepts it
            plain(r.get("name")),
            status_text(r["status"]),
            plain(r["dataset"]),
            plain(r["advisor"]),
            plain(r["jobs"]),
            plain(r["epochs"]),
            pct(r.get("baseline_val_accuracy")),
            pct(r.get("best_val_accuracy")),
            plain(str(r["created_at"])[:19].replace("T", " ")),
        )
    return table


def decisions_table(decisions: list[dict[str, Any]]) -> Table:
    table = Table(title="decisions", header_style="bold", expand=True)
    table.add_column("#", justify="right")
    table.add_column("gen", justify="right")
    table.add_column("action")
    table.add_column("advisor")
    table.add_column("why", ratio=1)
    for d in decisions:
        advisor = str(d["advisor"]) + (" (fallback)" if d.get("fallback") else "")
        table.add_row(
            plain(d["sequence"]),
            plain(d["generation"]),
            Text(str(d["action"]), style="bold"),
            plain(advisor),
            plain(d["rationale"]),
        )
    return table


def approval_hint(run_id: str) -> Text:
    """How to answer a paused run, with its real id."""
    return Text(
        f"answer with `gradpilot runs approve {run_id}` "
        f"or `gradpilot runs reject {run_id} --feedback ...`"
    )


def show_run(console: Console, run: dict[str, Any]) -> None:
    console.print(
        Text.assemble(
            (f"run {run['id']}", "bold"),
            " ",
            str(run.get("name") or ""),
            " — ",
            status_text(run["status"]),
        )
    )
    console.print(
        plain(
            f"  dataset {run['dataset']}, advisor {run['advisor']}, approval {run['approval']}, "
            f"{run['jobs']} jobs, {run['epochs']} epochs"
        )
    )
    console.print(
        plain(
            f"  validation accuracy: baseline {pct(run.get('baseline_val_accuracy'))}, "
            f"best {pct(run.get('best_val_accuracy'))}; "
            f"test (final model) {pct(run.get('final_test_accuracy'))}"
        )
    )
    if run.get("isolation"):
        console.print(f"  isolation (latest job): {run['isolation']}", markup=False)
    if run.get("input_tokens") or run.get("output_tokens"):
        console.print(plain(f"  LLM tokens: {run['input_tokens']} in, {run['output_tokens']} out"))
    if run.get("error"):
        console.print(Text.assemble("  ", ("error:", "red"), " ", str(run["error"])))
    if run.get("pending_approval"):
        p = run["pending_approval"]
        console.print(
            Text.assemble(
                "  ",
                (f"waiting for approval of {p['action']}:", "magenta"),
                " ",
                str(p["rationale"]),
            )
        )
        if p.get("diff"):
            console.print(plain(p["diff"]))
        console.print(Text("  ") + approval_hint(str(run["id"])))
    if run.get("decisions"):
        console.print(decisions_table(run["decisions"]))
