"""The ``local`` executor: each job is a ``python -m worker`` subprocess on this machine.

At most ``settings.local_max_parallel`` workers run at once; the rest wait in a queue in state
``submitted`` and start as running ones end. Each worker runs in its own process session, so
that a cancel reaches it and anything it started (``torchrun``'s ranks): SIGTERM first, which
makes the worker checkpoint and exit ``PREEMPTED``, then SIGKILL after a grace period.

The worker's environment is the submission's plus a few harmless variables of this process
(``PATH``, ``HOME``, locale, GPU selection…): never this process's AWS credentials or gradpilot
secrets, only what the submission itself passes.

Submitting is idempotent by job name (which carries run, generation and attempt): the same name
returns the same external id, also after that job ended, so a retried submit never runs an
attempt twice.

Jobs are tracked in memory: a control plane that restarts gets ``unknown`` for the ids of the
previous one's jobs (the workers' own reports to the API still say how they ended).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from service.errors import ConfigurationError, ExecutorError
from service.executors._protocol import (
    TERMINAL_EXECUTOR_STATES,
    Executor,
    ExecutorState,
    ExecutorStatus,
    JobSubmission,
)
from service.schemas import exit_codes, worker_env
from service.settings import Settings

log = logging.getLogger(__name__)

#: Variables of this process a worker may inherit; everything else comes from the submission.
INHERITED = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "VIRTUAL_ENV",
    "PYTHONPATH",
    "CUDA_VISIBLE_DEVICES",
    "NVIDIA_VISIBLE_DEVICES",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "TORCH_HOME",
    "XDG_CACHE_HOME",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
)
_PROJECT_ROOT = Path(__file__).resolve().parents[2]
_REASONS = {
    exit_codes.CODE_ERROR: "the model's code raised an exception",
    exit_codes.INFRASTRUCTURE_ERROR: "infrastructure failure (data, network, memory)",
    exit_codes.PREEMPTED: "stopped by SIGTERM after a checkpoint",
    exit_codes.BAD_SPEC: "the job spec could not be fetched or used",
}


@dataclass
class _Job:
    external_id: str
    submission: JobSubmission
    log_path: Path
    state: ExecutorState = ExecutorState.SUBMITTED
    process: subprocess.Popen[bytes] | None = None
    exit_code: int | None = None
    reason: str | None = None
    infrastructure_failure: bool = False
    cancel_reason: str | None = None
    submitted_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_EXECUTOR_STATES


class LocalExecutor:
    """Runs workers as local subprocesses; see the module docstring."""

    name = "local"

    def __init__(
        self,
        settings: Settings,
        *,
        grace_s: float = 30.0,
        poll_interval_s: float = 0.5,
    ) -> None:
        self.settings = settings
        self.python = settings.local_python or sys.executable
        if shutil.which(self.python) is None:
            raise ConfigurationError(
                f"GRADPILOT_LOCAL_PYTHON={self.python!r} is not an executable Python"
            )
        self.max_parallel = settings.local_max_parallel
        self.grace_s = grace_s
        self.log_dir = settings.home / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.spool_dir = settings.home / "spool"
        self._lock = threading.RLock()
        self._jobs: dict[str, _Job] = {}
        self._by_name: dict[str, str] = {}
        self._queue: deque[str] = deque()
        self._stop = threading.Event()
        # Starts queued jobs as running ones end, even when nobody asks for a status.
        self._pump_thread = threading.Thread(
            target=self._pump_loop, args=(poll_interval_s,), name="local-executor", daemon=True
        )
        self._pump_thread.start()

    # ------------------------------------------------------------------ protocol

    def submit(self, job: JobSubmission) -> str:
        with self._lock:
            if self._stop.is_set():
                raise ExecutorError("the local executor is closed")
            self._pump()
            # The name carries run, generation and attempt: the same name is the same job, also
            # after it ended (a controller that retries a submit must not run it twice).
            existing = self._by_name.get(job.name)
            if existing is not None:
                return existing
            external_id = f"local-{job.name}-{uuid.uuid4().hex[:8]}"
            record = _Job(
                external_id=external_id,
                submission=job,
                log_path=self.log_dir / f"{external_id}.log",
                submitted_at=time.time(),
            )
            self._jobs[external_id] = record
            self._by_name[job.name] = external_id
            self._queue.append(external_id)
            self._pump()
            return external_id

    def status(self, external_ids: list[str]) -> dict[str, ExecutorStatus]:
        with self._lock:
            self._pump()
            return {i: self._status(i) for i in external_ids}

    def cancel(self, external_id: str, reason: str) -> None:
        with self._lock:
            job = self._jobs.get(external_id)
            if job is None:
                pid = self._orphan_pid(external_id)
                if pid is not None:  # an adopted worker: it checkpoints on SIGTERM and exits
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(pid, signal.SIGTERM)
                else:
                    log.info("cancel of unknown job %s ignored", external_id)
                return
            if job.terminal:
                return
            job.cancel_reason = reason or "cancelled"
            if job.process is None:
                self._queue.remove(external_id)
                self._finish(job, ExecutorState.CANCELLED, None, job.cancel_reason)
                return
            self._signal(job, signal.SIGTERM)
            timer = threading.Timer(self.grace_s, self._kill_if_alive, args=(job,))
            timer.daemon = True
            timer.start()

    def log_location(self, external_id: str) -> str | None:
        job = self._jobs.get(external_id)
        return str(job.log_path) if job is not None else None

    def close(self) -> None:
        """Stop the queue, SIGTERM every running worker, SIGKILL those still alive after the
        grace period."""
        self._stop.set()
        with self._lock:
            for external_id in list(self._queue):
                self._queue.remove(external_id)
                self._finish(
                    self._jobs[external_id], ExecutorState.CANCELLED, None, "executor closed"
                )
            running = [j for j in self._jobs.values() if j.state == ExecutorState.RUNNING]
            for job in running:
                job.cancel_reason = job.cancel_reason or "executor closed"
                self._signal(job, signal.SIGTERM)
        deadline = time.monotonic() + self.grace_s
        for job in running:
            assert job.process is not None
            try:
                job.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._signal(job, signal.SIGKILL)
                job.process.wait()
        with self._lock:
            self._pump()
        self._pump_thread.join(timeout=5)

    # ------------------------------------------------------------------ internals

    def _pump_loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                with self._lock:
                    self._pump()
            except Exception:  # the loop must outlive one bad start
                log.exception("local executor: pump failed")

    def _pump(self) -> None:
        """Reap ended workers, then start queued ones up to the limit (caller holds the lock)."""
        for job in self._jobs.values():
            if job.state == ExecutorState.RUNNING and job.process is not None:
                code = job.process.poll()
                if code is not None:
                    self._reap(job, code)
        running = sum(1 for j in self._jobs.values() if j.state == ExecutorState.RUNNING)
        while self._queue and running < self.max_parallel and not self._stop.is_set():
            job = self._jobs[self._queue.popleft()]
            self._start(job)
            running += job.state == ExecutorState.RUNNING

    def _environment(self, submission: JobSubmission) -> dict[str, str]:
        env = {k: os.environ[k] for k in INHERITED if k in os.environ}
        # Another interpreter (GRADPILOT_LOCAL_PYTHON) still finds the worker package.
        path = [str(_PROJECT_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(path))
        env["PYTHONUNBUFFERED"] = "1"
        env[worker_env.SPOOL_DIR] = str(self.spool_dir)
        env.update(submission.environment)
        return env

    def _start(self, job: _Job) -> None:
        workdir = self.settings.home / "work" / job.external_id
        try:
            workdir.mkdir(parents=True, exist_ok=True)
            with job.log_path.open("ab") as out:
                job.process = subprocess.Popen(
                    [self.python, "-m", "worker"],
                    env=self._environment(job.submission),
                    cwd=workdir,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        except OSError as e:
            self._finish(job, ExecutorState.FAILED, None, f"could not start the worker: {e}")
            job.infrastructure_failure = True
            return
        job.state = ExecutorState.RUNNING
        job.started_at = time.time()
        # Written so that a restarted control plane can adopt a worker that outlived it.
        (workdir / "pid").write_text(str(job.process.pid))
        log.info("started %s (pid %d), log %s", job.external_id, job.process.pid, job.log_path)

    def _reap(self, job: _Job, code: int) -> None:
        if code < 0:
            # As containers report it: 128 + the signal's number (137 for SIGKILL).
            name = signal.Signals(-code).name
            exit_code, reason, infra = 128 - code, f"killed by {name}", True
        else:
            exit_code = code
            reason = _REASONS.get(code, f"the worker exited with {code}")
            infra = code in exit_codes.RETRYABLE
        if job.cancel_reason is not None:
            self._finish(job, ExecutorState.CANCELLED, exit_code, job.cancel_reason)
        elif code == exit_codes.SUCCESS:
            self._finish(job, ExecutorState.SUCCEEDED, exit_code, None)
        else:
            self._finish(job, ExecutorState.FAILED, exit_code, reason)
            job.infrastructure_failure = infra

    def _finish(
        self, job: _Job, state: ExecutorState, code: int | None, reason: str | None
    ) -> None:
        job.state = state
        job.exit_code = code
        job.reason = reason
        job.finished_at = time.time()

    def _signal(self, job: _Job, signum: signal.Signals) -> None:
        if job.process is None or job.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):  # it ended in the meantime
            os.killpg(job.process.pid, signum)

    def _kill_if_alive(self, job: _Job) -> None:
        with self._lock:
            if job.process is not None and job.process.poll() is None:
                log.warning("%s ignored SIGTERM for %.0fs: SIGKILL", job.external_id, self.grace_s)
                self._signal(job, signal.SIGKILL)

    def _orphan_pid(self, external_id: str) -> int | None:
        """The pid of a worker started by an earlier control plane on this machine, if it is
        still alive (its command line is checked, so a reused pid does not count)."""
        try:
            pid = int((self.settings.home / "work" / external_id / "pid").read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return None
        return pid if b"-m\x00worker" in cmdline else None

    def _status(self, external_id: str) -> ExecutorStatus:
        job = self._jobs.get(external_id)
        if job is None:
            pid = self._orphan_pid(external_id)
            if pid is not None:
                return ExecutorStatus(
                    external_id=external_id,
                    state=ExecutorState.RUNNING,
                    reason="adopted: started by an earlier control plane, still running",
                    extra={"pid": str(pid)},
                )
            return ExecutorStatus(
                external_id=external_id,
                state=ExecutorState.UNKNOWN,
                reason="not known to this executor (started by an earlier control plane "
                "that has stopped, and no longer running)",
            )
        extra = {"name": job.submission.name}
        if job.process is not None:
            extra["pid"] = str(job.process.pid)
        return ExecutorStatus(
            external_id=external_id,
            state=job.state,
            exit_code=job.exit_code,
            reason=job.reason,
            infrastructure_failure=job.infrastructure_failure,
            log_location=str(job.log_path),
            extra=extra,
        )


_: type[Executor] = LocalExecutor
