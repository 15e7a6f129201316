"""The ``batch`` executor: one AWS Batch job per gradpilot job, through boto3.

Names and ids
    The Batch ``jobName`` is the submission's ``name`` (``gp-<run8>-g<gen>-a<attempt>``), so
    that a job is recognisable in the console and a resubmission of the same attempt finds the
    job that already exists instead of starting a second one (see :meth:`BatchExecutor.submit`).
    The external id is the Batch ``jobId``; a child of an array job has the id
    ``<parentJobId>:<index>``, which ``describe_jobs`` and ``terminate_job`` accept as well.

Retries
    botocore's adaptive mode retries throttling and 5xx with jittered backoff and a client-side
    rate limiter; what still fails afterwards becomes a :class:`TransientExecutorError`. The
    job's own retries are Batch's: :func:`retry_strategy` retries spot reclaims
    (``Host EC2*``) and the worker's retryable exit codes and nothing else, so a ``CODE_ERROR``
    exit is never retried.

Array jobs
    :meth:`BatchExecutor.submit_array` submits several candidates as one array job. Batch gives
    every child the same container overrides and tells a child apart only by
    ``AWS_BATCH_JOB_ARRAY_INDEX``; so the environment values that differ between candidates are
    passed as ``<NAME>__<index>`` with ``GRADPILOT_ARRAY_VARS`` listing the names, and
    :func:`resolve_array_environment` (and the image's entrypoint, ``infra/docker-entrypoint.sh``)
    turns them back into ``<NAME>`` for the child. Child ``i`` is candidate ``i`` of the list
    given; its external id is ``<parentJobId>:<i>``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import quote

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)
from botocore.parsers import ResponseParserError

from service.errors import ExecutorError, InvalidInput
from service.executors._protocol import ExecutorState, ExecutorStatus, JobSubmission
from service.schemas.exit_codes import CODE_ERROR, RETRYABLE
from service.settings import Settings

#: describe_jobs takes at most 100 ids per call.
DESCRIBE_BATCH = 100
#: Batch's own attempts per job (spot reclaims and retryable exits); AWS allows 1-10.
BATCH_ATTEMPTS = 3
#: The reason gradpilot gives to terminate_job; a FAILED job with it is reported ``cancelled``.
CANCEL_PREFIX = "Cancelled by gradpilot"
#: Where Batch's awslogs driver writes when the job definition names no group.
DEFAULT_LOG_GROUP = "/aws/batch/job"
#: The image's entrypoint runs ``python -m worker`` by default; several GPUs need torchrun.
WORKER_COMMAND = ["python", "-m", "worker"]
#: Environment variable that lists the per-child variables of an array job.
ARRAY_VARS = "GRADPILOT_ARRAY_VARS"
ARRAY_INDEX = "AWS_BATCH_JOB_ARRAY_INDEX"

_STATE_MAP: dict[str, ExecutorState] = {
    "SUBMITTED": ExecutorState.SUBMITTED,
    "PENDING": ExecutorState.SUBMITTED,
    "RUNNABLE": ExecutorState.SUBMITTED,
    "STARTING": ExecutorState.SUBMITTED,
    "RUNNING": ExecutorState.RUNNING,
    "SUCCEEDED": ExecutorState.SUCCEEDED,
    "FAILED": ExecutorState.FAILED,
}
_JOB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_THROTTLING = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "ServerException",
        "InternalFailure",
    }
)
#: What boto3 raises; a reply it cannot parse (a proxy's HTML error page) is not a BotoCoreError.
_SDK_ERRORS = (BotoCoreError, ClientError, ResponseParserError)
_NO_CREDENTIALS = (
    "no AWS credentials found for AWS Batch: set AWS_PROFILE or AWS_ACCESS_KEY_ID and "
    "AWS_SECRET_ACCESS_KEY, or run where an IAM role provides them (for moto any values do)"
)


class TransientExecutorError(ExecutorError):
    """AWS Batch throttled or failed after botocore's retries; trying again later may work."""

    status_code = 503
    transient = True


