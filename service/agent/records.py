"""The agent's database operations: the rows its nodes read and write.

Writes are get-or-create by natural keys (job: run/generation/attempt; decision: run/sequence;
architecture: run/version), so a node that LangGraph runs twice writes once. Nothing here
commits: the node's session scope owns the transaction.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.advisors._protocol import Usage
from service.agent.state import AgentState, JobOutcome, usage_of
from service.db.models import Architecture, Decision, EpochSummary, Job, Run
from service.runs import sha256
from service.schemas.decisions import Action
from service.schemas.statuses import JobStatus
from service.schemas.summaries import EpochSummaryIn


def run_of(session: Session, run_id: str) -> Run:
    """The graph's run (a run is never deleted while its graph runs)."""
    run = session.get(Run, run_id)
    assert run is not None, f"run {run_id} vanished"
    return run


def architecture(session: Session, run_id: str, version: int) -> Architecture:
    """One stored version of the run's model (version 0: the user's)."""
    return session.execute(
        select(Architecture).where(Architecture.run_id == run_id, Architecture.version == version)
    ).scalar_one()


def architecture_source(session: Session, run_id: str, version: int) -> str:
    return session.execute(
        select(Architecture.source).where(
            Architecture.run_id == run_id, Architecture.version == version
        )
    ).scalar_one()


def next_architecture_version(session: Session, run_id: str) -> int:
    """The version a new architecture of the run gets."""
    latest = session.execute(
        select(func.max(Architecture.version)).where(Architecture.run_id == run_id)
    ).scalar_one()
    return int(latest or 0) + 1


def save_architecture(
    session: Session,
    run_id: str,
    version: int,
    source: str,
    rationale: str,
    author: str,
    parent: int,
    parameters: int | None,
) -> None:
    """Store a new architecture version (once)."""
    existing = session.execute(
        select(Architecture).where(Architecture.run_id == run_id, Architecture.version == version)
    ).scalar_one_or_none()
    if existing is None:
        session.add(
            Architecture(
                run_id=run_id,
                version=version,
                parent_version=parent,
                source=source,
                sha256=sha256(source),
                rationale=rationale,
                author=author,
                parameters=parameters,
            )
        )


def record_decision(
    session: Session,
    state: AgentState,
    action: Action,
    rationale: str,
    *,
    changes: dict[str, Any] | None = None,
    advisor: str | None = None,
    usage: Usage | None = None,
    architecture_version: int | None = None,
) -> int:
    """Store one decision (get-or-create by sequence) with the advisor usage not yet recorded;
    returns the next sequence number."""
    run = run_of(session, state["run_id"])
    seq = state.get("decisions", 0)
    existing = session.execute(
        select(Decision).where(Decision.run_id == run.id, Decision.sequence == seq)
    ).scalar_one_or_none()
    if existing is None:
        usage = (usage or Usage()).add(usage_of(state.get("pending_usage")))
        session.add(
            Decision(
                run_id=run.id,
                sequence=seq,
                generation=state.get("generation", 0),
                action=action,
                advisor=advisor or (usage.model if usage.model else run.advisor),
                fallback=usage.fallback,
                rationale=rationale,
                diagnostics=state.get("diagnostics") or {},
                assessment=state.get("assessment") or {},
                changes=changes or {},
                architecture_version=architecture_version,
                latency_ms=usage.latency_ms,
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
            )
        )
        add_tokens(run, usage)
    return seq + 1


def add_tokens(run: Run, usage: Usage) -> None:
    """Count an advisor call's tokens on the run."""
    run.input_tokens += usage.input_tokens
    run.output_tokens += usage.output_tokens


def has_finish_decision(session: Session, run_id: str) -> bool:
    """Whether the run's final decision is recorded already."""
    return bool(
        session.execute(
            select(func.count(Decision.id)).where(
                Decision.run_id == run_id, Decision.action == "finish"
            )
        ).scalar_one()
    )


def job_of_state(session: Session, state: AgentState) -> Job:
    """The job the state plans (run, generation, attempt), created ``pending`` the first time."""
    run_id = state["run_id"]
    job = session.execute(
        select(Job).where(
            Job.run_id == run_id,
            Job.generation == state["generation"],
            Job.attempt == state["attempt"],
        )
    ).scalar_one_or_none()
    if job is None:
        job = Job(
            run_id=run_id,
            generation=state["generation"],
            attempt=state["attempt"],
            architecture_version=state["architecture_version"],
            hyperparameters=state["hyperparameters"],
            epoch_start=state["epoch_start"],
            epochs=state["epochs"],
            schedule_epoch=state["schedule_epoch"],
            schedule_total_epochs=state["schedule_total_epochs"],
            resume_checkpoint=state.get("resume_checkpoint"),
            resume_weights_only=state.get("resume_weights_only", False),
            status=JobStatus.PENDING,
        )
        session.add(job)
        session.flush()
    return job


def ended_job(session: Session, outcome: JobOutcome | None) -> Job | None:
    """The job an outcome is about; None before the first job (a sandbox rejection)."""
    job_id = (outcome or {}).get("job_id")
    return session.get(Job, job_id) if job_id else None


def latest_succeeded_job(session: Session, run_id: str) -> Job | None:
    """The run's last job that succeeded (its test accuracy is the run's)."""
    return (
        session.execute(
            select(Job)
            .where(Job.run_id == run_id, Job.status == JobStatus.SUCCEEDED)
            .order_by(Job.generation.desc())
        )
        .scalars()
        .first()
    )


def segment_summaries(
    session: Session, run_id: str, job_id: str | None, epoch_end: int, limit: int
) -> tuple[list[EpochSummaryIn], list[EpochSummaryIn]]:
    """The run's last ``limit`` epoch summaries before ``epoch_end``, oldest first: those of
    the job ``job_id``, and the earlier jobs' ones."""
    rows = session.execute(
        select(EpochSummary)
        .where(EpochSummary.run_id == run_id, EpochSummary.epoch < epoch_end)
        .order_by(EpochSummary.epoch.desc())
        .limit(limit)
    ).scalars()
    summaries: list[EpochSummaryIn] = []
    earlier: list[EpochSummaryIn] = []
    for r in reversed(list(rows)):
        s = EpochSummaryIn.model_validate({c: getattr(r, c) for c in EpochSummaryIn.model_fields})
        (summaries if r.job_id == job_id else earlier).append(s)
    return summaries, earlier
