"""Reading AWS Batch's job descriptions: executor states, failure causes and log locations.

``describe_jobs`` says far more than the controller needs; :func:`map_status` reduces one job
to an :class:`~service.executors.ExecutorStatus`: its state (a job we terminated is
``cancelled``), its last exit code, whether a failure was the platform's (a spot reclaim, a
retryable exit), a warning when it has waited for capacity too long, and one CloudWatch log
location per attempt (``cloudwatch://<group>//<stream>``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import quote

from service.errors import InvalidInput
from service.executors._protocol import ExecutorState, ExecutorStatus
from service.schemas.exit_codes import RETRYABLE

#: The reason gradpilot gives to terminate_job; a FAILED job with it is reported ``cancelled``.
CANCEL_PREFIX = "Cancelled by gradpilot"

STATE_MAP: dict[str, ExecutorState] = {
    "SUBMITTED": ExecutorState.SUBMITTED,
    "PENDING": ExecutorState.SUBMITTED,
    "RUNNABLE": ExecutorState.SUBMITTED,
    "STARTING": ExecutorState.SUBMITTED,
    "RUNNING": ExecutorState.RUNNING,
    "SUCCEEDED": ExecutorState.SUCCEEDED,
    "FAILED": ExecutorState.FAILED,
}

_LOCATION_SCHEME = "cloudwatch://"

#: A job's CloudWatch log group (``BatchApi.log_group``).
LogGroupOf = Callable[[dict[str, Any]], str]


def cancel_reason(reason: str) -> str:
    """The ``terminate_job`` reason: recognisable as ours, within Batch's 1024 characters."""
    text = f"{CANCEL_PREFIX}: {reason}" if reason else CANCEL_PREFIX
    return text[:1024]


def is_infrastructure_failure(status_reasons: Iterable[str | None], exit_code: int | None) -> bool:
    """A spot reclaim or lost host (``Host EC2 ...``), or a retryable worker exit."""
    if any(reason and reason.startswith("Host EC2") for reason in status_reasons):
        return True
    return exit_code is not None and exit_code in RETRYABLE


def parse_log_location(location: str) -> tuple[str, str]:
    """``(group, stream)`` of a ``cloudwatch://<group>//<stream>`` location.

    ``//`` separates the two because both usually contain ``/`` (``/aws/batch/job`` and
    ``<definition>/default/<task id>``); ``aws logs get-log-events --log-group-name <group>
    --log-stream-name <stream>`` reads it.
    """
    rest = location[len(_LOCATION_SCHEME) :]
    if not location.startswith(_LOCATION_SCHEME) or "//" not in rest:
        raise InvalidInput(f"not a cloudwatch://<group>//<stream> location: {location!r}")
    group, _, stream = rest.partition("//")
    return group, stream


def log_locations(job: dict[str, Any], log_group: LogGroupOf) -> list[str]:
    """One ``cloudwatch://<group>//<stream>`` per attempt of ``job``, oldest first."""
    streams: list[str] = []
    for attempt in job.get("attempts") or []:
        stream = (attempt.get("container") or {}).get("logStreamName")
        if stream and stream not in streams:
            streams.append(stream)
    current = (job.get("container") or {}).get("logStreamName")
    if current and current not in streams:
        streams.append(current)
    if not streams:
        return []
    group = log_group(job)
    # '//' separates group from stream: both may contain '/'.
    return [f"{_LOCATION_SCHEME}{group}//{stream}" for stream in streams]


def console_log_url(region: str, group: str, stream: str) -> str:
    """The CloudWatch console page of one log stream."""

    # The console escapes the path twice, with '$' standing in for '%'.
    def enc(value: str) -> str:
        return quote(quote(value, safe=""), safe="").replace("%", "$")

    return (
        f"https://{region}.console.aws.amazon.com/cloudwatch/home?region={region}"
        f"#logsV2:log-groups/log-group/{enc(group)}/log-events/{enc(stream)}"
    )


