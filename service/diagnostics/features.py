"""The features of a training segment, computed from its epoch summaries.

Plain arithmetic over the summaries the worker posted (losses and their trends, accuracy,
gradient norms per weight tensor, update-to-weight ratios), so the same summaries always give
the same diagnostics; the verdicts on them are ``service.diagnostics.verdicts``.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from service.diagnostics.model import Diagnostics, LayerStat
from service.diagnostics.thresholds import (
    ADAPTIVE_OPTIMIZERS,
    DEAD_ABSOLUTE,
    DEAD_RELATIVE,
    DEFAULT_WINDOW,
    EXPLODING_NORM,
)
from service.diagnostics.verdicts import judge
from service.schemas.summaries import EpochSummaryIn

SummaryLike = EpochSummaryIn | Mapping[str, Any]

# Parameter names of normalisation layers: their weights are scales, not feature maps.
_NORM_NAME = re.compile(r"(^|[._])(bn|norm|ln|gn|batchnorm|layernorm|groupnorm)\d*([._]|$)", re.I)


# --------------------------------------------------------------------------- input helpers


def _as_summary(item: SummaryLike) -> EpochSummaryIn:
    if isinstance(item, EpochSummaryIn):
        return item
    # DB rows converted to dicts may carry extra columns (job_id, created_at, ...).
    fields = EpochSummaryIn.model_fields
    return EpochSummaryIn.model_validate({k: v for k, v in dict(item).items() if k in fields})


def _ordered(items: Sequence[SummaryLike]) -> list[EpochSummaryIn]:
    by_epoch: dict[int, EpochSummaryIn] = {}
    for item in items:
        s = _as_summary(item)
        by_epoch[s.epoch] = s  # a repeated epoch: the later one wins
    return [by_epoch[e] for e in sorted(by_epoch)]


def _hp(hyperparameters: Any) -> tuple[str | None, float]:
    if hyperparameters is None:
        return None, 0.0
    data = hyperparameters if isinstance(hyperparameters, Mapping) else hyperparameters.model_dump()
    optimizer = data.get("optimizer")
    momentum = float(data.get("momentum") or 0.0)
    return (str(optimizer) if optimizer else None), momentum


def is_weight_tensor(name: str) -> bool:
    """A layer's weight: not a bias and not a normalisation layer's scale."""
    if name.endswith("bias") or "running_" in name:
        return False
    module = name.rsplit(".", 1)[0] if "." in name else ""
    return not _NORM_NAME.search(module)


def weight_names(names: Sequence[str]) -> list[str]:
    """The weight tensors among ``names`` in the given order, falling back to all non-biases."""
    weights = [n for n in names if is_weight_tensor(n)]
    if weights:
        return weights
    return [n for n in names if not n.endswith("bias")] or list(names)


def _slope(values: Sequence[float]) -> float | None:
    """Least-squares slope per step of ``values`` (None below two points)."""
    n = len(values)
    if n < 2:
        return None
    mean_x = (n - 1) / 2
    mean_y = sum(values) / n
    num = sum((i - mean_x) * (y - mean_y) for i, y in enumerate(values))
    den = sum((i - mean_x) ** 2 for i in range(n))
    return num / den


def _log_slope(values: Sequence[float | None]) -> float | None:
    finite = [math.log(v) for v in values if v is not None and v > 0 and math.isfinite(v)]
    return _slope(finite)


def _finite_epoch(s: EpochSummaryIn) -> bool:
    """The epoch had finite steps, so its gradient statistics mean something."""
    return s.steps > s.nonfinite_steps and s.grad_total.mean > 0


# --------------------------------------------------------------------------- the features


def compute_diagnostics(
    summaries: Sequence[SummaryLike],
    num_classes: int,
    *,
    window: int = DEFAULT_WINDOW,
    earlier: Sequence[SummaryLike] = (),
    hyperparameters: Any = None,
    layer_order: Sequence[str] | None = None,
    param_shapes: Mapping[str, Sequence[int]] | None = None,
    target_accuracy: float | None = None,
) -> Diagnostics:
    """Diagnose one training segment from its epoch summaries.

    ``summaries`` are the latest job's epoch summaries (``EpochSummaryIn`` or dicts of the same
    shape, in any order); ``earlier`` the run's earlier summaries, used only for the run's best
    accuracy before this job. ``hyperparameters`` (a ``Hyperparameters`` or its dict) tells the
    optimizer and momentum, which the update-to-weight ratio depends on. ``layer_order`` gives
    the parameter names in the model's registration order; without it the order of
    ``param_shapes``, else of the posted ``grad_layers`` keys is used (JSONB in Postgres does not
    keep key order, so callers reading summaries back from Postgres should pass one of them).
    ``param_shapes`` (name -> shape, e.g. from the sandbox's build of the model) identifies the
    layer weights exactly (2+ dimensions); without it they are told from their names (biases
    and parameters of modules named like ``bn``/``norm`` are skipped; a BatchNorm inside an
    ``nn.Sequential`` has a numeric name and counts as a weight).
    """
    window = max(2, int(window))
    chance = 1.0 / max(2, num_classes)
    optimizer, momentum = _hp(hyperparameters)
    d = Diagnostics(
        window=window,
        num_classes=num_classes,
        chance_accuracy=chance,
        optimizer=optimizer,
        target_accuracy=target_accuracy,
    )
    eps = _ordered(summaries)
    prior = _ordered(earlier)
    prior_best = max((s.val_accuracy for s in prior), default=None)
    d.previous_best_val_accuracy = prior_best
    if not eps:
        d.issues = ["no_data"]
        d.notes = ["No epoch summaries were recorded for this job, so there is nothing to judge."]
        d.run_best_val_accuracy = prior_best
        return d

    recent = eps[-window:]
    d.epochs_seen = len(eps)
    d.first_epoch, d.last_epoch = eps[0].epoch, eps[-1].epoch
    d.learning_rate_peak = max(s.learning_rate for s in eps)
    d.learning_rate_last = eps[-1].learning_rate

    _losses(d, eps, recent)
    _accuracy(d, eps, recent, prior_best)
    if layer_order is None and param_shapes:
        layer_order = list(param_shapes)
    matrices = {n for n, shape in param_shapes.items() if len(shape) >= 2} if param_shapes else None
    _gradients(d, eps, recent, optimizer, momentum, layer_order, matrices)
    judge(d, eps, recent)
    return d


def _losses(d: Diagnostics, eps: list[EpochSummaryIn], recent: list[EpochSummaryIn]) -> None:
    train = [s.train_loss for s in eps if s.train_loss is not None]
    val = [s.val_loss for s in eps if s.val_loss is not None]
    d.train_loss_first = train[0] if train else None
    d.train_loss_last = eps[-1].train_loss
    d.val_loss_first = val[0] if val else None
    d.val_loss_last = eps[-1].val_loss
    d.val_loss_best = min(val) if val else None
    d.train_loss_slope = _log_slope([s.train_loss for s in recent])
    d.val_loss_slope = _log_slope([s.val_loss for s in recent])
    recent_val = [s.val_loss for s in recent if s.val_loss is not None]
    if len(recent_val) >= 2 and recent_val[0] > 0:
        d.val_loss_rel_change = (recent_val[-1] - recent_val[0]) / recent_val[0]
    d.nonfinite_loss_epochs = sum(1 for s in eps if s.train_loss is None or s.val_loss is None)
    d.nonfinite_steps = sum(s.nonfinite_steps for s in eps)
    steps = sum(s.steps for s in eps)
    d.nonfinite_step_fraction = d.nonfinite_steps / steps if steps else 0.0


def _accuracy(
    d: Diagnostics,
    eps: list[EpochSummaryIn],
    recent: list[EpochSummaryIn],
    prior_best: float | None,
) -> None:
    last = eps[-1]
    best = max(eps, key=lambda s: s.val_accuracy)
    d.train_accuracy_last = last.train_accuracy
    d.val_accuracy_first = eps[0].val_accuracy
    d.val_accuracy_last = last.val_accuracy
    d.best_val_accuracy = best.val_accuracy
    d.best_epoch = best.epoch
    d.val_accuracy_change = recent[-1].val_accuracy - recent[0].val_accuracy
    d.run_best_val_accuracy = max(best.val_accuracy, prior_best or 0.0)
    d.generalization_gap = last.train_accuracy - last.val_accuracy


def _gradients(
    d: Diagnostics,
    eps: list[EpochSummaryIn],
    recent: list[EpochSummaryIn],
    optimizer: str | None,
    momentum: float,
    layer_order: Sequence[str] | None,
    matrices: set[str] | None,
) -> None:
    finite = [s for s in eps if _finite_epoch(s)]
    if not finite:
        return
    finite_recent = [s for s in recent if _finite_epoch(s)] or finite[-1:]
    last = finite[-1]
    d.grad_total_last = last.grad_total.mean
    d.grad_total_max = max(s.grad_total.max for s in finite)
    d.grad_total_slope = _log_slope([s.grad_total.mean for s in finite_recent])

    # Spikes: the first epoch of a run is excluded when there are others, because a large
    # norm in the first steps from a random initialisation is normal.
    judged = [s for s in finite if s.epoch > 0] or finite
    ratios = [s.grad_total.max / s.grad_total.mean for s in judged if s.steps >= 4]
    d.spike_ratio = max(ratios) if ratios else None
    jumps = [
        b.grad_total.mean / a.grad_total.mean
        for a, b in zip(finite, finite[1:], strict=False)
        if a.grad_total.mean > 0
    ]
    d.jump_ratio = max(jumps) if jumps else None

    names = list(layer_order) if layer_order else list(last.grad_layers)
    names = [n for n in names if n in last.grad_layers] + [
        n for n in last.grad_layers if n not in set(names)
    ]
    weights = [n for n in names if n in matrices] if matrices else weight_names(names)
    d.weight_tensors = len(weights)
    if not weights:
        return
    adaptive = optimizer in ADAPTIVE_OPTIMIZERS
    d.update_ratio_judged = not adaptive
    scale = 1.0 if adaptive or optimizer not in (None, "sgd") else 1.0 / (1.0 - min(momentum, 0.99))

    def stat(s: EpochSummaryIn, name: str) -> LayerStat:
        g = s.grad_layers[name].mean if name in s.grad_layers else 0.0
        w = s.weight_norms.get(name)
        total = s.grad_total.mean
        ratio = s.learning_rate * scale * g / w if w else None
        return LayerStat(
            name=name,
            grad_norm=g,
            weight_norm=w,
            relative_grad=g / total if total > 0 else None,
            update_ratio=ratio,
        )

    d.layers = [stat(last, n) for n in weights]
    d.first_layer = d.layers[0]
    d.middle_layer = d.layers[len(weights) // 2] if len(weights) > 2 else None
    d.last_layer = d.layers[-1]

    # First-to-last ratio: the median over the window's epochs, robust to one odd epoch.
    first, final = weights[0], weights[-1]
    per_epoch = []
    for s in finite_recent:
        gl = s.grad_layers
        if first in gl and final in gl and gl[final].mean > 0:
            per_epoch.append(gl[first].mean / gl[final].mean)
    if per_epoch and len(weights) > 1:
        d.first_to_last_ratio = statistics.median(per_epoch)

    dead = [
        st.name
        for st in d.layers
        if st.grad_norm <= DEAD_ABSOLUTE or (st.relative_grad or 0.0) < DEAD_RELATIVE
    ]
    d.dead_count = len(dead)
    d.dead_tensors = dead[:20]

    # Update-to-weight ratio over the window's epochs whose gradients were not exploding
    # (a ratio computed from astronomically large gradients says nothing about the lr).
    sane = [s for s in finite_recent if s.grad_total.max <= EXPLODING_NORM] or [
        s for s in finite if s.grad_total.max <= EXPLODING_NORM
    ]
    medians, maxima, minima = [], [], []
    for s in sane:
        rs = [r for r in (stat(s, n).update_ratio for n in weights) if r is not None]
        if rs:
            medians.append(statistics.median(rs))
            maxima.append(max(rs))
            minima.append(min(rs))
    if medians:
        d.update_ratio_median = max(medians)  # the epoch with the largest steps (peak lr)
        d.update_ratio_max = max(maxima)
        d.update_ratio_min = min(minima)
