"""The worker's environment: the names of the variables a worker process reads.

The control plane (the agent's submission, the executors) writes them and ``python -m worker``
reads them; both sides use these constants so that a name is spelled in one place. The image's
entrypoint (``infra/docker-entrypoint.sh``) reads :data:`ARRAY_VARS` and :data:`ARRAY_INDEX`
in shell, and a test keeps it in step with :func:`resolve_array_environment`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

#: The API's base URL as the worker reaches it (``settings.resolved_public_url``).
API_URL = "GRADPILOT_API_URL"
#: The job the worker runs; its spec is ``GET {API_URL}/v1/jobs/{JOB_ID}/spec``.
JOB_ID = "GRADPILOT_JOB_ID"
#: The job's bearer token (scoped to that one job).
JOB_TOKEN = "GRADPILOT_JOB_TOKEN"
#: Where unsent reports wait (default: ``<tmp>/gradpilot-spool``); the local executor sets it.
SPOOL_DIR = "GRADPILOT_SPOOL_DIR"
#: How long (seconds) the worker waits out an unreachable API at the end (default 300).
FINISH_DEADLINE_S = "GRADPILOT_FINISH_DEADLINE_S"
#: The worker's log level (default INFO).
LOG_LEVEL = "GRADPILOT_LOG_LEVEL"
#: Where the CIFAR files are when the spec names none.
DATA_DIR = "GRADPILOT_DATA_DIR"
#: An AWS endpoint for every service (moto); unset on AWS.
AWS_ENDPOINT_URL = "GRADPILOT_AWS_ENDPOINT_URL"
#: The AWS region, as boto3 reads it (``AWS_REGION`` first, then ``AWS_DEFAULT_REGION``).
AWS_REGION = "AWS_REGION"
AWS_DEFAULT_REGION = "AWS_DEFAULT_REGION"
#: An AWS Batch array job: the comma-separated names whose value for child ``i`` is in
#: ``<NAME>__<i>`` (Batch gives every child the same overrides; see ``executors.batch``).
ARRAY_VARS = "GRADPILOT_ARRAY_VARS"
#: Set by AWS Batch in each child of an array job.
ARRAY_INDEX = "AWS_BATCH_JOB_ARRAY_INDEX"

#: What a worker cannot start without.
REQUIRED = (API_URL, JOB_ID, JOB_TOKEN)

#: Default of :data:`FINISH_DEADLINE_S`.
DEFAULT_FINISH_DEADLINE_S = 300.0


@dataclass(frozen=True)
class WorkerEnvironment:
    """The variables that tell a worker which job it runs and where to report."""

    api_url: str
    job_id: str
    job_token: str
    aws_endpoint_url: str | None = None

    def as_env(self) -> dict[str, str]:
        """The variables to hand to the worker process."""
        env = {API_URL: self.api_url, JOB_ID: self.job_id, JOB_TOKEN: self.job_token}
        if self.aws_endpoint_url:
            env[AWS_ENDPOINT_URL] = self.aws_endpoint_url
        return env

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> WorkerEnvironment:
        """Read them back; raises ``KeyError`` naming the first missing one (see
        :func:`missing`)."""
        return cls(
            api_url=env[API_URL],
            job_id=env[JOB_ID],
            job_token=env[JOB_TOKEN],
            aws_endpoint_url=env.get(AWS_ENDPOINT_URL) or None,
        )


def missing(env: Mapping[str, str]) -> list[str]:
    """The :data:`REQUIRED` names that ``env`` lacks or leaves empty."""
    return [name for name in REQUIRED if not env.get(name)]


def aws_region(env: Mapping[str, str]) -> str | None:
    """The region boto3 would use from the environment, or None."""
    return env.get(AWS_REGION) or env.get(AWS_DEFAULT_REGION) or None


def finish_deadline_s(env: Mapping[str, str]) -> float:
    """:data:`FINISH_DEADLINE_S` in seconds (default 300)."""
    return float(env.get(FINISH_DEADLINE_S) or DEFAULT_FINISH_DEADLINE_S)


def resolve_array_environment(env: Mapping[str, str], index: int | str) -> dict[str, str]:
    """The environment one child of an array job sees (what the image's entrypoint does).

    ``env`` is the array job's environment, ``index`` the child's :data:`ARRAY_INDEX`. Each
    name in :data:`ARRAY_VARS` takes the value of ``<NAME>__<index>`` (and is unset when the
    child has none).
    """
    resolved = dict(env)
    for name in (n for n in env.get(ARRAY_VARS, "").split(",") if n):
        value = env.get(f"{name}__{index}")
        if value is None:
            resolved.pop(name, None)
        else:
            resolved[name] = value
    return resolved