def retry_strategy() -> dict[str, Any]:
    """Batch's retry strategy for worker jobs (also in ``infra/gradpilot.yaml``, kept equal by
    a test).

    Conditions are evaluated in order and the first match decides; a job that matches none is
    *retried* by Batch, hence the final catch-all ``EXIT``. At most 5 conditions are allowed.
    """
    conditions: list[dict[str, str]] = [{"onStatusReason": "Host EC2*", "action": "RETRY"}]
    conditions += [{"onExitCode": str(code), "action": "RETRY"} for code in sorted(RETRYABLE)]
    conditions += [
        {"onExitCode": str(CODE_ERROR), "action": "EXIT"},
        {"onReason": "*", "action": "EXIT"},
    ]
    assert len(conditions) <= 5, "AWS Batch allows at most 5 evaluateOnExit conditions"
    return {"attempts": BATCH_ATTEMPTS, "evaluateOnExit": conditions}


def worker_command(gpus: int) -> list[str]:
    """The container command: ``python -m worker``, or torchrun with one process per GPU."""
    if gpus > 1:
        return ["torchrun", "--standalone", f"--nproc_per_node={gpus}", "-m", "worker"]
    return list(WORKER_COMMAND)


def resource_requirements(gpus: int, vcpus: int, memory_mib: int) -> list[dict[str, str]]:
    """GPU/VCPU/MEMORY ``resourceRequirements`` (a GPU entry only when GPUs are asked for)."""
    requirements = [
        {"type": "VCPU", "value": str(vcpus)},
        {"type": "MEMORY", "value": str(memory_mib)},
    ]
    if gpus > 0:
        requirements.insert(0, {"type": "GPU", "value": str(gpus)})
    return requirements


def is_infrastructure_failure(status_reasons: Iterable[str | None], exit_code: int | None) -> bool:
    """A spot reclaim or lost host (``Host EC2 ...``), or a retryable worker exit."""
    if any(reason and reason.startswith("Host EC2") for reason in status_reasons):
        return True
    return exit_code is not None and exit_code in RETRYABLE


def resolve_array_environment(env: Mapping[str, str], index: int | str) -> dict[str, str]:
    """The environment one child of an array job sees (what the entrypoint script does).

    ``env`` is the array job's environment, ``index`` the child's ``AWS_BATCH_JOB_ARRAY_INDEX``.
    Each name in ``GRADPILOT_ARRAY_VARS`` takes the value of ``<NAME>__<index>``.
    """
    resolved = dict(env)
    names = [n for n in env.get(ARRAY_VARS, "").split(",") if n]
    for name in names:
        value = env.get(f"{name}__{index}")
        if value is None:
            resolved.pop(name, None)
        else:
            resolved[name] = value
    return resolved


def make_batch_client(settings: Settings, *, max_attempts: int = 8) -> Any:
    """A boto3 ``batch`` client with adaptive retries, pointed at moto when the settings say so.

    ``max_attempts`` counts every request of one call, the first included.
    """
    config = Config(
        retries={"mode": "adaptive", "total_max_attempts": max_attempts},
        connect_timeout=10,
        read_timeout=60,
        user_agent_extra="gradpilot",
    )
    # A session of its own: boto3's default session caches credentials and is not safe to
    # create clients from in several threads at once.
    return boto3.session.Session().client(
        "batch",
        region_name=settings.aws_region,
        endpoint_url=settings.aws_endpoint_url,
        config=config,
    )


def parse_log_location(location: str) -> tuple[str, str]:
    """``(group, stream)`` of a ``cloudwatch://<group>//<stream>`` location.

    ``//`` separates the two because both usually contain ``/`` (``/aws/batch/job`` and
    ``<definition>/default/<task id>``); ``aws logs get-log-events --log-group-name <group>
    --log-stream-name <stream>`` reads it.
    """
    if not location.startswith("cloudwatch://") or "//" not in location[len("cloudwatch://") :]:
        raise InvalidInput(f"not a cloudwatch://<group>//<stream> location: {location!r}")
    group, _, stream = location[len("cloudwatch://") :].partition("//")
    return group, stream


def _chunks(items: Sequence[str], size: int) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _console_log_url(region: str, group: str, stream: str) -> str:
    # The CloudWatch console escapes the path twice, with '$' standing in for '%'.
    def enc(value: str) -> str:
        return quote(quote(value, safe=""), safe="").replace("%", "$")

    return (
        f"https://{region}.console.aws.amazon.com/cloudwatch/home?region={region}"
        f"#logsV2:log-groups/log-group/{enc(group)}/log-events/{enc(stream)}"
    )


