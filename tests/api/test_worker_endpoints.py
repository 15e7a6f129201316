"""Worker endpoints: spec, summaries (idempotent), checkpoints, heartbeat, finish; token scope."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.support.factories import add_job, run_body, summary


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def checkpoint_uri(client: TestClient, job_id: str, token: str, name: str) -> str:
    """A URI inside the job's own checkpoint folder (the only place it may register)."""
    spec = client.get(f"/v1/jobs/{job_id}/spec", headers=_bearer(token)).json()
    return f"{spec['artifact_prefix']}/checkpoints/{job_id}/{name}"


def _run_and_job(client: TestClient) -> tuple[str, str, str]:
    run = client.post("/v1/runs", json=run_body()).json()
    job_id, token = add_job(client, run["id"], epoch_start=0, epochs=3)
    return run["id"], job_id, token


def test_spec_with_job_token(client: TestClient) -> None:
    run_id, job_id, token = _run_and_job(client)
    spec = client.get(f"/v1/jobs/{job_id}/spec", headers=_bearer(token)).json()
    assert spec["job_id"] == job_id and spec["run_id"] == run_id
    assert "build_model" in spec["model_source"]
    assert spec["epochs"] == 3 and spec["dataset"]["name"] == "synthetic"
    assert spec["artifact_prefix"].startswith("file://") and run_id in spec["artifact_prefix"]


def test_summaries_are_idempotent(client: TestClient) -> None:
    run_id, job_id, token = _run_and_job(client)
    h = _bearer(token)
    r = client.post(
        f"/v1/jobs/{job_id}/summaries", headers=h, json={"summaries": [summary(0), summary(1)]}
    )
    assert r.status_code == 200 and r.json() == {"accepted": 2, "duplicates": 0}
    r = client.post(
        f"/v1/jobs/{job_id}/summaries", headers=h, json={"summaries": [summary(1), summary(2)]}
    )
    assert r.json() == {"accepted": 1, "duplicates": 1}
    r = client.post(f"/v1/jobs/{job_id}/summaries", headers=h, json={"summaries": [summary(2)]})
    assert r.status_code == 200 and r.json() == {"accepted": 0, "duplicates": 1}
    metrics = client.get(f"/v1/runs/{run_id}/metrics").json()
    assert [m["epoch"] for m in metrics] == [0, 1, 2]
    assert metrics[0]["grad_layers"]["0.weight"]["max"] == 1.0
    assert client.get(f"/v1/runs/{run_id}").json()["epochs"] == 3


def test_checkpoint_heartbeat_finish(client: TestClient) -> None:
    run_id, job_id, token = _run_and_job(client)
    h = _bearer(token)
    assert client.post(f"/v1/jobs/{job_id}/heartbeat", headers=h, json={"epoch": 0}).json() == {
        "cancel_requested": False
    }
    assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "running"
    uri = checkpoint_uri(client, job_id, token, "e000002-s0000000.pt")
    r = client.post(f"/v1/jobs/{job_id}/checkpoints", headers=h, json={"uri": uri, "epoch": 1})
    assert r.status_code == 200
    client.post(
        f"/v1/jobs/{job_id}/summaries", headers=h, json={"summaries": [summary(0), summary(1)]}
    )
    r = client.post(
        f"/v1/jobs/{job_id}/finish",
        headers=h,
        json={"status": "succeeded", "exit_code": 0, "test_accuracy": 0.5},
    )
    assert r.status_code == 200
    job = r.json()
    assert job["status"] == "succeeded" and job["checkpoint_uri"] == uri
    assert job["best_val_accuracy"] == summary(1)["val_accuracy"] and job["test_accuracy"] == 0.5
    # The same finish again is idempotent; a different one conflicts.
    assert (
        client.post(
            f"/v1/jobs/{job_id}/finish", headers=h, json={"status": "succeeded"}
        ).status_code
        == 200
    )
    r = client.post(
        f"/v1/jobs/{job_id}/finish", headers=h, json={"status": "failed", "error_kind": "code"}
    )
    assert r.status_code == 409


def test_cancelled_run_tells_the_worker(client: TestClient) -> None:
    run_id, job_id, token = _run_and_job(client)
    client.post(f"/v1/runs/{run_id}/cancel")
    r = client.post(f"/v1/jobs/{job_id}/heartbeat", headers=_bearer(token), json={})
    assert r.json() == {"cancel_requested": True}


def test_auth(client: TestClient) -> None:
    run_id, job_id, token = _run_and_job(client)
    _, other_job, other_token = _run_and_job(client)
    anon = {"Authorization": ""}
    assert client.get("/v1/runs", headers=anon).status_code == 401
    assert client.get("/v1/runs", headers=_bearer("not-a-token")).status_code == 401
    assert client.get(f"/v1/jobs/{job_id}/spec", headers=anon).status_code == 401
    # A job token reaches only its own job.
    r = client.get(f"/v1/jobs/{other_job}/spec", headers=_bearer(token))
    assert r.status_code == 403 and "another job" in r.json()["detail"]
    assert (
        client.post(
            f"/v1/jobs/{other_job}/summaries",
            headers=_bearer(token),
            json={"summaries": [summary(0)]},
        ).status_code
        == 403
    )
    assert client.get("/v1/runs", headers=_bearer(token)).status_code == 403
    assert client.get(f"/v1/jobs/{job_id}", headers=_bearer(token)).status_code == 403
    # The user may read any job's spec.
    assert client.get(f"/v1/jobs/{other_job}/spec").status_code == 200


def test_summaries_on_postgres(pg_client: TestClient) -> None:
    run = pg_client.post("/v1/runs", json=run_body()).json()
    job_id, token = add_job(pg_client, run["id"], epochs=3)
    h = _bearer(token)
    assert pg_client.post(
        f"/v1/jobs/{job_id}/summaries", headers=h, json={"summaries": [summary(0), summary(1)]}
    ).json() == {"accepted": 2, "duplicates": 0}
    assert pg_client.post(
        f"/v1/jobs/{job_id}/summaries", headers=h, json={"summaries": [summary(0), summary(2)]}
    ).json() == {"accepted": 1, "duplicates": 1}
    assert len(pg_client.get(f"/v1/runs/{run['id']}/metrics").json()) == 3
