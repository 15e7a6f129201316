"""Every status set in one place: runs, jobs, the executor's view of a job, failure kinds.

They are ``StrEnum``s, so a value compares equal to its string, is stored in the database as
that string and is written as that string in JSON. Code names the member
(``JobStatus.RUNNING``) instead of retyping the word.
"""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    AWAITING_APPROVAL = "awaiting_approval"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class JobStatus(StrEnum):
    PENDING = "pending"
    SUBMITTED = "submitted"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class ExecutorState(StrEnum):
    """What an executor says of one of its jobs (``unknown``: it no longer knows the id)."""

    SUBMITTED = "submitted"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"


class ErrorKind(StrEnum):
    """Why a job failed: the model's code, the platform, or a user's cancel."""

    CODE = "code"
    INFRASTRUCTURE = "infrastructure"
    CANCELLED = "cancelled"


TERMINAL_RUN_STATUSES: frozenset[RunStatus] = frozenset(
    {RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED}
)
TERMINAL_JOB_STATUSES: frozenset[JobStatus] = frozenset(
    {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED}
)
ACTIVE_JOB_STATUSES: frozenset[JobStatus] = frozenset(
    {JobStatus.PENDING, JobStatus.SUBMITTED, JobStatus.RUNNING}
)
