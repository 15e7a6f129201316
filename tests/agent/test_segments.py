"""Planning the next job is a pure function of the state, the budget and the job that ended."""

from __future__ import annotations

from typing import Any

from service.agent import segments
from service.agent.state import AgentState, Proposal
from service.db.models import Job

BUDGET: dict[str, Any] = {"epochs_per_job": 4, "max_jobs": 5, "max_total_epochs": 18}

# The second job (generation 1) has trained epochs 4..7 of an 18-epoch schedule.
STATE: AgentState = {
    "run_id": "r",
    "generation": 1,
    "attempt": 1,
    "architecture_version": 0,
    "hyperparameters": {"learning_rate": 0.1},
    "epoch_start": 4,
    "epochs": 4,
    "schedule_epoch": 4,
    "schedule_total_epochs": 18,
    "jobs_done": 2,
    "epochs_done": 8,
}


def proposal(**extra: Any) -> Proposal:
    base = Proposal(
        action="tune",
        rationale="",
        changes={},
        hyperparameters={"learning_rate": 0.01},
        needs_approval=False,
        usage={},
        approved=None,
    )
    return Proposal(**{**base, **extra})  # type: ignore[typeddict-item]


def test_the_first_schedule_spans_the_budget() -> None:
    assert segments.first_schedule_length(BUDGET) == 18
    assert segments.first_schedule_length({"epochs_per_job": 4, "max_jobs": 3}) == 12


def test_a_segment_is_cut_to_the_epochs_left() -> None:
    assert segments.next_segment(BUDGET, STATE, 8) == {"epoch_start": 8, "epochs": 4}
    late: AgentState = {**STATE, "epochs_done": 16}
    assert segments.next_segment(BUDGET, late, 16) == {"epoch_start": 16, "epochs": 2}


def test_continue_resumes_the_same_schedule_from_the_checkpoint() -> None:
    job = Job(status="succeeded", checkpoint_uri="file:///ckpt-g1")
    update = segments.continued(BUDGET, STATE, job)
    assert update == {
        "generation": 2,
        "attempt": 1,
        "resume_checkpoint": "file:///ckpt-g1",
        "resume_weights_only": False,
        "schedule_epoch": 8,
        "epoch_start": 8,
        "epochs": 4,
    }


def test_tune_keeps_the_weights_on_a_fresh_schedule_over_the_rest_of_the_budget() -> None:
    job = Job(status="succeeded", checkpoint_uri="file:///ckpt-g1")
    update = segments.after_proposal(BUDGET, STATE, proposal(), job)
    assert update["resume_checkpoint"] == "file:///ckpt-g1"
    assert update["resume_weights_only"] is True
    assert (update["schedule_epoch"], update["schedule_total_epochs"]) == (0, 10)
    assert (update["generation"], update["epoch_start"], update["epochs"]) == (2, 8, 4)
    assert update["hyperparameters"] == {"learning_rate": 0.01}
    assert "architecture_version" not in update


def test_a_new_architecture_trains_from_scratch() -> None:
    redesign = proposal(action="redesign", source="...", version=1)
    update = segments.after_proposal(BUDGET, STATE, redesign, Job(status="succeeded"))
    assert update["architecture_version"] == 1
    assert (update["resume_checkpoint"], update["resume_weights_only"]) == (None, False)
    assert update["epoch_start"] == 8  # after the segment that succeeded

    # A repair of a job that failed resumes the epoch numbering after its last summary.
    repair = proposal(action="repair", source="...", version=2, epoch_start=6)
    update = segments.after_proposal(BUDGET, STATE, repair, Job(status="failed"))
    assert (update["generation"], update["epoch_start"]) == (2, 6)

    # A sandbox rejection before any job: the same generation trains the repaired model.
    rejected = proposal(action="repair", source="...", version=1)
    update = segments.after_proposal(BUDGET, STATE, rejected, None)
    assert (update["generation"], update["epoch_start"]) == (1, 4)


def test_a_retry_resumes_from_the_failed_attempts_checkpoint_if_it_left_one() -> None:
    state: AgentState = {**STATE, "resume_checkpoint": "file:///ckpt-g0"}
    assert segments.retried(state, Job(checkpoint_uri=None)) == {
        "attempt": 2,
        "resume_checkpoint": "file:///ckpt-g0",
        "resume_weights_only": False,
        "jobs_done": 1,
    }
    update = segments.retried(state, Job(checkpoint_uri="file:///ckpt-g1-a1"))
    assert (update["resume_checkpoint"], update["resume_weights_only"]) == (
        "file:///ckpt-g1-a1",
        False,
    )
