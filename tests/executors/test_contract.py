"""The executor contract against every executor: AWS Batch under moto, local processes."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.executors import JobSubmission
from service.executors.batch import BatchExecutor
from service.executors.local import LocalExecutor
from service.executors.registry import make_executor
from service.settings import Settings
from tests.executors.contract import ExecutorContract, ExecutorHarness, Outcome
from tests.support.factories import submission
from tests.support.moto import batch_settings, moto_batch_stack, moto_jobs_fail

# Stands in for ``python -m worker``: the contract is about the executor, not the worker, and
# the real worker needs the API. It ends as GP_CONTRACT_OUTCOME says.
FAKE_WORKER = """#!/bin/sh
case "$GP_CONTRACT_OUTCOME" in
  fail) echo "contract worker: model code error" >&2; exit 3 ;;
  run) exec sleep 300 ;;
  *) echo "contract worker: done"; exit 0 ;;
esac
"""


class BatchHarness(ExecutorHarness):
    can_keep_running = False  # moto's simple Batch finishes jobs as they are submitted
    reports_exit_codes = False  # ... and fails them without an exit code

    def __init__(self, executor: BatchExecutor) -> None:
        self.executor = executor

    def submission(self, name: str, outcome: Outcome) -> JobSubmission:
        return submission(name)

    def submit(self, job: JobSubmission, outcome: Outcome) -> str:
        if outcome == "fail":
            with moto_jobs_fail():
                return self.executor.submit(job)
        return self.executor.submit(job)


class LocalHarness(ExecutorHarness):
    def __init__(self, executor: LocalExecutor) -> None:
        self.executor = executor

    def submission(self, name: str, outcome: Outcome) -> JobSubmission:
        return submission(name, environment={"GP_CONTRACT_OUTCOME": outcome})


@pytest.fixture(scope="module")
def moto_stack() -> Iterator[dict[str, str]]:
    with moto_batch_stack() as outputs:
        yield outputs


@pytest.fixture(params=["batch", "local"])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ExecutorHarness]:
    if request.param == "batch":
        stack = request.getfixturevalue("moto_stack")
        batch = BatchExecutor(batch_settings(stack, tmp_path))
        yield BatchHarness(batch)
        batch.close()
        return
    fake = tmp_path / "fake-python"
    fake.write_text(FAKE_WORKER)
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    local = LocalExecutor(Settings(home=tmp_path / "home", local_python=str(fake)))
    yield LocalHarness(local)
    local.close()


class TestExecutorContract(ExecutorContract):
    pass


def test_the_registry_builds_each_executor(moto_stack: dict[str, str], tmp_path: Path) -> None:
    local = make_executor(Settings(home=tmp_path / "local"))
    assert isinstance(local, LocalExecutor)
    local.close()
    batch = make_executor(batch_settings(moto_stack, tmp_path / "batch"))
    assert isinstance(batch, BatchExecutor)
    batch.close()
