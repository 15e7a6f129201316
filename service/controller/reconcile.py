"""The controller's reconcile loop.

Each cycle (1) syncs the states of active jobs from the executor in one batched call,
(2) stops the jobs of cancelled runs, and (3) advances the agent graph of every run that has
something new: a fresh run, a finished job, an answered approval — or, on a full sweep, any
active run (which is how a restarted control plane picks up where it stopped). Advancing is
driven by the graph's own checkpointed state, so doing it twice is harmless.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from langgraph.types import Command
from sqlalchemy import exists, func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from service.agent.graph import AgentGraph, thread_config
from service.agent.state import JobOutcome
from service.controller import leases
from service.db.models import EpochSummary, Job, Run, utcnow
from service.errors import GradpilotError
from service.executors import TERMINAL_EXECUTOR_STATES, Executor, ExecutorStatus
from service.jobs import best_val_accuracy
from service.schemas import exit_codes
from service.schemas.statuses import (
    ACTIVE_JOB_STATUSES,
    TERMINAL_JOB_STATUSES,
    ErrorKind,
    ExecutorState,
    JobStatus,
    RunStatus,
)
from service.settings import Settings

log = logging.getLogger(__name__)

#: runs whose graph may have something to do
ACTIVE_RUN = frozenset({RunStatus.PENDING, RunStatus.RUNNING, RunStatus.AWAITING_APPROVAL})
#: jobs the executor knows about and that have not ended (a pending job is not submitted yet;
#: ``ACTIVE_JOB_STATUSES`` includes it)
ACTIVE_JOB = frozenset({JobStatus.SUBMITTED, JobStatus.RUNNING})
#: what the executor says of a job that has ended, or that it no longer knows
ENDED_STATES = TERMINAL_EXECUTOR_STATES | {ExecutorState.UNKNOWN}
FULL_SWEEP_EVERY_S = 30.0


@dataclass
class CycleStats:
    jobs_synced: int = 0
    jobs_finished: int = 0
    runs_advanced: int = 0
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0


class Controller:
    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        executor: Executor,
        graph: AgentGraph,
        *,
        owner: str | None = None,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.executor = executor
        self.graph = graph
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.lease_ttl_s = max(30.0, 10 * settings.controller_interval_s)
        self._last_sweep = 0.0
        #: job id -> when the executor was first seen reporting it ended without the worker
        self._ended_seen: dict[str, float] = {}

    # ------------------------------------------------------------------ loop

    def run_forever(self, stop: threading.Event) -> None:
        log.info("controller %s started (executor %s)", self.owner, self.executor.name)
        while not stop.is_set():
            try:
                stats = self.cycle()
                if stats.errors:
                    for e in stats.errors:
                        log.error("%s", e)
            except Exception:  # noqa: BLE001 - the loop must outlive one bad cycle
                log.exception("reconcile cycle failed; retrying")
            stop.wait(self.settings.controller_interval_s)
        log.info("controller %s stopped", self.owner)

    def cycle(self) -> CycleStats:
        t0 = time.monotonic()
        stats = CycleStats()
        self.sync_jobs(stats)
        self.stop_cancelled()
        full = time.monotonic() - self._last_sweep >= FULL_SWEEP_EVERY_S
        if full:
            self._last_sweep = time.monotonic()
        for run_id in self.runs_needing_attention(full=full):
            with self.sessions() as session:
                if not leases.claim(session, [run_id], self.owner, self.lease_ttl_s):
                    continue
            try:
                with leases.kept(self.sessions, run_id, self.owner, self.lease_ttl_s):
                    if self.advance(run_id):
                        stats.runs_advanced += 1
            except Exception as e:  # noqa: BLE001 - one broken run must not stop the others
                message = e.message if isinstance(e, GradpilotError) else f"{type(e).__name__}: {e}"
                stats.errors.append(f"run {run_id}: {message}")
                self._fail_run(run_id, message, traceback.format_exc())
        stats.seconds = time.monotonic() - t0
        return stats

    # ------------------------------------------------------------------ jobs

    def sync_jobs(self, stats: CycleStats) -> None:
        """Bring job states up to date with the executor (one batched status call)."""
        with self.sessions() as session:
            jobs = list(
                session.execute(
                    select(Job).where(Job.status.in_(ACTIVE_JOB), Job.external_id.is_not(None))
                ).scalars()
            )
            if not jobs:
                return
            statuses = self.executor.status([j.external_id for j in jobs if j.external_id])
            stats.jobs_synced = len(jobs)
            now = utcnow()
            stale_before = now - timedelta(seconds=self.settings.job_heartbeat_timeout_s)
            for job in jobs:
                st = statuses.get(job.external_id or "")
                if st is None:
                    continue
                if st.log_location and not job.log_location:
                    job.log_location = st.log_location
                if st.state == ExecutorState.RUNNING and job.status == JobStatus.SUBMITTED:
                    job.status = JobStatus.RUNNING
                    job.started_at = job.started_at or now
                elif st.state in ENDED_STATES:
                    # The worker normally posts its own finish first; this is the fallback
                    # for a worker that died without a word (SIGKILL, OOM, lost host).
                    session.refresh(job)
                    if job.status in ACTIVE_JOB and self._report_overdue(job.id, st.state):
                        self._finish_from_executor(session, job, st)
                        stats.jobs_finished += 1
                elif (
                    job.status == JobStatus.RUNNING
                    and job.heartbeat_at is not None
                    and job.heartbeat_at.replace(tzinfo=now.tzinfo) < stale_before
                ):
                    self.executor.cancel(job.external_id or "", "no heartbeat")
                    job.status = JobStatus.FAILED
                    job.error_kind = ErrorKind.INFRASTRUCTURE
                    job.error_message = (
                        f"no heartbeat for {self.settings.job_heartbeat_timeout_s}s; the worker "
                        "was presumed lost and stopped"
                    )
                    job.finished_at = now
                    stats.jobs_finished += 1
            session.commit()

    def _report_overdue(self, job_id: str, state: ExecutorState) -> bool:
        """Give the worker's own finish report time to land before taking the executor's word:
        long after a success (the report may be spooled), briefly after a failure."""
        seen = self._ended_seen.setdefault(job_id, time.monotonic())
        grace = self.settings.job_report_grace_s
        if state != ExecutorState.SUCCEEDED:
            grace = min(grace, 3.0)
        if time.monotonic() - seen < grace:
            return False
        del self._ended_seen[job_id]
        return True

    def _finish_from_executor(self, session: Session, job: Job, st: ExecutorStatus) -> None:
        job.finished_at = utcnow()
        job.exit_code = st.exit_code
        job.best_val_accuracy = best_val_accuracy(session, job.id)
        if st.state == ExecutorState.SUCCEEDED or st.exit_code == exit_codes.SUCCESS:
            job.status = JobStatus.SUCCEEDED
            return
        if st.state == ExecutorState.CANCELLED:
            job.status = JobStatus.CANCELLED
            job.error_kind = ErrorKind.CANCELLED
            return
        job.status = JobStatus.FAILED
        if st.exit_code in (exit_codes.CODE_ERROR, exit_codes.BAD_SPEC):
            job.error_kind = ErrorKind.CODE
        else:
            job.error_kind = ErrorKind.INFRASTRUCTURE
        job.error_message = st.reason or (
            f"the worker exited with code {st.exit_code} without reporting"
            if st.state != ExecutorState.UNKNOWN
            else "the executor no longer knows this job (lost with its host?)"
        )

    def stop_cancelled(self) -> None:
        with self.sessions() as session:
            jobs = list(
                session.execute(
                    select(Job)
                    .join(Run, Run.id == Job.run_id)
                    .where(
                        Run.cancel_requested.is_(True),
                        Job.status.in_(ACTIVE_JOB_STATUSES),
                    )
                ).scalars()
            )
            for job in jobs:
                if job.external_id:
                    try:
                        self.executor.cancel(job.external_id, "run cancelled by the user")
                    except Exception as e:  # noqa: BLE001 - cancel is best effort; it is logged
                        log.warning("cancelling job %s: %s", job.id, e)
                job.status = JobStatus.CANCELLED
                job.error_kind = ErrorKind.CANCELLED
                job.finished_at = utcnow()
                job.outcome_delivered = True
            session.commit()

    # ------------------------------------------------------------------ runs

    def runs_needing_attention(self, *, full: bool) -> list[str]:
        with self.sessions() as session:
            active = (Run.status.in_(ACTIVE_RUN)) & (Run.cancel_requested.is_(False))
            if full:
                return list(session.execute(select(Run.id).where(active)).scalars())
            undelivered = exists().where(
                Job.run_id == Run.id,
                Job.status.in_(TERMINAL_JOB_STATUSES),
                Job.outcome_delivered.is_(False),
            )
            return list(
                session.execute(
                    select(Run.id).where(
                        active,
                        or_(
                            Run.status == RunStatus.PENDING,
                            undelivered,
                            (Run.status == RunStatus.AWAITING_APPROVAL)
                            & Run.approval_response.is_not(None),
                        ),
                    )
                ).scalars()
            )

    def advance(self, run_id: str) -> bool:
        """Move the run's graph forward if it can; True when it did."""
        config = thread_config(run_id)
        snapshot = self.graph.get_state(config)
        if not snapshot.values and not snapshot.next:
            log.info("run %s: starting the agent", run_id)
            self.graph.invoke({"run_id": run_id}, config, durability="sync")
            return True
        interrupts = list(getattr(snapshot, "interrupts", ()) or ())
        if interrupts:
            # A JobPause or an ApprovalPause (service.agent.state)
            payload: Mapping[str, Any] = interrupts[0].value or {}
            if payload.get("kind") == "job":
                outcome = self._outcome(payload["job_id"])
                if outcome is None:
                    return False
                log.info("run %s: job %s ended (%s)", run_id, payload["job_id"], outcome["status"])
                self.graph.invoke(Command(resume=outcome), config, durability="sync")
                with self.sessions() as session:
                    job = session.get(Job, payload["job_id"])
                    if job is not None:
                        job.outcome_delivered = True
                    session.commit()
                return True
            if payload.get("kind") == "approval":
                with self.sessions() as session:
                    run = session.get(Run, run_id)
                    answer = run.approval_response if run else None  # an ApprovalAnswer
                if answer is None:
                    return False
                log.info("run %s: approval answered (%s)", run_id, answer)
                self.graph.invoke(Command(resume=answer), config, durability="sync")
                return True
            return False
        if snapshot.next or snapshot.tasks:
            # The control plane stopped mid-step (a resumed node may hold its resume value as
            # a pending write): carry on from the last checkpoint.
            log.info(
                "run %s: resuming after a restart at %s", run_id, [t.name for t in snapshot.tasks]
            )
            self.graph.invoke(None, config, durability="sync")
            return True
        return False

    def _outcome(self, job_id: str) -> JobOutcome | None:
        with self.sessions() as session:
            job = session.get(Job, job_id)
            if job is None or job.status not in TERMINAL_JOB_STATUSES:
                return None
            last_epoch = session.execute(
                select(func.max(EpochSummary.epoch)).where(EpochSummary.job_id == job_id)
            ).scalar_one()
            return JobOutcome(
                job_id=job.id,
                status=job.status,
                error_kind=job.error_kind,
                message=job.error_message,
                traceback=(job.traceback or "")[-20_000:] or None,
                best_val_accuracy=job.best_val_accuracy,
                last_epoch=last_epoch,
            )

    def _fail_run(self, run_id: str, message: str, tb: str) -> None:
        log.error("run %s failed: %s\n%s", run_id, message, tb)
        with self.sessions() as session:
            run = session.get(Run, run_id)
            if run is not None and run.status in ACTIVE_RUN:
                run.status = RunStatus.FAILED
                run.error = message
            session.commit()
