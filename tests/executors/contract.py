"""The contract every executor meets, run against each one (``test_contract.py``).

A test module provides a ``harness`` fixture: an :class:`ExecutorHarness` that owns one
executor and knows how to make its worker end a given way (the Batch one under moto, the local
one with a stand-in worker program), then subclasses :class:`ExecutorContract`.
"""

from __future__ import annotations

import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Literal

from service.executors import Executor, ExecutorStatus, JobSubmission

Outcome = Literal["succeed", "fail", "run"]
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})


class ExecutorHarness(ABC):
    """One executor plus the means to make its jobs succeed, fail or keep running."""

    executor: Executor
    #: Whether a job can be kept running until cancelled (moto's Batch finishes at once).
    can_keep_running: bool = True
    #: Whether a failed job reports the worker's exit code (moto's Batch reports none).
    reports_exit_codes: bool = True

    @abstractmethod
    def submission(self, name: str, outcome: Outcome) -> JobSubmission:
        """A submission whose worker ends as ``outcome`` says."""

    def submit(self, job: JobSubmission, outcome: Outcome) -> str:
        return self.executor.submit(job)

    def wait(
        self,
        ids: list[str],
        until: Callable[[ExecutorStatus], bool] = lambda s: s.state in TERMINAL,
        timeout_s: float = 60.0,
    ) -> dict[str, ExecutorStatus]:
        deadline = time.monotonic() + timeout_s
        while True:
            statuses = self.executor.status(ids)
            if all(until(statuses[i]) for i in ids):
                return statuses
            if time.monotonic() > deadline:
                raise AssertionError(f"jobs did not reach the expected state: {statuses}")
            time.sleep(0.1)


def unique_name() -> str:
    return f"gp-{uuid.uuid4().hex[:8]}-g1-a1"


class ExecutorContract:
    """What callers (the controller) rely on, whatever the executor."""

    def test_satisfies_the_protocol(self, harness: ExecutorHarness) -> None:
        assert isinstance(harness.executor, Executor)
        assert isinstance(harness.executor.name, str) and harness.executor.name

    def test_a_succeeding_job_ends_succeeded(self, harness: ExecutorHarness) -> None:
        external_id = harness.submit(harness.submission(unique_name(), "succeed"), "succeed")
        assert isinstance(external_id, str) and external_id
        first = harness.executor.status([external_id])[external_id]
        assert first.external_id == external_id
        assert first.state in {"submitted", "running", "succeeded"}
        final = harness.wait([external_id])[external_id]
        assert final.state == "succeeded"
        assert final.infrastructure_failure is False

    def test_a_failing_job_ends_failed_not_as_infrastructure(
        self, harness: ExecutorHarness
    ) -> None:
        external_id = harness.submit(harness.submission(unique_name(), "fail"), "fail")
        final = harness.wait([external_id])[external_id]
        assert final.state == "failed"
        assert final.infrastructure_failure is False  # a code error is never retried as infra
        if harness.reports_exit_codes:
            assert final.exit_code == 3

    def test_submitting_the_same_name_twice_returns_the_first_id(
        self, harness: ExecutorHarness
    ) -> None:
        job = harness.submission(unique_name(), "succeed")
        first = harness.submit(job, "succeed")
        assert harness.submit(job, "succeed") == first
        harness.wait([first])
        # Still the same job once it has finished: a retried submit must not run it again.
        assert harness.submit(job, "succeed") == first

    def test_different_names_are_different_jobs(self, harness: ExecutorHarness) -> None:
        a = harness.submit(harness.submission(unique_name(), "succeed"), "succeed")
        b = harness.submit(harness.submission(unique_name(), "succeed"), "succeed")
        assert a != b
        harness.wait([a, b])

    def test_status_of_many_jobs_at_once(self, harness: ExecutorHarness) -> None:
        ids = [
            harness.submit(harness.submission(unique_name(), "succeed"), "succeed")
            for _ in range(3)
        ]
        unknown = f"no-such-job-{uuid.uuid4().hex}"
        statuses = harness.executor.status([*ids, unknown])
        assert set(statuses) == {*ids, unknown}
        assert statuses[unknown].state == "unknown"
        assert all(statuses[i].state != "unknown" for i in ids)
        harness.wait(ids)

    def test_status_of_no_jobs_is_empty(self, harness: ExecutorHarness) -> None:
        assert harness.executor.status([]) == {}

    def test_cancel_stops_a_job(self, harness: ExecutorHarness) -> None:
        outcome: Outcome = "run" if harness.can_keep_running else "succeed"
        external_id = harness.submit(harness.submission(unique_name(), outcome), outcome)
        if harness.can_keep_running:
            harness.wait([external_id], until=lambda s: s.state == "running")
        harness.executor.cancel(external_id, "the contract test cancels it")
        final = harness.wait([external_id])[external_id]
        if harness.can_keep_running:
            assert final.state in {"cancelled", "failed"}
            assert final.infrastructure_failure is False
        # Cancelling again, or cancelling a finished job, is harmless.
        harness.executor.cancel(external_id, "again")
        assert harness.executor.status([external_id])[external_id].state == final.state

    def test_log_location_is_text_or_nothing(self, harness: ExecutorHarness) -> None:
        external_id = harness.submit(harness.submission(unique_name(), "succeed"), "succeed")
        harness.wait([external_id])
        location = harness.executor.log_location(external_id)
        assert location is None or (isinstance(location, str) and location)
