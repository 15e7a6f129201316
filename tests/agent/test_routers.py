"""The graph's routers are pure functions of the state."""

from __future__ import annotations

from service.agent import routers

BUDGET = {"max_jobs": 5, "max_total_epochs": 40, "target_accuracy": 0.95, "patience": 2}


def test_route_outcome() -> None:
    assert routers.route_outcome({"outcome": {"status": "succeeded"}}) == "assess"
    assert (
        routers.route_outcome({"outcome": {"status": "failed", "error_kind": "code"}}) == "repair"
    )
    assert (
        routers.route_outcome({"outcome": {"status": "failed", "error_kind": "infrastructure"}})
        == "retry"
    )
    assert (
        routers.route_outcome({"outcome": {"status": "cancelled", "error_kind": "cancelled"}})
        == "report"
    )


def test_route_prepared() -> None:
    assert routers.route_prepared({"outcome": {}}) == "train"
    assert (
        routers.route_prepared({"outcome": {"status": "failed", "error_kind": "code"}}) == "repair"
    )


def test_route_assessment() -> None:
    for rec, node in [
        ("continue", "continue_training"),
        ("tune", "tune"),
        ("redesign", "redesign"),
        ("finish", "report"),
    ]:
        assert routers.route_assessment({"recommendation": rec}) == node


def test_route_fixed_and_approval() -> None:
    assert routers.route_fixed({"finish_reason": "gave up"}) == "report"
    assert routers.route_fixed({"proposal": None}) == "train"
    waiting = {"proposal": {"action": "redesign", "needs_approval": True, "approved": None}}
    assert routers.route_fixed(waiting) == "await_approval"
    assert routers.route_fixed({"proposal": {"needs_approval": True, "approved": True}}) == "train"
    assert routers.route_approval({"proposal": {"action": "redesign", "approved": True}}) == "train"
    assert (
        routers.route_approval({"proposal": {"action": "redesign", "approved": False}})
        == "redesign"
    )
    assert routers.route_approval({"proposal": {"action": "tune", "approved": False}}) == "tune"
    assert (
        routers.route_approval({"proposal": {"action": "repair", "approved": False}}) == "redesign"
    )
    assert (
        routers.route_approval({"finish_reason": "too many rejections", "proposal": {}}) == "report"
    )


def test_needs_approval_policy() -> None:
    assert not routers.needs_approval("auto", "redesign")
    assert routers.needs_approval("architecture", "redesign")
    assert routers.needs_approval("architecture", "repair")
    assert not routers.needs_approval("architecture", "tune")
    assert routers.needs_approval("always", "tune")


def test_budget_guards() -> None:
    assert routers.budget_verdict({"jobs_done": 1, "epochs_done": 8}, BUDGET) is None
    assert "target" in routers.budget_verdict({"best_val_accuracy": 0.96}, BUDGET)
    assert "5 jobs" in routers.budget_verdict({"jobs_done": 5}, BUDGET)
    assert "40 epochs" in routers.budget_verdict({"epochs_done": 40}, BUDGET)
    assert "no improvement" in routers.budget_verdict({"stale_assessments": 2}, BUDGET)
    assert (
        routers.budget_verdict({"epochs_done": 1000}, {**BUDGET, "max_total_epochs": None}) is None
    )


def test_improved() -> None:
    assert routers.improved(None, 0.1)
    assert routers.improved(0.5, 0.6)
    assert not routers.improved(0.5, 0.501)
    assert not routers.improved(0.5, None)
