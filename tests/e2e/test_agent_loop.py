"""The agent loop end to end on this machine: real workers, sandbox, rules advisor."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.factories import TINY_MODEL
from tests.support.paths import EXAMPLES
from tests.support.stack import Stack

pytestmark = pytest.mark.slow


def test_blog_flawed_cnn_is_repaired_not_failed(stack: Stack) -> None:
    """The blog's CNN as printed (Linear(16384, 10) after a kernel-15 conv) fails its first
    forward; the run goes through the repair path and trains the repaired model."""
    run = stack.api.post(
        "/v1/runs",
        {
            "model_source": (EXAMPLES / "blog_flawed_cnn.py").read_text(),
            "dataset": {"name": "synthetic", "synthetic_samples": 256},
            "hyperparameters": {"optimizer": "sgd", "learning_rate": 0.1},
            "budget": {"epochs_per_job": 1, "max_jobs": 1},
        },
    )
    run = stack.wait(run["id"])
    assert run["status"] == "succeeded", run
    actions = [d["action"] for d in run["decisions"]]
    assert actions[0] == "repair", actions
    assert (
        "6400" in run["decisions"][0]["rationale"]
        or "6400" in stack.api.get(f"/v1/runs/{run['id']}/diff")["diff"]
    )
    jobs = stack.api.get(f"/v1/runs/{run['id']}/jobs")["data"]
    assert [j["architecture_version"] for j in jobs] == [1]
    assert jobs[0]["status"] == "succeeded"


def test_code_error_in_a_job_is_repaired_or_redesigned(stack: Stack) -> None:
    """A model that passes the sandbox's batch but raises during training: the worker reports a
    code error with its traceback, and the agent replaces the model instead of failing."""
    source = (
        TINY_MODEL
        + """

class _Trap(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        if x.shape[0] > 8:
            raise RuntimeError("shape trap: batch larger than 8")
        return self.inner(x)


_build = build_model


def build_model(input_shape, num_classes):
    return _Trap(_build(input_shape, num_classes))
"""
    )
    run = stack.api.post(
        "/v1/runs",
        {
            "model_source": source,
            "dataset": {"name": "synthetic", "synthetic_samples": 256},
            "hyperparameters": {"optimizer": "sgd", "learning_rate": 0.05, "batch_size": 32},
            "budget": {"epochs_per_job": 1, "max_jobs": 3},
        },
    )
    run = stack.wait(run["id"])
    jobs = stack.api.get(f"/v1/runs/{run['id']}/jobs")["data"]
    assert jobs[0]["status"] == "failed" and jobs[0]["error_kind"] == "code"
    assert "shape trap" in (jobs[0]["traceback"] or "")
    actions = [d["action"] for d in run["decisions"]]
    assert actions[0] in ("repair", "redesign"), actions
    assert any(j["status"] == "succeeded" for j in jobs[1:]), jobs
    assert run["status"] == "succeeded"


def test_cli_create_wait_json(stack: Stack, tmp_path: Path) -> None:
    model = tmp_path / "model.py"
    model.write_text(TINY_MODEL)
    env = {**os.environ, "GRADPILOT_URL": stack.url, "GRADPILOT_TOKEN": stack.api.token or ""}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "service.cli.main",
            "runs",
            "create",
            str(model),
            "--dataset",
            "synthetic",
            "--epochs-per-job",
            "1",
            "--max-jobs",
            "2",
            "--optimizer",
            "adam",
            "--lr",
            "0.01",
            "--wait",
            "--json",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    run = json.loads(out.stdout)
    assert run["status"] == "succeeded"
    assert {"id", "status", "best_val_accuracy", "decisions"} <= set(run)
    assert run["decisions"] and all("action" in d for d in run["decisions"])
    assert run["decisions"][-1]["action"] == "finish"
    report = stack.api.request("GET", f"/v1/runs/{run['id']}/report").text
    assert "gradpilot report" in report and "finish" in report
