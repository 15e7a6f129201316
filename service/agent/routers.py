"""Pure routing functions of the agent graph: state in, next node's name out.

They decide nothing new: the advisors' recommendations and the budget guards are already in
the state. Each has tests of its own (``tests/agent/test_routers.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from service.agent.state import AgentState
from service.schemas.statuses import ErrorKind, JobStatus

#: an improvement smaller than this does not reset the patience counter
MIN_IMPROVEMENT = 0.002


def route_prepared(state: AgentState) -> Literal["train", "repair"]:
    """The submitted model either passed the sandbox, or goes to the repair path at once."""
    outcome = state.get("outcome") or {}
    return "repair" if outcome.get("error_kind") == ErrorKind.CODE else "train"


def route_fixed(state: AgentState) -> Literal["train", "await_approval", "report"]:
    """After retry/repair/redesign/tune: end if the node gave up, pause if approval is needed."""
    if state.get("finish_reason"):
        return "report"
    return route_proposal(state)


def route_outcome(state: AgentState) -> Literal["assess", "repair", "retry", "report"]:
    """After a job ended: assess a finished segment, repair a code error, retry an
    infrastructure failure (bounded by the budget; beyond it the run ends with a report)."""
    outcome = state.get("outcome") or {}
    status = outcome.get("status")
    if status == JobStatus.SUCCEEDED:
        return "assess"
    if status == JobStatus.CANCELLED or outcome.get("error_kind") == ErrorKind.CANCELLED:
        return "report"
    if outcome.get("error_kind") == ErrorKind.CODE:
        return "repair"
    return "retry"


def route_assessment(
    state: AgentState,
) -> Literal["continue_training", "tune", "redesign", "report"]:
    """Follow the assessment's recommendation (``finish`` writes the report)."""
    rec = state.get("recommendation", "continue")
    if rec == "finish":
        return "report"
    if rec == "tune":
        return "tune"
    if rec == "redesign":
        return "redesign"
    return "continue_training"


def route_proposal(state: AgentState) -> Literal["await_approval", "train"]:
    """Pause for the user when the run's approval policy asks for it."""
    proposal = state.get("proposal")
    waiting = proposal and proposal.get("needs_approval") and proposal.get("approved") is None
    return "await_approval" if waiting else "train"


def route_approval(state: AgentState) -> Literal["train", "tune", "redesign", "report"]:
    """After the user answered: go on if approved; otherwise propose again with the feedback."""
    if state.get("finish_reason"):
        return "report"
    proposal = state.get("proposal")
    if proposal and proposal.get("approved"):
        return "train"
    return "tune" if proposal and proposal.get("action") == "tune" else "redesign"


def needs_approval(policy: str, action: str) -> bool:
    """Whether the run's approval policy (auto | architecture | always) asks about ``action``."""
    if policy == "always":
        return action in ("tune", "redesign", "repair")
    if policy == "architecture":
        return action in ("redesign", "repair")
    return False


def budget_verdict(state: AgentState, budget: Mapping[str, Any]) -> str | None:
    """Why the run must finish now, or None. Checked before every assessment."""
    best = state.get("best_val_accuracy")
    target = budget.get("target_accuracy")
    if target is not None and best is not None and best >= target:
        return f"reached the target validation accuracy {target:.1%} (best {best:.1%})"
    if state.get("jobs_done", 0) >= budget["max_jobs"]:
        return f"used the budget of {budget['max_jobs']} jobs"
    max_epochs = budget.get("max_total_epochs")
    if max_epochs is not None and state.get("epochs_done", 0) >= max_epochs:
        return f"used the budget of {max_epochs} epochs"
    if state.get("stale_assessments", 0) >= budget["patience"]:
        return f"no improvement over {budget['patience']} assessments"
    return None


def improved(previous_best: float | None, new_best: float | None) -> bool:
    """A new best by more than ``MIN_IMPROVEMENT`` (the first best always counts)."""
    if new_best is None:
        return False
    return previous_best is None or new_best > previous_best + MIN_IMPROVEMENT
