"""What an advisor sees of a run: the ``AdvisorContext`` built from the run, the graph's
state and a compact history of the run's jobs."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.advisors._protocol import AdvisorContext, Assessment, HistoryEntry
from service.agent import records
from service.agent.state import AgentState
from service.db.models import Decision, EpochSummary, Job, Run
from service.schemas.datasets import DatasetSpec

#: jobs of the history an advisor sees (the latest ones)
HISTORY_JOBS = 12


def advisor_context(
    session: Session,
    run: Run,
    state: AgentState,
    *,
    source: str | None = None,
    architecture_version: int | None = None,
) -> AdvisorContext:
    """The context for the run's next advisor call; ``source`` and ``architecture_version``
    describe a model other than the current one (a repair attempt, a new architecture)."""
    spec = DatasetSpec.model_validate(run.dataset)
    shape, classes = spec.shape()
    budget = run.budget
    epochs_left = None
    if budget.get("max_total_epochs"):
        epochs_left = budget["max_total_epochs"] - state.get("epochs_done", 0)
    version = (
        architecture_version
        if architecture_version is not None
        else state.get("architecture_version", 0)
    )
    assessment = state.get("assessment")
    return AdvisorContext(
        run_id=run.id,
        input_shape=shape,
        num_classes=classes,
        dataset=spec.name,
        source=source or records.architecture_source(session, run.id, version),
        hyperparameters=state.get("hyperparameters") or run.hyperparameters,
        diagnostics=state.get("diagnostics") or {},
        history=history(session, run.id),
        feedback=state.get("feedback"),
        epochs_left=epochs_left,
        jobs_left=budget["max_jobs"] - state.get("jobs_done", 0),
        architecture_version=version,
        assessment=Assessment.model_validate(assessment) if assessment else None,
    )


def history(session: Session, run_id: str) -> list[HistoryEntry]:
    """One line per job: what changed before it and how it went (compact, for advisors)."""
    decisions = {
        d.generation: d
        for d in session.execute(
            select(Decision).where(Decision.run_id == run_id).order_by(Decision.sequence)
        ).scalars()
    }
    entries = []
    for job in session.execute(
        select(Job).where(Job.run_id == run_id).order_by(Job.generation, Job.attempt)
    ).scalars():
        before = decisions.get(job.generation - 1)
        last_loss = session.execute(
            select(EpochSummary.val_loss)
            .where(EpochSummary.job_id == job.id)
            .order_by(EpochSummary.epoch.desc())
            .limit(1)
        ).scalar_one_or_none()
        entries.append(
            HistoryEntry(
                generation=job.generation,
                action=before.action if before else "start",
                architecture_version=job.architecture_version,
                changes=before.changes if before else {},
                best_val_accuracy=job.best_val_accuracy,
                final_val_loss=last_loss,
                summary=f"{job.status}" + (f" ({job.error_kind})" if job.error_kind else ""),
            )
        )
    return entries[-HISTORY_JOBS:]
