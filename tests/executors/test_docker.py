"""The ``docker`` executor: its exit-code reading (no engine needed), and the executors' shared
contract plus what a restarted control plane relies on, against a real Docker engine (the
``compose`` tier: ``make test-compose``)."""

from __future__ import annotations

import io
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from service.errors import ConfigurationError, ExecutorError
from service.executors import JobSubmission
from service.executors.docker import (
    CANCELLED_SUFFIX,
    TIMED_OUT_SUFFIX,
    DockerExecutor,
    classify_exit,
    job_labels,
)
from service.executors.registry import make_executor
from service.schemas import exit_codes
from service.settings import Settings
from tests.compose.engine import engine, image
from tests.executors.contract import ExecutorContract, ExecutorHarness, Outcome, unique_name
from tests.support.factories import submission

# Stands in for the worker image's `python -m worker`: the contract is about the executor. It
# ends as GP_CONTRACT_OUTCOME says; GP_EXIT picks another exit code.
FAKE_WORKER = """#!/bin/sh
case "$GP_CONTRACT_OUTCOME" in
  fail) echo "contract worker: model code error" >&2; exit 3 ;;
  run) trap 'echo "contract worker: SIGTERM, checkpointed"; exit 5' TERM
       while :; do sleep 0.2; done ;;
  ignore-term) trap '' TERM; while :; do sleep 0.2; done ;;
  exit) exit "$GP_EXIT" ;;
  env) echo "env: GP_PASSED=${GP_PASSED:-} GP_SECRET=${GP_SECRET:-}"; exit 0 ;;
  *) echo "contract worker: done"; exit 0 ;;
esac
"""


# -- no engine needed ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "kwargs", "state", "infrastructure"),
    [
        (exit_codes.SUCCESS, {}, "succeeded", False),
        (exit_codes.CODE_ERROR, {}, "failed", False),
        (exit_codes.BAD_SPEC, {}, "failed", False),
        (exit_codes.INFRASTRUCTURE_ERROR, {}, "failed", True),
        (exit_codes.PREEMPTED, {}, "failed", True),
        (137, {}, "failed", True),  # killed by someone else: the attempt can run again
        (137, {"oom_killed": True}, "failed", True),
        (exit_codes.PREEMPTED, {"stopped_by": CANCELLED_SUFFIX}, "cancelled", False),
        (143, {"stopped_by": TIMED_OUT_SUFFIX}, "failed", False),  # Batch does not retry these
    ],
)
def test_exit_codes_read_as_batch_reads_them(
    code: int, kwargs: dict[str, Any], state: str, infrastructure: bool
) -> None:
    got_state, reason, infra = classify_exit(code, **kwargs)
    assert (got_state, infra) == (state, infrastructure)
    assert (reason is None) == (state == "succeeded")


def test_labels_name_the_run_generation_attempt_and_job() -> None:
    labels = job_labels(submission("gp-abcdef12-g3-a2"))
    assert labels["gradpilot.executor"] == "docker"
    assert labels["gradpilot.name"] == "gp-abcdef12-g3-a2"
    assert {"gradpilot.run", "gradpilot.job", "gradpilot.generation", "gradpilot.attempt"} <= set(
        labels
    )


def test_no_engine_is_one_line_saying_what_to_do(tmp_path: Path) -> None:
    settings = Settings(
        home=tmp_path, executor="docker", docker_host=f"unix://{tmp_path}/no-docker.sock"
    )
    with pytest.raises(ConfigurationError) as caught:
        make_executor(settings)
    message = str(caught.value)
    assert "no Docker engine answers" in message and "GRADPILOT_DOCKER_HOST" in message
    assert "\n" not in message


# -- against the engine --------------------------------------------------------------------


def _contract_image(client: Any, base: str) -> str:
    """A tiny image whose entrypoint is FAKE_WORKER, built from the base in seconds."""
    tag = f"gradpilot-contract-worker:{uuid.uuid5(uuid.NAMESPACE_URL, base + FAKE_WORKER).hex[:12]}"
    dockerfile = (
        f"FROM {base}\nCOPY worker.sh /worker.sh\nRUN chmod 0755 /worker.sh\n"
        'ENTRYPOINT ["/worker.sh"]\n'
    )
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, text in (("Dockerfile", dockerfile), ("worker.sh", FAKE_WORKER)):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    client.images.build(fileobj=buffer, custom_context=True, tag=tag, rm=True, network_mode="host")
    return tag


@pytest.fixture(scope="module")
def contract_image() -> str:
    return _contract_image(engine(), image("GRADPILOT_BASE_IMAGE"))


@pytest.fixture
def docker_settings(tmp_path: Path, contract_image: str) -> Settings:
    return Settings(home=tmp_path / "home", executor="docker", docker_image=contract_image)


@pytest.fixture
def cleanup() -> Iterator[list[str]]:
    """Names of the test's jobs; their containers are removed afterwards."""
    names: list[str] = []
    yield names
    client = engine()
    for container in client.containers.list(all=True, filters={"label": "gradpilot.executor"}):
        if container.labels.get("gradpilot.name") in names:
            container.remove(force=True)


class DockerHarness(ExecutorHarness):
    def __init__(self, executor: DockerExecutor, names: list[str]) -> None:
        self.executor = executor
        self._names = names

    def submission(self, name: str, outcome: Outcome) -> JobSubmission:
        self._names.append(name)
        return submission(name, environment={"GP_CONTRACT_OUTCOME": outcome})


@pytest.fixture
def harness(docker_settings: Settings, cleanup: list[str]) -> Iterator[DockerHarness]:
    executor = DockerExecutor(docker_settings, grace_s=3)
    yield DockerHarness(executor, cleanup)
    executor.close()


@pytest.mark.compose
class TestDockerExecutorContract(ExecutorContract):
    pass


