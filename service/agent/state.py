"""The agent graph's state: small, serialisable, and derived facts kept in the database.

The database holds jobs, summaries, decisions and architectures; the state holds what the
graph needs to decide the *next* job and where it is in its loop.

Every value is plain JSON: strings rather than the status enums of
``service.schemas.statuses`` (``JobStatus.FAILED.value``, not ``JobStatus.FAILED``), because
LangGraph's checkpointer stores an enum member as its class and warns that it will refuse to
load such a checkpoint in a future version. The advisors' Pydantic answers are kept as their
JSON dumps for the same reason (``AssessmentRecord``), and converted back where they are used.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict

from service.advisors._protocol import Assessment, Recommendation, Usage
from service.diagnostics import CompactDiagnostics

#: what a proposal does; the decision it becomes has the same action
ProposalAction = Literal["tune", "redesign", "repair"]


class JobOutcome(TypedDict, total=False):
    """What the controller resumes ``train`` with once a job has ended."""

    job_id: str
    status: str  # a terminal JobStatus value: succeeded | failed | cancelled
    error_kind: str | None  # an ErrorKind value: code | infrastructure | cancelled
    message: str | None
    traceback: str | None
    best_val_accuracy: float | None
    last_epoch: int | None  # last epoch with a stored summary


class UsageRecord(TypedDict, total=False):
    """An advisor's ``Usage``, as the state keeps it (empty: nothing spent)."""

    input_tokens: int
    output_tokens: int
    latency_ms: int
    model: str
    fallback: bool


class AssessmentRecord(TypedDict):
    """An advisor's ``Assessment`` (its JSON dump), as the state and the decisions keep it."""

    gradient_issues: list[str]
    affected_layers: list[str]
    severity: int
    is_stable: bool
    stability_score: int
    explanation: str
    recommendation: Recommendation


class Proposal(TypedDict):
    """A change waiting to be applied: at once, or once the user approves it.

    A ``tune`` changes the hyperparameters only; a ``redesign`` or ``repair`` also carries a
    new, validated architecture (``source`` and the keys after it).
    """

    action: ProposalAction
    rationale: str
    #: what the decision records as changed (hyperparameter -> {value, reason}, and the
    #: architecture version of a new architecture)
    changes: dict[str, Any]
    hyperparameters: dict[str, Any]  # the next job's, a ``Hyperparameters`` dump
    needs_approval: bool
    usage: UsageRecord
    approved: bool | None  # None until the user answered
    source: NotRequired[str]
    author: NotRequired[str]
    parameters: NotRequired[int | None]
    version: NotRequired[int]
    diff: NotRequired[str]
    #: a repair resumes the schedule at the epoch after the failed job's last one
    epoch_start: NotRequired[int]


class ApprovalAnswer(TypedDict, total=False):
    """The user's answer to a proposal (``Run.approval_response``), resumed into the graph."""

    approved: bool
    feedback: str | None


class JobPause(TypedDict):
    """``train`` waits for the job to end (the controller resumes it with a ``JobOutcome``)."""

    kind: Literal["job"]
    job_id: str


class ApprovalPause(TypedDict):
    """``await_approval`` waits for the user (resumed with an ``ApprovalAnswer``)."""

    kind: Literal["approval"]
    action: str


class AgentState(TypedDict, total=False):
    """The graph's state; a node returns the part of it that changed."""

    run_id: str
    # The next (or current) job
    generation: int
    attempt: int
    architecture_version: int
    hyperparameters: dict[str, Any]  # a ``Hyperparameters`` dump
    epoch_start: int
    epochs: int
    schedule_epoch: int
    schedule_total_epochs: int
    resume_checkpoint: str | None
    resume_weights_only: bool
    # What happened
    outcome: JobOutcome
    diagnostics: CompactDiagnostics
    assessment: AssessmentRecord | None
    recommendation: Recommendation
    pending_usage: UsageRecord  # advisor usage not yet recorded with a decision
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
    proposal: Proposal | None
    feedback: str | None
    rejections: int


def usage_record(usage: Usage) -> UsageRecord:
    return UsageRecord(
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        latency_ms=usage.latency_ms,
        model=usage.model,
        fallback=usage.fallback,
    )


def usage_of(record: UsageRecord | None) -> Usage:
    return Usage(**(record or {}))


def assessment_record(assessment: Assessment) -> AssessmentRecord:
    return AssessmentRecord(
        gradient_issues=list(assessment.gradient_issues),
        affected_layers=list(assessment.affected_layers),
        severity=assessment.severity,
        is_stable=assessment.is_stable,
        stability_score=assessment.stability_score,
        explanation=assessment.explanation,
        recommendation=assessment.recommendation,
    )
