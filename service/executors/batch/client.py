"""The AWS Batch API as the executor uses it: a boto3 client whose failures are ours.

:class:`BatchApi` wraps the boto3 ``batch`` client. botocore retries throttling, 5xx and lost
connections (``service.aws``: adaptive mode, jittered backoff) and nothing else; whatever still
fails is translated once, here, into :class:`~service.errors.ExecutorError` (a permanent
refusal, with the setting or IAM permission to fix) or
:class:`~service.errors.TransientExecutorError` (the controller tries again on its next pass).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, cast

from service.aws import (
    SDK_ERRORS,
    AwsFailure,
    AwsFault,
    ErrorFamily,
    make_client,
    translate_aws_error,
)
from service.errors import ExecutorError, TransientExecutorError
from service.settings import Settings

#: describe_jobs takes at most 100 ids per call.
DESCRIBE_BATCH = 100
#: Where Batch's awslogs driver writes when the job definition names no group.
DEFAULT_LOG_GROUP = "/aws/batch/job"

_FAMILY = ErrorFamily(error=ExecutorError, transient=TransientExecutorError)
_MISSING_WORDS = ("does not exist", "not found", "not valid")
_PERMISSIONS = (
    "The service's IAM identity needs batch:SubmitJob, batch:TagResource, batch:ListJobs, "
    "batch:DescribeJobs, batch:DescribeJobDefinitions and batch:TerminateJob (see "
    "infra/README.md)"
)


def make_batch_client(settings: Settings, *, max_attempts: int = 8) -> Any:
    """A boto3 ``batch`` client with adaptive retries, pointed at moto when the settings say so.

    ``max_attempts`` counts every request of one call, the first included.
    """
    return make_client(
        "batch",
        region=settings.aws_region,
        endpoint_url=settings.aws_endpoint_url,
        max_attempts=max_attempts,
    )


class BatchApi:
    """The Batch calls of :class:`~service.executors.batch.BatchExecutor`, translated.

    ``client`` is a boto3 ``batch`` client (a Stubber-wrapped one in tests).
    """

    def __init__(self, settings: Settings, client: Any) -> None:
        self.settings = settings
        self.client = client
        self._log_groups: dict[str, str] = {}

    def call(self, operation: str, **kwargs: Any) -> dict[str, Any]:
        """``client.<operation>(**kwargs)``; an SDK failure becomes an ``ExecutorError``."""
        try:
            response = getattr(self.client, operation)(**kwargs)
        except SDK_ERRORS as e:
            raise self.translate(e, operation) from e
        return cast(dict[str, Any], response)

    def find_job(self, queue: str, name: str) -> str | None:
        """The id of the newest job on ``queue`` with exactly this name, or None."""
        matches: list[dict[str, Any]] = []
        paginator = self.client.get_paginator("list_jobs")
        pages = paginator.paginate(jobQueue=queue, filters=[{"name": "JOB_NAME", "values": [name]}])
        try:
            for page in pages:
                matches.extend(
                    summary
                    for summary in page.get("jobSummaryList", [])
                    # The filter is case-insensitive; array children share the parent's name.
                    if summary.get("jobName") == name and ":" not in summary["jobId"]
                )
        except SDK_ERRORS as e:
            raise self.translate(e, "list_jobs") from e
        if not matches:
            return None
        matches.sort(key=lambda s: s.get("createdAt", 0), reverse=True)
        return str(matches[0]["jobId"])

    def describe_jobs(self, external_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Batch's raw job descriptions by id, ``describe_jobs`` in batches of 100; ids Batch
        does not know are left out."""
        found: dict[str, dict[str, Any]] = {}
        unique = list(dict.fromkeys(external_ids))
        for chunk in _chunks(unique, DESCRIBE_BATCH):
            response = self.call("describe_jobs", jobs=list(chunk))
            for job in response.get("jobs", []):
                found[job["jobId"]] = job
        return found

    def log_group(self, job: dict[str, Any]) -> str:
        """The CloudWatch group of a job's logs: its own awslogs options, else its job
        definition's (looked up once per definition), else Batch's default."""
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
            except SDK_ERRORS:
                pass  # the default group is a fair guess; a log link is not worth failing for
            self._log_groups[definition] = group
        return self._log_groups[definition]

    def close(self) -> None:
        self.client.close()

    def translate(self, error: BaseException, operation: str) -> ExecutorError:
        """Our exception for a failed Batch call, naming what to fix."""
        translated = translate_aws_error(
            error,
            service="AWS Batch",
            operation=operation,
            family=_FAMILY,
            hint=self._hint,
            where=self.settings.aws_endpoint_url or f"AWS Batch in {self.settings.aws_region}",
        )
        assert isinstance(translated, ExecutorError)
        return translated

    def _hint(self, failure: AwsFailure) -> str | None:
        if failure.transient:
            return "the controller tries again"
        if failure.fault is AwsFault.ACCESS_DENIED:
            return _PERMISSIONS
        lowered = failure.message.lower()
        if not any(word in lowered for word in _MISSING_WORDS):
            return None
        region = self.settings.aws_region
        if "queue" in lowered:
            return (
                f"set GRADPILOT_BATCH_JOB_QUEUE (now {self.settings.batch_job_queue!r}, in "
                f"{region}) to the queue that `gradpilot infra deploy` prints"
            )
        if "definition" in lowered:
            return (
                f"set GRADPILOT_BATCH_JOB_DEFINITION (now {self.settings.batch_job_definition!r}, "
                f"in {region}) to the definition that `gradpilot infra deploy` prints"
            )
        return None


def _chunks(items: Sequence[str], size: int) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
