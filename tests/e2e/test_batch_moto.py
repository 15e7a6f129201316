"""Issue 6's end to end: API + controller with the ``batch`` executor pointed at a moto server,
the S3 artifact store in the same moto. moto does not run containers without Docker, so the
test plays the Batch compute environment: it runs ``python -m worker`` with the environment
that ``describe_jobs`` shows for each submitted job. The run ends with its artifacts in S3."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest

from service.cli.client import ApiClient
from service.executors import job_name
from service.infra import deploy_stack, settings_from_outputs
from service.server import embedded_server
from service.settings import Settings
from tests.support.factories import TINY_MODEL, USER_TOKEN
from tests.support.moto import isolated_environment
from tests.support.ports import free_port

pytestmark = pytest.mark.slow


def test_run_on_batch_against_moto(
    moto_server: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    aws_env = isolated_environment(tmp_path)
    for key in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(key)
    for key, value in aws_env.items():
        if key.startswith("AWS_"):
            monkeypatch.setenv(key, value)
    outputs = deploy_stack(endpoint_url=moto_server, stack_name="gp-e2e", poll_s=0.2)
    env = settings_from_outputs(outputs, endpoint_url=moto_server)
    settings = Settings(
        home=tmp_path / "home",
        api_tokens=[USER_TOKEN],
        port=free_port(),
        executor="batch",
        batch_job_queue=env["GRADPILOT_BATCH_JOB_QUEUE"],
        batch_job_definition=env["GRADPILOT_BATCH_JOB_DEFINITION"],
        artifact_url=env["GRADPILOT_ARTIFACT_URL"],
        aws_endpoint_url=moto_server,
        controller_interval_s=0.3,
        job_report_grace_s=300,  # moto reports SUCCEEDED at once; the worker's report decides
    )
    batch = boto3.client("batch", endpoint_url=moto_server, region_name="us-east-1")
    played: set[str] = set()
    with embedded_server(settings) as url:
        api = ApiClient(url, USER_TOKEN, timeout=60)
        run = api.post(
            "/v1/runs",
            {
                "model_source": TINY_MODEL,
                "dataset": {"name": "synthetic", "synthetic_samples": 256},
                "hyperparameters": {"optimizer": "adam", "learning_rate": 0.01},
                "budget": {"epochs_per_job": 1, "max_jobs": 2},
                "resources": {"gpus": 1},
            },
        )
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            run = api.get(f"/v1/runs/{run['id']}")
            if run["status"] in ("succeeded", "failed"):
                break
            for job in api.get(f"/v1/runs/{run['id']}/jobs")["data"]:
                if job["external_id"] and job["external_id"] not in played:
                    played.add(job["external_id"])
                    described = batch.describe_jobs(jobs=[job["external_id"]])["jobs"][0]
                    # The name carries run, generation, attempt and the job row's own id.
                    assert described["jobName"] == job_name(
                        run["id"], job["generation"], job["attempt"], job["id"]
                    )
                    worker_env = {
                        e["name"]: e["value"] for e in described["container"]["environment"]
                    }
                    proc = subprocess.run(
                        [sys.executable, "-m", "worker"],
                        env={**aws_env, "PATH": os.environ["PATH"], **worker_env},
                        capture_output=True,
                        text=True,
                        timeout=300,
                        check=False,
                    )
                    assert proc.returncode == 0, proc.stderr[-3000:]
            time.sleep(0.3)
        assert run["status"] == "succeeded", run
        assert len(played) == 2
    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    bucket, _, prefix = env["GRADPILOT_ARTIFACT_URL"].removeprefix("s3://").partition("/")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]]
    assert any(k.endswith(f"runs/{run['id']}/report.md") for k in keys), keys
    assert any(k.endswith(f"runs/{run['id']}/figure.png") for k in keys), keys
    assert any("/checkpoints/" in k and k.endswith(".pt") for k in keys), keys
