"""A Batch that misbehaves like the real one: the AWS Batch API subset gradpilot uses, served on
loopback, running real worker processes, with the faults AWS documents on demand.

moto runs every Batch job straight to SUCCEEDED and ignores retry strategies, so it cannot show
what the executor and controller do when Batch re-queues, retries, times out or kills a job.
:class:`FakeBatch` is a thin HTTP server that speaks the REST-JSON protocol of ``SubmitJob``,
``DescribeJobs``, ``ListJobs``, ``TerminateJob``, ``CancelJob`` and ``DescribeJobDefinitions``
(what ``service.executors.batch`` calls), so the real boto3 client and the real
:class:`~service.executors.batch.BatchExecutor` talk to it: point ``aws_endpoint_url`` at
:attr:`FakeBatch.url` and set fake credentials (:func:`fake_credentials`).

What it plays, after the AWS Batch User Guide:

- Job states (https://docs.aws.amazon.com/batch/latest/userguide/job_states.html): a job goes
  SUBMITTED → PENDING → RUNNABLE → STARTING → RUNNING → SUCCEEDED | FAILED. It waits in
  RUNNABLE while no capacity is free (:attr:`FakeBatch.capacity`, ``0`` = stuck in RUNNABLE
  as with a G-instance quota of 0: https://docs.aws.amazon.com/batch/latest/userguide/
  job_stuck_in_runnable.html). Each RUNNING attempt is a real process (the job's
  ``containerOverrides.command``, ``python`` meaning this interpreter) in its own process group
  and its own fresh working directory (a new container has a new disk).
- Retries (https://docs.aws.amazon.com/batch/latest/userguide/job_retries.html and the API
  reference's ``EvaluateOnExit``): a failed attempt is matched against ``evaluateOnExit`` in
  order (``onStatusReason``, ``onReason``, ``onExitCode``; a pattern may end in ``*``; every
  given field must match); the first match's action decides, and no match means RETRY. A
  retried job goes back to RUNNABLE with the same job id and a new entry in ``attempts``, up to
  ``retryStrategy.attempts`` (default 1).
- Spot interruption (https://docs.aws.amazon.com/batch/latest/userguide/spot.html and EC2's
  two-minute interruption notice): :meth:`FakeBatch.reclaim` sends SIGTERM to the attempt,
  SIGKILL after ``reclaim_grace_s`` (120 s on AWS; short in tests), and ends the attempt with
  ``statusReason`` ``Host EC2 (instance i-…) terminated.``, which the retry strategy sees.
- Memory (https://docs.aws.amazon.com/batch/latest/userguide/troubleshooting.html):
  :meth:`FakeBatch.oom` SIGKILLs the attempt: exit code 137, container reason
  ``OutOfMemoryError: Container killed due to memory usage``.
- Attempt timeouts (https://docs.aws.amazon.com/batch/latest/userguide/job_timeouts.html):
  ``timeout.attemptDurationSeconds`` (× :attr:`FakeBatch.timeout_scale`) after an attempt
  started it is stopped (SIGTERM, then SIGKILL after ``stop_timeout_s``) with ``statusReason``
  ``Job attempt duration exceeded timeout``; a timed-out job is not retried.
- TerminateJob / CancelJob (API reference): terminate fails a job in any state (a running
  attempt is stopped like ECS stops a task: SIGTERM, SIGKILL after ``stop_timeout_s``) and is
  not retried; cancel fails only jobs not yet STARTING and leaves the others alone.
- ``DescribeJobs`` throttling (``TooManyRequestsException``, HTTP 429) and, as after a
  submission under eventual consistency, briefly empty answers (:meth:`FakeBatch.throttle`,
  :meth:`FakeBatch.empty_describes`); ``ListJobs`` lags new jobs by ``list_lag_s``.

Every process it starts is recorded (:attr:`FakeBatch.processes`) so that tests can check,
on this side and not on database rows, that no two processes of one gradpilot job were alive at
once (:meth:`FakeBatch.overlaps`) and that none is left running (:meth:`FakeBatch.alive`).
Array jobs are not played (gradpilot's controller submits one job per attempt).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

__all__ = [
    "HOST_TERMINATED",
    "OOM_REASON",
    "TIMEOUT_REASON",
    "FakeBatch",
    "ProcessRecord",
    "fake_credentials",
    "matches_pattern",
    "retry_action",
]

#: The attempt's statusReason after a spot reclaim or a lost host (``{}``: the instance id).
HOST_TERMINATED = "Host EC2 (instance {}) terminated."
#: The container's reason when it was killed for exceeding its memory.
OOM_REASON = "OutOfMemoryError: Container killed due to memory usage"
#: The statusReason of an attempt stopped for its attempt timeout.
TIMEOUT_REASON = "Job attempt duration exceeded timeout"
#: The statusReason of an attempt whose container exited by itself.
EXITED_REASON = "Essential container in task exited"

_QUEUED = ("SUBMITTED", "PENDING", "RUNNABLE")
_ACTIVE = (*_QUEUED, "STARTING", "RUNNING")
#: Variables of this process an attempt inherits (a container has its image's environment).
_INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV", "PYTHONPATH")


def fake_credentials() -> dict[str, str]:
    """AWS variables that let boto3 sign requests for the fake (it checks no signature)."""
    return {
        "AWS_ACCESS_KEY_ID": "fake-batch",
        "AWS_SECRET_ACCESS_KEY": "fake-batch",
        "AWS_DEFAULT_REGION": "us-east-1",
    }


def matches_pattern(pattern: str, value: str | None) -> bool:
    """``evaluateOnExit`` matching: exact, or a prefix when the pattern ends in ``*``."""
    text = value or ""
    if pattern.endswith("*"):
        return text.startswith(pattern[:-1])
    return text == pattern


def retry_action(
    strategy: dict[str, Any] | None,
    *,
    status_reason: str | None,
    reason: str | None,
    exit_code: int | None,
) -> str:
    """``RETRY`` or ``EXIT`` for a failed attempt, as Batch evaluates ``evaluateOnExit``: the
    first condition whose given fields all match decides; none matching means ``RETRY``."""
    for condition in (strategy or {}).get("evaluateOnExit") or []:
        checks: list[bool] = []
        if "onStatusReason" in condition:
            checks.append(matches_pattern(condition["onStatusReason"], status_reason))
        if "onReason" in condition:
            checks.append(matches_pattern(condition["onReason"], reason))
        if "onExitCode" in condition:
            checks.append(
                exit_code is not None and matches_pattern(condition["onExitCode"], str(exit_code))
            )
        if checks and all(checks):
            return str(condition["action"]).upper()
    return "RETRY"


@dataclass
class ProcessRecord:
    """One attempt's process, as the fake started it."""

    batch_job_id: str
    #: ``GRADPILOT_JOB_ID`` of the attempt's environment (None for other commands).
    gradpilot_job_id: str | None
    attempt: int
    pid: int
    started: float
    ended: float | None = None
    returncode: int | None = None


