"""Job operations: the worker's side (spec, summaries, checkpoints, heartbeat, finish) and
the user's read side. Callers own the transaction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import case, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from service.db.models import Architecture, EpochSummary, Job, utcnow
from service.errors import Conflict, InvalidInput, NotFound
from service.job_artifacts import artifact_prefix
from service.schemas.datasets import DatasetSpec
from service.schemas.hyperparameters import Hyperparameters
from service.schemas.jobs import CheckpointIn, JobFinish, JobSpec
from service.schemas.statuses import ACTIVE_JOB_STATUSES, ErrorKind, JobStatus
from service.schemas.summaries import EpochSummaryIn, EpochSummaryPublic


@dataclass(frozen=True)
class JobBounds:
    """The immutable facts that summary ingest checks; cached per job by the API."""

    run_id: str
    epoch_start: int
    epochs: int


def get_job(session: Session, job_id: str) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise NotFound(f"no job with id {job_id!r}")
    return job


def job_bounds(session: Session, job_id: str) -> JobBounds:
    row = session.execute(
        select(Job.run_id, Job.epoch_start, Job.epochs).where(Job.id == job_id)
    ).one_or_none()
    if row is None:
        raise NotFound(f"no job with id {job_id!r}")
    return JobBounds(*row)


def job_spec(session: Session, job: Job, artifact_root: str, checkpoint_every: int = 5) -> JobSpec:
    run = job.run
    arch = session.execute(
        select(Architecture).where(
            Architecture.run_id == run.id, Architecture.version == job.architecture_version
        )
    ).scalar_one()
    return JobSpec(
        job_id=job.id,
        run_id=run.id,
        generation=job.generation,
        attempt=job.attempt,
        model_source=arch.source,
        model_sha256=arch.sha256,
        dataset=DatasetSpec.model_validate(run.dataset),
        hyperparameters=Hyperparameters.model_validate(job.hyperparameters),
        epoch_start=job.epoch_start,
        epochs=job.epochs,
        schedule_epoch=job.schedule_epoch,
        schedule_total_epochs=job.schedule_total_epochs,
        resume_checkpoint=job.resume_checkpoint,
        resume_weights_only=job.resume_weights_only,
        artifact_prefix=artifact_prefix(artifact_root, run.id, job.generation),
        checkpoint_every=checkpoint_every,
        seed=run.seed + job.generation,
    )


def insert_for(session: Session) -> Any:
    """The dialect's ``insert`` (both have ``on_conflict_do_nothing``)."""
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


def register_checkpoint(session: Session, job: Job, body: CheckpointIn) -> None:
    end = job.epoch_start + job.epochs
    if not job.epoch_start <= body.epoch <= end:
        raise InvalidInput(f"checkpoint epoch {body.epoch} is outside [{job.epoch_start}, {end}]")
    if job.checkpoint_epoch is None or body.epoch >= job.checkpoint_epoch:
        job.checkpoint_uri = body.uri
        job.checkpoint_epoch = body.epoch


# Job state transitions are compare-and-set: one UPDATE whose WHERE names the states it may
# leave. Postgres runs concurrent UPDATEs of a row one after the other (the second waits for the
# first to commit, then re-checks the WHERE against the new row), and SQLite has one writer, so
# the first terminal state wins whole and a late request finds that it changed nothing, instead
# of writing its fields over the winner's (a read-then-write did: 50 concurrent finishes left a
# "succeeded" row carrying a failed request's error).

#: states a heartbeat may find (a cancelled job still hears that it is cancelled)
_HEARTBEAT_FROM = tuple(s.value for s in (*ACTIVE_JOB_STATUSES, JobStatus.CANCELLED))


def _compare_and_set(
    session: Session, job: Job, from_statuses: tuple[str, ...], values: dict[str, Any]
) -> bool:
    """Apply ``values`` to the job's row if its status is one of ``from_statuses``; then reload
    ``job``. Returns whether the row changed."""
    result = session.execute(
        update(Job)
        .where(Job.id == job.id, Job.status.in_(from_statuses))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    session.refresh(job)
    return bool(getattr(result, "rowcount", 0))


def heartbeat(session: Session, job: Job) -> bool:
    """Mark the job alive (and running); returns whether the user asked to cancel its run.
    ``Conflict`` if the job has ended (succeeded or failed) meanwhile."""
    now = utcnow()
    starting = Job.status.in_((JobStatus.PENDING, JobStatus.SUBMITTED))
    changed = _compare_and_set(
        session,
        job,
        _HEARTBEAT_FROM,
        {
            "heartbeat_at": now,
            "status": case((starting, JobStatus.RUNNING.value), else_=Job.status),
            "started_at": case(
                (starting, func.coalesce(Job.started_at, now)), else_=Job.started_at
            ),
        },
    )
    if not changed:
        raise Conflict(f"job {job.id} has already ended ({job.status})")
    return bool(job.run.cancel_requested) or job.status == JobStatus.CANCELLED


def best_val_accuracy(session: Session, job_id: str) -> float | None:
    return session.execute(
        select(func.max(EpochSummary.val_accuracy)).where(EpochSummary.job_id == job_id)
    ).scalar_one()


def finish_job(session: Session, job: Job, body: JobFinish) -> None:
    """Record the worker's own account of how the job ended (idempotent for the same status)."""
    if body.status == JobStatus.FAILED and body.error_kind is None:
        raise InvalidInput(
            f"a failed job needs error_kind: '{ErrorKind.CODE}' or '{ErrorKind.INFRASTRUCTURE}'"
        )
    active = tuple(s.value for s in ACTIVE_JOB_STATUSES)
    changed = job.status in active and _compare_and_set(
        session,
        job,
        active,
        {
            "status": body.status,
            "error_kind": body.error_kind if body.status == JobStatus.FAILED else None,
            "exit_code": body.exit_code,
            "error_message": body.message,
            "traceback": body.traceback,
            "test_accuracy": body.test_accuracy,
            "isolation": body.isolation,
            "finished_at": utcnow(),
            "best_val_accuracy": best_val_accuracy(session, job.id),
        },
    )
    if changed or job.status == body.status:  # the same account again: idempotent
        return
    raise Conflict(
        f"job {job.id} has already ended ({job.status}); the first report of its end stands"
    )


def list_jobs(session: Session, run_id: str) -> list[Job]:
    return list(
        session.execute(
            select(Job).where(Job.run_id == run_id).order_by(Job.generation, Job.attempt)
        ).scalars()
    )


def metrics(
    session: Session, run_id: str, since_epoch: int | None = None
) -> list[EpochSummaryPublic]:
    """The run's epoch summaries in epoch order; for a retried generation, the latest attempt's."""
    stmt = (
        select(EpochSummary, Job.generation, Job.attempt)
        .join(Job, Job.id == EpochSummary.job_id)
        .where(EpochSummary.run_id == run_id)
        .order_by(EpochSummary.epoch, Job.attempt)
    )
    if since_epoch is not None:
        stmt = stmt.where(EpochSummary.epoch >= since_epoch)
    by_epoch: dict[int, EpochSummaryPublic] = {}
    for row, generation, attempt in session.execute(stmt).tuples():
        by_epoch[row.epoch] = EpochSummaryPublic.model_validate(
            {
                **{c: getattr(row, c) for c in EpochSummaryIn.model_fields},
                "job_id": row.job_id,
                "generation": generation,
                "attempt": attempt,
            }
        )
    return [by_epoch[e] for e in sorted(by_epoch)]
