"""moto, AWS without AWS: credentials only moto accepts, a ``moto_server`` process, and the
gradpilot stack (``infra/gradpilot.yaml``) deployed into an in-process moto or a server.

Without Docker, moto's Batch jobs must not try to run containers: ``use_docker: False`` makes
them go straight to SUCCEEDED (see the shared ENVIRONMENT.md);
``MOTO_SIMPLE_BATCH_FAIL_AFTER=0`` makes them FAILED instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from service.settings import Settings
from tests.support.ports import free_port
from tests.support.processes import stop

FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}
#: The artifact bucket of the stack deployed into an in-process moto.
ARTIFACT_BUCKET = "gp-test-artifacts"


def fake_aws_environment(tmp: Path) -> dict[str, str]:
    """Credentials that only moto accepts, and no AWS config or profile from this machine."""
    return {
        **FAKE_AWS,
        "AWS_CONFIG_FILE": str(tmp / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "no-aws-credentials"),
    }


def isolated_environment(tmp: Path) -> dict[str, str]:
    """This process's environment with no ``AWS_`` or ``GRADPILOT_`` variable of its own, plus
    the fake credentials: for a child process (or a monkeypatched test) that must reach moto."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "GRADPILOT_"))}
    env.update(fake_aws_environment(tmp))
    return env


# --------------------------------------------------------------------------- in process


@contextlib.contextmanager
def moto_batch_stack() -> Iterator[dict[str, str]]:
    """An in-process moto with the stack deployed; yields the stack's outputs."""
    from moto import mock_aws

    from service.infra import deploy_stack

    with mock_aws(config={"batch": {"use_docker": False}}), warnings.catch_warnings():
        # moto has no CloudFormation model for AWS::S3::BucketPolicy and says so.
        warnings.simplefilter("ignore", UserWarning)
        outputs = deploy_stack({"ArtifactBucketName": ARTIFACT_BUCKET}, poll_s=0)
        yield outputs


def batch_settings(outputs: dict[str, str], home: Path, **overrides: Any) -> Settings:
    """Settings for the ``batch`` executor on a deployed stack's outputs."""
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


@contextlib.contextmanager
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


# --------------------------------------------------------------------------- a server process


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """Start ``moto_server`` on a free port, configure Batch without Docker, yield its URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    moto = Path(sys.executable).with_name("moto_server")
    with tempfile.TemporaryDirectory(prefix="gp-moto-") as tmp:
        process = subprocess.Popen(
            [str(moto), "-H", "127.0.0.1", "-p", str(port)],
            env=isolated_environment(Path(tmp)),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    urllib.request.urlopen(f"{url}/moto-api/data.json", timeout=2).read()
                    break
                except OSError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("moto_server did not start") from None
                    time.sleep(0.2)
            request = urllib.request.Request(
                f"{url}/moto-api/config",
                data=json.dumps({"batch": {"use_docker": False}}).encode(),
                method="POST",
            )
            urllib.request.urlopen(request, timeout=10).read()
            yield url
        finally:
            stop(process)


def deploy(url: str, bucket: str = "gp-bench-artifacts") -> dict[str, str]:
    """Deploy ``infra/gradpilot.yaml`` into the moto server at ``url``; returns its outputs."""
    from service.infra import deploy_stack

    with warnings.catch_warnings():
        # moto has no CloudFormation model for AWS::S3::BucketPolicy and says so.
        warnings.simplefilter("ignore", UserWarning)
        return deploy_stack({"ArtifactBucketName": bucket}, endpoint_url=url, poll_s=0.2)
