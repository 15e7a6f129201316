"""The compose wiring without Docker: a moto server process, ``gradpilot infra deploy
--endpoint-url`` into it, the ``aws`` CLI reading the job definition back, and the Batch
executor submitting through the same endpoint."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from service.executors.batch import BatchExecutor, retry_strategy
from service.settings import Settings
from tests.support.factories import submission
from tests.support.moto import isolated_environment
from tests.support.paths import ROOT

pytestmark = pytest.mark.slow


def test_deploy_into_a_moto_server_and_read_it_back_with_the_aws_cli(
    moto_server: str, tmp_path: Path
) -> None:
    env = isolated_environment(tmp_path)
    deploy = subprocess.run(
        [
            sys.executable,
            "-m",
            "service.cli.infra",
            "deploy",
            "--endpoint-url",
            moto_server,
            "--param",
            "ArtifactBucketName=gradpilot-artifacts",
            "--param",
            f"AwsEndpointUrl={moto_server}",
            "--json",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert deploy.returncode == 0, deploy.stderr
    settings = json.loads(deploy.stdout)["settings"]
    assert settings["GRADPILOT_AWS_ENDPOINT_URL"] == moto_server
    assert settings["GRADPILOT_BATCH_JOB_DEFINITION"] == "gradpilot-worker"

    aws = shutil.which("aws")
    if aws is None:
        if os.environ.get("CI") == "true":
            pytest.fail("the aws CLI is required under CI (pip install awscli)")
        pytest.skip("the aws CLI is not installed; the deploy itself passed")
    shown = subprocess.run(
        [
            aws,
            "--endpoint-url",
            moto_server,
            "--region",
            "us-east-1",
            "--output",
            "json",
            "batch",
            "describe-job-definitions",
            "--job-definition-name",
            "gradpilot-worker",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    (definition,) = json.loads(shown.stdout)["jobDefinitions"]
    container = definition["containerProperties"]
    assert {"type": "GPU", "value": "1"} in container["resourceRequirements"]
    rules = definition["retryStrategy"]["evaluateOnExit"]
    assert [{**r, "action": r["action"].upper()} for r in rules] == retry_strategy()[
        "evaluateOnExit"
    ]
    env_vars = {e["name"]: e["value"] for e in container["environment"]}
    assert env_vars["GRADPILOT_AWS_ENDPOINT_URL"] == moto_server  # the worker reaches moto's S3
    assert env_vars["GRADPILOT_ARTIFACT_URL"] == "s3://gradpilot-artifacts/gradpilot"


def test_the_executor_works_through_the_endpoint(
    moto_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in isolated_environment(tmp_path).items():
        if key.startswith("AWS_"):
            monkeypatch.setenv(key, value)
    from service.infra import deploy_stack

    outputs = deploy_stack(
        {"ArtifactBucketName": "gradpilot-artifacts"}, endpoint_url=moto_server, poll_s=0.2
    )
    settings = Settings(
        home=tmp_path,
        executor="batch",
        batch_job_queue=outputs["JobQueueName"],
        batch_job_definition=outputs["JobDefinitionName"],
        artifact_url=outputs["ArtifactUrl"],
        aws_endpoint_url=moto_server,
    )
    executor = BatchExecutor(settings)
    job_id = executor.submit(submission("gp-0badcafe-g1-a1"))
    assert executor.submit(submission("gp-0badcafe-g1-a1")) == job_id
    status = executor.status([job_id])[job_id]
    assert status.state == "succeeded"
    assert "log_console_url" not in status.extra  # no console link for moto
    executor.close()
