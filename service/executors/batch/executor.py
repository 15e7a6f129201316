"""The ``batch`` executor: one AWS Batch job per gradpilot job (or one array job per
generation of candidates), on the queue and job definition named in the settings.

It puts together the parts of this package: requests from ``jobs`` (names, overrides, retry
strategy, array environments), calls through ``client`` (botocore's retries, errors translated
into ``ExecutorError``), and states from ``status`` (cancelled, infrastructure failures, log
locations).

Ids
    The external id is the Batch ``jobId``; a child of an array job has the id
    ``<parentJobId>:<index>``, which ``describe_jobs`` and ``terminate_job`` accept as well.
    Submitting is idempotent by job name (see :meth:`BatchExecutor.submit`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from botocore.exceptions import NoRegionError

from service.errors import ExecutorError
from service.executors._protocol import Executor, ExecutorState, ExecutorStatus, JobSubmission
from service.executors.batch import jobs as batch_jobs
from service.executors.batch.client import BatchApi, make_batch_client
from service.executors.batch.status import cancel_reason, log_locations, map_status
from service.settings import Settings

_FORGOTTEN = "AWS Batch does not know this job (finished jobs expire after ~7 days)"


class BatchExecutor:
    """Runs workers as AWS Batch jobs on the queue and job definition named in the settings.

    ``client`` replaces the boto3 client (a Stubber-wrapped one in tests); ``clock`` returns
    the current time in seconds (for the RUNNABLE-too-long warning).
    """

    name = "batch"

    def __init__(
        self,
        settings: Settings,
        client: Any = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self._owns_client = client is None
        try:
            boto_client = client if client is not None else make_batch_client(settings)
        except NoRegionError as e:  # pragma: no cover - settings always carry a region
            raise ExecutorError("AWS Batch needs a region: set GRADPILOT_AWS_REGION") from e
        self.api = BatchApi(settings, boto_client)
        self._clock = clock
        #: name → job id of what this process submitted: Batch's list_jobs is eventually
        #: consistent, so a resubmission right after a submit could miss the first job.
        self._submitted: dict[str, str] = {}

    @property
    def client(self) -> Any:
        """The boto3 ``batch`` client (tests hook its events)."""
        return self.api.client

    # -- submission ----------------------------------------------------------------------

    @property
    def job_queue(self) -> str:
        if not self.settings.batch_job_queue:
            raise ExecutorError(
                "GRADPILOT_BATCH_JOB_QUEUE is not set: `gradpilot infra deploy` prints it"
            )
        return self.settings.batch_job_queue

    @property
    def job_definition(self) -> str:
        if not self.settings.batch_job_definition:
            raise ExecutorError(
                "GRADPILOT_BATCH_JOB_DEFINITION is not set: `gradpilot infra deploy` prints it"
            )
        return self.settings.batch_job_definition

    def submit(self, job: JobSubmission) -> str:
        """Submit ``python -m worker`` with the job's environment and resources.

        Idempotent by name: if a job with this name is still known to Batch (in any state:
        a finished one must not run twice either), its id is returned instead. Batch keeps
        finished jobs for about a week and its listing is eventually consistent, so this
        process also remembers what it submitted; the caller should store the returned id.
        """
        batch_jobs.check_job_name(job.name)
        existing = self._existing(job.name)
        if existing:
            return existing
        request = batch_jobs.submit_request(
            job, queue=self.job_queue, definition=self.job_definition
        )
        job_id = str(self.api.call("submit_job", **request)["jobId"])
        self._submitted[job.name] = job_id
        return job_id

    def submit_array(self, jobs: Sequence[JobSubmission], *, name: str | None = None) -> list[str]:
        """Submit several candidates as one array job; returns one external id per candidate.

        All candidates must ask for the same resources and timeout (an array job has one set of
        overrides). Candidate ``i`` runs as child ``i`` (``AWS_BATCH_JOB_ARRAY_INDEX=i``) with id
        ``<parentJobId>:<i>``; the environment values that differ between candidates reach it
        through ``GRADPILOT_ARRAY_VARS`` (see ``service.executors.batch.jobs``). A single
        candidate is submitted as a plain job (Batch arrays have at least 2 children).
        """
        if not jobs:
            return []
        if len(jobs) == 1:
            return [self.submit(jobs[0])]
        batch_jobs.check_array(jobs)
        array_name = name or batch_jobs.array_name(jobs)
        batch_jobs.check_job_name(array_name)
        parent = self._existing(array_name)
        if not parent:
            request = batch_jobs.array_request(
                jobs, array_name, queue=self.job_queue, definition=self.job_definition
            )
            parent = str(self.api.call("submit_job", **request)["jobId"])
            self._submitted[array_name] = parent
        return batch_jobs.child_ids(parent, len(jobs))

    def find_job(self, name: str) -> str | None:
        """The id of the newest job on the queue with exactly this name, or None."""
        return self.api.find_job(self.job_queue, name)

    # -- observation ---------------------------------------------------------------------

    def describe(self, external_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Batch's raw job descriptions by id, ``describe_jobs`` in batches of 100."""
        return self.api.describe_jobs(external_ids)

    def status(self, external_ids: list[str]) -> dict[str, ExecutorStatus]:
        """The state of many jobs; ids Batch no longer knows are ``unknown``."""
        described = self.describe(external_ids)
        result: dict[str, ExecutorStatus] = {}
        for external_id in external_ids:
            job = described.get(external_id)
            if job is None:
                result[external_id] = ExecutorStatus(
                    external_id=external_id, state=ExecutorState.UNKNOWN, reason=_FORGOTTEN
                )
            else:
                result[external_id] = self._map_status(job)
        return result

    def cancel(self, external_id: str, reason: str) -> None:
        """Terminate the job in whatever state it is (terminate_job also covers queued jobs)."""
        self.api.call("terminate_job", jobId=external_id, reason=cancel_reason(reason))

    def log_location(self, external_id: str) -> str | None:
        """``cloudwatch://<group>//<stream>`` of the latest attempt, or None before it starts."""
        locations = self.log_locations(external_id)
        return locations[-1] if locations else None

    def log_locations(self, external_id: str) -> list[str]:
        """One ``cloudwatch://<group>//<stream>`` per attempt, oldest first."""
        job = self.describe([external_id]).get(external_id)
        return log_locations(job, self.api.log_group) if job else []

    def close(self) -> None:
        if self._owns_client:
            self.api.close()

    # -- internals -----------------------------------------------------------------------

    def _existing(self, name: str) -> str | None:
        """The id of the job of this name that this process submitted or Batch still knows."""
        existing = self._submitted.get(name) or self.find_job(name)
        if existing:
            self._submitted[name] = existing
        return existing

    def _map_status(self, job: dict[str, Any]) -> ExecutorStatus:
        return map_status(
            job,
            log_group=self.api.log_group,
            now_s=self._clock(),
            runnable_timeout_s=self.settings.batch_runnable_timeout_s,
            # moto has no console to link to.
            console_region=None if self.settings.aws_endpoint_url else self.settings.aws_region,
        )


_: type[Executor] = BatchExecutor
