"""The worker's side of the REST contract in a real HTTP server, and a worker pointed at it.

``FakeApi`` is a FastAPI app served by uvicorn on a free port that validates request bodies
with the real schemas, stores summaries idempotently per (job, epoch) as the real API does, and
records everything it receives. It can refuse requests with 503, or hold a heartbeat until
released (to stop a worker at a known point). The worker is tested against it rather than the
control plane so that a worker test needs no database, controller or agent.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse

from service.schemas.jobs import CheckpointIn, HeartbeatIn, JobFinish, JobSpec
from service.schemas.summaries import EpochSummaryBatch
from tests.support.paths import ROOT
from tests.support.ports import free_port

#: The job token every job of the fake API accepts.
JOB_TOKEN = "test-job-token-0123456789"


@dataclass
class HeartbeatHold:
    epoch: int
    arrived: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)


class FakeApi:
    """The worker endpoints of the REST contract, in memory."""

    def __init__(self) -> None:
        self.specs: dict[str, JobSpec] = {}
        self.summaries: dict[str, dict[int, dict[str, Any]]] = {}
        self.summary_posts: list[tuple[str, list[int]]] = []
        self.duplicates = 0
        self.checkpoints: list[tuple[str, dict[str, Any]]] = []
        self.heartbeats: list[tuple[str, int | None]] = []
        self.finishes: list[tuple[str, dict[str, Any]]] = []
        self.cancel: set[str] = set()
        self.fail_summaries = 0  # refuse this many summary posts with 503
        self.unavailable = False  # refuse everything but the spec with 503
        self.hold: HeartbeatHold | None = None
        self.lock = threading.Lock()
        self.app = self._build()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def add(self, spec: JobSpec) -> JobSpec:
        self.specs[spec.job_id] = spec
        return spec

    def epochs(self, job_id: str) -> list[int]:
        return sorted(self.summaries.get(job_id, {}))

    def _job(self, request: Request, job_id: str) -> JobSpec:
        if request.headers.get("authorization") != f"Bearer {JOB_TOKEN}":
            raise HTTPException(401, "bad token")
        if job_id not in self.specs:
            raise HTTPException(404, f"no job {job_id}")
        return self.specs[job_id]

    def _build(self) -> FastAPI:
        app = FastAPI()

        @app.middleware("http")
        async def outage(request: Request, call_next: Any) -> Any:
            if self.unavailable and not request.url.path.endswith("/spec"):
                return JSONResponse({"detail": "down for maintenance"}, status_code=503)
            return await call_next(request)

        @app.get("/v1/jobs/{job_id}/spec")
        def spec(job_id: str, request: Request) -> dict[str, Any]:
            return self._job(request, job_id).model_dump(mode="json")

        @app.post("/v1/jobs/{job_id}/summaries")
        def summaries(job_id: str, body: EpochSummaryBatch, request: Request) -> Any:
            spec = self._job(request, job_id)
            with self.lock:
                if self.fail_summaries > 0:
                    self.fail_summaries -= 1
                    return JSONResponse({"detail": "try later"}, status_code=503)
                end = spec.epoch_start + spec.epochs
                bad = [s.epoch for s in body.summaries if not spec.epoch_start <= s.epoch < end]
                if bad:
                    raise HTTPException(422, f"epochs {bad} outside [{spec.epoch_start}, {end})")
                stored = self.summaries.setdefault(job_id, {})
                accepted = duplicates = 0
                for s in body.summaries:
                    if s.epoch in stored:
                        duplicates += 1
                    else:
                        stored[s.epoch] = s.model_dump(mode="json")
                        accepted += 1
                self.duplicates += duplicates
                self.summary_posts.append((job_id, [s.epoch for s in body.summaries]))
            return {"accepted": accepted, "duplicates": duplicates}

        @app.post("/v1/jobs/{job_id}/checkpoints")
        def checkpoints(job_id: str, body: CheckpointIn, request: Request) -> dict[str, Any]:
            self._job(request, job_id)
            self.checkpoints.append((job_id, body.model_dump(mode="json")))
            return {"ok": True}

        @app.post("/v1/jobs/{job_id}/heartbeat")
        def heartbeat(job_id: str, body: HeartbeatIn, request: Request) -> dict[str, Any]:
            self._job(request, job_id)
            self.heartbeats.append((job_id, body.epoch))
            hold = self.hold
            if hold is not None and body.epoch == hold.epoch and not hold.arrived.is_set():
                hold.arrived.set()
                hold.release.wait(60)
            return {"cancel_requested": job_id in self.cancel}

        @app.post("/v1/jobs/{job_id}/finish")
        def finish(job_id: str, body: JobFinish, request: Request) -> dict[str, Any]:
            self._job(request, job_id)
            self.finishes.append((job_id, body.model_dump(mode="json")))
            return {"ok": True}

        return app

    def start(self) -> None:
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the fake API did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            assert self._thread is not None
            self._thread.join(20)
            self._server = None


@contextlib.contextmanager
def serving() -> Iterator[FakeApi]:
    """A started ``FakeApi``, stopped afterwards (a held heartbeat is released first)."""
    fake = FakeApi()
    fake.start()
    try:
        yield fake
    finally:
        if fake.hold is not None:
            fake.hold.release.set()
        fake.stop()


def worker_env(api: FakeApi, job_id: str, spool: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k in ("PATH", "HOME", "LANG", "TMPDIR", "PYTHONPATH", "SYSTEMROOT")
    }
    env.update(
        GRADPILOT_API_URL=api.url,
        GRADPILOT_JOB_ID=job_id,
        GRADPILOT_JOB_TOKEN=JOB_TOKEN,
        GRADPILOT_SPOOL_DIR=str(spool),
        GRADPILOT_FINISH_DEADLINE_S="30",
        OMP_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def start_worker(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    log = log_path.open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "worker"], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
    )


def run_in_process(
    api: FakeApi, spec: JobSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> int:
    """Run the worker's main path in this process (no interpreter start-up per test)."""
    from worker import distributed
    from worker.__main__ import _run
    from worker.signals import StopFlag

    api.add(spec)
    for key, value in worker_env(api, spec.job_id, tmp_path / "spool").items():
        monkeypatch.setenv(key, value)
    return _run(distributed.setup(), StopFlag())
