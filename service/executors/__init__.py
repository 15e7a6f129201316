"""Executors, picked by the ``executor`` setting (see ``service.executors.registry``)."""

from service.executors._protocol import (
    Executor,
    ExecutorState,
    ExecutorStatus,
    JobSubmission,
    job_name,
)

__all__ = ["Executor", "ExecutorState", "ExecutorStatus", "JobSubmission", "job_name"]
