"""The worker's environment: what the control plane writes is what the worker reads."""

from __future__ import annotations

import pytest

from service.schemas import worker_env
from service.schemas.worker_env import WorkerEnvironment


def test_round_trip() -> None:
    written = WorkerEnvironment("http://api:8765", "job-1", "tok", aws_endpoint_url="http://moto")
    env = written.as_env()
    assert env == {
        "GRADPILOT_API_URL": "http://api:8765",
        "GRADPILOT_JOB_ID": "job-1",
        "GRADPILOT_JOB_TOKEN": "tok",
        "GRADPILOT_AWS_ENDPOINT_URL": "http://moto",
    }
    assert WorkerEnvironment.from_env(env) == written
    assert worker_env.missing(env) == []


def test_missing_names_the_variables() -> None:
    env = {"GRADPILOT_API_URL": "http://api:8765", "GRADPILOT_JOB_TOKEN": ""}
    assert worker_env.missing(env) == ["GRADPILOT_JOB_ID", "GRADPILOT_JOB_TOKEN"]
    with pytest.raises(KeyError, match="GRADPILOT_JOB_ID"):
        WorkerEnvironment.from_env(env)


def test_region_and_deadline_defaults() -> None:
    assert worker_env.aws_region({}) is None
    assert worker_env.aws_region({"AWS_DEFAULT_REGION": "eu-west-1"}) == "eu-west-1"
    assert worker_env.aws_region({"AWS_REGION": "us-west-2", "AWS_DEFAULT_REGION": "x"}) == (
        "us-west-2"
    )
    assert worker_env.finish_deadline_s({}) == 300.0
    assert worker_env.finish_deadline_s({"GRADPILOT_FINISH_DEADLINE_S": "12"}) == 12.0


def test_an_array_child_gets_its_own_values() -> None:
    env = {
        "GRADPILOT_API_URL": "http://api:8765",
        "GRADPILOT_ARRAY_VARS": "GRADPILOT_JOB_ID,GRADPILOT_JOB_TOKEN",
        "GRADPILOT_JOB_ID__0": "a",
        "GRADPILOT_JOB_ID__1": "b",
        "GRADPILOT_JOB_TOKEN__1": "tb",
        "GRADPILOT_JOB_TOKEN": "stale",
    }
    child = worker_env.resolve_array_environment(env, 1)
    assert (child["GRADPILOT_JOB_ID"], child["GRADPILOT_JOB_TOKEN"]) == ("b", "tb")
    first = worker_env.resolve_array_environment(env, "0")
    assert first["GRADPILOT_JOB_ID"] == "a"
    assert "GRADPILOT_JOB_TOKEN" not in first  # child 0 has no value of its own
