"""Diagnostics from hand-built epoch summaries: each pathology, and the plumbing around them."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from service.diagnostics import (
    Diagnostics,
    compact_state,
    compute_diagnostics,
    is_weight_tensor,
)
from service.schemas.summaries import EpochSummaryIn

# A small CNN's parameters in registration order (biases and BatchNorm included on purpose).
NAMES = [
    "stem.0.weight",
    "stem.0.bias",
    "stem.1.weight",  # BatchNorm scale: not a layer weight
    "stem.1.bias",
    "block.conv.weight",
    "block.bn.weight",
    "block.bn.bias",
    "head.fc.weight",
    "head.fc.bias",
]
WEIGHTS = ["stem.0.weight", "block.conv.weight", "head.fc.weight"]


def summary(
    epoch: int,
    *,
    val_acc: float = 0.5,
    train_acc: float | None = None,
    train_loss: float | None = 1.0,
    val_loss: float | None = 1.0,
    lr: float = 0.05,
    grads: dict[str, float] | None = None,
    weights: dict[str, float] | None = None,
    total: float | None = None,
    spike: float = 1.5,
    nonfinite: int = 0,
    steps: int = 20,
    names: list[str] = NAMES,
) -> dict[str, Any]:
    """One epoch summary as the worker posts it (gradient means given per tensor)."""
    grads = grads or {}
    g = {n: grads.get(n, 0.1) for n in names}
    w = {n: (weights or {}).get(n, 5.0) for n in names}
    tot = total if total is not None else math.sqrt(sum(v * v for v in g.values()))
    return {
        "epoch": epoch,
        "train_loss": train_loss,
        "val_loss": val_loss,
        "train_accuracy": val_acc if train_acc is None else train_acc,
        "val_accuracy": val_acc,
        "learning_rate": lr,
        "grad_total": {"mean": tot, "max": tot * spike, "min": tot / spike},
        "grad_layers": {n: {"mean": v, "max": v * 1.5, "min": v / 1.5} for n, v in g.items()},
        "weight_norms": w,
        "nonfinite_steps": nonfinite,
        "steps": steps,
        "seconds": 1.0,
        "samples_per_second": 1000.0,
    }


def improving(n: int = 6, **kw: Any) -> list[dict[str, Any]]:
    """A network that learns steadily: loss falls 20% per epoch, accuracy climbs."""
    return [
        summary(
            e,
            val_acc=min(0.95, 0.3 + 0.1 * e),
            train_loss=2.0 * 0.8**e,
            val_loss=2.1 * 0.8**e,
            **kw,
        )
        for e in range(n)
    ]


def test_healthy_training_has_no_issues() -> None:
    d = compute_diagnostics(improving(), 10, hyperparameters={"optimizer": "sgd"})
    assert d.issues == []
    assert d.epochs_seen == 6 and d.first_epoch == 0 and d.last_epoch == 5
    assert d.best_val_accuracy == pytest.approx(0.8)
    assert d.val_loss_slope == pytest.approx(math.log(0.8))
    assert d.lr_verdict == "ok"
    assert "healthy" in d.notes[0]


def test_first_and_last_layers_skip_biases_and_norm_parameters() -> None:
    d = compute_diagnostics(improving(), 10)
    assert d.first_layer is not None and d.first_layer.name == "stem.0.weight"
    assert d.middle_layer is not None and d.middle_layer.name == "block.conv.weight"
    assert d.last_layer is not None and d.last_layer.name == "head.fc.weight"
    # From names alone, a BatchNorm inside nn.Sequential ("stem.1") looks like a layer...
    assert [layer.name for layer in d.layers] == [WEIGHTS[0], "stem.1.weight", *WEIGHTS[1:]]
    # ...the parameter shapes (from the sandbox's build) tell it apart.
    shapes = {n: [16, 3, 3, 3] if n in WEIGHTS else [16] for n in NAMES}
    d = compute_diagnostics(improving(), 10, param_shapes=shapes)
    assert [layer.name for layer in d.layers] == WEIGHTS
    assert d.weight_tensors == 3
    assert not is_weight_tensor("features.3.bias")
    assert not is_weight_tensor("layer1.0.bn2.weight")
    assert not is_weight_tensor("encoder.norm.weight")
    assert is_weight_tensor("features.0.weight")
    assert is_weight_tensor("fc.weight")


def test_vanishing_gradients_from_the_first_to_last_ratio() -> None:
    grads = {"stem.0.weight": 3e-9, "block.conv.weight": 1e-5, "head.fc.weight": 0.1}
    eps = [summary(e, val_acc=0.1, val_loss=2.3, train_loss=2.3, grads=grads) for e in range(5)]
    d = compute_diagnostics(eps, 10)
    assert d.vanishing and "vanishing_gradients" in d.issues
    assert d.first_to_last_ratio == pytest.approx(3e-8)
    assert {"near_chance", "plateau"} <= set(d.issues)
    assert "dead_tensors" not in d.issues  # small but not zero: vanishing, not dead
    assert any("stem.0.weight" in n for n in d.notes)


def test_exploding_gradients_from_the_total_norm_and_the_ratio() -> None:
    eps = [summary(e, total=50.0 * 10**e) for e in range(4)]  # 50 -> 50000
    d = compute_diagnostics(eps, 10)
    assert d.exploding and "exploding_gradients" in d.issues
    assert d.grad_total_max == pytest.approx(50000 * 1.5)
    assert d.jump_ratio == pytest.approx(10.0)
    grads = {"stem.0.weight": 500.0, "head.fc.weight": 0.1}
    d = compute_diagnostics([summary(e, grads=grads) for e in range(3)], 10)
    assert d.exploding and d.first_to_last_ratio == pytest.approx(5000)


def test_nonfinite_losses_and_steps() -> None:
    eps = [
        summary(0, val_acc=0.2),
        summary(1, val_acc=0.1, train_loss=None, val_loss=None, nonfinite=12),
        summary(2, val_acc=0.1, train_loss=None, val_loss=None, nonfinite=20, grads={}, total=0),
    ]
    eps[2]["grad_total"] = {"mean": 0.0, "max": 0.0, "min": 0.0}
    eps[2]["grad_layers"] = {n: {"mean": 0.0, "max": 0.0, "min": 0.0} for n in NAMES}
    d = compute_diagnostics(eps, 10)
    assert "nonfinite" in d.issues
    assert d.nonfinite_steps == 32 and d.nonfinite_loss_epochs == 2
    assert d.nonfinite_step_fraction == pytest.approx(32 / 60)
    assert d.train_loss_last is None and d.val_loss_best == pytest.approx(1.0)
    # The all-non-finite epoch's zero gradients are not "dead tensors".
    assert "dead_tensors" not in d.issues


def test_plateau_against_steady_improvement() -> None:
    flat = [summary(e, val_acc=0.62 + 0.001 * (e % 2), val_loss=1.1) for e in range(8)]
    d = compute_diagnostics(flat, 10)
    assert d.plateau and "plateau" in d.issues
    assert not compute_diagnostics(improving(8), 10).plateau
    # Two epochs are too few to call a plateau.
    assert not compute_diagnostics(flat[:2], 10).plateau


def test_overfitting_from_gap_and_rising_validation_loss() -> None:
    eps = [
        summary(
            e,
            train_acc=0.8 + 0.05 * e,
            val_acc=0.75,
            train_loss=0.5 / (e + 1),
            val_loss=0.8 + 0.1 * max(0, e - 1),
        )
        for e in range(5)
    ]
    d = compute_diagnostics(eps, 10)
    assert d.overfitting and "overfitting" in d.issues
    assert d.generalization_gap == pytest.approx(0.25)


def test_learning_rate_far_too_small_from_update_ratio() -> None:
    eps = [summary(e, lr=1e-6, val_acc=0.1, val_loss=2.3) for e in range(4)]
    d = compute_diagnostics(eps, 10, hyperparameters={"optimizer": "sgd", "momentum": 0.0})
    assert d.lr_verdict == "too_small" and "lr_too_small" in d.issues
    assert d.update_ratio_max == pytest.approx(1e-6 * 0.1 / 5.0)
    assert not d.vanishing


def test_learning_rate_too_high_from_update_ratio() -> None:
    eps = [summary(e, lr=30.0, grads={n: 0.1 for n in NAMES}) for e in range(3)]
    d = compute_diagnostics(eps, 10, hyperparameters={"optimizer": "sgd"})
    assert d.lr_verdict == "too_high" and "lr_too_high" in d.issues
    assert d.update_ratio_median == pytest.approx(30 * 0.1 / 5)


def test_momentum_scales_the_effective_step_and_adam_is_not_judged_by_ratio() -> None:
    eps = improving(4, lr=0.01)
    plain = compute_diagnostics(eps, 10, hyperparameters={"optimizer": "sgd", "momentum": 0.0})
    heavy = compute_diagnostics(eps, 10, hyperparameters={"optimizer": "sgd", "momentum": 0.9})
    assert heavy.update_ratio_median == pytest.approx(10 * plain.update_ratio_median)
    adam = compute_diagnostics(
        [summary(e, lr=1e-7) for e in range(3)], 10, hyperparameters={"optimizer": "adam"}
    )
    assert not adam.update_ratio_judged
    assert adam.lr_verdict == "too_small"  # judged by the learning rate alone
    adam_ok = compute_diagnostics(
        [summary(e, lr=1e-3) for e in range(3)], 10, hyperparameters={"optimizer": "adamw"}
    )
    assert adam_ok.lr_verdict == "ok"


def test_dead_tensors_but_not_biases_before_batchnorm() -> None:
    grads = {"block.conv.weight": 0.0, "stem.0.bias": 0.0}  # a bias before BN gets exactly 0
    d = compute_diagnostics([summary(e, grads=grads) for e in range(3)], 10)
    assert d.dead_tensors == ["block.conv.weight"] and d.dead_count == 1
    assert "dead_tensors" in d.issues


def test_near_chance_depends_on_the_number_of_classes() -> None:
    assert compute_diagnostics([summary(0, val_acc=0.12)], 10).near_chance
    assert not compute_diagnostics([summary(0, val_acc=0.3)], 10).near_chance
    assert compute_diagnostics([summary(0, val_acc=0.6)], 2).near_chance
    assert not compute_diagnostics([summary(0, val_acc=0.9)], 2).near_chance
    d = compute_diagnostics([summary(0, val_acc=0.012)], 100)
    assert d.near_chance and d.chance_accuracy == pytest.approx(0.01)


def test_gradient_spikes_ignore_the_first_epoch_of_a_run() -> None:
    eps = [summary(0, spike=40.0)] + [summary(e) for e in range(1, 4)]
    assert not compute_diagnostics(eps, 10).grad_spikes
    eps[2] = summary(2, spike=20.0)
    d = compute_diagnostics(eps, 10)
    assert d.grad_spikes and d.spike_ratio == pytest.approx(20.0)


def test_accepts_models_and_database_dicts_in_any_order() -> None:
    eps = improving(5)
    rows = [{**s, "job_id": "j1", "generation": 0, "id": i} for i, s in enumerate(eps)]
    models = [EpochSummaryIn.model_validate(s) for s in eps]
    a = compute_diagnostics(list(reversed(rows)), 10)
    b = compute_diagnostics(models, 10)
    assert a.model_dump() == b.model_dump()
    # A repeated epoch counts once (the later copy wins).
    c = compute_diagnostics(models + [models[-1]], 10)
    assert c.epochs_seen == 5


def test_layer_order_overrides_the_key_order() -> None:
    # Postgres JSONB does not keep key order: the caller passes the registration order.
    shuffled = improving(3, names=sorted(NAMES))
    d = compute_diagnostics(shuffled, 10)
    assert d.first_layer is not None and d.first_layer.name == "block.conv.weight"
    d = compute_diagnostics(shuffled, 10, layer_order=NAMES)
    assert d.first_layer is not None and d.first_layer.name == "stem.0.weight"


def test_earlier_jobs_and_the_target() -> None:
    earlier = [summary(e, val_acc=0.9) for e in range(3)]
    later = [summary(e, val_acc=0.85) for e in range(3, 6)]
    d = compute_diagnostics(later, 10, earlier=earlier, target_accuracy=0.88)
    assert d.previous_best_val_accuracy == pytest.approx(0.9)
    assert d.run_best_val_accuracy == pytest.approx(0.9)
    assert "target_reached" in d.issues


def test_no_summaries() -> None:
    d = compute_diagnostics([], 10)
    assert d.issues == ["no_data"] and d.epochs_seen == 0


def test_compact_state_is_small_json_and_reads_back() -> None:
    grads = {"stem.0.weight": 3e-9, "head.fc.weight": 0.1, "block.conv.weight": 0.0}
    eps = [summary(e, val_acc=0.1, grads=grads) for e in range(4)]
    d = compute_diagnostics(eps, 10)
    state = compact_state(d, max_names=1)
    text = json.dumps(state)
    assert "layers" not in state and "grad_layers" not in text
    assert set(state["first_layer"]) <= {
        "name",
        "grad_norm",
        "weight_norm",
        "relative_grad",
        "update_ratio",
    }
    assert len(state["dead_tensors"]) <= 1
    assert state["first_to_last_ratio"] == pytest.approx(3e-8, rel=1e-3)
    back = Diagnostics.model_validate(state)
    assert back.issues == d.issues and back.vanishing
    # The stored full dump and the compact state are both accepted.
    assert compact_state(d.model_dump()) == compact_state(d)
    assert len(text) < 4000
