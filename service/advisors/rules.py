"""The rules advisor: offline, deterministic decisions from the diagnostics.

It is the embedded default and the fallback when an LLM advisor fails. The policy, in the
order it is applied (``decide``):

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
``max_redesigns`` redesigns per run. ``tune`` right after a redesign gives the new network a
proven recipe (SGD with Nesterov momentum 0.9 at 0.05, or AdamW at 1e-3, weight decay, cosine
schedule).
"""

from __future__ import annotations

import ast
import math
import re
import time
from dataclasses import dataclass
from typing import Any

from service.advisors._protocol import (
    AdvisorContext,
    ArchitectureProposal,
    Assessment,
    CodeRepair,
    HistoryEntry,
    HyperparameterChange,
    Recommendation,
    Usage,
)
from service.advisors.templates import (
    SourceFacts,
    call_arg,
    call_name,
    constants,
    inspect_source,
    int_value,
    plan_template,
    render,
)
from service.diagnostics import ADAPTIVE_OPTIMIZERS, Diagnostics
from service.schemas.hyperparameters import Hyperparameters

NAME = "rules"

#: update/weight ratio that the learning-rate corrections aim for (healthy: 1e-3 .. 1e-2)
TARGET_UPDATE_RATIO = 3e-3
#: normalised accuracy ((acc - chance) / (1 - chance)) below which learning counts as poor
POOR_ACCURACY = 0.5
#: training accuracy at which a network has fitted its data
FITTED = 0.99

_GRADIENT_ISSUES = (
    "nonfinite",
    "exploding_gradients",
    "vanishing_gradients",
    "dead_tensors",
    "grad_spikes",
    "lr_too_small",
    "lr_too_high",
)


@dataclass(frozen=True)
class Decision:
    """What the rules concluded and why (one sentence a person can check)."""

    recommendation: Recommendation
    reason: str


@dataclass(frozen=True)
class _Situation:
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


def _hyperparameters(data: dict[str, Any]) -> Hyperparameters:
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


def _situation(ctx: AdvisorContext, max_redesigns: int) -> _Situation:
    facts = inspect_source(ctx.source or "")
    version = ctx.architecture_version
    on_arch = [h for h in ctx.history if h.architecture_version == version]
    tunes = [h for h in on_arch if h.action == "tune"]
    redesigned_here = any(h.action == "redesign" for h in on_arch)
    return _Situation(
        facts=facts,
        hp=_hyperparameters(ctx.hyperparameters),
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


def _weaknesses(facts: SourceFacts, d: Diagnostics, num_classes: int) -> list[str]:
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


def decide(d: Diagnostics, s: _Situation) -> Decision:
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
    weaknesses = _weaknesses(s.facts, d, s.num_classes)
    poor = _normalised(best, chance) < POOR_ACCURACY
    if poor and (d.plateau or d.slow_progress) and weaknesses and s.may_redesign:
        return Decision(
            "redesign", f"learning stalls at {best or 0:.1%} with {', '.join(weaknesses)}"
        )

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


# --------------------------------------------------------------------------- tuning


def _nice(x: float) -> float:
    """Round to one significant digit (0.0437 -> 0.04), so proposals read like a person's."""
    if x <= 0 or not math.isfinite(x):
        return x
    return float(f"{x:.1g}")


class _Changes:
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


def fresh_recipe(hp: Hyperparameters, d: Diagnostics) -> _Changes:
    """Hyperparameters for a newly written residual network with BatchNorm."""
    c = _Changes(hp)
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


def tune_changes(d: Diagnostics, hp: Hyperparameters, *, after_redesign: bool) -> _Changes:
    """Hyperparameter changes for the diagnosed issues (the caller clamps them)."""
    if after_redesign:
        return fresh_recipe(hp, d)
    c = _Changes(hp)
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


# --------------------------------------------------------------------------- repairs

_MATMUL = re.compile(r"mat1 and mat2 shapes cannot be multiplied \((\d+)x(\d+) and (\d+)x(\d+)\)")
_CHANNELS = re.compile(
    r"weight of size \[(\d+), (\d+)((?:, \d+)*)\], expected input\[[^\]]*\] to have (\d+) "
    r"channels, but got (\d+) channels"
)
_BATCHNORM = re.compile(r"running_mean should contain (\d+) elements not (\d+)")


def _offsets(source: str) -> list[int]:
    """Character offset of the start of each line (1-based line -> offsets[line - 1])."""
    starts, total = [], 0
    for line in source.splitlines(keepends=True):
        starts.append(total)
        total += len(line)
    return starts


def _span(source: str, node: ast.expr) -> tuple[int, int]:
    """Character offsets of a node (ast columns are UTF-8 byte offsets)."""
    lines = source.splitlines(keepends=True)
    starts = _offsets(source)

    def char(line: int, col: int) -> int:
        text = lines[line - 1].encode("utf-8")[:col].decode("utf-8", errors="ignore")
        return starts[line - 1] + len(text)

    end_line = node.end_lineno or node.lineno
    end_col = node.end_col_offset if node.end_col_offset is not None else node.col_offset
    return char(node.lineno, node.col_offset), char(end_line, end_col)


def _replace(source: str, node: ast.expr, text: str) -> str:
    start, end = _span(source, node)
    return source[:start] + text + source[end:]


def _calls(tree: ast.AST, names: tuple[str, ...]) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and call_name(n) in names]


