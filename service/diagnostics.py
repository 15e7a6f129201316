"""Deterministic diagnostics of a training segment, computed from its epoch summaries.

The agent computes these before every assessment; they are stored with the decision, shown to
users, and handed to the advisor in compact form (``compact_state``). Everything here is plain
arithmetic over the summaries the worker posted, so the same summaries always give the same
diagnostics.

The rules of thumb behind the thresholds:

* The ratio of the first to the last weight tensor's gradient norm: a healthy network keeps
  it within a few orders of magnitude of 1; below 1e-3 the early layers barely learn
  (vanishing gradients, typical of deep sigmoid/tanh stacks without normalisation); above 1e3
  the gradients grow towards the input (exploding).
* The update-to-weight ratio ``lr_eff * |grad| / |weight|`` (how far one SGD step moves a
  tensor, relative to its size): about 1e-3 is healthy, below 1e-5 the learning rate is far too
  small, above 1e-1 far too high. ``lr_eff = lr / (1 - momentum)`` for SGD; for adaptive
  optimizers (Adam, AdamW, RMSprop) the step does not scale with the gradient, so the ratio is
  reported but not judged.
* Accuracy near chance (below 1.5x ``1 / num_classes``) after a segment means the network is
  not learning at all.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.schemas.summaries import EpochSummaryIn

SummaryLike = EpochSummaryIn | Mapping[str, Any]

#: epochs at the end of a segment that trends and plateaus are judged on
DEFAULT_WINDOW = 5

VANISHING_RATIO = 1e-3
EXPLODING_RATIO = 1e3
#: a total gradient norm above this (mean-reduced cross-entropy) is an explosion, not noise
EXPLODING_NORM = 1e3
#: a weight tensor whose gradient is this small relative to the total receives no signal
DEAD_RELATIVE = 1e-10
DEAD_ABSOLUTE = 1e-12
UPDATE_RATIO_LOW = 1e-5
UPDATE_RATIO_HIGH = 1e-1
UPDATE_RATIO_HEALTHY = 1e-3
#: largest step of an epoch over its mean, and epoch-to-epoch growth of the mean
SPIKE_RATIO = 5.0
JUMP_RATIO = 10.0
NEAR_CHANCE_FACTOR = 1.5
PLATEAU_LOSS = 0.01  # relative improvement of the validation loss below this: no progress
PLATEAU_ACCURACY = 0.005  # validation accuracy gain below this: no progress
OVERFIT_GAP = 0.1
OVERFIT_LOSS_RISE = 0.1

ADAPTIVE_OPTIMIZERS = frozenset({"adam", "adamw", "rmsprop"})

# Parameter names of normalisation layers: their weights are scales, not feature maps.
_NORM_NAME = re.compile(r"(^|[._])(bn|norm|ln|gn|batchnorm|layernorm|groupnorm)\d*([._]|$)", re.I)

Issue = Literal[
    "no_data",
    "nonfinite",
    "exploding_gradients",
    "vanishing_gradients",
    "dead_tensors",
    "grad_spikes",
    "near_chance",
    "plateau",
    "overfitting",
    "lr_too_small",
    "lr_too_high",
    "slow_progress",
    "target_reached",
]


class LayerStat(BaseModel):
    """One weight tensor at the end of the segment (its last epoch with finite steps)."""

    name: str
    grad_norm: float = Field(description="Mean gradient L2 norm over the epoch's steps.")
    weight_norm: float | None = Field(
        default=None, description="Weight L2 norm at the epoch's end."
    )
    relative_grad: float | None = Field(
        default=None, description="grad_norm / total gradient norm."
    )
    update_ratio: float | None = Field(
        default=None,
        description="lr_eff * grad_norm / weight_norm: how far one step moves the tensor.",
    )


class Diagnostics(BaseModel):
    """Deterministic features of one training segment (and the run before it)."""

    model_config = ConfigDict(extra="ignore")

    # What was seen
    epochs_seen: int = 0
    first_epoch: int | None = None
    last_epoch: int | None = None
    window: int = DEFAULT_WINDOW
    num_classes: int = 2
    chance_accuracy: float = 0.5
    optimizer: str | None = None
    learning_rate_peak: float | None = None
    learning_rate_last: float | None = None

    # Losses and their trend (slopes are of the natural log, per epoch, over the window)
    train_loss_first: float | None = None
    train_loss_last: float | None = None
    val_loss_first: float | None = None
    val_loss_last: float | None = None
    val_loss_best: float | None = None
    train_loss_slope: float | None = None
    val_loss_slope: float | None = None
    val_loss_rel_change: float | None = Field(
        default=None, description="Relative change of the validation loss over the window."
    )
    nonfinite_loss_epochs: int = 0
    nonfinite_steps: int = 0
    nonfinite_step_fraction: float = 0.0

    # Accuracy
    train_accuracy_last: float | None = None
    val_accuracy_first: float | None = None
    val_accuracy_last: float | None = None
    best_val_accuracy: float | None = None
    best_epoch: int | None = None
    val_accuracy_change: float | None = Field(default=None, description="Change over the window.")
    previous_best_val_accuracy: float | None = Field(
        default=None, description="Best validation accuracy of the run's earlier jobs."
    )
    run_best_val_accuracy: float | None = None
    target_accuracy: float | None = None
    generalization_gap: float | None = Field(default=None, description="Train minus val accuracy.")

    # Gradients
    grad_total_last: float | None = Field(default=None, description="Mean total norm, last epoch.")
    grad_total_max: float | None = Field(
        default=None, description="Largest total norm of the segment."
    )
    grad_total_slope: float | None = None
    spike_ratio: float | None = Field(default=None, description="Largest max/mean of an epoch.")
    jump_ratio: float | None = Field(default=None, description="Largest epoch-to-epoch growth.")
    weight_tensors: int = 0
    first_layer: LayerStat | None = None
    middle_layer: LayerStat | None = None
    last_layer: LayerStat | None = None
    first_to_last_ratio: float | None = None
    dead_tensors: list[str] = Field(default_factory=list)
    dead_count: int = 0
    update_ratio_median: float | None = None
    update_ratio_min: float | None = None
    update_ratio_max: float | None = None
    update_ratio_judged: bool = Field(
        default=False, description="False for adaptive optimizers, whose step ignores |grad|."
    )
    layers: list[LayerStat] = Field(
        default_factory=list, description="Every weight tensor (last epoch); not in compact state."
    )

    # Verdicts
    exploding: bool = False
    vanishing: bool = False
    near_chance: bool = False
    plateau: bool = False
    overfitting: bool = False
    grad_spikes: bool = False
    slow_progress: bool = False
    lr_verdict: Literal["too_small", "ok", "too_high"] | None = None
    issues: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)

    def has(self, issue: str) -> bool:
        return issue in self.issues


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


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3g}"


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
    _verdicts(d, eps, recent)
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


def _verdicts(d: Diagnostics, eps: list[EpochSummaryIn], recent: list[EpochSummaryIn]) -> None:
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


# --------------------------------------------------------------------------- compact view

_COMPACT_DROP = {"layers"}


def _round(value: Any, digits: int = 4) -> Any:
    if isinstance(value, float):
        if not math.isfinite(value) or value == 0:
            return value
        return float(f"{value:.{digits}g}")
    if isinstance(value, dict):
        return {k: _round(v, digits) for k, v in value.items()}
    if isinstance(value, list):
        return [_round(v, digits) for v in value]
    return value


def compact_state(
    diagnostics: Diagnostics | Mapping[str, Any], *, max_names: int = 5, digits: int = 4
) -> dict[str, Any]:
    """The diagnostics as an advisor sees them: aggregates and first/middle/last layer only.

    No per-tensor table and no per-epoch histories; numbers rounded to ``digits`` significant
    digits and lists of names cut to ``max_names``. The result has the same keys as
    ``Diagnostics`` (a subset), so ``Diagnostics.model_validate`` reads it back.
    """
    d = (
        diagnostics
        if isinstance(diagnostics, Diagnostics)
        else Diagnostics.model_validate(dict(diagnostics))
    )
    data = d.model_dump(exclude=_COMPACT_DROP, exclude_none=True)
    data["dead_tensors"] = data.get("dead_tensors", [])[:max_names]
    return _round(data, digits)
