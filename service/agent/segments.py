"""Planning the next job: which epochs it trains, on which schedule, resuming from what.

A job trains one *segment* of epochs (``epochs_per_job``, less where the epoch budget runs
out). ``continue`` trains the next segment of the same schedule from the job's checkpoint; a
``tune`` keeps the weights but starts a fresh optimizer and schedule; a new architecture
starts from scratch. Pure functions of the state, the run's budget and the job that ended.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from service.agent.state import AgentState, Proposal
from service.db.models import Job
from service.schemas.statuses import JobStatus


def first_schedule_length(budget: Mapping[str, Any]) -> int:
    """The first schedule spans the whole budget."""
    total: int = budget["epochs_per_job"] * budget["max_jobs"]
    if budget.get("max_total_epochs"):
        total = min(total, budget["max_total_epochs"])
    return total


def next_segment(budget: Mapping[str, Any], state: AgentState, epoch_start: int) -> AgentState:
    """The segment from ``epoch_start``: a job's worth of epochs, or what the budget has left."""
    epochs: int = budget["epochs_per_job"]
    if budget.get("max_total_epochs"):
        epochs = max(1, min(epochs, budget["max_total_epochs"] - state.get("epochs_done", 0)))
    return {"epoch_start": epoch_start, "epochs": epochs}


def schedule_length(budget: Mapping[str, Any], state: AgentState) -> int:
    """Planned length of a new schedule: the rest of the run's budget."""
    jobs_left = max(1, budget["max_jobs"] - state.get("jobs_done", 0))
    planned: int = budget["epochs_per_job"] * jobs_left
    if budget.get("max_total_epochs"):
        planned = min(planned, max(1, budget["max_total_epochs"] - state.get("epochs_done", 0)))
    return planned


def continued(budget: Mapping[str, Any], state: AgentState, job: Job | None) -> AgentState:
    """The next segment of the same model and schedule, from the job's checkpoint."""
    return {
        "generation": state["generation"] + 1,
        "attempt": 1,
        "resume_checkpoint": job.checkpoint_uri if job else None,
        "resume_weights_only": False,
        "schedule_epoch": state["schedule_epoch"] + state["epochs"],
        **next_segment(budget, state, state["epoch_start"] + state["epochs"]),
    }


def after_proposal(
    budget: Mapping[str, Any], state: AgentState, proposal: Proposal, job: Job | None
) -> AgentState:
    """The job that applies ``proposal`` after ``job`` (None: before the first job ran)."""
    succeeded = job is not None and job.status == JobStatus.SUCCEEDED
    update: AgentState = {
        "generation": state["generation"] + (1 if job is not None else 0),
        "attempt": 1,
        "hyperparameters": proposal["hyperparameters"],
        "schedule_epoch": 0,
        "schedule_total_epochs": schedule_length(budget, state),
        "feedback": None,
    }
    if "source" in proposal:  # a new architecture trains from scratch
        update["architecture_version"] = proposal["version"]
        update["resume_checkpoint"] = None
        update["resume_weights_only"] = False
        start = proposal.get(
            "epoch_start", state["epoch_start"] + (state["epochs"] if succeeded else 0)
        )
    else:  # tune: same model, weights carried over, a fresh optimizer and schedule
        update["resume_checkpoint"] = job.checkpoint_uri if job else None
        update["resume_weights_only"] = True
        start = state["epoch_start"] + state["epochs"]
    return {**update, **next_segment(budget, state, start)}


def retried(state: AgentState, job: Job | None) -> AgentState:
    """The next attempt of the same job: from the failed attempt's checkpoint if it left one."""
    resume = state.get("resume_checkpoint")
    weights_only = state.get("resume_weights_only", False)
    if job is not None and job.checkpoint_uri:
        resume, weights_only = job.checkpoint_uri, False
    return {
        "attempt": state["attempt"] + 1,
        "resume_checkpoint": resume,
        "resume_weights_only": weights_only,
        "jobs_done": state.get("jobs_done", 1) - 1,  # a retried attempt is the same job
    }