def _fix_argument(
    source: str,
    names: tuple[str, ...],
    match: dict[tuple[int, str], int],
    target: tuple[int, str],
    new: int,
) -> tuple[str, int] | None:
    """Rewrite one argument of the single call that matches; None unless exactly one does.

    ``match`` maps (position, keyword) to the value the argument must have (a non-constant
    argument matches any value except for ``target``, which must be a known constant).
    """
    tree = ast.parse(source)
    env = constants(tree)
    found = []
    for call in _calls(tree, names):
        ok = True
        for (pos, kw), expected in match.items():
            value = int_value(call_arg(call, pos, kw), env)
            if (pos, kw) == target:
                ok = ok and value == expected
            elif value is not None and value != expected:
                ok = False
        if ok:
            found.append(call)
    if len(found) != 1:
        return None
    arg = call_arg(found[0], *target)
    assert arg is not None
    old = ast.get_source_segment(source, arg) or "?"
    fixed = _replace(source, arg, str(new))
    return _annotate(fixed, arg.lineno, f"gradpilot repair: was {old}"), found[0].lineno


def _annotate(source: str, line: int, comment: str) -> str:
    """Append ``# comment`` to a line when that is safe; the source unchanged otherwise."""
    lines = source.splitlines(keepends=True)
    text = lines[line - 1]
    body = text.rstrip("\r\n")
    if "#" in body or body.rstrip().endswith("\\") or len(body) + len(comment) + 4 > 100:
        return source
    lines[line - 1] = f"{body}  # {comment}" + text[len(body) :]
    candidate = "".join(lines)
    try:
        ast.parse(candidate)
    except SyntaxError:
        return source
    return candidate


def repair_source(source: str, error: str) -> CodeRepair | None:
    """Fix the classic shape errors of model code deterministically; None when unsure."""
    try:
        ast.parse(source)
    except (SyntaxError, ValueError):
        return None
    m = _MATMUL.search(error)
    if m:
        features, expected, out = int(m.group(2)), int(m.group(3)), int(m.group(4))
        fixed = _fix_argument(
            source,
            ("Linear",),
            {(0, "in_features"): expected, (1, "out_features"): out},
            (0, "in_features"),
            features,
        )
        if fixed:
            return CodeRepair(
                source=fixed[0],
                explanation=(
                    f"The Linear layer on line {fixed[1]} expected {expected} input features but "
                    f"the flattened tensor before it has {features}; its in_features is now "
                    f"{features}."
                ),
            )
    m = _CHANNELS.search(error)
    if m:
        out, expected, rest, got = int(m.group(1)), int(m.group(2)), m.group(3), int(m.group(5))
        names = {0: ("Conv1d",), 1: ("Conv1d",), 2: ("Conv2d",), 3: ("Conv3d",)}
        dims = len([p for p in rest.split(",") if p.strip()])
        fixed = _fix_argument(
            source,
            names.get(dims, ("Conv2d",)),
            {(0, "in_channels"): expected, (1, "out_channels"): out},
            (0, "in_channels"),
            got,
        )
        if fixed:
            return CodeRepair(
                source=fixed[0],
                explanation=(
                    f"The convolution on line {fixed[1]} expected {expected} input channels but "
                    f"receives {got}; its in_channels is now {got}."
                ),
            )
    m = _BATCHNORM.search(error)
    if m:
        got, expected = int(m.group(1)), int(m.group(2))
        fixed = _fix_argument(
            source,
            ("BatchNorm1d", "BatchNorm2d", "BatchNorm3d"),
            {(0, "num_features"): expected},
            (0, "num_features"),
            got,
        )
        if fixed:
            return CodeRepair(
                source=fixed[0],
                explanation=(
                    f"The BatchNorm on line {fixed[1]} normalised {expected} channels but "
                    f"receives {got}; its num_features is now {got}."
                ),
            )
    return None


# --------------------------------------------------------------------------- the advisor


def _usage(started: float) -> Usage:
    return Usage(latency_ms=int((time.perf_counter() - started) * 1000), model=NAME)


