"""moto with the gradpilot stack deployed from ``infra/gradpilot.yaml``, for Batch tests.

Jobs go straight to SUCCEEDED without running (``use_docker: False``);
``MOTO_SIMPLE_BATCH_FAIL_AFTER=0`` makes them FAILED instead.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from moto import mock_aws

from service.executors import JobSubmission
from service.infra import deploy_stack
from service.settings import Settings

ARTIFACT_BUCKET = "gp-test-artifacts"


@contextmanager
def moto_batch_stack() -> Iterator[dict[str, str]]:
    """An in-process moto with the stack deployed; yields the stack's outputs."""
    with mock_aws(config={"batch": {"use_docker": False}}), warnings.catch_warnings():
        # moto has no CloudFormation model for AWS::S3::BucketPolicy and says so.
        warnings.simplefilter("ignore", UserWarning)
        outputs = deploy_stack({"ArtifactBucketName": ARTIFACT_BUCKET}, poll_s=0)
        yield outputs


def batch_settings(outputs: dict[str, str], home: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "home": home,
        "executor": "batch",
        "batch_job_queue": outputs["JobQueueName"],
        "batch_job_definition": outputs["JobDefinitionName"],
        "artifact_url": outputs["ArtifactUrl"],
        "aws_region": "us-east-1",
        "aws_endpoint_url": None,
    }
    values.update(overrides)
    return Settings(**values)


def submission(name: str, **overrides: Any) -> JobSubmission:
    values: dict[str, Any] = {
        "job_id": f"job-{name}",
        "run_id": "0123456789abcdef",
        "generation": 1,
        "attempt": 1,
        "name": name,
        "environment": {
            "GRADPILOT_API_URL": "http://api:8765",
            "GRADPILOT_JOB_ID": f"job-{name}",
            "GRADPILOT_JOB_TOKEN": f"token-{name}",
        },
        "timeout_s": 3600,
    }
    values.update(overrides)
    return JobSubmission(**values)


@contextmanager
def moto_jobs_fail() -> Iterator[None]:
    """Jobs submitted inside this block end FAILED (moto's simple Batch reads it at submit)."""
    old = os.environ.get("MOTO_SIMPLE_BATCH_FAIL_AFTER")
    os.environ["MOTO_SIMPLE_BATCH_FAIL_AFTER"] = "0"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MOTO_SIMPLE_BATCH_FAIL_AFTER", None)
        else:
            os.environ["MOTO_SIMPLE_BATCH_FAIL_AFTER"] = old
