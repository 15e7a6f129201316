"""The agent graph's state: small, serialisable, and derived facts kept in the database.

The database holds jobs, summaries, decisions and architectures; the state holds what the
graph needs to decide the *next* job and where it is in its loop.
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict

Outcome = Literal["succeeded", "code_error", "infrastructure_error", "cancelled"]


class JobOutcome(TypedDict, total=False):
    """What the controller resumes ``train`` with once a job has ended."""

    job_id: str
    status: str  # succeeded | failed | cancelled
    error_kind: str | None  # code | infrastructure | cancelled
    message: str | None
    traceback: str | None
    best_val_accuracy: float | None
    last_epoch: int | None  # last epoch with a stored summary


class AgentState(TypedDict, total=False):
    run_id: str
    # The next (or current) job
    generation: int
    attempt: int
    architecture_version: int
    hyperparameters: dict[str, Any]
    epoch_start: int
    epochs: int
    schedule_epoch: int
    schedule_total_epochs: int
    resume_checkpoint: str | None
    resume_weights_only: bool
    # What happened
    outcome: JobOutcome
    diagnostics: dict[str, Any]
    assessment: dict[str, Any]
    recommendation: str  # continue | tune | redesign | finish
    pending_usage: dict[str, Any]  # advisor usage not yet recorded with a decision
    finish_reason: str
    # Counters for the budget guards
    jobs_done: int
    epochs_done: int
    retries: int  # infrastructure retries of the current generation
    repairs: int  # code repairs over the run
    best_val_accuracy: float | None
    stale_assessments: int  # assessments in a row without improvement
    decisions: int  # decisions recorded so far (their sequence numbers)
    # Approval gate
    proposal: dict[str, Any] | None
    feedback: str | None
    rejections: int
