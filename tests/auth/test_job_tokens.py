"""A job token stops working when its job ends (succeeded, failed, cancelled, superseded) or
is revoked: every worker call then gets 409 (ended) or 401 (revoked), and the worker's client
takes that as "stop", without retrying."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from service.db.models import ApiToken, Job
from tests.support.factories import add_job, run_body, summary
from tests.support.users import bearer
from worker.client import ApiClient as WorkerClient

END_STATES = ["succeeded", "failed", "cancelled", "superseded"]


def _job(client: TestClient) -> tuple[str, str, str]:
    run_id = client.post("/v1/runs", json=run_body()).json()["id"]
    job_id, token = add_job(client, run_id, epochs=3)
    return run_id, job_id, token


def _end(client: TestClient, run_id: str, job_id: str, how: str) -> None:
    """End the job as the controller or the agent would, behind the API's back."""
    sessions = client.app.state.gradpilot.sessions  # type: ignore[attr-defined]
    with sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None
        if how == "superseded":  # the agent retried it: a newer attempt of the generation
            session.add(
                Job(
                    run_id=run_id,
                    generation=job.generation,
                    attempt=job.attempt + 1,
                    architecture_version=0,
                    hyperparameters=job.hyperparameters,
                    epoch_start=0,
                    epochs=3,
                    schedule_total_epochs=3,
                    status="submitted",
                )
            )
        else:
            job.status = how
        session.commit()


def _uri(client: TestClient, job_id: str, token: str) -> str:
    prefix = client.get(f"/v1/jobs/{job_id}/spec", headers=bearer(token)).json()["artifact_prefix"]
    return f"{prefix}/checkpoints/{job_id}/e000001-s0000000.pt"


@pytest.mark.parametrize("how", END_STATES)
def test_an_ended_jobs_token_is_refused(client: TestClient, how: str) -> None:
    run_id, job_id, token = _job(client)
    h = bearer(token)
    uri = _uri(client, job_id, token)
    # While it lives, everything works (and the liveness cache is warm).
    assert client.post(f"/v1/jobs/{job_id}/heartbeat", headers=h, json={}).status_code == 200
    assert (
        client.post(
            f"/v1/jobs/{job_id}/summaries", headers=h, json={"summaries": [summary(0)]}
        ).status_code
        == 200
    )
    client.app.state.gradpilot.live_jobs.clear()  # type: ignore[attr-defined] - as after its TTL
    _end(client, run_id, job_id, how)
    calls = [
        client.post(f"/v1/jobs/{job_id}/summaries", headers=h, json={"summaries": [summary(1)]}),
        client.post(f"/v1/jobs/{job_id}/checkpoints", headers=h, json={"uri": uri, "epoch": 0}),
        client.post(f"/v1/jobs/{job_id}/heartbeat", headers=h, json={"epoch": 1}),
        client.get(f"/v1/jobs/{job_id}/spec", headers=h),
        client.get(f"/v1/jobs/{job_id}/artifact-urls", headers=h),
    ]
    for r in calls:
        assert r.status_code == 409, (r.request.url, r.text)
        assert "no longer works" in r.json()["detail"] and "stop" in r.json()["detail"]
    word = "superseded by attempt 2" if how == "superseded" else f"has ended ({how})"
    assert word in calls[0].json()["detail"]
    # Nothing from the ended job was stored.
    assert [m["epoch"] for m in client.get(f"/v1/runs/{run_id}/metrics").json()] == [0]


def test_a_heartbeat_is_refused_at_once_even_with_a_warm_cache(client: TestClient) -> None:
    run_id, job_id, token = _job(client)
    h = bearer(token)
    assert client.post(f"/v1/jobs/{job_id}/heartbeat", headers=h, json={}).status_code == 200
    _end(client, run_id, job_id, "failed")
    assert client.post(f"/v1/jobs/{job_id}/heartbeat", headers=h, json={}).status_code == 409
    # ... and that answer is remembered for the summaries' hot path.
    r = client.post(f"/v1/jobs/{job_id}/summaries", headers=h, json={"summaries": [summary(0)]})
    assert r.status_code == 409


def test_finish_ends_the_token_but_stays_idempotent(client: TestClient) -> None:
    _, job_id, token = _job(client)
    h = bearer(token)
    done = {"status": "succeeded", "exit_code": 0}
    assert client.post(f"/v1/jobs/{job_id}/finish", headers=h, json=done).status_code == 200
    assert client.post(f"/v1/jobs/{job_id}/finish", headers=h, json=done).status_code == 200
    r = client.post(f"/v1/jobs/{job_id}/summaries", headers=h, json={"summaries": [summary(0)]})
    assert r.status_code == 409


def test_a_revoked_job_token_gets_401(client: TestClient) -> None:
    _, job_id, token = _job(client)
    h = bearer(token)
    assert client.get(f"/v1/jobs/{job_id}/spec", headers=h).status_code == 200  # cached now
    tokens = client.get("/v1/tokens", params={"include_jobs": "true"}).json()["data"]
    (mine,) = [t for t in tokens if t["job_id"] == job_id]
    assert client.delete(f"/v1/tokens/{mine['id']}").status_code == 200
    assert client.get(f"/v1/jobs/{job_id}/spec", headers=h).status_code == 401
    sessions = client.app.state.gradpilot.sessions  # type: ignore[attr-defined]
    with sessions() as session:
        row = session.execute(select(ApiToken).where(ApiToken.job_id == job_id)).scalar_one()
        assert row.revoked_at is not None


def test_the_worker_client_stops_on_an_ended_job(client: TestClient, tmp_path: Path) -> None:
    """Against the real API: once the job has ended, the client sets its queue aside after one
    refused request, answers heartbeats with "stop", and sends nothing more."""
    run_id, job_id, token = _job(client)
    sent: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.url.path)
        r = client.request(
            request.method, str(request.url), headers=dict(request.headers), content=request.content
        )
        return httpx.Response(r.status_code, headers=r.headers, content=r.content)

    worker = WorkerClient(
        "http://testserver",
        job_id,
        token,
        spool_dir=tmp_path / "spool",
        transport=httpx.MockTransport(handler),
    )
    assert worker.heartbeat(0) is False
    _end(client, run_id, job_id, "cancelled")
    client.app.state.gradpilot.live_jobs.clear()  # type: ignore[attr-defined]
    for epoch in range(3):
        worker.outbox.add_summary(_summary_in(epoch))
    assert worker.flush(force=True) is True
    assert worker.ended is not None and "has ended (cancelled)" in worker.ended
    assert (
        len(worker.outbox) == 0 and len(list((tmp_path / "spool" / "rejected").glob("*.json"))) == 3
    )
    before = len(sent)
    worker.report_summary(_summary_in(3))
    assert worker.heartbeat(1) is True  # stop, as if cancelled
    assert len(sent) == before  # no request at all: nothing is retried
    assert sent.count(f"/v1/jobs/{job_id}/summaries") == 1  # one refused batch, not one each


def _summary_in(epoch: int):  # type: ignore[no-untyped-def]
    from service.schemas.summaries import EpochSummaryIn

    return EpochSummaryIn.model_validate(summary(epoch))
