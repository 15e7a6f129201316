"""Reporting survives an unreachable API: summaries wait on disk and are sent later, once."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from service.schemas.jobs import CheckpointIn, JobFinish
from service.schemas.summaries import EpochSummaryIn, NormStats
from tests.support.factories import make_spec
from tests.support.fake_api import JOB_TOKEN, FakeApi
from worker.client import ApiClient, Backoff
from worker.errors import ApiUnavailable, BadSpecError


def _summary(epoch: int) -> EpochSummaryIn:
    stats = NormStats(mean=1.0, max=2.0, min=0.5)
    return EpochSummaryIn(
        epoch=epoch,
        train_loss=1.0,
        val_loss=1.1,
        train_accuracy=0.5,
        val_accuracy=0.4,
        learning_rate=0.1,
        grad_total=stats,
        grad_layers={"fc.weight": stats},
        weight_norms={"fc.weight": 3.0},
        steps=5,
        seconds=1.0,
        samples_per_second=100.0,
    )


def _client(api: FakeApi, spool: Path, **kw: float) -> ApiClient:
    return ApiClient(
        api.url,
        "job-1",
        JOB_TOKEN,
        spool_dir=spool,
        backoff_base_s=kw.get("base", 0.05),
        backoff_max_s=kw.get("max", 0.2),
        timeout_s=2.0,
    )


def test_spool_and_resend_loses_nothing(api: FakeApi, tmp_path: Path) -> None:
    api.add(make_spec(tmp_path, epochs=10))
    client = _client(api, tmp_path / "spool")
    client.report_summary(_summary(0))
    assert api.epochs("job-1") == [0]
    api.stop()  # the API goes away: connection refused
    for epoch in range(1, 6):
        client.report_summary(_summary(epoch))  # returns at once; training would go on
    client.report_checkpoint(CheckpointIn(uri="file:///x/e5.pt", epoch=5))
    assert len(client.outbox) == 6
    client.close()

    # The worker restarts (same spool folder) while the API is still down, then it comes back.
    api.start()
    api.unavailable = True
    restarted = _client(api, tmp_path / "spool")
    restarted.report_summary(_summary(6))
    assert len(restarted.outbox) == 7
    api.unavailable = False
    restarted.finish(JobFinish(status="succeeded", exit_code=0), deadline_s=10)
    assert api.epochs("job-1") == list(range(7))
    assert api.duplicates == 0
    assert [c["epoch"] for _, c in api.checkpoints] == [5]
    assert len(api.finishes) == 1 and len(restarted.outbox) == 0
    # Everything queued while the API was down went in one batch.
    assert sorted(api.summary_posts[-1][1]) == list(range(1, 7))


def test_refused_summary_is_set_aside_and_the_rest_delivered(api: FakeApi, tmp_path: Path) -> None:
    api.add(make_spec(tmp_path, epochs=3))
    api.stop()
    client = _client(api, tmp_path / "spool")
    for epoch in (0, 1, 7, 2):  # 7 is outside the job's epochs: the API says 422
        client.report_summary(_summary(epoch))
    api.start()
    assert client.flush(force=True)
    assert api.epochs("job-1") == [0, 1, 2]
    rejected = list((tmp_path / "spool" / "rejected").glob("summary-*.json"))
    assert [p.name for p in rejected] == ["summary-00000007.json"]


def test_finish_gives_up_after_its_deadline(api: FakeApi, tmp_path: Path) -> None:
    api.add(make_spec(tmp_path))
    api.unavailable = True
    client = _client(api, tmp_path / "spool")
    client.report_summary(_summary(0))
    with pytest.raises(ApiUnavailable, match="could not be sent"):
        client.finish(JobFinish(status="succeeded"), deadline_s=0.5)
    assert len(client.outbox) == 1  # still on disk for a later attempt


def test_spec_errors(api: FakeApi, tmp_path: Path) -> None:
    client = _client(api, tmp_path / "spool")
    with pytest.raises(BadSpecError, match="404"):
        client.get_spec()
    retries = []

    def flaky(request: httpx.Request) -> httpx.Response:
        retries.append(request)
        if len(retries) < 3:
            return httpx.Response(503)
        return httpx.Response(200, json=make_spec(tmp_path).model_dump(mode="json"))

    transport_client = ApiClient(
        "http://api",
        "job-1",
        JOB_TOKEN,
        spool_dir=tmp_path / "s2",
        backoff_base_s=0.01,
        transport=httpx.MockTransport(flaky),
    )
    assert transport_client.get_spec().job_id == "job-1"
    assert len(retries) == 3


def test_heartbeat_backs_off_without_blocking(api: FakeApi, tmp_path: Path) -> None:
    api.add(make_spec(tmp_path))
    client = _client(api, tmp_path / "spool", base=30, max=30)
    api.cancel.add("job-1")
    assert client.heartbeat(0) is True
    api.stop()
    assert client.heartbeat(1) is False
    before = len(api.heartbeats)
    api.start()
    # Inside the backoff window the heartbeat is not even tried.
    assert client.heartbeat(2) is False and len(api.heartbeats) == before


def test_backoff_clock() -> None:
    now = [0.0]
    b = Backoff(1.0, 8.0, clock=lambda: now[0])
    assert b.ready()
    for _ in range(10):
        wait = b.failed()
        assert 0 <= wait <= 8.0
    now[0] = 8.0
    assert b.ready()
    b.succeeded()
    assert b.failures == 0
