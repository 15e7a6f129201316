"""Every malformed request gets a 4xx that says what to fix, and leaves nothing half-written."""

from __future__ import annotations

import math

import pytest
from fastapi.testclient import TestClient

from tests.support.factories import add_job, run_body, summary


def _count_runs(client: TestClient) -> int:
    return client.get("/v1/runs").json()["count"]


@pytest.mark.parametrize(
    ("overrides", "expect"),
    [
        ({"dataset": {"name": "imagenet"}}, "dataset.name"),
        ({"budget": {"epochs_per_job": 0}}, "epochs_per_job"),
        ({"budget": {"max_jobs": 100000}}, "max_jobs"),
        ({"budget": {"target_accuracy": 1.5}}, "target_accuracy"),
        ({"budget": {"epochs_per_job": 10, "max_total_epochs": 5}}, "max_total_epochs"),
        ({"hyperparameters": {"learning_rate": -1}}, "learning_rate"),
        ({"hyperparameters": {"optimizer": "lbfgs"}}, "optimizer"),
        ({"hyperparameters": {"warmup": 3}}, "warmup"),
        ({"model_source": "x" * (256 * 1024 + 1)}, "limit is 262144 bytes"),
        ({"model_source": "   "}, "empty"),
        ({"dataset": {"name": "npz"}}, "needs 'uri'"),
        ({"advisor": "gpt"}, "unknown advisor"),
        ({"approval": "sometimes"}, "approval"),
    ],
)
def test_create_run_refuses_bad_input(client: TestClient, overrides: dict, expect: str) -> None:
    before = _count_runs(client)
    r = client.post("/v1/runs", json=run_body(**overrides))
    assert r.status_code == 422, r.text
    assert expect in r.json()["detail"]
    assert _count_runs(client) == before


def test_model_refused_by_static_check(client: TestClient) -> None:
    r = client.post("/v1/runs", json=run_body(model_source="import os\nos.system('true')\n"))
    assert r.status_code == 422
    assert "static check" in r.json()["detail"] and "os" in r.json()["detail"]
    assert _count_runs(client) == 0


def test_non_utf8_body(client: TestClient) -> None:
    r = client.post(
        "/v1/runs",
        content=b'{"model_source": "\xff\xfe"}',
        headers={"Content-Type": "application/json"},
    )
    assert 400 <= r.status_code < 500
    assert _count_runs(client) == 0


def test_malformed_json(client: TestClient) -> None:
    r = client.post("/v1/runs", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and r.json()["detail"]


def test_summary_outside_segment_and_nonfinite(client: TestClient) -> None:
    run = client.post("/v1/runs", json=run_body()).json()
    job_id, token = add_job(client, run["id"], epoch_start=4, epochs=2)
    h = {"Authorization": f"Bearer {token}"}
    r = client.post(
        f"/v1/jobs/{job_id}/summaries", headers=h, json={"summaries": [summary(4), summary(6)]}
    )
    assert r.status_code == 422 and "outside this job's segment [4, 6)" in r.json()["detail"]
    # Nothing of the refused batch was stored.
    assert client.get(f"/v1/runs/{run['id']}/metrics").json() == []
    bad = summary(4, grad_total={"mean": math.inf, "max": 1, "min": 0})
    r = client.post(
        f"/v1/jobs/{job_id}/summaries",
        headers={**h, "Content-Type": "application/json"},
        content=__import__("json").dumps({"summaries": [bad]}).replace("Infinity", "1e999"),
    )
    assert r.status_code == 422 and "finite" in r.json()["detail"]
    # A diverged loss is a diagnosis, not bad input: stored as null.
    r = client.post(
        f"/v1/jobs/{job_id}/summaries", headers=h, json={"summaries": [summary(4, train_loss=None)]}
    )
    assert r.json()["accepted"] == 1
    r = client.post(f"/v1/jobs/{job_id}/summaries", headers=h, json={"summaries": []})
    assert r.status_code == 422
    prefix = client.get(f"/v1/jobs/{job_id}/spec", headers=h).json()["artifact_prefix"]
    r = client.post(
        f"/v1/jobs/{job_id}/checkpoints",
        headers=h,
        json={"uri": f"{prefix}/checkpoints/{job_id}/e000100-s0000000.pt", "epoch": 99},
    )
    assert r.status_code == 422 and "epoch 99 is outside" in r.json()["detail"]
    r = client.post(f"/v1/jobs/{job_id}/finish", headers=h, json={"status": "failed"})
    assert r.status_code == 422 and "error_kind" in r.json()["detail"]