@dataclass
class _Attempt:
    process: subprocess.Popen[bytes]
    record: ProcessRecord
    started_ms: int
    log_stream: str
    #: Why the attempt is being stopped: (statusReason, container reason, exit code override).
    stopping: tuple[str, str | None, int | None] | None = None
    kill_at: float | None = None
    #: No retry after this attempt (terminated or timed out).
    final: bool = False


@dataclass
class _Job:
    job_id: str
    name: str
    queue: str
    definition: str
    command: list[str]
    environment: dict[str, str]
    retry_strategy: dict[str, Any] | None
    timeout_s: int | None
    tags: dict[str, str]
    resources: list[dict[str, str]]
    created_ms: int
    status: str = "SUBMITTED"
    status_reason: str | None = None
    since: float = field(default_factory=time.monotonic)
    attempts: list[dict[str, Any]] = field(default_factory=list)
    current: _Attempt | None = None
    started_ms: int | None = None
    stopped_ms: int | None = None
    is_cancelled: bool = False
    is_terminated: bool = False


class _ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _now_ms() -> int:
    return int(time.time() * 1000)


class FakeBatch:
    """The fake Batch service; a context manager that starts and stops its server and
    scheduler (stopping also kills every process it started).

    ``step_s``: how long a job stays in each of SUBMITTED, PENDING and STARTING.
    ``command``: replaces every job's command (unit tests run a script instead of the worker).
    ``env``: added to every attempt's environment (after the job's own).
    """

    def __init__(
        self,
        *,
        workdir: Path | None = None,
        step_s: float = 0.1,
        reclaim_grace_s: float = 120.0,
        stop_timeout_s: float = 30.0,
        list_lag_s: float = 0.0,
        timeout_scale: float = 1.0,
        capacity: int | None = None,
        command: Sequence[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="fake-batch-"))
        self.step_s = step_s
        self.reclaim_grace_s = reclaim_grace_s
        self.stop_timeout_s = stop_timeout_s
        self.list_lag_s = list_lag_s
        self.timeout_scale = timeout_scale
        #: How many attempts may run at once (None: unlimited; 0: every job stays RUNNABLE).
        self.capacity = capacity
        self.command = list(command) if command else None
        self.env = dict(env or {})
        self.jobs: dict[str, _Job] = {}
        self.processes: list[ProcessRecord] = []
        #: Every API call received, as (operation, request body).
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self._throttles: dict[str, int] = {}
        self._empty_describes = 0
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._threads = [
            threading.Thread(target=self._server.serve_forever, name="fake-batch", daemon=True),
            threading.Thread(target=self._schedule_loop, name="fake-batch-tick", daemon=True),
        ]

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> FakeBatch:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for thread in self._threads:
            thread.start()

    def close(self) -> None:
        """Stop serving and scheduling; SIGKILL every attempt still running."""
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            for job in self.jobs.values():
                if job.current is not None:
                    self._kill(job.current, signal.SIGKILL)
                    job.current.process.wait()
                    self._reap_record(job.current)

    # ------------------------------------------------------------------ faults

    def reclaim(self, job_id: str, instance: str | None = None) -> None:
        """A spot reclaim of the host running ``job_id``: SIGTERM now, SIGKILL after
        ``reclaim_grace_s``; the attempt ends ``Host EC2 (instance …) terminated.``"""
        instance = instance or f"i-{uuid.uuid4().hex[:17]}"
        self._stop_attempt(
            job_id, (HOST_TERMINATED.format(instance), None, None), self.reclaim_grace_s
        )

    def oom(self, job_id: str) -> None:
        """The container exceeds its memory: SIGKILL, exit 137, ``OutOfMemoryError: …``."""
        with self._lock:
            attempt = self._running(job_id)
            attempt.stopping = (EXITED_REASON, OOM_REASON, 137)
            self._kill(attempt, signal.SIGKILL)

    def throttle(self, operation: str, count: int) -> None:
        """The next ``count`` calls of ``operation`` (e.g. ``DescribeJobs``) answer
        ``TooManyRequestsException``."""
        with self._lock:
            self._throttles[operation] = self._throttles.get(operation, 0) + count

    def empty_describes(self, count: int) -> None:
        """The next ``count`` ``DescribeJobs`` calls know no job (eventual consistency)."""
        with self._lock:
            self._empty_describes += count

    # ------------------------------------------------------------------ inspection

    def job(self, job_id: str) -> dict[str, Any]:
        """The job as ``DescribeJobs`` describes it."""
        with self._lock:
            return self._describe(self.jobs[job_id])

    def job_ids(self, name: str | None = None) -> list[str]:
        """Ids of the jobs submitted (with this name), oldest first."""
        with self._lock:
            return [j.job_id for j in self.jobs.values() if name is None or j.name == name]

    def find(self, gradpilot_job_id: str) -> list[str]:
        """Batch job ids whose environment runs this gradpilot job."""
        with self._lock:
            return [
                j.job_id
                for j in self.jobs.values()
                if j.environment.get("GRADPILOT_JOB_ID") == gradpilot_job_id
            ]

    def status(self, job_id: str) -> str:
        with self._lock:
            return self.jobs[job_id].status

    def running(self) -> list[str]:
        """Ids of the jobs whose attempt is RUNNING."""
        with self._lock:
            return [j.job_id for j in self.jobs.values() if j.status == "RUNNING"]

    def alive(self) -> list[ProcessRecord]:
        """The processes the fake started that have not exited."""
        with self._lock:
            return [r for r in self.processes if r.ended is None]

    def overlaps(self) -> list[tuple[ProcessRecord, ProcessRecord]]:
        """Pairs of processes of one gradpilot job (or, without one, one Batch job) that were
        alive at the same time."""
        with self._lock:
            records = list(self.processes)
        now = time.monotonic()
        pairs = []
        for i, a in enumerate(records):
            for b in records[i + 1 :]:
                key_a = a.gradpilot_job_id or a.batch_job_id
                key_b = b.gradpilot_job_id or b.batch_job_id
                if key_a != key_b:
                    continue
                if a.started < (b.ended or now) and b.started < (a.ended or now):
                    pairs.append((a, b))
        return pairs

    def log_path(self, job_id: str, attempt: int) -> Path:
        """The file an attempt's output went to (0-based attempt)."""
        return self.workdir / job_id / f"attempt-{attempt}" / "output.log"

    def wait_for(self, job_id: str, statuses: Sequence[str], timeout_s: float = 60) -> str:
        """Until the job is in one of ``statuses``; returns the status."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            status = self.status(job_id)
            if status in statuses:
                return status
            time.sleep(0.02)
        raise AssertionError(f"job {job_id} is {self.status(job_id)}, not {list(statuses)}")

    def wait_attempts(self, job_id: str, count: int, timeout_s: float = 60) -> None:
        """Until ``count`` attempts of the job have ended."""
        deadline = time.monotonic() + timeout_s
        while len(self.job(job_id)["attempts"]) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} has not ended {count} attempts")
            time.sleep(0.02)

    # ------------------------------------------------------------------ the API

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                operation = self.path.strip("/").split("/")[-1]
                try:
                    status, answer = 200, fake._call(operation, body)
                except _ApiError as e:
                    status, answer = e.status, {"__type": e.code, "message": e.message}
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if status != 200:
                    self.send_header("x-amzn-ErrorType", answer["__type"])
                self.end_headers()
                self.wfile.write(data)

        return Handler

    _OPERATIONS = {
        "submitjob": "SubmitJob",
        "describejobs": "DescribeJobs",
        "listjobs": "ListJobs",
        "terminatejob": "TerminateJob",
        "canceljob": "CancelJob",
        "describejobdefinitions": "DescribeJobDefinitions",
    }

    def _call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        operation = self._OPERATIONS.get(path.lower())
        if operation is None:
            raise _ApiError(400, "ClientException", f"the fake Batch does not play {path}")
        with self._lock:
            self.calls.append((operation, body))
            if self._throttles.get(operation):
                self._throttles[operation] -= 1
                raise _ApiError(429, "TooManyRequestsException", "Too Many Requests")
            handler = getattr(self, f"_op_{operation}")
            return dict(handler(body))

    def _op_SubmitJob(self, body: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        if "arrayProperties" in body:
            raise _ApiError(400, "ClientException", "the fake Batch plays no array jobs")
        for key in ("jobName", "jobQueue", "jobDefinition"):
            if not body.get(key):
                raise _ApiError(400, "ClientException", f"{key} is required")
        overrides = body.get("containerOverrides") or {}
        environment = {e["name"]: e["value"] for e in overrides.get("environment") or []}
        timeout = (body.get("timeout") or {}).get("attemptDurationSeconds")
        if timeout is not None and int(timeout) < 60:
            raise _ApiError(400, "ClientException", "attemptDurationSeconds must be at least 60")
        job = _Job(
            job_id=str(uuid.uuid4()),
            name=body["jobName"],
            queue=body["jobQueue"],
            definition=body["jobDefinition"],
            command=list(overrides.get("command") or ["python", "-m", "worker"]),
            environment=environment,
            retry_strategy=body.get("retryStrategy"),
            timeout_s=int(timeout) if timeout is not None else None,
            tags=dict(body.get("tags") or {}),
            resources=list(overrides.get("resourceRequirements") or []),
            created_ms=_now_ms(),
        )
        self.jobs[job.job_id] = job
        return {
            "jobId": job.job_id,
            "jobName": job.name,
            "jobArn": f"arn:aws:batch:us-east-1:000000000000:job/{job.job_id}",
        }

    def _op_DescribeJobs(self, body: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        ids = body.get("jobs") or []
        if len(ids) > 100:
            raise _ApiError(400, "ClientException", "at most 100 jobs per DescribeJobs")
        if self._empty_describes:
            self._empty_describes -= 1
            return {"jobs": []}
        return {"jobs": [self._describe(self.jobs[i]) for i in ids if i in self.jobs]}

    def _op_ListJobs(self, body: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        queue = body.get("jobQueue")
        if not queue:
            raise _ApiError(400, "ClientException", "the fake Batch lists by jobQueue only")
        filters = body.get("filters") or []
        visible_before = _now_ms() - int(self.list_lag_s * 1000)
        jobs = [
            j for j in self.jobs.values() if j.queue == queue and j.created_ms <= visible_before
        ]
        if filters:  # with filters, jobStatus is ignored and every status is listed
            for f in filters:
                if f.get("name") != "JOB_NAME":
                    raise _ApiError(400, "ClientException", f"filter {f.get('name')} not played")
                (value,) = f["values"]
                jobs = [j for j in jobs if matches_pattern(value.lower(), j.name.lower())]
        else:
            wanted = body.get("jobStatus") or "RUNNING"
            jobs = [j for j in jobs if j.status == wanted]
        start = int(body.get("nextToken") or 0)
        size = int(body.get("maxResults") or 100)
        page = jobs[start : start + size]
        answer: dict[str, Any] = {
            "jobSummaryList": [
                {
                    "jobId": j.job_id,
                    "jobName": j.name,
                    "createdAt": j.created_ms,
                    "status": j.status,
                    **({"statusReason": j.status_reason} if j.status_reason else {}),
                }
                for j in page
            ]
        }
        if start + size < len(jobs):
            answer["nextToken"] = str(start + size)
        return answer

    def _op_TerminateJob(self, body: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        job = self._known(body)
        job.is_terminated = True
        self._end(job, body.get("reason") or "Terminated", cancel=False)
        return {}

    def _op_CancelJob(self, body: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        job = self._known(body)
        if job.status in _QUEUED:
            job.is_cancelled = True
            self._end(job, body.get("reason") or "Cancelled", cancel=True)
        return {}

    def _op_DescribeJobDefinitions(self, body: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        return {"jobDefinitions": []}

    def _known(self, body: dict[str, Any]) -> _Job:
        job = self.jobs.get(body.get("jobId") or "")
        if job is None:
            raise _ApiError(400, "ClientException", f"Job {body.get('jobId')} not found")
        if not body.get("reason"):
            raise _ApiError(400, "ClientException", "reason is required")
        return job

    def _end(self, job: _Job, reason: str, *, cancel: bool) -> None:
        if job.status in _QUEUED or (job.status == "STARTING" and job.current is None):
            self._set(job, "FAILED", reason)
            job.stopped_ms = _now_ms()
        elif job.current is not None and not cancel:
            attempt = job.current
            attempt.final = True
            if attempt.stopping is None:
                attempt.stopping = (reason, None, None)
                self._kill(attempt, signal.SIGTERM)
                attempt.kill_at = time.monotonic() + self.stop_timeout_s

    def _describe(self, job: _Job) -> dict[str, Any]:
        container: dict[str, Any] = {
            "command": job.command,
            "environment": [{"name": k, "value": v} for k, v in sorted(job.environment.items())],
            "resourceRequirements": job.resources,
        }
        if job.current is not None:
            container["logStreamName"] = job.current.log_stream
        elif job.attempts and job.status in ("SUCCEEDED", "FAILED"):
            container.update(job.attempts[-1]["container"])
        described: dict[str, Any] = {
            "jobArn": f"arn:aws:batch:us-east-1:000000000000:job/{job.job_id}",
            "jobId": job.job_id,
            "jobName": job.name,
            "jobQueue": job.queue,
            "jobDefinition": job.definition,
            "status": job.status,
            "createdAt": job.created_ms,
            "attempts": [dict(a) for a in job.attempts],
            "container": container,
            "tags": job.tags,
            "isCancelled": job.is_cancelled,
            "isTerminated": job.is_terminated,
        }
        if job.status_reason:
            described["statusReason"] = job.status_reason
        if job.retry_strategy:
            described["retryStrategy"] = job.retry_strategy
        if job.timeout_s:
            described["timeout"] = {"attemptDurationSeconds": job.timeout_s}
        if job.started_ms:
            described["startedAt"] = job.started_ms
        if job.stopped_ms:
            described["stoppedAt"] = job.stopped_ms
        return described

    # ------------------------------------------------------------------ scheduling

    def _schedule_loop(self) -> None:
        while not self._stop.wait(0.02):
            with self._lock:
                for job in list(self.jobs.values()):
                    self._tick(job)

    def _set(self, job: _Job, status: str, reason: str | None = None) -> None:
        job.status = status
        job.since = time.monotonic()
        if reason is not None:
            job.status_reason = reason

    def _tick(self, job: _Job) -> None:
        waited = time.monotonic() - job.since
        if job.status == "SUBMITTED" and waited >= self.step_s:
            self._set(job, "PENDING")
        elif job.status == "PENDING" and waited >= self.step_s:
            self._set(job, "RUNNABLE")
        elif job.status == "RUNNABLE":
            busy = sum(1 for j in self.jobs.values() if j.status in ("STARTING", "RUNNING"))
            if self.capacity is None or busy < self.capacity:
                self._set(job, "STARTING")
        elif job.status == "STARTING" and waited >= self.step_s:
            self._launch(job)
        elif job.status == "RUNNING" and job.current is not None:
            self._watch(job, job.current)

    def _launch(self, job: _Job) -> None:
        number = len(job.attempts)
        directory = self.workdir / job.job_id / f"attempt-{number}"
        directory.mkdir(parents=True, exist_ok=True)
        command = list(self.command or job.command)
        if command[0] == "python":
            command[0] = sys.executable
        env = {k: os.environ[k] for k in _INHERITED if k in os.environ}
        env.update(job.environment)
        env.update(
            {
                "AWS_BATCH_JOB_ID": job.job_id,
                "AWS_BATCH_JOB_ATTEMPT": str(number + 1),
                "AWS_BATCH_JQ_NAME": job.queue,
                # A fresh container: its spool is its own disk, lost with the host.
                "GRADPILOT_SPOOL_DIR": str(directory / "spool"),
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.env)
        with (directory / "output.log").open("ab") as out:
            process = subprocess.Popen(
                command,
                env=env,
                cwd=directory,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        record = ProcessRecord(
            batch_job_id=job.job_id,
            gradpilot_job_id=job.environment.get("GRADPILOT_JOB_ID"),
            attempt=number,
            pid=process.pid,
            started=time.monotonic(),
        )
        self.processes.append(record)
        task = uuid.uuid4().hex
        job.current = _Attempt(
            process=process,
            record=record,
            started_ms=_now_ms(),
            log_stream=f"{job.definition.split(':')[0]}/default/{task}",
        )
        job.started_ms = job.current.started_ms
        self._set(job, "RUNNING")

    def _watch(self, job: _Job, attempt: _Attempt) -> None:
        code = attempt.process.poll()
        if code is None:
            now = time.monotonic()
            if attempt.kill_at is not None and now >= attempt.kill_at:
                self._kill(attempt, signal.SIGKILL)
                attempt.kill_at = None
            limit = job.timeout_s * self.timeout_scale if job.timeout_s else None
            if attempt.stopping is None and limit and now - attempt.record.started >= limit:
                attempt.stopping = (TIMEOUT_REASON, None, None)
                attempt.final = True
                self._kill(attempt, signal.SIGTERM)
                attempt.kill_at = now + self.stop_timeout_s
            return
        self._reap_record(attempt)
        exit_code: int | None = code if code >= 0 else 128 - code
        status_reason, reason = EXITED_REASON, None
        if attempt.stopping is not None:
            status_reason, reason, forced = attempt.stopping
            exit_code = forced if forced is not None else exit_code
        container: dict[str, Any] = {"logStreamName": attempt.log_stream}
        if exit_code is not None:
            container["exitCode"] = exit_code
        if reason:
            container["reason"] = reason
        job.attempts.append(
            {
                "container": container,
                "startedAt": attempt.started_ms,
                "stoppedAt": _now_ms(),
                "statusReason": status_reason,
            }
        )
        job.current = None
        job.stopped_ms = _now_ms()
        if exit_code == 0 and attempt.stopping is None:
            self._set(job, "SUCCEEDED", status_reason)
            return
        allowed = int((job.retry_strategy or {}).get("attempts") or 1)
        action = retry_action(
            job.retry_strategy, status_reason=status_reason, reason=reason, exit_code=exit_code
        )
        if not attempt.final and action == "RETRY" and len(job.attempts) < allowed:
            job.stopped_ms = None
            self._set(job, "RUNNABLE", status_reason)
        else:
            self._set(job, "FAILED", status_reason)

    def _stop_attempt(
        self, job_id: str, stopping: tuple[str, str | None, int | None], grace_s: float
    ) -> None:
        with self._lock:
            attempt = self._running(job_id)
            attempt.stopping = stopping
            self._kill(attempt, signal.SIGTERM)
            attempt.kill_at = time.monotonic() + grace_s

    def _running(self, job_id: str) -> _Attempt:
        job = self.jobs[job_id]
        if job.current is None:
            raise AssertionError(f"job {job_id} has no running attempt (it is {job.status})")
        return job.current

    def _kill(self, attempt: _Attempt, signum: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(attempt.process.pid, signum)

    def _reap_record(self, attempt: _Attempt) -> None:
        if attempt.record.ended is None:
            attempt.record.ended = time.monotonic()
            attempt.record.returncode = attempt.process.returncode


@contextlib.contextmanager
def running_fake_batch(**options: Any) -> Iterator[FakeBatch]:
    """A started :class:`FakeBatch` (closed, with its processes killed, on exit)."""
    with FakeBatch(**options) as fake:
        yield fake
