"""The rules advisor's tuning recipes: hyperparameter changes for the diagnosed issues.

``tune_changes`` corrects what the diagnostics show (a learning rate far off, instability,
spikes, overfitting, a plateau); right after a redesign, ``fresh_recipe`` gives the new network
a proven recipe instead (SGD with Nesterov momentum 0.9 at 0.05, or AdamW at 1e-3, weight
decay, cosine schedule). The caller validates and clamps every change.
"""

from __future__ import annotations

import math
from typing import Any

from service.diagnostics import ADAPTIVE_OPTIMIZERS, Diagnostics
from service.schemas.hyperparameters import Hyperparameters

#: update/weight ratio that the learning-rate corrections aim for (healthy: 1e-3 .. 1e-2)
TARGET_UPDATE_RATIO = 3e-3


def _nice(x: float) -> float:
    """Round to one significant digit (0.0437 -> 0.04), so proposals read like a person's."""
    if x <= 0 or not math.isfinite(x):
        return x
    return float(f"{x:.1g}")


class Changes:
    """Changes to ``hp`` with a reason each; the first change of a key wins."""

    def __init__(self, hp: Hyperparameters) -> None:
        self.hp = hp
        self.changes: dict[str, Any] = {}
        self.reasons: dict[str, str] = {}

    def set(self, key: str, value: Any, reason: str) -> None:
        current = self.changes.get(key, getattr(self.hp, key))
        if isinstance(value, float):
            value = _nice(value)
        if value != current and key not in self.changes:
            self.changes[key] = value
            self.reasons[key] = reason

    def value(self, key: str) -> Any:
        return self.changes.get(key, getattr(self.hp, key))


def fresh_recipe(hp: Hyperparameters, d: Diagnostics) -> Changes:
    """Hyperparameters for a newly written residual network with BatchNorm."""
    c = Changes(hp)
    if hp.optimizer in ADAPTIVE_OPTIMIZERS:
        c.set("optimizer", "adamw", "AdamW: Adam with decoupled weight decay, for a new network")
        c.set("learning_rate", 1e-3, "the standard Adam learning rate for a BatchNorm network")
        c.set("weight_decay", 1e-2, "decoupled weight decay against overfitting")
    else:
        c.set("optimizer", "sgd", "SGD with momentum trains BatchNorm residual networks well")
        c.set("momentum", 0.9, "momentum 0.9 speeds SGD up along consistent directions")
        c.set("nesterov", True, "Nesterov momentum is a little more stable")
        c.set("learning_rate", 0.05, "0.05 with momentum suits a BatchNorm network (batch 64)")
        c.set("weight_decay", 5e-4, "weight decay 5e-4 is the usual L2 for such networks")
    c.set("lr_schedule", "cosine", "a cosine schedule anneals the rate to converge in the segment")
    if d.has("nonfinite") or d.exploding:
        c.set("gradient_clip", 5.0, "clip as a safety net: the previous network diverged")
    if hp.batch_size > 256:
        c.set("batch_size", 128, "a smaller batch gives a new network more steps per epoch")
    return c


def tune_changes(d: Diagnostics, hp: Hyperparameters, *, after_redesign: bool) -> Changes:
    """Hyperparameter changes for the diagnosed issues (the caller clamps them)."""
    if after_redesign:
        return fresh_recipe(hp, d)
    c = Changes(hp)
    sgd = hp.optimizer == "sgd"
    momentum = hp.momentum if sgd else 0.0
    ratio = d.update_ratio_median
    unstable = d.has("nonfinite") or d.exploding

    if unstable or d.lr_verdict == "too_high":
        if sgd and ratio and d.lr_verdict == "too_high":
            factor = min(1 / 3, max(1e-2, TARGET_UPDATE_RATIO / ratio))
        else:
            factor = 0.1
        c.set(
            "learning_rate",
            hp.learning_rate * factor,
            f"lower the learning rate {1 / factor:.0f}x: "
            + ("training diverged" if unstable else f"steps move weights by {ratio:.2g}"),
        )
        if hp.gradient_clip == 0:
            c.set("gradient_clip", 1.0, "clip the gradient norm to keep steps bounded")
    elif d.lr_verdict == "too_small":
        if sgd:
            factor = min(1000.0, max(3.0, TARGET_UPDATE_RATIO / ratio)) if ratio else 10.0
            effective = hp.learning_rate / (1 - momentum) * factor
            if momentum == 0:
                c.set("momentum", 0.9, "momentum 0.9 multiplies the effective step by 10")
                c.set("nesterov", True, "Nesterov momentum is a little more stable")
                momentum = 0.9
            c.set(
                "learning_rate",
                effective * (1 - momentum),
                f"raise the effective learning rate {factor:.0f}x: steps move the weights by "
                f"only {ratio or 0:.2g} of their norm (aim: about {TARGET_UPDATE_RATIO:g})",
            )
        else:
            c.set(
                "learning_rate",
                1e-3 if hp.learning_rate < 1e-4 else hp.learning_rate * 10,
                "raise the learning rate: the network barely moves",
            )
    elif d.near_chance:
        c.set("optimizer", "adamw", "an adaptive optimizer gets a stuck network moving")
        c.set("learning_rate", 1e-3, "the standard AdamW learning rate")
        c.set("lr_schedule", "cosine", "anneal the rate within the segment")

    if d.grad_spikes and c.value("gradient_clip") == 0:
        level = max(1.0, 2 * (d.grad_total_last or 0.5))
        c.set("gradient_clip", level, "clip gradient spikes at about twice the typical norm")
    if d.overfitting:
        c.set(
            "weight_decay",
            max(5e-4, hp.weight_decay * 5),
            f"regularise: train/val accuracy gap {d.generalization_gap or 0:.1%}",
        )
        if hp.label_smoothing == 0:
            c.set("label_smoothing", 0.1, "label smoothing 0.1 curbs overconfident fits")
    if (d.plateau or d.slow_progress) and not c.changes:
        if sgd and momentum == 0:
            c.set("momentum", 0.9, "momentum 0.9 speeds SGD up along consistent directions")
            c.set("nesterov", True, "Nesterov momentum is a little more stable")
        elif hp.lr_schedule == "constant":
            c.set("lr_schedule", "cosine", "anneal the learning rate to settle into a minimum")
        elif d.plateau:
            c.set("learning_rate", hp.learning_rate * 0.3, "a lower rate to settle the plateau")
        else:
            c.set("learning_rate", hp.learning_rate * 2, "progress is slow: a larger step")
    if not c.changes:
        if hp.lr_schedule == "constant":
            c.set("lr_schedule", "cosine", "anneal the learning rate within the segment")
        else:
            c.set("learning_rate", hp.learning_rate * 0.5, "halve the rate to refine")
    return c
