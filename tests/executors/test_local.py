"""The local executor: processes, queueing, exit-code mapping, cancel, idempotent submit.

The interpreter it runs is a small shell script standing in for ``python`` (it ignores
``-m worker`` and behaves as the test's environment says), so that each case runs in
milliseconds; tests/worker/test_process.py runs the real worker through this executor.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.executors import Executor, JobSubmission, job_name
from service.executors.local import LocalExecutor
from service.settings import Settings

FAKE_PYTHON = """#!/bin/sh
if [ -n "$GP_TEST_IGNORE_TERM" ]; then
  trap '' TERM
else
  trap 'echo got-term; exit 5' TERM
fi
echo "argv: $*"
echo "aws: ${AWS_SECRET_ACCESS_KEY:-none} ${AWS_ACCESS_KEY_ID:-none}"
echo "job: ${GRADPILOT_JOB_ID:-none} secret: ${GRADPILOT_API_TOKENS:-none}"
echo ready
if [ -n "$GP_TEST_IGNORE_TERM" ]; then
  while true; do sleep 0.05 2>/dev/null; done
fi
sleep "${GP_TEST_SLEEP:-0}" &
wait $!
exit "${GP_TEST_EXIT:-0}"
"""


@pytest.fixture
def executor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalExecutor]:
    fake = tmp_path / "fake-python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "parent-secret")
    monkeypatch.setenv("GRADPILOT_API_TOKENS", '["parent-token-0123456789"]')
    settings = Settings(home=tmp_path / "home", local_python=str(fake), local_max_parallel=2)
    ex = LocalExecutor(settings, grace_s=1.0, poll_interval_s=0.05)
    try:
        yield ex
    finally:
        ex.close()


def _job(attempt: int, **env: str) -> JobSubmission:
    name = job_name("run12345678", 0, attempt)
    return JobSubmission(
        job_id=f"job-{attempt}",
        run_id="run12345678",
        generation=0,
        attempt=attempt,
        name=name,
        environment={"GRADPILOT_JOB_ID": f"job-{attempt}", **env},
    )


def _wait_state(ex: LocalExecutor, external_id: str, states: set[str], timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = ex.status([external_id])[external_id].state
        if state in states:
            return state
        time.sleep(0.05)
    raise AssertionError(f"{external_id} stayed {state}")


def _wait_ready(ex: LocalExecutor, external_id: str, timeout: float = 20) -> None:
    """Until the stand-in worker has installed its SIGTERM trap (it then prints "ready")."""
    _wait_state(ex, external_id, {"running"})
    deadline = time.monotonic() + timeout
    while "ready" not in Path(ex.log_location(external_id) or "").read_text():
        assert time.monotonic() < deadline, "the stand-in worker never got ready"
        time.sleep(0.02)


def test_is_an_executor(executor: LocalExecutor) -> None:
    assert isinstance(executor, Executor)


@pytest.mark.parametrize(
    ("code", "state", "infrastructure"),
    [
        ("0", "succeeded", False),
        ("3", "failed", False),
        ("4", "failed", True),
        ("5", "failed", True),
        ("6", "failed", False),
        ("1", "failed", False),
    ],
)
def test_exit_codes_map_to_states(
    executor: LocalExecutor, code: str, state: str, infrastructure: bool
) -> None:
    external_id = executor.submit(_job(0, GP_TEST_EXIT=code))
    _wait_state(executor, external_id, {"succeeded", "failed"})
    status = executor.status([external_id])[external_id]
    assert (status.state, status.exit_code, status.infrastructure_failure) == (
        state,
        int(code),
        infrastructure,
    )
    assert status.reason is None if code == "0" else status.reason


def test_environment_and_log(executor: LocalExecutor) -> None:
    external_id = executor.submit(_job(0, AWS_ACCESS_KEY_ID="job-key"))
    _wait_state(executor, external_id, {"succeeded"})
    location = executor.log_location(external_id)
    assert location is not None and location.startswith(str(executor.settings.home / "logs"))
    text = Path(location).read_text()
    assert "argv: -m worker" in text
    # Only what the submission passes: not the parent's AWS secret nor its API tokens.
    assert "aws: none job-key" in text
    assert "job: job-0 secret: none" in text


def test_queue_beyond_the_parallel_limit(executor: LocalExecutor) -> None:
    ids = [executor.submit(_job(i, GP_TEST_SLEEP="30")) for i in range(3)]
    _wait_state(executor, ids[0], {"running"})
    states = {i: s.state for i, s in executor.status(ids).items()}
    assert sorted(states.values()) == ["running", "running", "submitted"]
    queued = next(i for i, s in states.items() if s == "submitted")
    first = next(i for i, s in states.items() if s == "running")
    _wait_ready(executor, first)
    executor.cancel(first, "make room")
    assert _wait_state(executor, first, {"cancelled"}) == "cancelled"
    _wait_state(executor, queued, {"running"})
    status = executor.status([first])[first]
    assert status.exit_code == 5 and status.reason == "make room"
    assert "got-term" in Path(status.log_location or "").read_text()


def test_cancel_a_queued_job(executor: LocalExecutor) -> None:
    ids = [executor.submit(_job(i, GP_TEST_SLEEP="30")) for i in range(3)]
    queued = next(i for i, s in executor.status(ids).items() if s.state == "submitted")
    executor.cancel(queued, "not needed")
    status = executor.status([queued])[queued]
    assert status.state == "cancelled" and status.exit_code is None


def test_cancel_escalates_to_sigkill(executor: LocalExecutor) -> None:
    external_id = executor.submit(_job(0, GP_TEST_IGNORE_TERM="1"))
    _wait_ready(executor, external_id)
    executor.cancel(external_id, "stop")
    _wait_state(executor, external_id, {"cancelled"}, timeout=10)
    assert executor.status([external_id])[external_id].exit_code == 137


def test_submit_is_idempotent_by_name(executor: LocalExecutor) -> None:
    first = executor.submit(_job(0, GP_TEST_SLEEP="30"))
    assert executor.submit(_job(0, GP_TEST_SLEEP="30")) == first
    assert executor.submit(_job(1, GP_TEST_SLEEP="30")) != first
    executor.cancel(first, "done")
    _wait_state(executor, first, {"cancelled"})
    # Also after it ended: a retried submit must not run the same attempt again.
    assert executor.submit(_job(0)) == first
    assert executor.status([first])[first].state == "cancelled"


def test_unknown_ids(executor: LocalExecutor) -> None:
    status = executor.status(["local-nope"])["local-nope"]
    assert status.state == "unknown"
    executor.cancel("local-nope", "x")  # no error
    assert executor.log_location("local-nope") is None


def test_killed_worker_is_an_infrastructure_failure(executor: LocalExecutor) -> None:
    external_id = executor.submit(_job(0, GP_TEST_SLEEP="30"))
    _wait_state(executor, external_id, {"running"})
    pid = int(executor.status([external_id])[external_id].extra["pid"])
    os.kill(pid, 9)
    _wait_state(executor, external_id, {"failed"})
    status = executor.status([external_id])[external_id]
    assert status.exit_code == 137 and status.infrastructure_failure
    assert status.reason == "killed by SIGKILL"


def test_close_stops_running_workers(tmp_path: Path, executor: LocalExecutor) -> None:
    external_id = executor.submit(_job(0, GP_TEST_SLEEP="30"))
    _wait_state(executor, external_id, {"running"})
    executor.close()
    assert executor.status([external_id])[external_id].state == "cancelled"
    with pytest.raises(Exception, match="closed"):
        executor.submit(_job(1))


def test_a_restarted_executor_adopts_a_live_worker(tmp_path: Path) -> None:
    """A control plane that restarts sees the previous one's still-running worker as running
    (not lost), and as unknown once it has exited."""
    import subprocess
    import sys

    settings = Settings(home=tmp_path / "home")
    work = settings.home / "work" / "local-gp-x-g0-a1-abc"
    work.mkdir(parents=True)
    # A stand-in with the worker's command line that just sleeps.
    fake = tmp_path / "worker"
    fake.mkdir()
    (fake / "__main__.py").write_text("import time\ntime.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-m", "worker"], cwd=tmp_path, start_new_session=True)
    try:
        (work / "pid").write_text(str(proc.pid))
        executor = LocalExecutor(settings)
        try:
            assert (
                executor.status(["local-gp-x-g0-a1-abc"])["local-gp-x-g0-a1-abc"].state == "running"
            )
            executor.cancel("local-gp-x-g0-a1-abc", "test")
            proc.wait(timeout=10)
            st = executor.status(["local-gp-x-g0-a1-abc"])["local-gp-x-g0-a1-abc"]
            assert st.state == "unknown" and "no longer running" in (st.reason or "")
        finally:
            executor.close()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_restarted_executor_finds_the_name_it_submitted(tmp_path: Path) -> None:
    """The name → id map lives on disk: a control plane that crashed after submitting and
    submits the same job again gets the first worker's id, and no second worker starts."""
    fake = tmp_path / "fake-python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    settings = Settings(home=tmp_path / "home", local_python=str(fake))
    first = LocalExecutor(settings, grace_s=1.0, poll_interval_s=0.05)
    external_id = first.submit(_job(0, GP_TEST_SLEEP="30"))
    _wait_ready(first, external_id)
    pid = first.status([external_id])[external_id].extra["pid"]
    # A crash: the executor's memory is gone (close() would stop the worker, so do not).
    first._stop.set()
    second = LocalExecutor(settings, grace_s=1.0, poll_interval_s=0.05)
    try:
        assert second.submit(_job(0, GP_TEST_SLEEP="30")) == external_id
        status = second.status([external_id])[external_id]
        assert status.state == "running" and status.extra["pid"] == pid
        logs = list((settings.home / "logs").glob("*.log"))
        assert len(logs) == 1  # one worker started, not two
        second.cancel(external_id, "test over")
    finally:
        second.close()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(int(pid), 9)


def test_attempt_timeout_stops_the_worker(executor: LocalExecutor) -> None:
    job = _job(0, GP_TEST_SLEEP="30")
    external_id = executor.submit(
        JobSubmission(**{**job.__dict__, "timeout_s": 1})  # one second
    )
    _wait_ready(executor, external_id)
    assert _wait_state(executor, external_id, {"failed"}, timeout=10) == "failed"
    status = executor.status([external_id])[external_id]
    assert status.reason and status.reason.startswith("attempt timeout")
    assert status.exit_code == 5  # the worker checkpointed on SIGTERM
    assert status.extra["timed_out"] == "true"


def test_attempt_timeout_escalates_to_sigkill(executor: LocalExecutor) -> None:
    job = _job(0, GP_TEST_IGNORE_TERM="1")
    external_id = executor.submit(JobSubmission(**{**job.__dict__, "timeout_s": 1}))
    _wait_ready(executor, external_id)
    assert _wait_state(executor, external_id, {"failed"}, timeout=10) == "failed"
    assert executor.status([external_id])[external_id].exit_code == 137
