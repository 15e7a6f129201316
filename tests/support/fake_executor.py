"""An executor that runs nothing: it records what it is asked to start, and the test (or the
benchmark) plays the worker through the worker's REST endpoints.

It reports every job as ``running``: the controller learns a job's outcome from the worker's
own finish report in the database, which the test posts. It implements
``service.executors.Executor``; the agent tests and the decision-latency benchmark use it.
"""

from __future__ import annotations

import time

from service.executors import ExecutorStatus, JobSubmission
from service.schemas.statuses import ExecutorState


class FakeExecutor:
    """Records submissions (and when each came) and cancellations; starts nothing."""

    name = "fake"

    def __init__(self) -> None:
        self.submitted: list[JobSubmission] = []
        #: ``time.perf_counter()`` at each ``submit``, in the order of ``submitted``.
        self.submitted_at: list[float] = []
        self.cancelled: list[tuple[str, str]] = []

    def submit(self, job: JobSubmission) -> str:
        self.submitted.append(job)
        self.submitted_at.append(time.perf_counter())
        return f"ext-{job.job_id}"

    def status(self, external_ids: list[str]) -> dict[str, ExecutorStatus]:
        return {i: ExecutorStatus(external_id=i, state=ExecutorState.RUNNING) for i in external_ids}

    def cancel(self, external_id: str, reason: str) -> None:
        self.cancelled.append((external_id, reason))

    def log_location(self, external_id: str) -> str | None:
        return None

    def close(self) -> None:
        pass
