"""Spot reclaims, twice in one segment, on Postgres with real workers and the real graph: AWS
Batch (the fault-injecting double) sends SIGTERM, gives the grace period, and retries the same
job id per the retry strategy; the controller follows the re-queued job instead of killing it.

One scenario, several checks: the run finishes, one summary per epoch, no two processes of one
job alive at once and none left after the run (counted on the Batch side), and no epoch
trained twice (Batch's new attempt of the same job resumes from the job's last checkpoint)."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest

from tests.chaos.conftest import ChaosStack
from tests.support.factories import run_body

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

EPOCHS = 3
#: The scenario's result, run once for the checks of this module (it takes minutes).
_RESULT: dict[str, Any] = {}


def _reclaimed_twice(chaos: ChaosStack) -> dict[str, Any]:
    if not _RESULT:
        _RESULT.update(_play(chaos))
    return _RESULT


def _play(chaos: ChaosStack) -> dict[str, Any]:
    body = run_body(
        dataset={"name": "synthetic", "synthetic_samples": 4096},
        budget={"epochs_per_job": EPOCHS, "max_jobs": 1, "patience": 5},
    )
    run_id = chaos.api.post("/v1/runs", body)["id"]
    # The first job of the run (a baseline of EPOCHS epochs).
    deadline = time.monotonic() + 120
    while not chaos.jobs(run_id) or not chaos.jobs(run_id)[0].external_id:
        assert time.monotonic() < deadline, "the run's first job was never submitted"
        time.sleep(0.1)
    job = chaos.jobs(run_id)[0]
    batch_id = job.external_id
    assert batch_id
    for reclaim in range(2):
        chaos.wait_for_epochs(job.id, reclaim + 1)
        chaos.fake.wait_for(batch_id, ["RUNNING"])
        chaos.fake.reclaim(batch_id)
        chaos.fake.wait_attempts(batch_id, reclaim + 1)
    run = chaos.wait(run_id)
    # The worker reports before it exits: give its process the moment it needs to end.
    chaos.fake.wait_for(batch_id, ["SUCCEEDED", "FAILED"], timeout_s=60)
    described = chaos.fake.job(batch_id)
    return {
        "described": described,
        "terminated": [op for op, _ in chaos.fake.calls if op == "TerminateJob"],
        "jobs": len(chaos.jobs(run_id)),
        "overlaps": chaos.fake.overlaps(),
        "alive": chaos.fake.alive(),
        "run": run,
        "run_id": run_id,
        "job": job,
        "batch_id": batch_id,
        "summaries": chaos.summaries(run_id),
        "trained": chaos.epochs_trained(job.id),
    }


def test_reclaimed_twice_the_run_finishes_once_per_process(chaos: ChaosStack) -> None:
    result = _reclaimed_twice(chaos)
    assert result["run"]["status"] == "succeeded", result["run"]
    described = result["described"]
    reasons = [a["statusReason"] for a in described["attempts"]]
    assert [r.startswith("Host EC2") for r in reasons] == [True, True, False]
    assert described["status"] == "SUCCEEDED"
    # The controller followed the re-queued job: it terminated nothing.
    assert result["terminated"] == []
    # One gradpilot job; Batch ran it three times, never two at once; nothing left running.
    assert result["jobs"] == 1
    assert result["overlaps"] == []
    assert result["alive"] == []
    counts = Counter(result["summaries"])
    assert sorted(counts) == list(range(EPOCHS)) and set(counts.values()) == {1}


def test_reclaimed_twice_no_epoch_is_trained_twice(chaos: ChaosStack) -> None:
    result = _reclaimed_twice(chaos)
    assert result["run"]["status"] == "succeeded"
    assert result["trained"] == list(range(EPOCHS)), result["trained"]