def _job(names: list[str], outcome: str, **env: str) -> JobSubmission:
    name = unique_name()
    names.append(name)
    return submission(name, environment={"GP_CONTRACT_OUTCOME": outcome, **env})


def _wait(executor: DockerExecutor, external_id: str, timeout_s: float = 60) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        status = executor.status([external_id])[external_id]
        if status.state in ("succeeded", "failed", "cancelled"):
            return status
        assert time.monotonic() < deadline, status
        time.sleep(0.2)


@pytest.mark.compose
def test_the_registry_builds_it_and_the_container_carries_the_job(
    docker_settings: Settings, cleanup: list[str]
) -> None:
    executor = make_executor(docker_settings)
    assert isinstance(executor, DockerExecutor)
    job = _job(cleanup, "succeed")
    external_id = executor.submit(job)
    container = engine().containers.get(external_id)
    assert container.name == job.name
    labels = container.labels
    assert labels["gradpilot.run"] == job.run_id and labels["gradpilot.job"] == job.job_id
    assert (labels["gradpilot.generation"], labels["gradpilot.attempt"]) == ("1", "1")
    host_config = container.attrs["HostConfig"]
    assert host_config["NetworkMode"] == "host"
    assert host_config["NanoCpus"] > 0 and host_config["Memory"] > 0
    assert _wait(executor, external_id).state == "succeeded"
    assert "contract worker: done" in executor.logs(external_id)
    executor.close()


@pytest.mark.compose
def test_a_restarted_control_plane_finds_its_containers(
    docker_settings: Settings, cleanup: list[str]
) -> None:
    first = DockerExecutor(docker_settings, grace_s=3)
    running = _job(cleanup, "run")
    running_id = first.submit(running)
    done_id = first.submit(_job(cleanup, "fail"))
    first.close()

    second = DockerExecutor(docker_settings, grace_s=3)  # knows nothing in memory
    assert second.submit(running) == running_id  # the same attempt is not started again
    statuses = second.status([running_id, done_id])
    assert statuses[running_id].state in ("submitted", "running")
    failed = _wait(second, done_id)
    assert (failed.state, failed.exit_code, failed.infrastructure_failure) == ("failed", 3, False)
    second.cancel(running_id, "the user cancelled the run")

    third = DockerExecutor(docker_settings, grace_s=3)  # the cancel is on the engine too
    cancelled = _wait(third, running_id)
    assert cancelled.state == "cancelled" and cancelled.infrastructure_failure is False
    third.close()
    second.close()


@pytest.mark.compose
@pytest.mark.parametrize(
    ("code", "infrastructure"),
    [(exit_codes.INFRASTRUCTURE_ERROR, True), (exit_codes.BAD_SPEC, False)],
)
def test_the_exit_code_contract_holds_in_containers(
    docker_settings: Settings, cleanup: list[str], code: int, infrastructure: bool
) -> None:
    executor = DockerExecutor(docker_settings)
    status = _wait(executor, executor.submit(_job(cleanup, "exit", GP_EXIT=str(code))))
    assert (status.state, status.exit_code) == ("failed", code)
    assert status.infrastructure_failure is infrastructure
    executor.close()


@pytest.mark.compose
def test_a_worker_that_ignores_sigterm_is_killed_after_the_grace(
    docker_settings: Settings, cleanup: list[str]
) -> None:
    executor = DockerExecutor(docker_settings, grace_s=1)
    external_id = executor.submit(_job(cleanup, "ignore-term"))
    deadline = time.monotonic() + 30
    while executor.status([external_id])[external_id].state != "running":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    executor.cancel(external_id, "test")
    status = _wait(executor, external_id, timeout_s=20)
    assert (status.state, status.exit_code) == ("cancelled", 137)
    executor.close()


@pytest.mark.compose
def test_a_job_past_its_timeout_fails_and_is_not_retried(
    docker_settings: Settings, cleanup: list[str]
) -> None:
    executor = DockerExecutor(docker_settings, grace_s=1)
    name = unique_name()
    cleanup.append(name)
    job = submission(name, environment={"GP_CONTRACT_OUTCOME": "ignore-term"}, timeout_s=2)
    status = _wait(executor, executor.submit(job), timeout_s=30)
    assert status.state == "failed" and status.infrastructure_failure is False
    assert "timeout" in (status.reason or "")
    executor.close()


@pytest.mark.compose
def test_only_the_variables_named_reach_the_container(
    docker_settings: Settings, cleanup: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GP_PASSED", "yes")
    monkeypatch.setenv("GP_SECRET", "control-plane-only")
    settings = docker_settings.model_copy(update={"docker_env": ["GP_PASSED"]})
    executor = DockerExecutor(settings)
    external_id = executor.submit(_job(cleanup, "env"))
    assert _wait(executor, external_id).state == "succeeded"
    assert "env: GP_PASSED=yes GP_SECRET=\n" in executor.logs(external_id)
    executor.close()


@pytest.mark.compose
def test_gpus_without_the_nvidia_runtime(docker_settings: Settings, cleanup: list[str]) -> None:
    if "nvidia" in (engine().info().get("Runtimes") or {}):
        pytest.skip("this engine has the NVIDIA runtime: GPUs are given")
    # auto: the job runs on the CPU.
    executor = DockerExecutor(docker_settings)
    job = _job(cleanup, "succeed")
    assert job.gpus == 1
    assert _wait(executor, executor.submit(job)).state == "succeeded"
    # always: a one-line error that says what to install.
    strict = DockerExecutor(docker_settings.model_copy(update={"docker_gpus": "always"}))
    with pytest.raises(ExecutorError, match="NVIDIA container toolkit"):
        strict.submit(_job(cleanup, "succeed"))
    strict.close()
    executor.close()
