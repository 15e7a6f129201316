"""The run's Markdown report: what was diagnosed, each change and why, scores before and
after, test accuracy of the final model, which advisor decided."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db.models import Architecture, Decision, Job, Run


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


def _issues(diagnostics: dict[str, Any]) -> str:
    issues = diagnostics.get("issues") or []
    return ", ".join(issues) if issues else "none"


def build_report(session: Session, run: Run, artifacts: Any = None) -> str:
    """Markdown for a run; ``<!-- summary -->`` is replaced by the advisor's narrative."""
    jobs = list(session.execute(select(Job).where(Job.run_id == run.id).order_by(Job.generation, Job.attempt)).scalars())
    decisions = list(session.execute(select(Decision).where(Decision.run_id == run.id).order_by(Decision.sequence)).scalars())
    archs = list(session.execute(select(Architecture).where(Architecture.run_id == run.id).order_by(Architecture.version)).scalars())
    lines = [
        f"# gradpilot report — run `{run.id}`" + (f" ({run.name})" if run.name else ""),
        "",
        f"- **Status:** {run.status}" + (f" — {run.error}" if run.error else ""),
        f"- **Dataset:** {run.dataset.get('name')}; **advisor:** `{run.advisor}`; **approval:** {run.approval}",
        f"- **Validation accuracy:** baseline {_pct(run.baseline_val_accuracy)} → best {_pct(run.best_val_accuracy)}",
        f"- **Test accuracy of the final model:** {_pct(run.final_test_accuracy)} (scored once, never used for decisions)",
        f"- **Jobs:** {len(jobs)}; **architecture versions:** {len(archs)}",
    ]
    if run.input_tokens or run.output_tokens:
        lines.append(f"- **LLM tokens:** {run.input_tokens} in, {run.output_tokens} out")
    lines += ["", "## Summary", "", "<!-- summary -->", "", "## Jobs", "",
              "| gen | attempt | arch | epochs | optimizer | lr | status | best val acc |",
              "|---:|---:|---:|---|---|---:|---|---:|"]
    for j in jobs:
        hp = j.hyperparameters
        lines.append(
            f"| {j.generation} | {j.attempt} | v{j.architecture_version} | {j.epoch_start}–{j.epoch_start + j.epochs - 1} "
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
            lines.append("Changes: " + ", ".join(f"`{k}` → {v}" for k, v in d.changes.items()))
        if d.latency_ms or d.input_tokens:
            lines.append("")
            lines.append(f"Latency {d.latency_ms} ms, tokens {d.input_tokens} in / {d.output_tokens} out.")
        lines.append("")
    return "\n".join(lines) + "\n"
