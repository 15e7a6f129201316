"""Group commit: concurrent posts share transactions, and still lose or duplicate nothing."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from service.db.models import EpochSummary
from tests.support.factories import add_job, run_body, summary


async def _post_all(app, posts: list[tuple[str, str, list[int]]]) -> list[dict]:  # type: ignore[no-untyped-def]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:

        async def one(job_id: str, token: str, epochs: list[int]) -> dict:
            r = await c.post(
                f"/v1/jobs/{job_id}/summaries",
                headers={"Authorization": f"Bearer {token}"},
                json={"summaries": [summary(e) for e in epochs]},
            )
            assert r.status_code == 200, r.text
            return r.json()

        return await asyncio.gather(*(one(*p) for p in posts))


@pytest.mark.parametrize("db", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_concurrent_posts_are_exact(db: str, request: pytest.FixtureRequest) -> None:
    client: TestClient = request.getfixturevalue("client" if db == "sqlite" else "pg_client")
    run = client.post("/v1/runs", json=run_body()).json()
    jobs = [add_job(client, run["id"], generation=g, epoch_start=0, epochs=10) for g in range(4)]
    posts = []
    for job_id, token in jobs:
        for start in range(0, 10, 2):  # overlapping windows: every epoch is posted twice
            posts.append((job_id, token, [start, start + 1, min(start + 2, 9)]))
            posts.append((job_id, token, [start]))
    acks = asyncio.run(_post_all(client.app, posts))
    assert sum(a["accepted"] for a in acks) == 4 * 10
    assert sum(a["accepted"] + a["duplicates"] for a in acks) == sum(len(p[2]) for p in posts)
    with client.app.state.gradpilot.sessions() as s:  # type: ignore[attr-defined]
        assert s.execute(select(func.count(EpochSummary.id))).scalar_one() == 40
