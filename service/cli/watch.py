"""``gradpilot runs watch``: a live view of a run until it ends.

It polls the REST API (the run, its jobs, and only the epoch summaries it has not seen) and
shows the current job's progress over its epochs, the latest metrics, every generation with
its best accuracy, and each decision of the agent as it is taken (printed above the live view,
so that the decisions stay in the terminal's scrollback).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from service.cli import render
from service.cli.client import ApiClient, CliError

#: polls in a row that may fail (server restarting, network blip) before watching gives up
MAX_FAILED_POLLS = 30
ACTION_STYLE = {
    "tune": "yellow",
    "redesign": "red",
    "repair": "magenta",
    "finish": "green",
    "continue": "cyan",
    "retry": "white",
}


def _num(x: float | None, fmt: str = ".4g") -> str:
    return "non-finite" if x is None else format(x, fmt)


@dataclass
class WatchState:
    """What the view shows, updated from each poll."""

    run_id: str
    run: dict[str, Any] | None = None
    jobs: list[dict[str, Any]] = field(default_factory=list)
    #: epoch -> summary (a retried attempt's summaries replace the earlier attempt's)
    summaries: dict[int, dict[str, Any]] = field(default_factory=dict)
    decisions_seen: int = 0
    job_status: dict[str, str] = field(default_factory=dict)
    fetched_job_id: str | None = None
    problem: str | None = None

    @property
    def current(self) -> dict[str, Any] | None:
        return self.jobs[-1] if self.jobs else None

    def since_epoch(self) -> int | None:
        """The first epoch to fetch: the one after the last seen; a new attempt that resumes
        earlier (a retry rewrites epochs) is read again from its first epoch."""
        job = self.current
        if job is None:
            return None
        following = max(self.summaries) + 1 if self.summaries else 0
        if job["id"] != self.fetched_job_id:
            return min(following, int(job["epoch_start"]))
        return following

    def job_best(self, job: dict[str, Any]) -> float | None:
        if job.get("best_val_accuracy") is not None:
            return float(job["best_val_accuracy"])
        accs = [s["val_accuracy"] for s in self.summaries.values() if s["job_id"] == job["id"]]
        return max(accs) if accs else None

    def job_done(self, job: dict[str, Any]) -> int:
        epochs = [e for e, s in self.summaries.items() if s["job_id"] == job["id"]]
        return max(epochs) - int(job["epoch_start"]) + 1 if epochs else 0


def poll(client: ApiClient, state: WatchState) -> list[RenderableType]:
    """Read the run, its jobs and new summaries; returns lines to print (decisions, job ends)."""
    run = client.get(f"/v1/runs/{state.run_id}")
    jobs = client.get(f"/v1/runs/{state.run_id}/jobs")["data"]
    state.run, state.jobs = run, jobs
    since = state.since_epoch()
    if since is not None:
        params = {"since_epoch": since}
        for s in client.get(f"/v1/runs/{state.run_id}/metrics", params=params):
            state.summaries[int(s["epoch"])] = s
        state.fetched_job_id = state.current["id"] if state.current else None
    # what happened since the last poll, in the order it happened
    events: list[tuple[datetime, int, RenderableType]] = []
    for job in jobs:
        status = job["status"]
        if status in render.TERMINAL and state.job_status.get(job["id"]) != status:
            when = _when(job.get("finished_at") or job.get("created_at"))
            events.append((when, 0, job_line(job, state.job_best(job))))
        state.job_status[job["id"]] = status
    decisions = run.get("decisions") or []
    for d in decisions[state.decisions_seen :]:
        events.append((_when(d.get("created_at")), 1, decision_line(d)))
    state.decisions_seen = len(decisions)
    return [line for _, _, line in sorted(events, key=lambda e: (e[0], e[1]))]


def _when(value: str | None) -> datetime:
    if not value:
        return datetime.max.replace(tzinfo=UTC)
    when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def job_line(job: dict[str, Any], best: float | None) -> Text:
    text = Text.assemble(
        (f"generation {job['generation']}", "bold"),
        f" (attempt {job['attempt']}, architecture v{job['architecture_version']}) ",
        render.status_text(job["status"]),
        f": best validation accuracy {render.pct(best)}",
    )
    if job.get("error_kind"):
        text.append(f" — {job['error_kind']} error: {job.get('error_message') or ''}", "red")
    return text


def decision_line(d: dict[str, Any]) -> Text:
    """One decision: action, advisor, rationale, diagnosed issues and changes."""
    action = d["action"]
    advisor = d["advisor"] + (" (fallback to rules)" if d.get("fallback") else "")
    text = Text.assemble(
        ("decision ", "dim"),
        (f"#{d['sequence']} ", "dim"),
        (str(action), f"bold {ACTION_STYLE.get(action, '')}".strip()),
        f" after generation {d['generation']} by {advisor}: ",
        d.get("rationale") or "",
    )
    issues = (d.get("diagnostics") or {}).get("issues") or []
    if issues:
        text.append(f"\n    diagnosed: {', '.join(issues)}", "yellow")
    changes = d.get("changes") or {}
    if changes:
        parts = [
            f"{k} → {v['value'] if isinstance(v, dict) and 'value' in v else v}"
            for k, v in changes.items()
        ]
        text.append(f"\n    changes: {', '.join(parts)}", "cyan")
    return text


def view(state: WatchState) -> RenderableType:
    """The live part: the run's status, the current job, the latest epoch, the generations."""
    run = state.run
    if run is None:
        return Text(f"connecting to run {state.run_id}…", "dim")
    parts: list[RenderableType] = []
    parts.append(
        Text.assemble(
            (f"run {run['id'][:12]}", "bold"),
            f" {run.get('name') or ''} — ",
            render.status_text(run["status"]),
            f" · {run['dataset']} · advisor {run['advisor']} · baseline "
            f"{render.pct(run.get('baseline_val_accuracy'))} → best "
            f"{render.pct(run.get('best_val_accuracy'))}",
        )
    )
    job = state.current
    if job is not None:
        done = state.job_done(job)
        bar = Table.grid(padding=(0, 1))
        bar.add_row(
            Text(f"generation {job['generation']}", "bold"),
            Text(f"v{job['architecture_version']} {job['status']}"),
            ProgressBar(total=job["epochs"], completed=done, width=40),
            Text(
                f"{done}/{job['epochs']} epochs "
                f"({job['epoch_start']}–{job['epoch_start'] + job['epochs'] - 1})"
            ),
        )
        parts.append(bar)
    if state.summaries:
        parts.append(metrics_table(state.summaries[max(state.summaries)]))
    if state.jobs:
        parts.append(generations_table(state))
    if run.get("pending_approval"):
        p = run["pending_approval"]
        hint = Text(f"waiting for approval of {p['action']}: {p['rationale']}\n", "magenta")
        hint.append_text(render.approval_hint(str(run["id"])))
        hint.stylize("magenta")
        parts.append(hint)
    if state.problem:
        parts.append(Text(state.problem, "red"))
    return Group(*parts)


