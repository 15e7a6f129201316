"""The rules advisor's policy: which of continue, tune, redesign or finish, and why.

The policy, in the order it is applied (``decide``):

1. **finish** when the target accuracy is reached.
2. **Unstable training** (non-finite values, exploding gradients): a learning rate that moves
   the weights by more than 10% per step is lowered first (``tune``, with clipping); otherwise
   a network without normalisation is rewritten (``redesign``: the initialisation or the
   architecture is what blows up), and one with normalisation gets a lower rate and clipping.
3. **Gradient pathologies of the architecture** (first/last gradient ratio below 1e-3, weight
   tensors with no gradient, a hidden layer narrower than the number of classes): ``redesign``
   (ReLU dying under a huge rate in a network that already normalises: ``tune``).
4. **A sound network whose learning rate is far off** (update/weight ratio below 1e-5 or above
   1e-1): ``tune``, never ``redesign``.
5. **Near chance** with a sane learning rate: the architecture does not learn, ``redesign``.
6. **Slow or stalled learning far from good accuracy in a network with known weaknesses**
   (sigmoid/tanh stacks, no normalisation in a deep net, huge kernels): ``redesign``.
7. **Plateau**: ``finish`` when the network fits its training data (or after two tunes of the
   same architecture without progress), else ``tune`` (schedule, momentum, regularisation).
8. Overfitting, gradient spikes or slow progress: ``tune``; otherwise ``continue``.

After a redesign the advisor prefers tuning before redesigning again: an architecture that an
advisor wrote gets one ``tune`` before it is replaced, and there are at most
``max_redesigns`` redesigns per run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from service.advisors._protocol import AdvisorContext, Recommendation
from service.advisors.templates import SourceFacts, inspect_source
from service.diagnostics import Diagnostics
from service.schemas.hyperparameters import Hyperparameters

#: normalised accuracy ((acc - chance) / (1 - chance)) below which learning counts as poor
POOR_ACCURACY = 0.5
#: training accuracy at which a network has fitted its data
FITTED = 0.99


@dataclass(frozen=True)
class Decision:
    """What the rules concluded and why (one sentence a person can check)."""

    recommendation: Recommendation
    reason: str


@dataclass(frozen=True)
class Situation:
    """The facts the policy needs besides the diagnostics."""

    facts: SourceFacts
    hp: Hyperparameters
    num_classes: int
    fresh_architecture: bool  # written by an advisor's redesign
    tunes_on_architecture: int  # tune decisions made for the current architecture
    lr_tunes_on_architecture: int  # of which changed the learning rate
    redesigns: int
    max_redesigns: int

    @property
    def may_redesign(self) -> bool:
        if self.redesigns >= self.max_redesigns:
            return False
        # A freshly written architecture gets one round of tuning before it is replaced.
        return not (self.fresh_architecture and self.tunes_on_architecture == 0)


def hyperparameters_of(data: dict[str, Any]) -> Hyperparameters:
    """The run's hyperparameters; unknown keys or bad values fall back to the defaults."""
    try:
        return Hyperparameters.model_validate(data or {})
    except ValueError:
        known = {k: v for k, v in (data or {}).items() if k in Hyperparameters.model_fields}
        clean: dict[str, Any] = {}
        for key, value in known.items():
            try:
                Hyperparameters.model_validate({**clean, key: value})
            except ValueError:
                continue
            clean[key] = value
        return Hyperparameters.model_validate(clean)


def situation(ctx: AdvisorContext, max_redesigns: int) -> Situation:
    """The facts about the run that the policy weighs besides the diagnostics."""
    facts = inspect_source(ctx.source or "")
    version = ctx.architecture_version
    on_arch = [h for h in ctx.history if h.architecture_version == version]
    tunes = [h for h in on_arch if h.action == "tune"]
    redesigned_here = any(h.action == "redesign" for h in on_arch)
    return Situation(
        facts=facts,
        hp=hyperparameters_of(ctx.hyperparameters),
        num_classes=ctx.num_classes,
        fresh_architecture=facts.template is not None or redesigned_here,
        tunes_on_architecture=len(tunes),
        lr_tunes_on_architecture=sum(1 for h in tunes if "learning_rate" in (h.changes or {})),
        redesigns=sum(1 for h in ctx.history if h.action == "redesign"),
        max_redesigns=max_redesigns,
    )


def _normalised(acc: float | None, chance: float) -> float:
    if acc is None:
        return 0.0
    return (acc - chance) / max(1e-9, 1.0 - chance)


