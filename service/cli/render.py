"""How the CLI shows runs, jobs and decisions with rich (and ``--json`` as plain JSON)."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.table import Table

from service.schemas.statuses import TERMINAL_JOB_STATUSES, TERMINAL_RUN_STATUSES

TERMINAL = TERMINAL_RUN_STATUSES | TERMINAL_JOB_STATUSES
STATUS_STYLE = {
    "succeeded": "green",
    "failed": "red",
    "cancelled": "yellow",
    "running": "cyan",
    "pending": "white",
    "awaiting_approval": "magenta",
}


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
        style = STATUS_STYLE.get(r["status"], "")
        table.add_row(
            r["id"][:12],
            r.get("name") or "",
            f"[{style}]{r['status']}[/]",
            r["dataset"],
            r["advisor"],
            str(r["jobs"]),
            str(r["epochs"]),
            pct(r.get("baseline_val_accuracy")),
            pct(r.get("best_val_accuracy")),
            str(r["created_at"])[:19].replace("T", " "),
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
        advisor = d["advisor"] + (" (fallback)" if d.get("fallback") else "")
        table.add_row(
            str(d["sequence"]),
            str(d["generation"]),
            f"[bold]{d['action']}[/]",
            advisor,
            d["rationale"],
        )
    return table


def show_run(console: Console, run: dict[str, Any]) -> None:
    style = STATUS_STYLE.get(run["status"], "")
    console.print(f"[bold]run {run['id']}[/] {run.get('name') or ''} — [{style}]{run['status']}[/]")
    console.print(
        f"  dataset {run['dataset']}, advisor {run['advisor']}, approval {run['approval']}, "
        f"{run['jobs']} jobs, {run['epochs']} epochs"
    )
    console.print(
        f"  validation accuracy: baseline {pct(run.get('baseline_val_accuracy'))}, "
        f"best {pct(run.get('best_val_accuracy'))}; "
        f"test (final model) {pct(run.get('final_test_accuracy'))}"
    )
    if run.get("isolation"):
        console.print(f"  isolation (latest job): {run['isolation']}", markup=False)
    if run.get("input_tokens") or run.get("output_tokens"):
        console.print(f"  LLM tokens: {run['input_tokens']} in, {run['output_tokens']} out")
    if run.get("error"):
        console.print(f"  [red]error:[/] {run['error']}")
    if run.get("pending_approval"):
        p = run["pending_approval"]
        console.print(f"  [magenta]waiting for approval of {p['action']}:[/] {p['rationale']}")
        if p.get("diff"):
            console.print(p["diff"], markup=False, highlight=False)
        console.print(
            "  answer with `gradpilot runs approve RUN` "
            "or `gradpilot runs reject RUN --feedback ...`"
        )
    if run.get("decisions"):
        console.print(decisions_table(run["decisions"]))
