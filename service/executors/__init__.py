"""Executors, picked by the ``executor`` setting (see ``service.executors.registry``)."""

from service.executors._protocol import (
    TERMINAL_EXECUTOR_STATES,
    Executor,
    ExecutorState,
    ExecutorStatus,
    JobSubmission,
    job_name,
)

__all__ = [
    "TERMINAL_EXECUTOR_STATES",
    "Executor",
    "ExecutorState",
    "ExecutorStatus",
    "JobSubmission",
    "job_name",
]