class BatchExecutor:
    """Runs workers as AWS Batch jobs on the queue and job definition named in the settings.

    ``client`` replaces the boto3 client (a Stubber-wrapped one in tests); ``clock`` returns
    the current time in seconds (for the RUNNABLE-too-long warning).
    """

    name = "batch"

    def __init__(
        self,
        settings: Settings,
        client: Any = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self._owns_client = client is None
        try:
            self.client = client if client is not None else make_batch_client(settings)
        except NoRegionError as e:  # pragma: no cover - settings always carry a region
            raise ExecutorError("AWS Batch needs a region: set GRADPILOT_AWS_REGION") from e
        self._clock = clock
        #: name → job id of what this process submitted: Batch's list_jobs is eventually
        #: consistent, so a resubmission right after a submit could miss the first job.
        self._submitted: dict[str, str] = {}
        self._log_groups: dict[str, str] = {}

    # -- submission ----------------------------------------------------------------------

    @property
    def job_queue(self) -> str:
        if not self.settings.batch_job_queue:
            raise ExecutorError(
                "GRADPILOT_BATCH_JOB_QUEUE is not set: `gradpilot infra deploy` prints it"
            )
        return self.settings.batch_job_queue

    @property
    def job_definition(self) -> str:
        if not self.settings.batch_job_definition:
            raise ExecutorError(
                "GRADPILOT_BATCH_JOB_DEFINITION is not set: `gradpilot infra deploy` prints it"
            )
        return self.settings.batch_job_definition

    def submit(self, job: JobSubmission) -> str:
        """Submit ``python -m worker`` with the job's environment and resources.

        Idempotent by name: if a job with this name is still known to Batch (in any state:
        a finished one must not run twice either), its id is returned instead. Batch keeps
        finished jobs for about a week and its listing is eventually consistent, so this
        process also remembers what it submitted; the caller should store the returned id.
        """
        _check_job_name(job.name)
        existing = self._submitted.get(job.name) or self.find_job(job.name)
        if existing:
            self._submitted[job.name] = existing
            return existing
        overrides: dict[str, Any] = {
            "environment": [{"name": k, "value": v} for k, v in sorted(job.environment.items())],
            "resourceRequirements": resource_requirements(job.gpus, job.vcpus, job.memory_mib),
            "command": worker_command(job.gpus),
        }
        request: dict[str, Any] = {
            "jobName": job.name,
            "jobQueue": self.job_queue,
            "jobDefinition": self.job_definition,
            "containerOverrides": overrides,
            "retryStrategy": retry_strategy(),
            "tags": {
                "gradpilot:run": job.run_id,
                "gradpilot:job": job.job_id,
                "gradpilot:generation": str(job.generation),
                "gradpilot:attempt": str(job.attempt),
            },
        }
        if job.timeout_s:
            # Batch refuses attempt durations under 60 s.
            request["timeout"] = {"attemptDurationSeconds": max(60, int(job.timeout_s))}
        response = self._call("submit_job", **request)
        job_id: str = response["jobId"]
        self._submitted[job.name] = job_id
        return job_id

    def submit_array(self, jobs: Sequence[JobSubmission], *, name: str | None = None) -> list[str]:
        """Submit several candidates as one array job; returns one external id per candidate.

        All candidates must ask for the same resources and timeout (an array job has one set of
        overrides). Candidate ``i`` runs as child ``i`` (``AWS_BATCH_JOB_ARRAY_INDEX=i``) with id
        ``<parentJobId>:<i>``; the environment values that differ between candidates reach it
        through ``GRADPILOT_ARRAY_VARS`` (see the module docstring). A single candidate is
        submitted as a plain job (Batch arrays have at least 2 children).
        """
        if not jobs:
            return []
        if len(jobs) == 1:
            return [self.submit(jobs[0])]
        if len(jobs) > 10_000:
            raise InvalidInput("an AWS Batch array job holds at most 10000 children")
        first = jobs[0]
        shape = (first.gpus, first.vcpus, first.memory_mib, first.timeout_s)
        for other in jobs[1:]:
            if (other.gpus, other.vcpus, other.memory_mib, other.timeout_s) != shape:
                raise InvalidInput(
                    "all candidates of an array job need the same gpus, vcpus, memory and "
                    f"timeout; {other.name} differs from {first.name}: submit them one by one"
                )
        array_name = name or f"{first.name}-x{len(jobs)}"
        _check_job_name(array_name)
        parent = self._submitted.get(array_name) or self.find_job(array_name)
        if not parent:
            environment = _array_environment([j.environment for j in jobs])
            request: dict[str, Any] = {
                "jobName": array_name,
                "jobQueue": self.job_queue,
                "jobDefinition": self.job_definition,
                "arrayProperties": {"size": len(jobs)},
                "containerOverrides": {
                    "environment": [
                        {"name": k, "value": v} for k, v in sorted(environment.items())
                    ],
                    "resourceRequirements": resource_requirements(
                        first.gpus, first.vcpus, first.memory_mib
                    ),
                    "command": worker_command(first.gpus),
                },
                "retryStrategy": retry_strategy(),
                "tags": {
                    "gradpilot:run": first.run_id,
                    "gradpilot:generation": str(first.generation),
                    # Tag values allow no commas.
                    "gradpilot:array": " ".join(j.job_id for j in jobs)[:256],
                },
            }
            if first.timeout_s:
                request["timeout"] = {"attemptDurationSeconds": max(60, int(first.timeout_s))}
            parent = self._call("submit_job", **request)["jobId"]
        self._submitted[array_name] = parent
        return [f"{parent}:{index}" for index in range(len(jobs))]

    def find_job(self, name: str) -> str | None:
        """The id of the newest job on the queue with exactly this name, or None."""
        matches: list[dict[str, Any]] = []
        paginator = self.client.get_paginator("list_jobs")
        pages = paginator.paginate(
            jobQueue=self.job_queue, filters=[{"name": "JOB_NAME", "values": [name]}]
        )
        try:
            for page in pages:
                matches.extend(
                    summary
                    for summary in page.get("jobSummaryList", [])
                    # The filter is case-insensitive; array children share the parent's name.
                    if summary.get("jobName") == name and ":" not in summary["jobId"]
                )
        except _SDK_ERRORS as e:
            raise self._translate(e, "list_jobs") from e
        if not matches:
            return None
        matches.sort(key=lambda s: s.get("createdAt", 0), reverse=True)
        return str(matches[0]["jobId"])

    # -- observation ---------------------------------------------------------------------

    def describe(self, external_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Batch's raw job descriptions by id, ``describe_jobs`` in batches of 100."""
        found: dict[str, dict[str, Any]] = {}
        unique = list(dict.fromkeys(external_ids))
        for chunk in _chunks(unique, DESCRIBE_BATCH):
            response = self._call("describe_jobs", jobs=list(chunk))
            for job in response.get("jobs", []):
                found[job["jobId"]] = job
        return found

    def status(self, external_ids: list[str]) -> dict[str, ExecutorStatus]:
        """The state of many jobs; ids Batch no longer knows are ``unknown``."""
        described = self.describe(external_ids)
        result: dict[str, ExecutorStatus] = {}
        for external_id in external_ids:
            job = described.get(external_id)
            if job is None:
                result[external_id] = ExecutorStatus(
                    external_id=external_id,
                    state=ExecutorState.UNKNOWN,
                    reason="AWS Batch does not know this job (finished jobs expire after ~7 days)",
                )
            else:
                result[external_id] = self._map_status(job)
        return result

    def cancel(self, external_id: str, reason: str) -> None:
        """Terminate the job in whatever state it is (terminate_job also covers queued jobs)."""
        text = f"{CANCEL_PREFIX}: {reason}" if reason else CANCEL_PREFIX
        self._call("terminate_job", jobId=external_id, reason=text[:1024])

    def log_location(self, external_id: str) -> str | None:
        """``cloudwatch://<group>//<stream>`` of the latest attempt, or None before it starts."""
        job = self.describe([external_id]).get(external_id)
        if job is None:
            return None
        locations = self._log_locations(job)
        return locations[-1] if locations else None

    def log_locations(self, external_id: str) -> list[str]:
        """One ``cloudwatch://<group>//<stream>`` per attempt, oldest first."""
        job = self.describe([external_id]).get(external_id)
        return self._log_locations(job) if job else []

    def close(self) -> None:
        if self._owns_client:
            self.client.close()

    # -- internals -----------------------------------------------------------------------

    def _map_status(self, job: dict[str, Any]) -> ExecutorStatus:
        batch_status = str(job.get("status", ""))
        state: ExecutorState = _STATE_MAP.get(batch_status, ExecutorState.UNKNOWN)
        attempts: list[dict[str, Any]] = job.get("attempts") or []
        last_attempt = attempts[-1] if attempts else {}
        container = job.get("container") or {}
        exit_code = (last_attempt.get("container") or {}).get("exitCode")
        if exit_code is None:
            exit_code = container.get("exitCode")
        job_reason = job.get("statusReason")
        attempt_reason = last_attempt.get("statusReason")
        container_reason = (last_attempt.get("container") or {}).get("reason") or container.get(
            "reason"
        )
        reasons = [r for r in (job_reason, attempt_reason, container_reason) if r]
        reason = "; ".join(dict.fromkeys(reasons)) or None
        extra: dict[str, str] = {"batch_status": batch_status, "attempts": str(len(attempts))}
        infrastructure = False
        if state == "failed":
            # Our own terminate_job reason, or a cancel_job from the console or CLI.
            if (job_reason and job_reason.startswith(CANCEL_PREFIX)) or job.get("isCancelled"):
                state = ExecutorState.CANCELLED
            else:
                infrastructure = is_infrastructure_failure([job_reason, attempt_reason], exit_code)
        elif batch_status == "RUNNABLE":
            warning = self._runnable_warning(job, last_attempt)
            if warning:
                reason = warning
                extra["warning"] = "runnable_timeout"
        index = (job.get("arrayProperties") or {}).get("index")
        if index is None and job["jobId"].rpartition(":")[2].isdigit():
            index = job["jobId"].rpartition(":")[2]  # a child's id is <parent>:<index>
        if index is not None:
            extra["array_index"] = str(index)
        locations = self._log_locations(job)
        if locations:
            extra["log_streams"] = " ".join(locations)
            if not self.settings.aws_endpoint_url:
                group, stream = parse_log_location(locations[-1])
                extra["log_console_url"] = _console_log_url(self.settings.aws_region, group, stream)
        return ExecutorStatus(
            external_id=job["jobId"],
            state=state,
            exit_code=exit_code,
            reason=reason,
            infrastructure_failure=infrastructure,
            log_location=locations[-1] if locations else None,
            extra=extra,
        )

    def _runnable_warning(self, job: dict[str, Any], last_attempt: dict[str, Any]) -> str | None:
        # A retried job is RUNNABLE again since its last attempt stopped; else since creation.
        since_ms = last_attempt.get("stoppedAt") or job.get("createdAt")
        if not since_ms:
            return None
        waited = self._clock() - since_ms / 1000.0
        limit = self.settings.batch_runnable_timeout_s
        if waited <= limit:
            return None
        return (
            f"waiting for capacity: RUNNABLE for {waited / 60:.0f} min "
            f"(GRADPILOT_BATCH_RUNNABLE_TIMEOUT_S={limit}). Likely causes: the compute "
            "environments' maxvCpus is reached, or is smaller than the job asks for; the job "
            "asks for more GPUs, vCPUs or memory than any instance type in the compute "
            "environment offers; the g6 instance types are not available in this region or in "
            "the compute environment's subnets' availability zones; the account's EC2 quota "
            "for G instances (on-demand or spot vCPUs) is too low; spot capacity is short; or a "
            "compute environment is INVALID or DISABLED (`aws batch "
            "describe-compute-environments` shows why)."
        )

    def _log_locations(self, job: dict[str, Any]) -> list[str]:
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
        group = self._log_group(job)
        # '//' separates group from stream: both may contain '/'.
        return [f"cloudwatch://{group}//{stream}" for stream in streams]

    def _log_group(self, job: dict[str, Any]) -> str:
        options = ((job.get("container") or {}).get("logConfiguration") or {}).get("options")
        if options and options.get("awslogs-group"):
            return str(options["awslogs-group"])
        definition = job.get("jobDefinition")
        if not definition:
            return DEFAULT_LOG_GROUP
        if definition not in self._log_groups:
            group = DEFAULT_LOG_GROUP
            try:
                described = self.client.describe_job_definitions(jobDefinitions=[definition])
                for item in described.get("jobDefinitions", []):
                    config = (item.get("containerProperties") or {}).get("logConfiguration") or {}
                    group = (config.get("options") or {}).get("awslogs-group") or group
            except _SDK_ERRORS:
                pass  # the default group is a fair guess; a log link is not worth failing for
            self._log_groups[definition] = group
        return self._log_groups[definition]

    def _call(self, operation: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response: dict[str, Any] = getattr(self.client, operation)(**kwargs)
        except _SDK_ERRORS as e:
            raise self._translate(e, operation) from e
        return response

    def _translate(self, error: Exception, operation: str) -> ExecutorError:
        if isinstance(error, NoCredentialsError | PartialCredentialsError):
            return ExecutorError(_NO_CREDENTIALS)
        if isinstance(error, BotoConnectionError | HTTPClientError):
            where = self.settings.aws_endpoint_url or f"AWS Batch in {self.settings.aws_region}"
            return TransientExecutorError(
                f"could not reach {where} for {operation} ({error}); this is transient, the "
                "controller tries again"
            )
        if not isinstance(error, ClientError):
            return ExecutorError(f"AWS Batch {operation} failed: {error}")
        info = error.response.get("Error", {})
        code = str(info.get("Code", ""))
        message = str(info.get("Message", "")) or str(error)
        http = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if code in _THROTTLING or http == 429 or http >= 500:
            return TransientExecutorError(
                f"AWS Batch {operation} is throttled or unavailable after retries ({code or http}: "
                f"{message}); this is transient, the controller tries again"
            )
        lowered = message.lower()
        missing = any(s in lowered for s in ("does not exist", "not found", "not valid"))
        if missing and "queue" in lowered:
            return ExecutorError(
                f"AWS Batch job queue {self.settings.batch_job_queue!r} does not exist in "
                f"{self.settings.aws_region} ({message}): set GRADPILOT_BATCH_JOB_QUEUE to the "
                "queue that `gradpilot infra deploy` prints"
            )
        if missing and "definition" in lowered:
            return ExecutorError(
                f"AWS Batch job definition {self.settings.batch_job_definition!r} does not exist "
                f"in {self.settings.aws_region} ({message}): set GRADPILOT_BATCH_JOB_DEFINITION "
                "to the definition that `gradpilot infra deploy` prints"
            )
        if code in ("AccessDeniedException", "AccessDenied", "UnauthorizedOperation"):
            return ExecutorError(
                f"AWS Batch refused {operation}: {message}. The service's IAM identity needs "
                "batch:SubmitJob, batch:TagResource, batch:ListJobs, batch:DescribeJobs, "
                "batch:DescribeJobDefinitions and batch:TerminateJob (see infra/README.md)"
            )
        if code in ("UnrecognizedClientException", "InvalidSignatureException", "ExpiredToken"):
            return ExecutorError(f"AWS rejected the credentials for Batch ({code}): {message}")
        return ExecutorError(f"AWS Batch {operation} failed ({code}): {message}")


def _check_job_name(name: str) -> None:
    if not _JOB_NAME.match(name):
        raise InvalidInput(
            f"not a valid AWS Batch job name: {name!r} (1-128 letters, digits, '-' or '_', "
            "starting with a letter or digit)"
        )


def _array_environment(environments: Sequence[Mapping[str, str]]) -> dict[str, str]:
    keys = sorted({key for env in environments for key in env})
    common: dict[str, str] = {}
    varying: list[str] = []
    for key in keys:
        values = [env.get(key) for env in environments]
        if all(v is not None and v == values[0] for v in values):
            common[key] = str(values[0])
        else:
            if not _ENV_NAME.match(key):
                raise InvalidInput(f"environment variable name {key!r} cannot vary in an array")
            varying.append(key)
    environment = dict(common)
    for key in varying:
        for index, env in enumerate(environments):
            if key in env:
                environment[f"{key}__{index}"] = env[key]
    if varying:
        environment[ARRAY_VARS] = ",".join(varying)
    return environment
