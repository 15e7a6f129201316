"""The rules advisor: offline, deterministic decisions from the diagnostics.

It is the embedded default and the fallback when an LLM advisor fails. The policy it follows
is ``service.advisors.rules.policy``; its tuning recipes are ``recipes``, its code repairs
``repair``, and its architectures the templates of ``service.advisors.templates``.
"""

from __future__ import annotations

import time

from service.advisors._protocol import (
    AdvisorContext,
    ArchitectureProposal,
    Assessment,
    CodeRepair,
    HistoryEntry,
    HyperparameterChange,
    Usage,
)
from service.advisors.rules.policy import decide, hyperparameters_of, situation, weaknesses
from service.advisors.rules.recipes import tune_changes
from service.advisors.rules.repair import repair_source
from service.advisors.templates import SourceFacts, inspect_source, plan_template, render
from service.diagnostics import Diagnostics

NAME = "rules"

#: the issues that are the gradients' own (an assessment lists only these)
_GRADIENT_ISSUES = (
    "nonfinite",
    "exploding_gradients",
    "vanishing_gradients",
    "dead_tensors",
    "grad_spikes",
    "lr_too_small",
    "lr_too_high",
)


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
    """Offline, deterministic advisor (``name = "rules"``); its policy is ``rules.policy``.

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
        s = situation(ctx, self.max_redesigns)
        decision = decide(d, s)
        affected: list[str] = []
        if (d.vanishing or d.exploding) and d.first_layer and d.last_layer:
            affected = [d.first_layer.name, d.last_layer.name]
        affected += [n for n in d.dead_tensors if n not in affected][:5]
        unstable = d.has("nonfinite") or d.exploding or d.grad_spikes
        score = 10 - 4 * d.has("nonfinite") - 3 * d.exploding - 2 * d.grad_spikes
        score -= 1 * (d.lr_verdict == "too_high")
        notes = list(d.notes)
        flaws = weaknesses(s.facts, d, ctx.num_classes)
        if flaws:
            if not d.issues:
                notes = []  # "looks healthy" is not the whole story
            notes.append(f"The model's source shows {', '.join(flaws)}.")
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
        hp = hyperparameters_of(ctx.hyperparameters)
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
    flaws = weaknesses(facts, d, num_classes)
    if flaws:
        parts.append("the design has " + ", ".join(flaws))
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
