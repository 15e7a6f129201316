"""Several controller replicas against one Postgres: leases keep each run's graph advanced by one
replica at a time, so no job is submitted twice and the runs finish.

The replicas share one executor, as they share AWS Batch in production (the local executor's
processes belong to the machine that started them)."""

from __future__ import annotations

import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from service.advisors.registry import advisor_factory
from service.agent.checkpointer import open_checkpointer
from service.agent.deps import AgentDeps
from service.agent.graph import build_graph
from service.api.app import build_state
from service.app import create_app
from service.cli.client import ApiClient
from service.controller import leases
from service.controller.reconcile import Controller
from service.db.migrate import upgrade
from service.executors.local import LocalExecutor
from service.sandbox import Sandbox, SandboxLimits
from service.settings import Settings
from tests.support.factories import TINY_MODEL, USER_TOKEN
from tests.support.ports import free_port


def test_claims_are_exclusive(postgres_url: str, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, database_url=postgres_url, api_tokens=[USER_TOKEN])
    upgrade(postgres_url)
    state = build_state(settings)
    from service.db.models import Run

    with state.sessions() as s:
        s.add(
            Run(
                id="r" * 32,
                dataset={},
                hyperparameters={},
                budget={},
                resources={},
                advisor="rules",
            )
        )
        s.commit()
    results: list[list[str]] = []
    barrier = threading.Barrier(8)

    def claim(owner: str) -> None:
        barrier.wait()
        with state.sessions() as s:
            results.append(leases.claim(s, ["r" * 32], owner, 30))

    threads = [threading.Thread(target=claim, args=(f"owner{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(len(r) for r in results) == 1
    state.engine.dispose()


@pytest.mark.slow
def test_two_replicas_finish_runs_without_double_submission(
    postgres_url: str, tmp_path: Path
) -> None:
    settings = Settings(
        home=tmp_path / "home",
        database_url=postgres_url,
        api_tokens=[USER_TOKEN],
        port=free_port(),
        controller_interval_s=0.2,
        local_max_parallel=2,
    )
    settings.ensure_home()
    upgrade(postgres_url)
    state = build_state(settings)
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings, state=state), port=settings.port, log_level="warning")
    )
    api_thread = threading.Thread(target=server.run, daemon=True)
    api_thread.start()
    while not server.started:
        time.sleep(0.05)
    executor = LocalExecutor(settings)
    stop = threading.Event()
    threads: list[threading.Thread] = []
    with ExitStack() as stack:
        for _ in range(2):
            sandbox = stack.enter_context(
                Sandbox(SandboxLimits.from_settings(settings), keep_warm=False)
            )
            checkpointer = stack.enter_context(open_checkpointer(settings))
            deps = AgentDeps(
                settings=settings,
                sessions=state.sessions,
                executor=executor,
                artifacts=state.artifacts,
                advisor_for=advisor_factory(settings),
                validate=sandbox.validate,
            )
            controller = Controller(
                settings, state.sessions, executor, build_graph(deps, checkpointer)
            )
            thread = threading.Thread(target=controller.run_forever, args=(stop,), daemon=True)
            thread.start()
            threads.append(thread)
        try:
            api = ApiClient(settings.resolved_public_url, USER_TOKEN)
            body: dict[str, Any] = {
                "model_source": TINY_MODEL,
                "dataset": {"name": "synthetic", "synthetic_samples": 256},
                "hyperparameters": {"optimizer": "adam", "learning_rate": 0.01},
                "budget": {"epochs_per_job": 1, "max_jobs": 2, "patience": 5},
            }
            run_ids = [api.post("/v1/runs", body)["id"] for _ in range(3)]
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                runs = [api.get(f"/v1/runs/{r}") for r in run_ids]
                if all(r["status"] in ("succeeded", "failed") for r in runs):
                    break
                time.sleep(0.5)
            assert [r["status"] for r in runs] == ["succeeded"] * 3, runs
            for rid in run_ids:
                jobs = api.get(f"/v1/runs/{rid}/jobs")["data"]
                keys = [(j["generation"], j["attempt"]) for j in jobs]
                assert keys == [(0, 1), (1, 1)], keys
                seqs = [d["sequence"] for d in api.get(f"/v1/runs/{rid}/decisions")]
                assert seqs == list(range(len(seqs)))
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=30)
            executor.close()
            server.should_exit = True
            api_thread.join(timeout=10)
            state.engine.dispose()
