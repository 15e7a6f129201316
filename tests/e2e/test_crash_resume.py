"""The control plane is killed (SIGKILL) while a job runs and again around the hand-over to
the next job; restarted, it carries on from LangGraph's checkpoints: the run finishes, no job
(generation, attempt) is submitted twice, and every epoch has exactly one summary."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.factories import TINY_MODEL, USER_TOKEN
from tests.support.ports import free_port
from tests.support.processes import stop

pytestmark = pytest.mark.slow


class Server:
    def __init__(self, home: Path, port: int, log: Path) -> None:
        self.env = {
            **os.environ,
            "GRADPILOT_HOME": str(home),
            "GRADPILOT_PORT": str(port),
            "GRADPILOT_API_TOKENS": f'["{USER_TOKEN}"]',
            "GRADPILOT_CONTROLLER_INTERVAL_S": "0.2",
            "GRADPILOT_JOB_REPORT_GRACE_S": "20",
        }
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.http = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {USER_TOKEN}"}, timeout=30
        )

    def start(self) -> None:
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "service.cli.main", "serve", "--embedded"],
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if self.http.get("/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        raise AssertionError("server did not start:\n" + self.log.read_text()[-3000:])

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def get(self, path: str) -> Any:
        return self.http.get(path).json()


def _wait(predicate, timeout_s: float, what: str, poll_s: float = 0.1) -> Any:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out waiting for {what}")


def test_killed_control_plane_resumes(tmp_path: Path) -> None:
    server = Server(tmp_path / "home", free_port(), tmp_path / "server.log")
    server.start()
    try:
        run = server.http.post(
            "/v1/runs",
            json={
                "model_source": TINY_MODEL,
                "dataset": {"name": "synthetic", "synthetic_samples": 512},
                "hyperparameters": {"optimizer": "sgd", "learning_rate": 0.05, "momentum": 0.9},
                "budget": {"epochs_per_job": 3, "max_jobs": 3, "patience": 10},
            },
        ).json()
        rid = run["id"]

        def jobs() -> list[dict[str, Any]]:
            return server.get(f"/v1/runs/{rid}/jobs")["data"]

        # 1. Between a submission and its outcome: the first job is training.
        _wait(lambda: any(j["status"] == "running" for j in jobs()), 120, "the first job to run")
        server.kill()
        time.sleep(1.0)
        server.start()
        # 2. Around the hand-over: the first job has ended, the next may or may not exist yet.
        _wait(
            lambda: any(j["status"] == "succeeded" for j in jobs()),
            180,
            "the first job to end",
            0.05,
        )
        server.kill()
        server.start()
        final = _wait(
            lambda: (r := server.get(f"/v1/runs/{rid}"))["status"] in ("succeeded", "failed") and r,
            300,
            "the run to end",
            0.5,
        )
        all_jobs = jobs()
        keys = [(j["generation"], j["attempt"]) for j in all_jobs]
        assert final["status"] == "succeeded", (final, all_jobs, server.log.read_text()[-4000:])
        assert len(keys) == len(set(keys)), keys
        assert [j["generation"] for j in all_jobs] == sorted({j["generation"] for j in all_jobs})
        assert all(j["attempt"] == 1 for j in all_jobs), all_jobs  # the kills cost no retries
        metrics = server.get(f"/v1/runs/{rid}/metrics")
        epochs = [m["epoch"] for m in metrics]
        assert epochs == list(range(len(epochs))) and len(epochs) == 3 * len(all_jobs)
        decisions = server.get(f"/v1/runs/{rid}/decisions")
        assert [d["sequence"] for d in decisions] == list(range(len(decisions)))
        assert decisions[-1]["action"] == "finish"
    finally:
        if server.proc:
            stop(server.proc)