def _severity(d: Diagnostics) -> int:
    if d.near_chance or d.has("nonfinite"):
        return 5
    if d.vanishing or d.exploding or d.has("dead_tensors"):
        return 4
    if d.lr_verdict in ("too_small", "too_high") or d.grad_spikes:
        return 3
    if d.plateau or d.overfitting or d.slow_progress:
        return 2
    return 1


def _diagnostics(ctx: AdvisorContext) -> Diagnostics:
    d = Diagnostics.model_validate(ctx.diagnostics or {})
    if ctx.diagnostics and "num_classes" not in ctx.diagnostics:
        d.num_classes, d.chance_accuracy = ctx.num_classes, 1.0 / max(2, ctx.num_classes)
    return d


class RulesAdvisor:
    """Offline, deterministic advisor (``name = "rules"``); see the module docstring.

    What it reads from the context: ``diagnostics`` (the full ``Diagnostics`` dump or its
    ``compact_state``), ``source`` (read statically for normalisation, activations, widths and
    bottlenecks), ``hyperparameters``, and ``history``: the run's jobs, each with the action
    that created it and its architecture version. Tunes and redesigns are counted per
    architecture version, so the policy works whether or not the history already holds the job
    being assessed (with it, the "one tune before another redesign" rule takes effect one job
    sooner). ``tune`` gives the recipe for a new network when ``ctx.assessment`` recommended
    ``redesign``: pass that assessment when tuning right after a redesign.
    """

    name = NAME

    def __init__(self, *, max_redesigns: int = 2) -> None:
        self.max_redesigns = max_redesigns

    # -- assess -----------------------------------------------------------------------
    def assess(self, ctx: AdvisorContext) -> tuple[Assessment, Usage]:
        started = time.perf_counter()
        d = _diagnostics(ctx)
        situation = _situation(ctx, self.max_redesigns)
        decision = decide(d, situation)
        affected: list[str] = []
        if (d.vanishing or d.exploding) and d.first_layer and d.last_layer:
            affected = [d.first_layer.name, d.last_layer.name]
        affected += [n for n in d.dead_tensors if n not in affected][:5]
        unstable = d.has("nonfinite") or d.exploding or d.grad_spikes
        score = 10 - 4 * d.has("nonfinite") - 3 * d.exploding - 2 * d.grad_spikes
        score -= 1 * (d.lr_verdict == "too_high")
        notes = list(d.notes)
        weaknesses = _weaknesses(situation.facts, d, ctx.num_classes)
        if weaknesses:
            if not d.issues:
                notes = []  # "looks healthy" is not the whole story
            notes.append(f"The model's source shows {', '.join(weaknesses)}.")
        explanation = " ".join(notes)
        explanation += f" Decision: {decision.recommendation}, because {decision.reason}."
        floor = {"redesign": 3, "tune": 2}.get(decision.recommendation, 1)
        assessment = Assessment(
            gradient_issues=[i for i in d.issues if i in _GRADIENT_ISSUES],
            affected_layers=affected,
            severity=max(_severity(d), floor),
            is_stable=not unstable,
            stability_score=max(1, min(10, score)),
            explanation=explanation.strip(),
            recommendation=decision.recommendation,
        )
        return assessment, _usage(started)

    # -- tune -------------------------------------------------------------------------
    def tune(self, ctx: AdvisorContext) -> tuple[HyperparameterChange, Usage]:
        started = time.perf_counter()
        d = _diagnostics(ctx)
        hp = _hyperparameters(ctx.hyperparameters)
        after_redesign = bool(ctx.assessment and ctx.assessment.recommendation == "redesign")
        c = tune_changes(d, hp, after_redesign=after_redesign)
        if after_redesign:
            rationale = "A proven recipe for the newly written network: " + "; ".join(
                f"{k}={v}" for k, v in c.changes.items()
            )
        else:
            rationale = "; ".join(f"{k} -> {v}: {c.reasons[k]}" for k, v in c.changes.items())
        change = HyperparameterChange(
            changes=c.changes, reasons=c.reasons, rationale=rationale or "no change needed"
        )
        return change, _usage(started)

    # -- write_architecture -------------------------------------------------------------
    def write_architecture(
        self,
        ctx: AdvisorContext,
        *,
        previous_error: str | None = None,
        previous_source: str | None = None,
    ) -> tuple[ArchitectureProposal, Usage]:
        started = time.perf_counter()
        if previous_error and previous_source:
            repaired = repair_source(previous_source, previous_error)
            if repaired is not None:
                proposal = ArchitectureProposal(
                    source=repaired.source,
                    rationale=f"Fixed the proposal: {repaired.explanation}",
                    expected_effect="the same network, now valid",
                )
                return proposal, _usage(started)
        d = _diagnostics(ctx)
        facts = inspect_source(ctx.source or "")
        if previous_error:
            variant = "compact"
        elif facts.template is not None and d.overfitting:
            variant = "regularized"
        elif facts.template is not None:
            variant = "deeper"
        else:
            variant = "standard"
        spec = plan_template(ctx.input_shape, ctx.num_classes, facts, variant=variant)
        why = _architecture_reasons(d, facts, ctx.num_classes)
        kept = (
            f"Kept from the original: a first stage of {spec.widths[0]} channels"
            + (" and dropout" if facts.has_dropout else "")
            + "."
            if facts.conv_widths
            else ""
        )
        described = spec.describe()
        title = described[0].upper() + described[1:]
        source = render(spec, title=title, why=f"{why} {kept}")
        rationale = (
            f"{why} The new network is a {spec.describe()} for inputs of shape "
            f"{tuple(ctx.input_shape)} and {ctx.num_classes} classes: BatchNorm keeps every "
            f"layer's activations well scaled, ReLU does not saturate, residual shortcuts carry "
            f"the gradient to the first layer, pooling reduces the resolution, and Kaiming "
            f"initialisation starts the weights at the right scale. {kept}"
        ).strip()
        proposal = ArchitectureProposal(
            source=source,
            rationale=rationale,
            expected_effect=(
                "first/last gradient ratio between 1e-2 and 1e2, no dead tensors, and accuracy "
                "well above chance within the first epochs"
            ),
        )
        return proposal, _usage(started)

    # -- repair -------------------------------------------------------------------------
    def repair(self, ctx: AdvisorContext, error: str) -> tuple[CodeRepair | None, Usage]:
        started = time.perf_counter()
        return repair_source(ctx.source or "", error or ""), _usage(started)

    # -- summarize ----------------------------------------------------------------------
    def summarize(self, ctx: AdvisorContext, report_markdown: str) -> tuple[str, Usage]:
        started = time.perf_counter()
        return summary_paragraph(ctx), _usage(started)


