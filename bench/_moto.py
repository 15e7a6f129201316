"""A moto server process with gradpilot's CloudFormation stack deployed, for Batch benchmarks.

Without Docker, moto's Batch jobs must not try to run containers: ``use_docker: false`` makes
them go straight to SUCCEEDED (see the shared ENVIRONMENT.md).
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

from bench._common import free_port

FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def fake_aws_environment(tmp: Path) -> dict[str, str]:
    """Credentials that only moto accepts, and no AWS config or profile from this machine."""
    return {
        **FAKE_AWS,
        "AWS_CONFIG_FILE": str(tmp / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "no-aws-credentials"),
    }


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """Start ``moto_server`` on a free port, configure Batch without Docker, yield its URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    moto = Path(sys.executable).with_name("moto_server")
    with tempfile.TemporaryDirectory(prefix="gp-bench-moto-") as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "GRADPILOT_"))}
        env.update(fake_aws_environment(Path(tmp)))
        process = subprocess.Popen(
            [str(moto), "-H", "127.0.0.1", "-p", str(port)],
            env=env,
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
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def deploy(url: str) -> dict[str, str]:
    """Deploy ``infra/gradpilot.yaml`` into the moto server; returns the stack's outputs."""
    from service.infra import deploy_stack

    with warnings.catch_warnings():
        # moto has no CloudFormation model for AWS::S3::BucketPolicy and says so.
        warnings.simplefilter("ignore", UserWarning)
        return deploy_stack(
            {"ArtifactBucketName": "gp-bench-artifacts"}, endpoint_url=url, poll_s=0.2
        )
