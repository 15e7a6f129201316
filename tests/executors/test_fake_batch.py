"""The fault-injecting Batch double, exercised through the real boto3 client and the real
``BatchExecutor``: states, retries per ``evaluateOnExit``, spot reclaims, OOM kills, attempt
timeouts, terminate and cancel, throttling and empty answers, ListJobs by name."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from service.executors import ExecutorState, JobSubmission
from service.executors.batch import BatchExecutor, retry_strategy
from service.settings import Settings
from tests.support.fake_batch import (
    OOM_REASON,
    TIMEOUT_REASON,
    FakeBatch,
    fake_credentials,
    retry_action,
)

#: A stand-in worker: exits with $EXIT after $SLEEP seconds; on SIGTERM exits 5 (preempted),
SCRIPT = """
import os, signal, sys, time
if os.environ.get("ON_TERM") == "ignore":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
else:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(5))
print("attempt", os.environ["AWS_BATCH_JOB_ATTEMPT"], flush=True)
time.sleep(float(os.environ.get("SLEEP", "0")))
sys.exit(int(os.environ.get("EXIT", "0")))
"""


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeBatch]:
    for key, value in fake_credentials().items():
        monkeypatch.setenv(key, value)
    with FakeBatch(
        workdir=tmp_path / "batch",
        step_s=0.02,
        reclaim_grace_s=2,
        stop_timeout_s=2,
        timeout_scale=0.02,
        command=[sys.executable, "-c", SCRIPT],
    ) as fake:
        yield fake


@pytest.fixture
def executor(fake: FakeBatch, tmp_path: Path) -> Iterator[BatchExecutor]:
    # executor="local" keeps the file artifact store valid: the fake's workers run here.
    settings = Settings(
        home=tmp_path / "home",
        batch_job_queue="gp-queue",
        batch_job_definition="gp-worker:1",
        aws_region="us-east-1",
        aws_endpoint_url=fake.url,
    )
    ex = BatchExecutor(settings)
    yield ex
    ex.close()


def _job(name: str, timeout_s: int | None = None, **env: str) -> JobSubmission:
    return JobSubmission(
        job_id=f"row-{name}",
        run_id="0123456789abcdef",
        generation=1,
        attempt=1,
        name=name,
        environment={"GRADPILOT_JOB_ID": f"row-{name}", **env},
        timeout_s=timeout_s,
    )


def _until_terminal(executor: BatchExecutor, job_id: str, timeout_s: float = 30) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = executor.status([job_id])[job_id]
        if status.state in (ExecutorState.SUCCEEDED, ExecutorState.FAILED, "cancelled"):
            return status
        time.sleep(0.05)
    raise AssertionError(f"{job_id} did not end: {status}")


def test_a_job_walks_the_documented_states(fake: FakeBatch, executor: BatchExecutor) -> None:
    seen: list[str] = []
    job_id = executor.submit(_job("walk", SLEEP="0.5"))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and fake.status(job_id) != "SUCCEEDED":
        status = fake.status(job_id)
        if not seen or seen[-1] != status:
            seen.append(status)
        time.sleep(0.005)
    assert seen[0] == "SUBMITTED" and seen[-1] == "RUNNING"
    assert "RUNNABLE" in seen and "STARTING" in seen
    status = executor.status([job_id])[job_id]
    assert status.state == ExecutorState.SUCCEEDED and status.exit_code == 0
    assert status.log_location and status.log_location.startswith("cloudwatch://")


def test_evaluate_on_exit_as_aws_reads_it() -> None:
    strategy = retry_strategy()
    host = "Host EC2 (instance i-0123) terminated."
    assert retry_action(strategy, status_reason=host, reason=None, exit_code=None) == "RETRY"
    assert retry_action(strategy, status_reason="x", reason=None, exit_code=5) == "RETRY"
    assert retry_action(strategy, status_reason="x", reason=None, exit_code=3) == "EXIT"
    assert retry_action(strategy, status_reason="x", reason=OOM_REASON, exit_code=137) == "EXIT"
    # No condition matching means RETRY (the reason the strategy ends in a catch-all).
    assert retry_action({"evaluateOnExit": []}, status_reason="x", reason=None, exit_code=1) == (
        "RETRY"
    )


def test_spot_reclaim_retries_the_same_job_id(fake: FakeBatch, executor: BatchExecutor) -> None:
    job_id = executor.submit(_job("reclaim", SLEEP="30"))
    fake.wait_for(job_id, ["RUNNING"])
    time.sleep(0.3)
    fake.reclaim(job_id, instance="i-0abc")
    # Batch puts it back in the queue: the executor reports it queued, not failed.
    fake.wait_attempts(job_id, 1, timeout_s=10)
    status = executor.status([job_id])[job_id]
    assert status.state in (ExecutorState.SUBMITTED, ExecutorState.RUNNING)
    described = fake.job(job_id)
    (first,) = described["attempts"]
    assert first["statusReason"] == "Host EC2 (instance i-0abc) terminated."
    assert first["container"]["exitCode"] == 5  # the stand-in checkpointed on SIGTERM
    fake.wait_for(job_id, ["RUNNING"])
    assert [r.attempt for r in fake.processes] == [0, 1]
    assert fake.overlaps() == []


def test_reclaim_kills_after_the_grace(fake: FakeBatch, executor: BatchExecutor) -> None:
    job_id = executor.submit(_job("stubborn", SLEEP="30", ON_TERM="ignore"))
    fake.wait_for(job_id, ["RUNNING"])
    time.sleep(0.3)
    started = time.monotonic()
    fake.reclaim(job_id)
    fake.wait_attempts(job_id, 1, timeout_s=10)
    waited = time.monotonic() - started
    assert 1.9 <= waited < 5  # reclaim_grace_s=2, then SIGKILL
    (first,) = fake.job(job_id)["attempts"]
    assert first["container"]["exitCode"] == 137


def test_oom_is_exit_137_and_not_retried(fake: FakeBatch, executor: BatchExecutor) -> None:
    job_id = executor.submit(_job("oom", SLEEP="30"))
    fake.wait_for(job_id, ["RUNNING"])
    fake.oom(job_id)
    status = _until_terminal(executor, job_id)
    assert status.state == ExecutorState.FAILED
    assert status.exit_code == 137
    assert OOM_REASON in (status.reason or "")
    assert not status.infrastructure_failure
    assert len(fake.job(job_id)["attempts"]) == 1


def test_retryable_exit_is_retried_up_to_the_attempts(
    fake: FakeBatch, executor: BatchExecutor
) -> None:
    job_id = executor.submit(_job("flaky", EXIT="4"))
    status = _until_terminal(executor, job_id)
    assert status.state == ExecutorState.FAILED and status.exit_code == 4
    assert len(fake.job(job_id)["attempts"]) == retry_strategy()["attempts"]
    code_error = executor.submit(_job("broken", EXIT="3"))
    assert _until_terminal(executor, code_error).exit_code == 3
    assert len(fake.job(code_error)["attempts"]) == 1


def test_attempt_timeout_stops_and_is_not_retried(fake: FakeBatch, executor: BatchExecutor) -> None:
    # 60 s × timeout_scale 0.02 = 1.2 s.
    job_id = executor.submit(_job("slow", timeout_s=60, SLEEP="30"))
    assert fake.job(job_id)["timeout"] == {"attemptDurationSeconds": 60}
    status = _until_terminal(executor, job_id)
    assert status.state == ExecutorState.FAILED
    assert TIMEOUT_REASON in (status.reason or "")
    assert status.extra["timed_out"] == "true" and not status.infrastructure_failure
    assert len(fake.job(job_id)["attempts"]) == 1


def test_terminate_stops_a_running_job_without_retry(
    fake: FakeBatch, executor: BatchExecutor
) -> None:
    job_id = executor.submit(_job("stopme", SLEEP="30"))
    fake.wait_for(job_id, ["RUNNING"])
    executor.cancel(job_id, "no heartbeat")
    status = _until_terminal(executor, job_id)
    assert status.state == ExecutorState.CANCELLED
    assert fake.alive() == []


def test_stuck_in_runnable_and_cancel_of_a_queued_job(
    fake: FakeBatch, executor: BatchExecutor
) -> None:
    fake.capacity = 0
    job_id = executor.submit(_job("stuck", SLEEP="0"))
    fake.wait_for(job_id, ["RUNNABLE"])
    time.sleep(0.3)
    assert fake.status(job_id) == "RUNNABLE"
    executor.api.call("cancel_job", jobId=job_id, reason="Cancelled by gradpilot: test")
    assert fake.status(job_id) == "FAILED" and fake.job(job_id)["isCancelled"]
    assert executor.status([job_id])[job_id].state == ExecutorState.CANCELLED
    assert fake.processes == []


def test_throttled_describes_are_retried_by_botocore(
    fake: FakeBatch, executor: BatchExecutor
) -> None:
    job_id = executor.submit(_job("throttled", SLEEP="0"))
    fake.throttle("DescribeJobs", 2)
    status = executor.status([job_id])[job_id]
    assert status.state != ExecutorState.UNKNOWN
    throttled = [op for op, _ in fake.calls if op == "DescribeJobs"]
    assert len(throttled) == 3


def test_an_empty_describe_reads_unknown(fake: FakeBatch, executor: BatchExecutor) -> None:
    job_id = executor.submit(_job("ghost", SLEEP="0"))
    fake.empty_describes(1)
    assert executor.status([job_id])[job_id].state == ExecutorState.UNKNOWN
    assert executor.status([job_id])[job_id].state != ExecutorState.UNKNOWN


def test_resubmission_finds_the_job_by_name(
    fake: FakeBatch, executor: BatchExecutor, tmp_path: Path
) -> None:
    first = executor.submit(_job("once", SLEEP="0"))
    # A restarted control plane: a new executor with no memory of the first submission.
    fresh = BatchExecutor(executor.settings)
    try:
        assert fresh.submit(_job("once", SLEEP="0")) == first
    finally:
        fresh.close()
    assert fake.job_ids("once") == [first]
