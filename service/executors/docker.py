"""The ``docker`` executor: one container of the worker image per job, through the Docker SDK.

For a workstation with one or a few GPUs that wants the Batch job's isolation without AWS:
each job runs ``GRADPILOT_DOCKER_IMAGE`` (``Dockerfile.worker``) with the submission's
environment, its GPUs as device requests (``docker run --gpus``; the NVIDIA container toolkit
must be installed), and its vCPUs and memory as limits.

Names, labels and restarts
    A container is named after the submission (``gp-<run8>-g<gen>-a<attempt>``) and labelled
    with the run, generation, attempt and job id (:data:`LABEL_PREFIX`). Everything the
    executor needs is on the engine, not in this process: a restarted control plane finds its
    containers by label, and a second submit of the same name returns the container that
    exists (running or finished), so an attempt never runs twice. Finished containers are kept
    (their logs and exit code are the job's record); ``docker container prune --filter
    label=gradpilot.executor=docker`` removes them.

Status
    One ``docker ps -a`` filtered by label and id answers for many jobs; a container that has
    exited is inspected once for its exit code, then remembered.

Exit codes
    The worker's contract (``service.schemas.exit_codes``), read the way Batch's retry
    strategy reads it: ``0`` succeeded; ``RETRYABLE`` exits, the out-of-memory killer and a
    signal nobody here sent are infrastructure failures (retried); any other exit, e.g.
    ``CODE_ERROR``, is not.

Cancel and timeout
    SIGTERM (the worker checkpoints and exits ``PREEMPTED``), SIGKILL after a grace period.
    The container is first renamed ``<name>.cancelled`` (or ``<name>.timedout`` when it ran
    past the submission's ``timeout_s``; a timeout is a failure that is not retried, as on
    Batch), which is how a later control plane still tells them from other exits.

Environment variable names are literals here until ``service.schemas.worker_env`` lands.

Why one module of this length: the executor, its naming and labels, and the exit-code
mapping are one contract with the engine; it imports nothing from the Batch executor so that
loading it never loads boto3.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import unquote, urlparse

import docker
import requests
from docker.errors import APIError, DockerException, ImageNotFound, NotFound

from service.errors import ConfigurationError, ExecutorError
from service.executors._protocol import Executor, ExecutorState, ExecutorStatus, JobSubmission
from service.schemas import exit_codes
from service.settings import Settings

log = logging.getLogger(__name__)

#: Labels of every container this executor starts.
LABEL_PREFIX = "gradpilot."
EXECUTOR_LABEL = f"{LABEL_PREFIX}executor=docker"
#: The suffixes a container's name gets when this executor stops it (labels cannot change
#: after creation): how any later control plane tells a cancel or a timeout from a failure.
CANCELLED_SUFFIX = ".cancelled"
TIMED_OUT_SUFFIX = ".timedout"
#: Ids per ``docker ps`` call (the filter goes into the query string).
LIST_BATCH = 100
#: Signals seen as exit codes (128 + the signal's number), as containers report them.
_SIGNAL_EXITS = {137: "SIGKILL", 143: "SIGTERM"}
_REASONS = {
    exit_codes.CODE_ERROR: "the model's code raised an exception",
    exit_codes.INFRASTRUCTURE_ERROR: "infrastructure failure (data, network, memory)",
    exit_codes.PREEMPTED: "stopped by SIGTERM after a checkpoint",
    exit_codes.BAD_SPEC: "the job spec could not be fetched or used",
}
_STATE_MAP: dict[str, ExecutorState] = {
    "created": ExecutorState.SUBMITTED,
    "running": ExecutorState.RUNNING,
    "paused": ExecutorState.RUNNING,
    "restarting": ExecutorState.RUNNING,
}


class TransientDockerError(ExecutorError):
    """The Docker engine did not answer; trying again later may work."""

    status_code = 503
    transient = True


def worker_command(gpus: int) -> list[str] | None:
    """The container command: the image's default (``python -m worker``), or torchrun with
    one process per GPU (as the Batch executor does)."""
    if gpus > 1:
        return ["torchrun", "--standalone", f"--nproc_per_node={gpus}", "-m", "worker"]
    return None


def job_labels(job: JobSubmission) -> dict[str, str]:
    """The labels that let any later control plane find and recognise the job's container."""
    return {
        f"{LABEL_PREFIX}executor": "docker",
        f"{LABEL_PREFIX}name": job.name,
        f"{LABEL_PREFIX}job": job.job_id,
        f"{LABEL_PREFIX}run": job.run_id,
        f"{LABEL_PREFIX}generation": str(job.generation),
        f"{LABEL_PREFIX}attempt": str(job.attempt),
        **({f"{LABEL_PREFIX}timeout_s": str(int(job.timeout_s))} if job.timeout_s else {}),
    }


