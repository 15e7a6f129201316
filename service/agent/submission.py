"""Handing a job to the executor: the worker's environment and token, and a refusal recorded
as an infrastructure failure (which the graph then retries like any other)."""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.orm import Session

from service import auth
from service.confinement.policy import ALLOW_WEAK_ENV
from service.db.models import EpochSummary, Job, Run, utcnow
from service.errors import ExecutorError
from service.executors import Executor, JobSubmission, job_name, timeouts
from service.schemas.statuses import ErrorKind, JobStatus
from service.schemas.worker_env import WorkerEnvironment
from service.settings import Settings

log = logging.getLogger(__name__)


def submit(session: Session, settings: Settings, executor: Executor, run: Run, job: Job) -> None:
    """Submit a ``pending`` job; afterwards it is ``submitted``, or ``failed`` if refused.

    Commits first: the job's token must be stored before the worker can call back with it,
    and ``submitted_at`` marks the submission as begun. A control plane that crashed after
    that commit finds the row still ``pending`` with ``submitted_at`` set and submits again
    under the same name (``job_name`` carries the row's id), which the executor answers with
    the job already submitted (``JobSubmission.earlier_attempt_at``) instead of a second one.
    The attempt timeout comes from the run's measured epoch times
    (``service.executors.timeouts``).
    """
    token = auth.mint_job_token(session, job.id)
    earlier = job.submitted_at
    job.submitted_at = earlier or utcnow()
    measured = session.execute(
        select(EpochSummary.seconds)
        .where(EpochSummary.run_id == run.id)
        .order_by(EpochSummary.epoch.desc())
        .limit(5)
    ).scalars()
    epoch_s = timeouts.epoch_seconds(list(measured)[::-1])
    environment = WorkerEnvironment(
        api_url=settings.resolved_public_url,
        job_id=job.id,
        job_token=token,
        aws_endpoint_url=settings.aws_endpoint_url,
    ).as_env()
    if settings.allow_weak_isolation:  # the operator's choice holds for the trainer too
        environment[ALLOW_WEAK_ENV] = "true"
    resources = run.resources
    submission = JobSubmission(
        job_id=job.id,
        run_id=run.id,
        generation=job.generation,
        attempt=job.attempt,
        name=job_name(run.id, job.generation, job.attempt, job.id),
        environment=environment,
        gpus=resources.get("gpus", 1),
        vcpus=resources.get("vcpus", 4),
        memory_mib=resources.get("memory_mib", 15000),
        timeout_s=timeouts.attempt_timeout_s(job.epochs, epoch_s, settings),
        earlier_attempt_at=earlier.timestamp() if earlier is not None else None,
    )
    session.commit()
    try:
        job.external_id = executor.submit(submission)
        job.status = JobStatus.SUBMITTED
        job.log_location = executor.log_location(job.external_id)
    except ExecutorError as e:
        log.error("submitting job %s failed: %s", job.id, e.message)
        job.status = JobStatus.FAILED
        job.error_kind = ErrorKind.INFRASTRUCTURE
        job.error_message = f"the executor refused the job: {e.message}"
        job.finished_at = utcnow()
