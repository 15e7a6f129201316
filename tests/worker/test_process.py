"""``python -m worker`` as a process: killed and restarted, stopped by SIGTERM, failing in the
model's code, reporting through an API outage, and under torchrun."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from service.schemas import exit_codes
from tests.support.factories import TINY_CNN, make_spec
from tests.support.fake_api import (
    FakeApi,
    HeartbeatHold,
    run_in_process,
    start_worker,
    worker_env,
)
from tests.support.paths import ROOT
from worker import checkpoint

pytestmark = pytest.mark.slow


def _wait(proc: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> int:
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"worker did not finish:\n{log.read_text()[-4000:]}") from None


def _hold(api: FakeApi, epoch: int, log: Path) -> HeartbeatHold:
    api.hold = HeartbeatHold(epoch)
    return api.hold


def _held(hold: HeartbeatHold, log: Path) -> None:
    assert hold.arrived.wait(120), f"worker never reached the hold:\n{log.read_text()[-4000:]}"


def test_sigkill_then_restart_resumes_from_the_last_checkpoint(
    api: FakeApi, tmp_path: Path
) -> None:
    spec = api.add(make_spec(tmp_path, epochs=4, checkpoint_every=2))
    env = worker_env(api, spec.job_id, tmp_path / "spool")
    log = tmp_path / "worker.log"
    # After epoch 2 the worker sends heartbeat(3) and waits for the answer: kill it there.
    hold = _hold(api, 3, log)
    proc = start_worker(env, log)
    _held(hold, log)
    assert api.epochs("job-1") == [0, 1, 2]
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    hold.release.set()
    proc = start_worker(env, log)
    assert _wait(proc, log) == exit_codes.SUCCESS, log.read_text()[-4000:]
    text = log.read_text()
    assert "resuming this job from" in text and "e000002-s0000000.pt" in text
    # Exactly one summary per epoch: epoch 2 was trained twice, its second report ignored.
    assert api.epochs("job-1") == [0, 1, 2, 3]
    assert api.duplicates >= 1
    assert [f["status"] for _, f in api.finishes] == ["succeeded"]


def test_sigterm_mid_epoch_checkpoints_then_resumes_exactly(
    api: FakeApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = api.add(make_spec(tmp_path, epochs=2, checkpoint_every=5))
    env = worker_env(api, spec.job_id, tmp_path / "spool")
    log = tmp_path / "worker.log"
    hold = _hold(api, 0, log)  # the heartbeat before the first epoch
    proc = start_worker(env, log)
    _held(hold, log)
    proc.send_signal(signal.SIGTERM)
    hold.release.set()
    assert _wait(proc, log) == exit_codes.PREEMPTED, log.read_text()[-4000:]
    store = checkpoint.open_job_store(spec.artifact_prefix)
    found = checkpoint.latest(store, spec.job_id)
    assert found is not None and found.url.endswith("e000000-s0000001.pt")
    assert found.payload["partial"]["count"] == 32  # one step of 32 samples was done
    assert api.finishes == [] and api.epochs("job-1") == []

    assert _wait(start_worker(env, log), log) == exit_codes.SUCCESS, log.read_text()[-4000:]
    assert api.epochs("job-1") == [0, 1]

    # The same job without the interruption measures the same epochs.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the worker processes (OMP_NUM_THREADS=1)
    try:
        reference = make_spec(tmp_path / "ref", "ref", epochs=2, checkpoint_every=5)
        assert run_in_process(api, reference, tmp_path / "ref", monkeypatch) == 0
    finally:
        torch.set_num_threads(threads)
    for epoch in (0, 1):
        got, want = api.summaries["job-1"][epoch], api.summaries["ref"][epoch]
        assert got["steps"] == want["steps"]
        for key in ("train_loss", "val_loss", "train_accuracy", "val_accuracy"):
            assert got[key] == pytest.approx(want[key], rel=1e-5), (epoch, key)
        assert got["grad_total"]["mean"] == pytest.approx(want["grad_total"]["mean"], rel=1e-5)


RAISES = TINY_CNN.replace(
    "        return self.fc(torch.flatten(x, 1))",
    "        return self.fc(x.flatten(2))  # wrong flatten: a shape error",
)


def test_model_error_is_a_code_error_with_traceback(api: FakeApi, tmp_path: Path) -> None:
    spec = api.add(make_spec(tmp_path, source=RAISES))
    log = tmp_path / "worker.log"
    proc = start_worker(worker_env(api, spec.job_id, tmp_path / "spool"), log)
    assert _wait(proc, log) == exit_codes.CODE_ERROR
    ((_, finish),) = api.finishes
    assert finish["status"] == "failed" and finish["error_kind"] == "code"
    assert finish["exit_code"] == exit_codes.CODE_ERROR
    assert "x.flatten(2))  # wrong flatten" in finish["traceback"]
    assert "mat1 and mat2 shapes cannot be multiplied" in finish["message"]


def test_torchrun_two_ranks_only_rank0_reports(api: FakeApi, tmp_path: Path) -> None:
    spec = api.add(make_spec(tmp_path, epochs=2, checkpoint_every=1))
    log = tmp_path / "worker.log"
    env = worker_env(api, spec.job_id, tmp_path / "spool")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "worker",
    ]
    with log.open("wb") as out:
        proc = subprocess.run(
            cmd, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, timeout=240
        )
    assert proc.returncode == 0, log.read_text()[-4000:]
    assert api.epochs("job-1") == [0, 1]
    assert len(api.summary_posts) == 2 and len(api.finishes) == 1
    summary = api.summaries["job-1"][0]
    # 160 training samples shared by two ranks of batch 32: 80 each, 2 full batches per rank.
    assert summary["steps"] == 2
    assert [c["epoch"] for _, c in api.checkpoints] == [0, 1]


def test_local_executor_runs_the_real_worker(api: FakeApi, tmp_path: Path) -> None:
    from service.executors import JobSubmission
    from service.executors.local import LocalExecutor
    from service.settings import Settings

    spec = api.add(make_spec(tmp_path, epochs=1))
    env = worker_env(api, spec.job_id, tmp_path / "spool")
    executor = LocalExecutor(Settings(home=tmp_path / "home"), poll_interval_s=0.1)
    try:
        external_id = executor.submit(
            JobSubmission(
                job_id=spec.job_id,
                run_id=spec.run_id,
                generation=0,
                attempt=0,
                name="gp-run-0123-g0-a0",
                environment={k: v for k, v in env.items() if k.startswith("GRADPILOT_")},
            )
        )
        deadline = time.monotonic() + 120
        while executor.status([external_id])[external_id].state in ("submitted", "running"):
            assert time.monotonic() < deadline, "the worker did not finish"
            time.sleep(0.2)
        status = executor.status([external_id])[external_id]
        log = Path(status.log_location or "").read_text()
        assert status.state == "succeeded", log[-4000:]
        assert "epoch 0: train loss" in log
    finally:
        executor.close()
    assert api.epochs(spec.job_id) == [0]
    assert api.finishes[-1][1]["status"] == "succeeded"
