"""The controller's fault paths against the fault-injecting Batch, through the real
``BatchExecutor``: a re-queued job is followed, the heartbeat timeout counts only while the job
runs, a briefly unknown job is forgiven and a lost one is not, the worker's report is waited
for after a failure, a job stuck in RUNNABLE ends its run (or waits), a cancelled run's jobs are
stopped, and a step whose lease was taken over cannot write."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from service.api.app import build_state
from service.controller import fencing, leases, reconcile
from service.controller.reconcile import Controller, CycleStats
from service.db.migrate import upgrade
from service.db.models import Job, Run, utcnow
from service.executors import JobSubmission
from service.executors.batch import BatchExecutor
from service.settings import Settings
from tests.support.fake_batch import OOM_REASON, FakeBatch, fake_credentials

#: A worker that never reports: it sleeps, and exits 5 on SIGTERM.
SLEEPER = """
import signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: sys.exit(5))
time.sleep(60)
"""


@dataclass
class World:
    settings: Settings
    sessions: sessionmaker[Session]
    fake: FakeBatch
    executor: BatchExecutor
    controller: Controller

    def add_job(self, run_id: str | None = None) -> tuple[str, str]:
        """A run with one job submitted to the fake; returns (run id, job id)."""
        with self.sessions() as session:
            run = Run(dataset={}, hyperparameters={}, budget={}, resources={}, advisor="rules")
            if run_id:
                run.id = run_id
            run.status = "running"
            session.add(run)
            session.flush()
            job = Job(
                run_id=run.id,
                generation=0,
                attempt=1,
                architecture_version=0,
                hyperparameters={},
                epoch_start=0,
                epochs=1,
                schedule_total_epochs=1,
                status="submitted",
            )
            session.add(job)
            session.flush()
            job.external_id = self.executor.submit(
                JobSubmission(
                    job_id=job.id,
                    run_id=run.id,
                    generation=0,
                    attempt=1,
                    name=f"gp-{job.id[:12]}",
                    environment={"GRADPILOT_JOB_ID": job.id},
                )
            )
            session.commit()
            return run.id, job.id

    def sync(self) -> CycleStats:
        stats = CycleStats()
        self.controller.sync_jobs(stats)
        return stats

    def job(self, job_id: str) -> Job:
        with self.sessions() as session:
            job = session.get(Job, job_id)
            assert job is not None
            session.expunge(job)
            return job

    def run(self, run_id: str) -> Run:
        with self.sessions() as session:
            run = session.get(Run, run_id)
            assert run is not None
            session.expunge(run)
            return run

    def external(self, job_id: str) -> str:
        external = self.job(job_id).external_id
        assert external
        return external

    def terminated(self) -> list[str]:
        return [body["jobId"] for op, body in self.fake.calls if op == "TerminateJob"]


@contextmanager
def _world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **overrides: Any) -> Iterator[World]:
    for key, value in fake_credentials().items():
        monkeypatch.setenv(key, value)
    with FakeBatch(
        workdir=tmp_path / "batch",
        step_s=0.02,
        reclaim_grace_s=2,
        stop_timeout_s=2,
        command=[sys.executable, "-c", SLEEPER],
    ) as fake:
        values: dict[str, Any] = {
            "home": tmp_path / "home",
            "batch_job_queue": "gp-queue",
            "batch_job_definition": "gp-worker:1",
            "aws_endpoint_url": fake.url,
            "job_heartbeat_timeout_s": 1,
            "batch_runnable_timeout_s": 600,
        }
        values.update(overrides)
        settings = Settings(**values)
        settings.ensure_home()
        upgrade(settings.resolved_database_url)
        state = build_state(settings)
        executor = BatchExecutor(settings)
        controller = Controller(
            settings, state.sessions, executor, graph=None, artifacts=state.artifacts
        )  # type: ignore[arg-type]
        try:
            yield World(settings, state.sessions, fake, executor, controller)
        finally:
            controller.close()
            executor.close()
            state.engine.dispose()


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    with _world(tmp_path, monkeypatch) as world:
        yield world


def _sync_until(world: World, predicate: Any, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        world.sync()
        time.sleep(0.1)


def test_a_requeued_job_is_followed_not_killed(world: World) -> None:
    _, job_id = world.add_job()
    external = world.external(job_id)
    world.fake.wait_for(external, ["RUNNING"])
    _sync_until(world, lambda: world.job(job_id).status == "running")
    with world.sessions() as session:  # its last heartbeat long ago
        row = session.get(Job, job_id)
        assert row is not None
        row.heartbeat_at = utcnow() - timedelta(seconds=30)
        session.commit()
    world.fake.capacity = 0  # after the reclaim it waits in RUNNABLE
    world.fake.reclaim(external)
    world.fake.wait_attempts(external, 1)
    # Longer than the heartbeat timeout, queued again: followed, not killed.
    end = time.monotonic() + 2.5
    while time.monotonic() < end:
        world.sync()
        time.sleep(0.1)
    assert world.job(job_id).status == "submitted"
    assert world.terminated() == []
    world.fake.capacity = None
    world.fake.wait_for(external, ["RUNNING"])
    world.sync()
    # Started again: the old heartbeat does not count against the new attempt at once.
    assert world.job(job_id).status == "running"


def test_no_heartbeat_while_running_stops_the_job(world: World) -> None:
    _, job_id = world.add_job()
    external = world.external(job_id)
    world.fake.wait_for(external, ["RUNNING"])
    _sync_until(world, lambda: world.job(job_id).status == "failed")
    job = world.job(job_id)
    assert job.error_kind == "infrastructure"
    assert "no heartbeat" in (job.error_message or "")
    assert world.terminated() == [external]
    world.fake.wait_for(external, ["FAILED"])
    assert world.fake.alive() == []


def test_a_briefly_unknown_job_is_forgiven_a_lost_one_is_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reconcile, "UNKNOWN_GRACE_S", 1.0)
    with _world(tmp_path, monkeypatch, job_heartbeat_timeout_s=600) as world:
        _unknown_then_lost(world)


def _unknown_then_lost(world: World) -> None:
    _, job_id = world.add_job()
    external = world.external(job_id)
    world.fake.wait_for(external, ["RUNNING"])
    world.sync()
    world.fake.empty_describes(3)
    for _ in range(3):
        world.sync()
    time.sleep(1.2)
    world.sync()  # known again: the unknown spell is forgotten
    assert world.job(job_id).status == "running"
    # Gone for good (Batch forgot it): failed after the grace.
    with world.fake._lock:
        lost = world.fake.jobs.pop(external)
    _sync_until(world, lambda: world.job(job_id).status == "failed")
    assert "does not know this job" in (world.job(job_id).error_message or "")
    with world.fake._lock:
        world.fake.jobs[external] = lost


def test_the_workers_report_is_waited_for_after_a_failure(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reconcile, "FAILED_GRACE_S", 1.5)
    _, job_id = world.add_job()
    external = world.external(job_id)
    world.fake.wait_for(external, ["RUNNING"])
    world.fake.oom(external)
    world.fake.wait_for(external, ["FAILED"])
    world.sync()
    assert world.job(job_id).status in ("submitted", "running")  # within the grace
    _sync_until(world, lambda: world.job(job_id).status == "failed")
    job = world.job(job_id)
    assert job.exit_code == 137 and OOM_REASON in (job.error_message or "")


def test_stuck_in_runnable_ends_the_run_with_the_diagnosis(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _world(tmp_path, monkeypatch, batch_runnable_timeout_s=1) as world:
        _stuck_run_fails(world)


def _stuck_run_fails(world: World) -> None:
    world.fake.capacity = 0
    run_id, job_id = world.add_job()
    external = world.external(job_id)
    world.fake.wait_for(external, ["RUNNABLE"])
    _sync_until(world, lambda: world.run(run_id).status == "failed")
    run, job = world.run(run_id), world.job(job_id)
    assert "waiting for capacity" in (run.error or "")
    assert "quota" in (run.error or "") and "GRADPILOT_BATCH_RUNNABLE_ACTION" in (run.error or "")
    assert job.status == "failed" and job.outcome_delivered
    assert world.terminated() == [external]
    assert world.fake.status(external) == "FAILED"
    assert run.report_uri  # the failed run has its report


def test_stuck_in_runnable_can_wait(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with _world(
        tmp_path, monkeypatch, batch_runnable_action="wait", batch_runnable_timeout_s=1
    ) as world:
        world.fake.capacity = 0
        run_id, job_id = world.add_job()
        external = world.external(job_id)
        world.fake.wait_for(external, ["RUNNABLE"])
        _sync_until(world, lambda: (world.job(job_id).error_message or "").startswith("waiting"))
        assert world.job(job_id).status == "submitted"
        assert world.run(run_id).status == "running"
        world.fake.capacity = None
        world.fake.wait_for(external, ["RUNNING"])
        world.sync()
        assert world.job(job_id).error_message is None  # cleared once it runs


def test_a_cancelled_run_stops_its_jobs_and_gets_a_report(world: World) -> None:
    run_id, job_id = world.add_job()
    external = world.external(job_id)
    world.fake.wait_for(external, ["RUNNING"])
    with world.sessions() as session:
        run = session.get(Run, run_id)
        assert run is not None
        run.cancel_requested, run.status = True, "cancelled"
        session.commit()
    world.controller.stop_cancelled()
    assert world.job(job_id).status == "cancelled"
    assert world.terminated() == [external]
    world.fake.wait_for(external, ["FAILED"])
    assert world.fake.alive() == []
    assert world.run(run_id).report_uri


def test_a_step_whose_lease_was_taken_over_cannot_write(world: World) -> None:
    run_id, _ = world.add_job()
    with world.sessions() as session:
        assert leases.claim(session, [run_id], "replica-a/1", 0.01)
    time.sleep(0.05)  # the lease expires; another replica takes the run over
    with world.sessions() as session:
        assert leases.claim(session, [run_id], "replica-b/1", 30)
    with fencing.fenced(run_id, "replica-a/1"), world.sessions() as session:
        run = session.get(Run, run_id)
        assert run is not None
        run.error = "written by a step that lost its lease"
        with pytest.raises(fencing.LeaseLost):
            session.commit()
    assert world.run(run_id).error is None
    with fencing.fenced(run_id, "replica-b/1"), world.sessions() as session:
        run = session.get(Run, run_id)
        assert run is not None
        run.name = "the owner writes"
        session.commit()
    assert world.run(run_id).name == "the owner writes"


class _TakeoverGraph:
    """A graph whose step finds its lease taken over (another replica claims mid-step) and
    then writes, as a node would."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def get_state(self, config: Any) -> Any:
        run_id = config["configurable"]["thread_id"]
        with self.sessions() as session:  # the other replica (not fenced by this step)
            session.execute(
                Run.__table__.update().where(Run.id == run_id).values(lease_owner="other/1")
            )
            session.commit()
        with self.sessions() as session:
            run = session.get(Run, run_id)
            assert run is not None
            run.name = "stale step"
            session.commit()
        raise AssertionError("unreachable: the write above is fenced")


def test_lease_takeover_drops_the_step_without_failing_the_run(world: World) -> None:
    run_id, _ = world.add_job()
    with world.sessions() as session:
        session.execute(Run.__table__.update().where(Run.id == run_id).values(status="pending"))
        session.commit()
    world.controller.graph = _TakeoverGraph(world.sessions)  # type: ignore[assignment]
    stats = world.controller.cycle()
    run = world.run(run_id)
    assert run.name is None and run.status == "pending" and stats.errors == []
    assert run.lease_owner == "other/1"  # the takeover's lease is not released by the loser