def classify_exit(
    exit_code: int, *, oom_killed: bool = False, stopped_by: str = ""
) -> tuple[ExecutorState, str | None, bool]:
    """``(state, reason, infrastructure_failure)`` of a container that exited; ``stopped_by``
    is the suffix this executor gave its name when it stopped it (cancel, timeout)."""
    if stopped_by == CANCELLED_SUFFIX:
        return ExecutorState.CANCELLED, "cancelled", False
    if stopped_by == TIMED_OUT_SUFFIX:
        return ExecutorState.FAILED, "ran past its timeout and was stopped", False
    if exit_code == exit_codes.SUCCESS and not oom_killed:
        return ExecutorState.SUCCEEDED, None, False
    if oom_killed:
        return ExecutorState.FAILED, "killed by the out-of-memory killer (memory limit)", True
    if exit_code in _SIGNAL_EXITS:
        # Not our cancel: `docker stop`, a daemon restart, a reboot. The attempt can run again.
        return ExecutorState.FAILED, f"killed by {_SIGNAL_EXITS[exit_code]}", True
    reason = _REASONS.get(exit_code, f"the worker exited with {exit_code}")
    return ExecutorState.FAILED, reason, exit_code in exit_codes.RETRYABLE


def _chunks(items: Sequence[str], size: int) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class DockerExecutor:
    """Runs workers as containers of the worker image on a Docker engine; see the module
    docstring. ``client`` replaces ``docker.from_env()``; ``grace_s`` is how long a cancelled
    worker has between SIGTERM and SIGKILL."""

    name = "docker"

    def __init__(self, settings: Settings, client: Any = None, *, grace_s: float = 30.0) -> None:
        self.settings = settings
        self.image = settings.docker_image
        self.grace_s = grace_s
        self._owns_client = client is None
        if client is None:
            try:
                client = (
                    docker.DockerClient(base_url=settings.docker_host, timeout=60)
                    if settings.docker_host
                    else docker.from_env(timeout=60)
                )
                client.ping()
            except (DockerException, requests.RequestException) as e:
                where = settings.docker_host or "the local socket (DOCKER_HOST)"
                raise ConfigurationError(
                    f"no Docker engine answers at {where} ({e}): start dockerd, or set "
                    "GRADPILOT_DOCKER_HOST; GRADPILOT_EXECUTOR=local needs no engine"
                ) from None
        self.client = client
        self._lock = threading.Lock()
        #: Terminal statuses by id: an exited container never changes again.
        self._final: dict[str, ExecutorStatus] = {}
        self._engine: dict[str, Any] | None = None
        self._warned_no_gpu = False

    # -- protocol ------------------------------------------------------------------------

    def submit(self, job: JobSubmission) -> str:
        """Create and start the job's container; the same name returns the existing one."""
        existing = self._find(job.name)
        if existing is not None:
            return existing
        try:
            container = self._call(
                "create",
                self.client.containers.create,
                self.image,
                command=worker_command(job.gpus),
                name=job.name,
                labels=job_labels(job),
                environment=self._environment(job),
                detach=True,
                network_mode=self.settings.docker_network,
                device_requests=self._device_requests(job.gpus),
                nano_cpus=int(self._cpus(job.vcpus) * 1e9),
                mem_limit=f"{self._memory_mib(job.memory_mib)}m",
                volumes=self._volumes(),
                user=self.settings.docker_user,
                stop_signal="SIGTERM",
            )
        except ImageNotFound:
            raise ExecutorError(
                f"the worker image {self.image!r} is not on this Docker engine: build it "
                "(docker build -f Dockerfile.worker -t gradpilot-worker:local .) or set "
                "GRADPILOT_DOCKER_IMAGE"
            ) from None
        except APIError as e:
            if e.status_code == 409:  # another submit of the same name won the race
                found = self._find(job.name)
                if found is not None:
                    return found
            raise self._api_error("create", e) from e
        try:
            self._call("start", container.start)
        except ExecutorError:
            # Leave nothing half-made: a retried submit creates it again.
            with contextlib.suppress(DockerException, requests.RequestException):
                container.remove(force=True)
            raise
        log.info("started %s as container %s (%s)", job.name, container.id[:12], self.image)
        return str(container.id)

    def status(self, external_ids: list[str]) -> dict[str, ExecutorStatus]:
        """The state of many jobs: one container listing, plus one inspect per container that
        has just exited; ids the engine does not know are ``unknown``."""
        result: dict[str, ExecutorStatus] = {}
        pending = []
        for external_id in dict.fromkeys(external_ids):
            final = self._final.get(external_id)
            if final is not None:
                result[external_id] = final
            else:
                pending.append(external_id)
        for chunk in _chunks(pending, LIST_BATCH):
            listed = self._call(
                "list",
                self.client.containers.list,
                all=True,
                sparse=True,
                filters={"label": EXECUTOR_LABEL, "id": list(chunk)},
            )
            by_id = {c.id: c for c in listed}
            for external_id in chunk:
                container = by_id.get(external_id)
                if container is None:
                    result[external_id] = ExecutorStatus(
                        external_id=external_id,
                        state=ExecutorState.UNKNOWN,
                        reason="no such container on this Docker engine (removed, or another "
                        "engine)",
                    )
                else:
                    result[external_id] = self._status_of(container.attrs)
        return {i: result[i] for i in external_ids}

    def cancel(self, external_id: str, reason: str) -> None:
        """SIGTERM now, SIGKILL after the grace period; harmless on a finished or unknown job."""
        self._stop(external_id, CANCELLED_SUFFIX, reason)

    def _stop(self, external_id: str, suffix: str, reason: str) -> None:
        try:
            container = self.client.containers.get(external_id)
        except NotFound:
            log.info("cancel of unknown container %s ignored", external_id)
            return
        except (DockerException, requests.RequestException) as e:
            raise self._api_error("inspect", e) from e
        state = container.attrs.get("State") or {}
        if state.get("Status") not in ("created", "running", "paused", "restarting"):
            return  # finished: its outcome stands
        name = container.name
        if not name.endswith((CANCELLED_SUFFIX, TIMED_OUT_SUFFIX)):
            # Marked before the signal, so that the exit it causes reads as this stop.
            with contextlib.suppress(APIError):
                container.rename(f"{name}{suffix}")
        log.info("stopping %s (%s): %s", name, external_id[:12], reason)
        if state.get("Status") == "created":
            # Never started: nothing to signal. It is kept (its name answers later submits).
            return
        with contextlib.suppress(NotFound, APIError):  # it ended in the meantime
            container.kill(signal="SIGTERM")
        timer = threading.Timer(self.grace_s, self._kill_if_running, args=(external_id,))
        timer.daemon = True
        timer.start()

    def log_location(self, external_id: str) -> str | None:
        """``docker://<container id>``: ``docker logs <id>`` reads it (also :meth:`logs`)."""
        return f"docker://{external_id}"

    def logs(self, external_id: str, *, tail: int = 200) -> str:
        """The last ``tail`` lines the container wrote (stdout and stderr)."""
        try:
            container = self.client.containers.get(external_id)
            data: bytes = container.logs(stdout=True, stderr=True, tail=tail)
        except NotFound:
            raise ExecutorError(f"no container {external_id} on this Docker engine") from None
        except (DockerException, requests.RequestException) as e:
            raise self._api_error("logs", e) from e
        return data.decode("utf-8", errors="replace")

    def close(self) -> None:
        """Close the engine connection. Containers keep running: a later control plane finds
        them by label."""
        if self._owns_client:
            self.client.close()

    # -- internals -----------------------------------------------------------------------

    def _find(self, name: str) -> str | None:
        """The id of the container of this submission name, in any state, or None."""
        listed = self._call(
            "list",
            self.client.containers.list,
            all=True,
            sparse=True,
            filters={"label": [EXECUTOR_LABEL, f"{LABEL_PREFIX}name={name}"]},
        )
        if not listed:
            return None
        newest = max(listed, key=lambda c: c.attrs.get("Created", 0))
        return str(newest.id)

    def _status_of(self, summary: dict[str, Any]) -> ExecutorStatus:
        external_id = str(summary["Id"])
        labels = summary.get("Labels") or {}
        names = summary.get("Names") or []
        name = names[0].lstrip("/") if names else ""
        state_text = str(summary.get("State", ""))
        extra = {"name": labels.get(f"{LABEL_PREFIX}name", name), "docker_state": state_text}
        stopped_by = next((s for s in (CANCELLED_SUFFIX, TIMED_OUT_SUFFIX) if name.endswith(s)), "")
        if state_text in _STATE_MAP:
            state = _STATE_MAP[state_text]
            reason = None
            if stopped_by:
                reason = (
                    "stopping: cancelled"
                    if stopped_by == CANCELLED_SUFFIX
                    else ("stopping: past its timeout")
                )
            elif state == ExecutorState.RUNNING and self._timed_out(summary, labels):
                self._stop(external_id, TIMED_OUT_SUFFIX, "past its timeout")
                reason = "stopping: past its timeout"
            if stopped_by == CANCELLED_SUFFIX and state == ExecutorState.SUBMITTED:
                state = ExecutorState.CANCELLED  # cancelled before it started: it never will
            return ExecutorStatus(
                external_id=external_id,
                state=state,
                reason=reason,
                log_location=self.log_location(external_id),
                extra=extra,
            )
        # exited, dead or removing: read the exit code once, then remember the outcome.
        details = self._call("inspect", self.client.api.inspect_container, external_id)
        info = details.get("State") or {}
        exit_code = int(info.get("ExitCode", -1))
        if state_text == "exited":
            state, reason, infra = classify_exit(
                exit_code, oom_killed=bool(info.get("OOMKilled")), stopped_by=stopped_by
            )
        else:
            state, reason, infra = ExecutorState.FAILED, f"the container is {state_text}", True
        if info.get("Error"):
            reason = f"{reason or 'engine error'} ({info['Error']})"
        status = ExecutorStatus(
            external_id=external_id,
            state=state,
            exit_code=exit_code,
            reason=reason,
            infrastructure_failure=infra,
            log_location=self.log_location(external_id),
            extra={**extra, "finished_at": str(info.get("FinishedAt", ""))},
        )
        if state_text == "exited":
            self._final[external_id] = status
        return status

    def _timed_out(self, summary: dict[str, Any], labels: dict[str, str]) -> bool:
        limit = labels.get(f"{LABEL_PREFIX}timeout_s")
        created = summary.get("Created")
        return bool(limit and created and time.time() - float(created) > float(limit))

    def _kill_if_running(self, external_id: str) -> None:
        with contextlib.suppress(DockerException, requests.RequestException):
            container = self.client.containers.get(external_id)
            if (container.attrs.get("State") or {}).get("Status") == "running":
                log.warning("%s ignored SIGTERM for %.0fs: SIGKILL", external_id[:12], self.grace_s)
                container.kill(signal="SIGKILL")

    def _environment(self, job: JobSubmission) -> dict[str, str]:
        # Only what the submission passes, plus the control plane's variables the settings
        # name (e.g. AWS credentials for an s3:// store): never this process's secrets unasked.
        env = {name: os.environ[name] for name in self.settings.docker_env if name in os.environ}
        env["PYTHONUNBUFFERED"] = "1"
        env.update(job.environment)
        return env

    def _engine_info(self) -> dict[str, Any]:
        if self._engine is None:
            info: dict[str, Any] = self._call("info", self.client.info)
            self._engine = info
        return self._engine

    def _device_requests(self, gpus: int) -> list[Any] | None:
        if gpus <= 0 or self.settings.docker_gpus == "never":
            return None
        if self.settings.docker_gpus == "auto" and "nvidia" not in (
            self._engine_info().get("Runtimes") or {}
        ):
            # A CPU-only workstation: the job still runs (the worker trains on the CPU).
            if self._warned_no_gpu:
                return None
            self._warned_no_gpu = True
            log.warning(
                "the job asks for %d GPU(s) but this Docker engine has no NVIDIA runtime: "
                "running it without GPUs (install the NVIDIA container toolkit, or set "
                "GRADPILOT_DOCKER_GPUS=always to make this an error)",
                gpus,
            )
            return None
        return [docker.types.DeviceRequest(count=gpus, capabilities=[["gpu"]])]

    def _cpus(self, vcpus: int) -> float:
        # The engine refuses a limit above the machine's CPUs.
        available = float(self._engine_info().get("NCPU") or vcpus)
        return max(0.01, min(float(vcpus), available))

    def _memory_mib(self, memory_mib: int) -> int:
        total = int(self._engine_info().get("MemTotal") or 0) // (1024 * 1024)
        return min(memory_mib, total) if total else memory_mib

    def _volumes(self) -> dict[str, dict[str, str]] | None:
        # A file:// artifact store must be the same folder inside the container.
        url = self.settings.resolved_artifact_url
        if not url.startswith("file://"):
            return None
        path = unquote(urlparse(url).path)
        return {path: {"bind": path, "mode": "rw"}}

    def _call(self, operation: str, function: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except (ImageNotFound, NotFound):
            raise
        except APIError as e:
            if operation == "create" and e.status_code == 409:
                raise
            raise self._api_error(operation, e) from e
        except (DockerException, requests.RequestException) as e:
            raise self._api_error(operation, e) from e

    def _api_error(self, operation: str, error: Exception) -> ExecutorError:
        if not isinstance(error, APIError):  # no answer at all (socket, timeout)
            return TransientDockerError(
                f"the Docker engine did not answer {operation} ({error}); this is transient, "
                "the controller tries again"
            )
        explanation = str(error.explanation or error)
        if "could not select device driver" in explanation:
            return ExecutorError(
                "this Docker engine cannot give containers GPUs: install the NVIDIA container "
                "toolkit (docs/docker.md), or set GRADPILOT_DOCKER_GPUS=auto or never"
            )
        if error.status_code is not None and error.status_code >= 500:
            return TransientDockerError(
                f"Docker {operation} failed ({error.status_code}: {explanation}); the "
                "controller tries again"
            )
        return ExecutorError(f"Docker {operation} failed ({error.status_code}): {explanation}")


_: type[Executor] = DockerExecutor