def map_status(
    job: dict[str, Any],
    *,
    log_group: LogGroupOf,
    now_s: float,
    runnable_timeout_s: int,
    console_region: str | None,
) -> ExecutorStatus:
    """The executor's view of one Batch job description.

    ``now_s`` is the current time (for the RUNNABLE-too-long warning); ``console_region``, when
    given, adds a CloudWatch console link (not under moto, which has no console).
    """
    batch_status = str(job.get("status", ""))
    state = STATE_MAP.get(batch_status, ExecutorState.UNKNOWN)
    attempts: list[dict[str, Any]] = job.get("attempts") or []
    last_attempt = attempts[-1] if attempts else {}
    last_container = last_attempt.get("container") or {}
    container = job.get("container") or {}
    exit_code = last_container.get("exitCode")
    if exit_code is None:
        exit_code = container.get("exitCode")
    job_reason = job.get("statusReason")
    attempt_reason = last_attempt.get("statusReason")
    container_reason = last_container.get("reason") or container.get("reason")
    reasons = [r for r in (job_reason, attempt_reason, container_reason) if r]
    reason = "; ".join(dict.fromkeys(reasons)) or None
    extra: dict[str, str] = {"batch_status": batch_status, "attempts": str(len(attempts))}
    infrastructure = False
    if state == ExecutorState.FAILED:
        # Our own terminate_job reason, or a cancel_job from the console or CLI.
        if (job_reason and job_reason.startswith(CANCEL_PREFIX)) or job.get("isCancelled"):
            state = ExecutorState.CANCELLED
        else:
            infrastructure = is_infrastructure_failure([job_reason, attempt_reason], exit_code)
    elif batch_status == "RUNNABLE":
        warning = runnable_warning(job, last_attempt, now_s, runnable_timeout_s)
        if warning:
            reason = warning
            extra["warning"] = "runnable_timeout"
    index = (job.get("arrayProperties") or {}).get("index")
    if index is None and job["jobId"].rpartition(":")[2].isdigit():
        index = job["jobId"].rpartition(":")[2]  # a child's id is <parent>:<index>
    if index is not None:
        extra["array_index"] = str(index)
    locations = log_locations(job, log_group)
    if locations:
        extra["log_streams"] = " ".join(locations)
        if console_region:
            group, stream = parse_log_location(locations[-1])
            extra["log_console_url"] = console_log_url(console_region, group, stream)
    return ExecutorStatus(
        external_id=job["jobId"],
        state=state,
        exit_code=exit_code,
        reason=reason,
        infrastructure_failure=infrastructure,
        log_location=locations[-1] if locations else None,
        extra=extra,
    )


def runnable_warning(
    job: dict[str, Any], last_attempt: dict[str, Any], now_s: float, limit_s: int
) -> str | None:
    """Why a job may have waited RUNNABLE longer than ``limit_s``, or None within the limit."""
    # A retried job is RUNNABLE again since its last attempt stopped; else since creation.
    since_ms = last_attempt.get("stoppedAt") or job.get("createdAt")
    if not since_ms:
        return None
    waited = now_s - since_ms / 1000.0
    if waited <= limit_s:
        return None
    return (
        f"waiting for capacity: RUNNABLE for {waited / 60:.0f} min "
        f"(GRADPILOT_BATCH_RUNNABLE_TIMEOUT_S={limit_s}). Likely causes: the compute "
        "environments' maxvCpus is reached, or is smaller than the job asks for; the job "
        "asks for more GPUs, vCPUs or memory than any instance type in the compute "
        "environment offers; the g6 instance types are not available in this region or in "
        "the compute environment's subnets' availability zones; the account's EC2 quota "
        "for G instances (on-demand or spot vCPUs) is too low; spot capacity is short; or a "
        "compute environment is INVALID or DISABLED (`aws batch "
        "describe-compute-environments` shows why)."
    )