def _architecture_reasons(d: Diagnostics, facts: SourceFacts, num_classes: int) -> str:
    parts = []
    if d.vanishing and d.first_to_last_ratio is not None:
        parts.append(
            f"the first layer's gradient was {d.first_to_last_ratio:.2g} of the last layer's "
            "(vanishing gradients)"
        )
    if d.exploding:
        parts.append(f"gradients exploded (total norm up to {d.grad_total_max or 0:.3g})")
    if d.has("nonfinite"):
        parts.append("training produced non-finite values")
    if d.dead_count:
        parts.append(f"{d.dead_count} weight tensors received no gradient (dead units)")
    if d.near_chance:
        parts.append(f"validation accuracy stayed near chance ({d.best_val_accuracy or 0:.1%})")
    weaknesses = _weaknesses(facts, d, num_classes)
    if weaknesses:
        parts.append("the design has " + ", ".join(weaknesses))
    if not parts:
        return "The previous architecture did not train well enough."
    return "In the previous architecture " + "; ".join(parts) + "."


def _fmt_acc(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1%}"


def summary_paragraph(ctx: AdvisorContext) -> str:
    """A deterministic narrative of the run for the report."""
    d = _diagnostics(ctx)
    history: list[HistoryEntry] = sorted(ctx.history, key=lambda h: h.generation)
    sentences = []
    if history:
        first = history[0]
        sentences.append(
            f"The run trained {len(history)} job(s); the first reached a best validation "
            f"accuracy of {_fmt_acc(first.best_val_accuracy)}."
        )
        for h in history[1:]:
            if h.action == "redesign":
                what = f"a new architecture (version {h.architecture_version})"
            elif h.action == "tune":
                changed = ", ".join(f"{k}={v}" for k, v in sorted((h.changes or {}).items()))
                what = f"new hyperparameters ({changed or 'unchanged'})"
            elif h.action in ("repair", "retry"):
                what = f"a {h.action}ed job"
            else:
                what = "more epochs of the same model"
            line = f"Generation {h.generation} trained {what} and reached "
            sentences.append(line + f"{_fmt_acc(h.best_val_accuracy)}.")
        best = max((h.best_val_accuracy or 0.0 for h in history), default=0.0)
        sentences.append(f"The best validation accuracy of the run is {best:.1%}.")
    if d.epochs_seen:
        issues = ", ".join(i.replace("_", " ") for i in d.issues) or "no issues"
        sentences.append(
            f"The last segment ({d.epochs_seen} epochs) showed {issues}; its last validation "
            f"accuracy was {_fmt_acc(d.val_accuracy_last)}."
        )
    sentences.append("All decisions were made offline by the rules advisor.")
    return " ".join(sentences)
