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
from service.settings import Settings

log = logging.getLogger(__name__)


def submit(session: Session, settings: Settings, executor: Executor, run: Run, job: Job) -> None:
    """Submit a ``pending`` job; afterwards it is ``submitted``, or ``failed`` if refused.

    Commits first: the job's token must be stored before the worker can call back with it.
    """
    token = auth.mint_job_token(session, job.id)
    resources = run.resources
    submission = JobSubmission(
        job_id=job.id,
        run_id=run.id,
        generation=job.generation,
        attempt=job.attempt,
        name=job_name(run.id, job.generation, job.attempt),
        environment={
            "GRADPILOT_API_URL": settings.resolved_public_url,
            "GRADPILOT_JOB_ID": job.id,
            "GRADPILOT_JOB_TOKEN": token,
            **(
                {"GRADPILOT_AWS_ENDPOINT_URL": settings.aws_endpoint_url}
                if settings.aws_endpoint_url
                else {}
            ),
            **({ALLOW_WEAK_ENV: "true"} if settings.allow_weak_isolation else {}),
        },
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
