"""The verdicts on a segment: which issues its features show, each with a note saying why."""

from __future__ import annotations

from service.diagnostics.model import Diagnostics
from service.diagnostics.thresholds import (
    ADAPTIVE_OPTIMIZERS,
    EXPLODING_NORM,
    EXPLODING_RATIO,
    JUMP_RATIO,
    NEAR_CHANCE_FACTOR,
    OVERFIT_GAP,
    OVERFIT_LOSS_RISE,
    PLATEAU_ACCURACY,
    PLATEAU_LOSS,
    SPIKE_RATIO,
    UPDATE_RATIO_HIGH,
    UPDATE_RATIO_LOW,
    VANISHING_RATIO,
)
from service.schemas.summaries import EpochSummaryIn


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3g}"


def judge(d: Diagnostics, eps: list[EpochSummaryIn], recent: list[EpochSummaryIn]) -> None:
    """Set the verdicts, ``issues`` and ``notes`` of ``d`` from its features (``recent``: the
    window's epochs of ``eps``)."""
    issues: list[str] = []
    notes: list[str] = []
    chance = d.chance_accuracy
    near = min(NEAR_CHANCE_FACTOR * chance, (1.0 + chance) / 2)

    if d.nonfinite_steps or d.nonfinite_loss_epochs:
        issues.append("nonfinite")
        notes.append(
            f"{d.nonfinite_steps} training steps had non-finite gradients and "
            f"{d.nonfinite_loss_epochs} epochs a non-finite loss: training diverged."
        )

    ratio = d.first_to_last_ratio
    d.exploding = bool(
        (d.grad_total_max is not None and d.grad_total_max > EXPLODING_NORM)
        or (ratio is not None and ratio > EXPLODING_RATIO)
        or (d.jump_ratio is not None and d.jump_ratio > EXPLODING_NORM)
    )
    if d.exploding:
        issues.append("exploding_gradients")
        notes.append(
            f"Gradients explode: the total norm reached {_fmt(d.grad_total_max)}"
            + (f" and the first layer's gradient is {ratio:.3g}x the last's." if ratio else ".")
        )
    d.vanishing = ratio is not None and ratio < VANISHING_RATIO
    if d.vanishing and d.first_layer and d.last_layer:
        issues.append("vanishing_gradients")
        notes.append(
            f"Gradients vanish: the first layer ({d.first_layer.name}) gets {ratio:.2g} of the "
            f"gradient norm of the last ({d.last_layer.name}), so the early layers barely learn."
        )
    if d.dead_count:
        issues.append("dead_tensors")
        notes.append(
            f"{d.dead_count} of {d.weight_tensors} weight tensors receive no gradient "
            f"(e.g. {', '.join(d.dead_tensors[:3])}): dead units or a disconnected layer."
        )
    d.grad_spikes = bool(
        (d.spike_ratio is not None and d.spike_ratio > SPIKE_RATIO)
        or (d.jump_ratio is not None and d.jump_ratio > JUMP_RATIO)
    )
    if d.grad_spikes:
        issues.append("grad_spikes")
        notes.append(
            f"Gradient spikes: a step reached {_fmt(d.spike_ratio)}x its epoch's mean norm "
            f"and the mean grew up to {_fmt(d.jump_ratio)}x from one epoch to the next."
        )

    if d.update_ratio_median is not None and d.update_ratio_judged:
        # The median tensor, not the fastest one: a single tensor with larger updates (often the
        # last layer) must not hide a learning rate that is far too small for the rest.
        if d.update_ratio_median < UPDATE_RATIO_LOW:
            d.lr_verdict = "too_small"
        elif d.update_ratio_median > UPDATE_RATIO_HIGH:
            d.lr_verdict = "too_high"
        else:
            d.lr_verdict = "ok"
    elif d.optimizer in ADAPTIVE_OPTIMIZERS and d.learning_rate_peak is not None:
        # Adaptive steps are about lr per element whatever the gradient: judge lr alone.
        if d.learning_rate_peak < 1e-5:
            d.lr_verdict = "too_small"
        elif d.learning_rate_peak > 1e-2 and ("nonfinite" in issues or d.grad_spikes):
            d.lr_verdict = "too_high"
        else:
            d.lr_verdict = "ok"
    if d.lr_verdict == "too_small":
        issues.append("lr_too_small")
        notes.append(
            f"The learning rate is far too small: one step typically moves the weights by "
            f"{_fmt(d.update_ratio_median)} of their norm (healthy is about 1e-3)."
        )
    elif d.lr_verdict == "too_high":
        issues.append("lr_too_high")
        notes.append(
            f"The learning rate is too high: a typical step moves the weights by "
            f"{_fmt(d.update_ratio_median)} of their norm (healthy is about 1e-3)."
        )

    best = d.best_val_accuracy or 0.0
    d.near_chance = best < near and (d.val_accuracy_last or 0.0) < near
    if d.near_chance:
        issues.append("near_chance")
        notes.append(
            f"Validation accuracy {best:.1%} is near chance ({chance:.1%} for "
            f"{d.num_classes} classes): the network is not learning."
        )

    d.plateau = _plateau(eps, recent)
    if d.plateau:
        issues.append("plateau")
        notes.append(
            f"No progress over the last {len(recent)} epochs: validation loss "
            f"{_fmt(d.val_loss_last)}, accuracy {d.val_accuracy_last or 0:.1%}."
        )

    gap = d.generalization_gap or 0.0
    rising = (
        d.val_loss_best is not None
        and d.val_loss_last is not None
        and d.val_loss_last > (1 + OVERFIT_LOSS_RISE) * d.val_loss_best
    )
    d.overfitting = (gap > OVERFIT_GAP and rising) or gap > 2.5 * OVERFIT_GAP
    if d.overfitting:
        issues.append("overfitting")
        notes.append(
            f"Overfitting: training accuracy {d.train_accuracy_last or 0:.1%} against "
            f"validation {d.val_accuracy_last or 0:.1%}"
            + (", and the validation loss is rising." if rising else ".")
        )

    slope = d.val_loss_slope or 0.0
    d.slow_progress = (
        not d.plateau
        and not d.near_chance
        and len(recent) >= 3
        and d.val_loss_slope is not None
        and -0.02 < slope < 0
        and (d.val_accuracy_change or 0.0) < 0.02
    )
    if d.slow_progress:
        issues.append("slow_progress")
        notes.append(f"Progress is slow: the validation loss falls by {-slope:.1%} per epoch.")

    if d.target_accuracy is not None and (d.run_best_val_accuracy or 0.0) >= d.target_accuracy:
        issues.append("target_reached")
        notes.append(f"The target validation accuracy {d.target_accuracy:.1%} is reached.")
    if not issues:
        notes.append(
            f"Training looks healthy: validation accuracy {d.val_accuracy_last or 0:.1%}, "
            f"first/last gradient ratio {_fmt(ratio)}, update ratio "
            f"{_fmt(d.update_ratio_median)}."
        )
    d.issues, d.notes = issues, notes


def _plateau(eps: list[EpochSummaryIn], recent: list[EpochSummaryIn]) -> bool:
    """No new best validation loss or accuracy in the window, compared with before it."""
    if len(eps) < 3:
        return False
    before = eps[: len(eps) - len(recent)] or eps[:1]
    after = recent if len(eps) > len(recent) else recent[1:]
    loss_before = [s.val_loss for s in before if s.val_loss is not None]
    loss_after = [s.val_loss for s in after if s.val_loss is not None]
    loss_better = bool(
        loss_before and loss_after and min(loss_after) < (1 - PLATEAU_LOSS) * min(loss_before)
    )
    acc_better = max(s.val_accuracy for s in after) > (
        max(s.val_accuracy for s in before) + PLATEAU_ACCURACY
    )
    return not (loss_better or acc_better)
