"""Concurrent requests that must not hurt each other: a bad summaries post fails only itself
(group commit falls back to per-request writes), and of 50 concurrent finishes of one job the
first terminal state wins whole while the others get 409."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, func, select

from service.db.models import EpochSummary, Job, utcnow
from service.errors import InvalidInput
from service.ingest import SummaryRow, SummaryWriter
from service.schemas.summaries import EpochSummaryIn
from tests.support.factories import add_job, run_body, summary


async def _concurrently(app: Any, requests: list[tuple[str, str, dict[str, Any]]]) -> list[Any]:
    """POST every (path, token, body) at once; returns the responses in order."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:

        async def one(path: str, token: str, body: dict[str, Any]) -> httpx.Response:
            return await c.post(path, headers={"Authorization": f"Bearer {token}"}, json=body)

        return await asyncio.gather(*(one(*r) for r in requests))


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
def test_a_bad_summaries_post_fails_only_itself(db: str, request: pytest.FixtureRequest) -> None:
    client: TestClient = request.getfixturevalue("client" if db == "sqlite" else "pg_client")
    state = client.app.state.gradpilot  # type: ignore[attr-defined]
    run_id = client.post("/v1/runs", json=run_body()).json()["id"]
    jobs = [add_job(client, run_id, generation=g, epochs=5) for g in range(30)]
    # A third of the jobs are deleted after their token and segment were cached (as for a run
    # deleted while its workers still post): their rows can never be stored.
    gone = {job_id for job_id, _ in jobs[::3]}
    for job_id, token in jobs:
        r = client.post(
            f"/v1/jobs/{job_id}/summaries",
            headers={"Authorization": f"Bearer {token}"},
            json={"summaries": [summary(0)]},
        )
        assert r.status_code == 200, r.text
    with state.sessions() as s:
        s.execute(delete(Job).where(Job.id.in_(gone)))
        s.commit()
    posts = [
        (f"/v1/jobs/{job_id}/summaries", token, {"summaries": [summary(1), summary(2)]})
        for job_id, token in jobs
    ]
    responses = asyncio.run(_concurrently(client.app, posts))
    for (job_id, _), r in zip(jobs, responses, strict=True):
        if job_id in gone:
            # refused by the database (422), or, once the token cache has expired, by auth
            assert 400 <= r.status_code < 500, r.text
        else:
            assert r.status_code == 200, r.text
            assert r.json() == {"accepted": 2, "duplicates": 0}
    with state.sessions() as s:
        stored = s.execute(select(func.count(EpochSummary.id))).scalar_one()
    assert stored == 3 * (30 - len(gone))


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
def test_the_writer_answers_each_request_of_a_failed_batch(
    db: str, request: pytest.FixtureRequest
) -> None:
    """At the writer itself: rows the database refuses (an integer beyond any column, slipped
    past validation) fail their own request with a 422, and the batch's others are stored."""
    client: TestClient = request.getfixturevalue("client" if db == "sqlite" else "pg_client")
    sessions = client.app.state.gradpilot.sessions  # type: ignore[attr-defined]
    run_id = client.post("/v1/runs", json=run_body()).json()["id"]
    jobs = [add_job(client, run_id, generation=g, epochs=5)[0] for g in range(30)]

    def row(job_id: str, bad: bool) -> SummaryRow:
        s = EpochSummaryIn.model_validate(summary(0))
        if bad:
            s = s.model_copy(update={"steps": 2**70})
        return SummaryRow(job_id, run_id, 0, utcnow(), s)

    bad = set(jobs[1::4])
    writer = SummaryWriter(sessions)

    async def all_at_once() -> list[object]:
        writes = [writer.write([row(j, j in bad)], 1) for j in jobs]
        return await asyncio.gather(*writes, return_exceptions=True)

    results = asyncio.run(all_at_once())
    for job_id, result in zip(jobs, results, strict=True):
        if job_id in bad:
            assert isinstance(result, InvalidInput), result
        else:
            assert result == (1, 0), result
    with sessions() as s:
        assert s.execute(select(func.count(EpochSummary.id))).scalar_one() == 30 - len(bad)


def test_fifty_concurrent_finishes_first_end_wins(pg_client: TestClient) -> None:
    client = pg_client
    run_id = client.post("/v1/runs", json=run_body()).json()["id"]
    job_id, token = add_job(client, run_id)
    bodies: list[dict[str, Any]] = []
    for i in range(50):
        if i % 2:
            bodies.append(
                {"status": "failed", "error_kind": "code", "exit_code": 3, "message": f"fail {i}"}
            )
        else:
            bodies.append({"status": "succeeded", "exit_code": 0, "test_accuracy": i / 100})
    path = f"/v1/jobs/{job_id}/finish"
    responses = asyncio.run(_concurrently(client.app, [(path, token, b) for b in bodies]))
    codes = {r.status_code for r in responses}
    assert codes <= {200, 409}, [r.text for r in responses if r.status_code not in (200, 409)]
    stored = client.get(f"/v1/jobs/{job_id}").json()
    winner = stored["status"]
    for body, r in zip(bodies, responses, strict=True):
        # everyone who reported the winning end hears 200 (idempotent); everyone else 409
        assert r.status_code == (200 if body["status"] == winner else 409), (body, r.text)
        if r.status_code == 200:
            assert r.json()["status"] == winner
    # the row is one request's account, never a mix of two
    if winner == "succeeded":
        assert stored["error_kind"] is None and stored["error_message"] is None
        assert stored["exit_code"] == 0 and stored["test_accuracy"] is not None
    else:
        assert stored["error_kind"] == "code" and stored["exit_code"] == 3
        assert stored["error_message"].startswith("fail ") and stored["test_accuracy"] is None
    # a heartbeat after the end is refused too
    r = client.post(
        f"/v1/jobs/{job_id}/heartbeat", headers={"Authorization": f"Bearer {token}"}, json={}
    )
    assert r.status_code == 409


def test_concurrent_finishes_on_sqlite(client: TestClient) -> None:
    run_id = client.post("/v1/runs", json=run_body()).json()["id"]
    job_id, token = add_job(client, run_id)
    bodies = [
        {"status": "failed", "error_kind": "infrastructure", "message": f"m{i}"}
        if i % 2
        else {"status": "succeeded"}
        for i in range(20)
    ]
    path = f"/v1/jobs/{job_id}/finish"
    responses = asyncio.run(_concurrently(client.app, [(path, token, b) for b in bodies]))
    winner = client.get(f"/v1/jobs/{job_id}").json()["status"]
    for body, r in zip(bodies, responses, strict=True):
        assert r.status_code == (200 if body["status"] == winner else 409), r.text
