"""The AWS Batch job builder: ``submit_job`` requests for one job or an array of candidates.

Names
    The Batch ``jobName`` is the submission's ``name`` (``gp-<run8>-g<gen>-a<attempt>``), so
    that a job is recognisable in the console and a resubmission of the same attempt finds the
    job that already exists; an array job is named ``<first name>-x<count>`` unless the caller
    names it.

Retries
    The job's own retries are Batch's: :func:`retry_strategy` retries spot reclaims
    (``Host EC2*``) and the worker's retryable exit codes and nothing else, so a ``CODE_ERROR``
    exit is never retried.

Array jobs
    Batch gives every child of an array job the same container overrides and tells a child
    apart only by ``AWS_BATCH_JOB_ARRAY_INDEX``; so the environment values that differ between
    candidates are passed as ``<NAME>__<index>`` with ``GRADPILOT_ARRAY_VARS`` listing the
    names, and ``service.schemas.worker_env.resolve_array_environment`` (and the image's
    entrypoint, ``infra/docker-entrypoint.sh``) turns them back into ``<NAME>`` for the child.
    Child ``i`` is candidate ``i`` of the list given; its external id is ``<parentJobId>:<i>``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from service.errors import InvalidInput
from service.executors._protocol import JobSubmission
from service.schemas import worker_env
from service.schemas.exit_codes import CODE_ERROR, RETRYABLE

#: Batch's own attempts per job (spot reclaims and retryable exits); AWS allows 1-10.
BATCH_ATTEMPTS = 3
#: The image's entrypoint runs ``python -m worker`` by default; several GPUs need torchrun.
WORKER_COMMAND = ["python", "-m", "worker"]
#: Batch arrays hold 2 to 10,000 children.
MAX_ARRAY_SIZE = 10_000
#: Batch refuses attempt durations under 60 s.
MIN_TIMEOUT_S = 60

_JOB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


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


def check_job_name(name: str) -> None:
    """Refuse a name Batch would refuse, before any call."""
    if not _JOB_NAME.match(name):
        raise InvalidInput(
            f"not a valid AWS Batch job name: {name!r} (1-128 letters, digits, '-' or '_', "
            "starting with a letter or digit)"
        )


def submit_request(job: JobSubmission, *, queue: str, definition: str) -> dict[str, Any]:
    """The ``submit_job`` arguments for one worker job."""
    request = _request(job.name, job, job.environment, queue=queue, definition=definition)
    request["tags"] = {
        "gradpilot:run": job.run_id,
        "gradpilot:job": job.job_id,
        "gradpilot:generation": str(job.generation),
        "gradpilot:attempt": str(job.attempt),
    }
    return request


def array_name(jobs: Sequence[JobSubmission]) -> str:
    """The default name of an array job of these candidates."""
    return f"{jobs[0].name}-x{len(jobs)}"


def check_array(jobs: Sequence[JobSubmission]) -> None:
    """Candidates fit one array job: at most 10,000 of them, all with the same resources and
    timeout (an array job has one set of overrides)."""
    if len(jobs) > MAX_ARRAY_SIZE:
        raise InvalidInput(f"an AWS Batch array job holds at most {MAX_ARRAY_SIZE} children")
    first = jobs[0]
    shape = (first.gpus, first.vcpus, first.memory_mib, first.timeout_s)
    for other in jobs[1:]:
        if (other.gpus, other.vcpus, other.memory_mib, other.timeout_s) != shape:
            raise InvalidInput(
                "all candidates of an array job need the same gpus, vcpus, memory and "
                f"timeout; {other.name} differs from {first.name}: submit them one by one"
            )


def array_request(
    jobs: Sequence[JobSubmission], name: str, *, queue: str, definition: str
) -> dict[str, Any]:
    """The ``submit_job`` arguments for an array job whose child ``i`` runs ``jobs[i]``."""
    first = jobs[0]
    environment = array_environment([j.environment for j in jobs])
    request = _request(name, first, environment, queue=queue, definition=definition)
    request["arrayProperties"] = {"size": len(jobs)}
    request["tags"] = {
        "gradpilot:run": first.run_id,
        "gradpilot:generation": str(first.generation),
        # Tag values allow no commas.
        "gradpilot:array": " ".join(j.job_id for j in jobs)[:256],
    }
    return request


def child_ids(parent_id: str, size: int) -> list[str]:
    """The external ids of an array job's children, in candidate order."""
    return [f"{parent_id}:{index}" for index in range(size)]


def array_environment(environments: Sequence[Mapping[str, str]]) -> dict[str, str]:
    """One environment for all children: common values as they are, differing ones as
    ``<NAME>__<index>`` listed in ``GRADPILOT_ARRAY_VARS``."""
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
        environment[worker_env.ARRAY_VARS] = ",".join(varying)
    return environment


def _request(
    name: str,
    shape: JobSubmission,
    environment: Mapping[str, str],
    *,
    queue: str,
    definition: str,
) -> dict[str, Any]:
    request: dict[str, Any] = {
        "jobName": name,
        "jobQueue": queue,
        "jobDefinition": definition,
        "containerOverrides": {
            "environment": [{"name": k, "value": v} for k, v in sorted(environment.items())],
            "resourceRequirements": resource_requirements(
                shape.gpus, shape.vcpus, shape.memory_mib
            ),
            "command": worker_command(shape.gpus),
        },
        "retryStrategy": retry_strategy(),
    }
    if shape.timeout_s:
        request["timeout"] = {"attemptDurationSeconds": max(MIN_TIMEOUT_S, int(shape.timeout_s))}
    return request
