"""A control plane on Postgres whose executor is the real ``BatchExecutor`` talking to the
fault-injecting Batch (``tests.support.fake_batch``), which runs real ``python -m worker``
processes; the API, the controller and the real agent graph run in this process."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from sqlalchemy import select

from service.api.app import build_state
from service.app import create_app
from service.cli.client import ApiClient
from service.db.migrate import upgrade
from service.db.models import EpochSummary, Job
from service.executors.batch import BatchExecutor
from service.server import control_plane, free_port
from service.settings import Settings
from tests.support.factories import USER_TOKEN
from tests.support.fake_batch import FakeBatch, fake_credentials
from tests.support.paths import ROOT

_EPOCH_LINE = re.compile(rb"worker\.\w+: epoch (\d+): train loss")


@dataclass
class ChaosStack:
    settings: Settings
    fake: FakeBatch
    api: ApiClient
    state: Any

    def wait(self, run_id: str, timeout_s: float = 300) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        run: dict[str, Any] = {}
        while time.monotonic() < deadline:
            run = self.api.get(f"/v1/runs/{run_id}")
            if run["status"] in ("succeeded", "failed", "cancelled"):
                return run
            time.sleep(0.3)
        raise AssertionError(f"run {run_id} did not end in {timeout_s}s: {run}")

    def jobs(self, run_id: str) -> list[Job]:
        with self.state.sessions() as session:
            rows = list(session.execute(select(Job).where(Job.run_id == run_id)).scalars())
            session.expunge_all()
            return rows

    def summaries(self, run_id: str) -> list[int]:
        """The epochs of the run's stored summaries (one row each)."""
        with self.state.sessions() as session:
            return sorted(
                session.execute(
                    select(EpochSummary.epoch).where(EpochSummary.run_id == run_id)
                ).scalars()
            )

    def epochs_trained(self, gradpilot_job_id: str) -> list[int]:
        """Every epoch the job's processes trained, from their own output, in order."""
        epochs: list[int] = []
        for batch_id in self.fake.find(gradpilot_job_id):
            for record in [r for r in self.fake.processes if r.batch_job_id == batch_id]:
                text = self.fake.log_path(batch_id, record.attempt).read_bytes()
                epochs += [int(m) for m in _EPOCH_LINE.findall(text)]
        return epochs

    def wait_for_epochs(self, job_id: str, count: int, timeout_s: float = 120) -> None:
        """Until ``count`` epochs of the job have been trained (over all its attempts)."""
        deadline = time.monotonic() + timeout_s
        while len(self.epochs_trained(job_id)) < count:
            assert time.monotonic() < deadline, f"job {job_id} trained no {count} epochs"
            time.sleep(0.1)


@pytest.fixture
def chaos(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ChaosStack]:
    for key, value in fake_credentials().items():
        monkeypatch.setenv(key, value)
    with FakeBatch(
        workdir=tmp_path / "batch",
        step_s=0.05,
        reclaim_grace_s=10,
        stop_timeout_s=5,
        env={"PYTHONPATH": str(ROOT), "GRADPILOT_FINISH_DEADLINE_S": "60"},
    ) as fake:
        settings = Settings(
            home=tmp_path / "home",
            database_url=postgres_url,
            api_tokens=[USER_TOKEN],
            port=free_port(),
            controller_interval_s=0.2,
            job_report_grace_s=5,
            batch_job_queue="gp-queue",
            batch_job_definition="gp-worker:1",
            aws_endpoint_url=fake.url,
        )
        settings.ensure_home()
        upgrade(postgres_url)
        state = build_state(settings)
        app = create_app(settings, state=state)
        server = uvicorn.Server(uvicorn.Config(app, port=settings.port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        executor = BatchExecutor(settings)
        try:
            with control_plane(settings, state.sessions, state.artifacts, executor=executor):
                yield ChaosStack(
                    settings, fake, ApiClient(settings.resolved_public_url, USER_TOKEN), state
                )
        finally:
            server.should_exit = True
            thread.join(timeout=10)
            state.engine.dispose()
