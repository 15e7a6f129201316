"""Handing a job to the executor: the worker's environment and token, and a refusal recorded
as an infrastructure failure (which the graph then retries like any other)."""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session

from service import auth
from service.confinement.policy import ALLOW_WEAK_ENV
from service.db.models import Job, Run, utcnow
from service.errors import ExecutorError
from service.executors import Executor, JobSubmission, job_name
from service.schemas.statuses import ErrorKind, JobStatus
from service.schemas.worker_env import WorkerEnvironment
from service.settings import Settings

log = logging.getLogger(__name__)


def submit(session: Session, settings: Settings, executor: Executor, run: Run, job: Job) -> None:
    """Submit a ``pending`` job; afterwards it is ``submitted``, or ``failed`` if refused.

    Commits first: the job's token must be stored before the worker can call back with it.
    """
    token = auth.mint_job_token(session, job.id)
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
        name=job_name(run.id, job.generation, job.attempt),
        environment=environment,
        gpus=resources.get("gpus", 1),
        vcpus=resources.get("vcpus", 4),
        memory_mib=resources.get("memory_mib", 15000),
    )
    session.commit()
    try:
        job.external_id = executor.submit(submission)
        job.status = JobStatus.SUBMITTED
        job.submitted_at = utcnow()
        job.log_location = executor.log_location(job.external_id)
    except ExecutorError as e:
        log.error("submitting job %s failed: %s", job.id, e.message)
        job.status = JobStatus.FAILED
        job.error_kind = ErrorKind.INFRASTRUCTURE
        job.error_message = f"the executor refused the job: {e.message}"
        job.finished_at = utcnow()