def metrics_table(s: dict[str, Any]) -> Table:
    table = Table(title=f"latest epoch ({s['epoch']})", title_justify="left", header_style="bold")
    for col in (
        "train loss",
        "val loss",
        "train acc",
        "val acc",
        "grad norm (min–max)",
        "lr",
        "s/epoch",
    ):
        table.add_column(col, justify="right")
    g = s["grad_total"]
    table.add_row(
        _num(s.get("train_loss")),
        _num(s.get("val_loss")),
        render.pct(s["train_accuracy"]),
        render.pct(s["val_accuracy"]),
        f"{g['mean']:.3g} ({g['min']:.3g}–{g['max']:.3g})"
        + (f", {s['nonfinite_steps']} non-finite" if s.get("nonfinite_steps") else ""),
        f"{s['learning_rate']:.3g}",
        f"{s['seconds']:.1f}",
    )
    return table


def generations_table(state: WatchState) -> Table:
    table = Table(title="generations", title_justify="left", header_style="bold")
    for col in ("gen", "attempt", "arch", "optimizer", "lr", "epochs", "status", "best val acc"):
        table.add_column(col, justify="right" if col in ("gen", "attempt", "lr") else "left")
    for job in state.jobs:
        hp = job["hyperparameters"]
        table.add_row(
            render.plain(job["generation"]),
            render.plain(job["attempt"]),
            render.plain(f"v{job['architecture_version']}"),
            render.plain(hp.get("optimizer")),
            render.plain(f"{hp.get('learning_rate'):.3g}"),
            render.plain(f"{job['epoch_start']}–{job['epoch_start'] + job['epochs'] - 1}"),
            render.status_text(job["status"]),
            render.pct(state.job_best(job)),
        )
    return table


def watch_run(
    client: ApiClient, run_id: str, console: Console, poll_s: float = 1.0
) -> dict[str, Any]:
    """Show the run live until it ends (succeeded, failed or cancelled); return the final run.

    Ctrl-C stops watching (not the run) and returns the run as last seen.
    """
    state = WatchState(run_id)
    failures = 0
    with Live(view(state), console=console, refresh_per_second=4) as live:
        try:
            while True:
                try:
                    lines = poll(client, state)
                    failures, state.problem = 0, None
                except CliError as e:
                    # 4xx (unknown run, bad token) will not heal; a down server may
                    if e.exit_code != 1 or failures >= MAX_FAILED_POLLS:
                        raise
                    failures += 1
                    state.problem = f"{e.message} (retrying)"
                    lines = []
                for line in lines:
                    live.console.print(line)
                live.update(view(state))
                if state.run is not None and state.run["status"] in render.TERMINAL:
                    break
                time.sleep(poll_s)
        except KeyboardInterrupt:
            live.console.print("stopped watching; the run goes on", style="dim")
    if state.run is None:
        raise CliError(f"could not read run {run_id}")
    return state.run