def weaknesses(facts: SourceFacts, d: Diagnostics, num_classes: int) -> list[str]:
    """Known design weaknesses visible in the source."""
    found = []
    if facts.saturating:
        found.append("sigmoid/tanh activations")
    if not facts.has_norm and facts.depth >= 4 and facts.template is None:
        found.append("no normalisation")
    if any(k >= 7 for k in facts.conv_kernels):
        found.append(f"{max(facts.conv_kernels)}x{max(facts.conv_kernels)} kernels")
    narrow = facts.bottleneck(num_classes)
    if narrow is not None:
        found.append(f"a {narrow}-unit bottleneck")
    return found


def decide(d: Diagnostics, s: Situation) -> Decision:
    """The policy of the module docstring, as one pure function."""
    chance = d.chance_accuracy
    best = d.best_val_accuracy
    fitted = (d.train_accuracy_last or 0.0) >= FITTED
    unstable = d.has("nonfinite") or d.exploding
    narrow = s.facts.bottleneck(s.num_classes)
    lr_tuned = s.lr_tunes_on_architecture > 0

    if d.has("target_reached"):
        return Decision("finish", "the target validation accuracy is reached")
    if d.has("no_data"):
        return Decision("continue", "the job recorded no epochs; train again to see some")

    # 2. Unstable training.
    if unstable:
        if d.lr_verdict == "too_high" and not lr_tuned:
            return Decision("tune", "training diverged and the learning rate is too high")
        if not s.facts.has_norm and s.may_redesign:
            return Decision(
                "redesign",
                "gradients explode in a network without normalisation: its initialisation "
                "and architecture need BatchNorm, Kaiming initialisation and shortcuts",
            )
        return Decision("tune", "training is unstable: lower the learning rate and clip")

    # 3. Gradient pathologies that only a new architecture fixes.
    if d.vanishing or d.has("dead_tensors") or narrow is not None:
        if d.vanishing:
            why = f"gradients vanish (first/last ratio {d.first_to_last_ratio:.2g})"
        elif d.has("dead_tensors"):
            why = f"{d.dead_count} weight tensors receive no gradient (dead units)"
        else:
            why = f"a {narrow}-unit hidden layer is a bottleneck for {s.num_classes} classes"
        if d.has("dead_tensors") and d.lr_verdict == "too_high" and s.facts.has_norm:
            return Decision("tune", f"{why}, killed by a learning rate that is too high")
        if s.may_redesign:
            return Decision("redesign", why)
        return Decision("tune", f"{why}; the architecture was just rewritten, so tune first")

    # 4. A sound network with a learning rate that is far off.
    if d.lr_verdict == "too_small":
        return Decision("tune", "the gradients are healthy but the learning rate is far too small")
    if d.lr_verdict == "too_high" and not (lr_tuned and d.near_chance):
        return Decision("tune", "the learning rate is too high: steps are over 10% of the weights")

    # 5. Not learning at all with a sane learning rate: the architecture is the problem.
    if d.near_chance:
        if s.may_redesign:
            return Decision(
                "redesign", "accuracy stays near chance although the learning rate is sane"
            )
        return Decision("tune", "accuracy stays near chance: change the optimizer first")

    # 6. Poor, stalled learning in a network with known weaknesses.
    flaws = weaknesses(s.facts, d, s.num_classes)
    poor = _normalised(best, chance) < POOR_ACCURACY
    if poor and (d.plateau or d.slow_progress) and flaws and s.may_redesign:
        return Decision("redesign", f"learning stalls at {best or 0:.1%} with {', '.join(flaws)}")

    # 7. Plateau.
    if d.plateau:
        regularized = s.hp.weight_decay >= 5e-4 and s.hp.label_smoothing > 0
        if fitted and (not d.overfitting or regularized):
            return Decision("finish", "converged: the network fits its training data")
        if s.tunes_on_architecture >= 2:
            return Decision("finish", "no improvement after tuning this architecture twice")
        if d.overfitting and regularized:
            return Decision("finish", "overfitting persists although regularised")
        return Decision("tune", "validation progress has stalled")

    # 8. Still improving: fix what slows it down, or keep going.
    if d.overfitting and not (s.hp.weight_decay >= 5e-4 and s.hp.label_smoothing > 0):
        return Decision("tune", "the network overfits: regularise")
    if d.grad_spikes and s.hp.gradient_clip == 0:
        return Decision("tune", "gradient spikes: clip the gradient norm")
    if d.slow_progress and (
        (s.hp.optimizer == "sgd" and s.hp.momentum == 0) or s.hp.lr_schedule == "constant"
    ):
        return Decision("tune", "progress is slow: add momentum or a schedule")
    return Decision("continue", "training is healthy and still improving")
