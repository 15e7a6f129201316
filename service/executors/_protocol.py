"""The executor protocol: where training jobs run (local processes, AWS Batch)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from service.schemas.statuses import ExecutorState

__all__ = [
    "TERMINAL_EXECUTOR_STATES",
    "Executor",
    "ExecutorState",
    "ExecutorStatus",
    "JobSubmission",
    "job_name",
]

#: States after which a job's state no longer changes.
TERMINAL_EXECUTOR_STATES: frozenset[ExecutorState] = frozenset(
    {ExecutorState.SUCCEEDED, ExecutorState.FAILED, ExecutorState.CANCELLED}
)


@dataclass(frozen=True)
class JobSubmission:
    """What an executor needs to start one worker.

    ``name`` carries run, generation and attempt (``gp-<run8>-g<gen>-a<attempt>``) so that a
    job is recognisable in the AWS console and a resubmission is idempotent.
    """

    job_id: str
    run_id: str
    generation: int
    attempt: int
    name: str
    environment: dict[str, str]
    gpus: int = 1
    vcpus: int = 4
    memory_mib: int = 15000
    timeout_s: int | None = None


@dataclass(frozen=True)
class ExecutorStatus:
    """The executor's view of one job."""

    external_id: str
    state: ExecutorState
    exit_code: int | None = None
    reason: str | None = None
    #: True when the failure was the platform's (spot reclaim, host lost): retry it.
    infrastructure_failure: bool = False
    log_location: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


@runtime_checkable
class Executor(Protocol):
    """Runs ``python -m worker`` for a job somewhere and reports on it."""

    name: str

    def submit(self, job: JobSubmission) -> str:
        """Start the job and return its external id. Submitting the same ``name`` twice while
        the first is active returns the first one's id instead of starting another."""
        ...

    def status(self, external_ids: list[str]) -> dict[str, ExecutorStatus]:
        """The state of many jobs at once; ids the executor no longer knows are ``unknown``."""
        ...

    def cancel(self, external_id: str, reason: str) -> None: ...

    def log_location(self, external_id: str) -> str | None:
        """Where the job's log can be read (a file path, a CloudWatch stream)."""
        ...

    def close(self) -> None:
        """Release resources (local: stop child processes)."""
        ...


def job_name(run_id: str, generation: int, attempt: int) -> str:
    """``gp-<run8>-g<gen>-a<attempt>``: the job's name at the executor."""
    return f"gp-{run_id[:8]}-g{generation}-a{attempt}"
