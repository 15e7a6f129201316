"""Every prompt the LLM advisor sends, in one place.

One system prompt (the advisor's role, how to read the diagnostics, the model contract) is
shared by all calls, so that providers that cache prompt prefixes can reuse it. Each call adds
one user message built from the ``AdvisorContext``: the task, the compact diagnostics (never
per-tensor tables or per-epoch histories), a compact history of the run's jobs, the current
hyperparameters with their allowed ranges, the current model source, the user's feedback on a
rejected proposal, and, for the fixer and the repair, the error to fix.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from service.advisors._protocol import AdvisorContext, HistoryEntry
from service.schemas.hyperparameters import RANGES, TUNABLE_KEYS, Hyperparameters

#: longest error text (a traceback) shown to the model; the end of a traceback matters most
MAX_ERROR_CHARS = 4000
#: longest report shown to the report writer
MAX_REPORT_CHARS = 12_000
#: longest piece of a rejected reply quoted back to the model
MAX_REPLY_QUOTE = 1500

ALLOWED_IMPORTS = (
    "torch, torch.nn, torch.nn.functional, torch.nn.init, math, typing, collections, "
    "functools, itertools, dataclasses"
)

MODEL_CONTRACT = f"""\
The model contract (every module you write must follow it):
- The module defines `build_model(input_shape, num_classes) -> torch.nn.Module`, where
  `input_shape` is (channels, height, width); or an `nn.Module` subclass named `CNN` that can be
  built as `CNN()` or `CNN(num_classes=...)`. Prefer `build_model`, and derive every size from
  `input_shape` (or use adaptive pooling) so that no flattened size is hard-coded.
- `forward` returns logits of shape (batch, num_classes).
- It may define `loss_function(outputs, targets)` (a method of the model or a module-level
  function) returning a scalar tensor; otherwise cross-entropy is used.
- Imports are an allow-list: {ALLOWED_IMPORTS}. Nothing else.
- Use modules only through their attributes (`nn.Conv2d`, `F.relu`, `torch.flatten`); never
  bind a module to a variable or pass it around.
- No file, process, network, environment or interpreter access: no `open`, `exec`, `eval`,
  `compile`, `__import__`, `globals`, `getattr` with a computed name, no dunder attributes
  other than `__init__` (no `__class__`, `__subclasses__`, `__globals__`), no private
  attributes except on `self`; no `torch.load`, `torch.save`, `torch.hub`, `torch.jit`,
  `torch.compile`, `torch.utils`, `torch.distributed`; no `.cuda()` or `.to(device)` (the
  worker places the model).
- Every module is validated in a sandbox before it trains: it is built for the run's input
  shape, runs forward and backward on a dummy batch, and must give the right output shape, a
  finite loss, a bounded parameter count and a short time per step."""

SYSTEM_PROMPT = f"""\
You are gradpilot's training advisor: an experienced deep-learning practitioner who diagnoses a
PyTorch network from its gradient norms and learning curves, then changes its hyperparameters
or rewrites its architecture, and trains again. You see the diagnostics of the training segment
that just finished, a compact history of the run, the hyperparameters and the model's source.

How to read the diagnostics (computed deterministically from the worker's epoch summaries):
- first_to_last_ratio: the first weight tensor's gradient norm over the last one's. Within a
  few orders of magnitude of 1 is healthy; below 1e-3 the early layers barely learn (vanishing
  gradients, typical of deep sigmoid/tanh stacks without normalisation or skip connections);
  above 1e3 gradients explode towards the input.
- update_ratio_*: lr_eff * |grad| / |weight|, how far one step moves a tensor. About 1e-3 is
  healthy; below 1e-5 the learning rate is far too small, above 1e-1 far too high. Only judged
  for SGD (update_ratio_judged); adaptive optimizers ignore the gradient's scale.
- near_chance: validation accuracy below 1.5x chance: the network is not learning at all.
- plateau, slow_progress, overfitting (train/validation gap), grad_spikes, nonfinite values,
  dead_tensors (weights that receive no gradient). `issues` lists the verdicts, `notes` say why.

Choosing what to do next:
- continue: training is healthy and still improving; train the same model longer.
- tune: the architecture is sound but the optimisation is off (learning rate, momentum,
  optimizer, schedule, clipping, weight decay, batch size). The weights carry over; the
  optimizer and schedule start afresh.
- redesign: the architecture itself causes the problem (vanishing or exploding gradients from
  saturating activations and depth, no normalisation, a bottleneck, dead layers, too little
  capacity). The new model trains from scratch.
- finish: the target is reached, or nothing more is likely to be gained within the budget.

{MODEL_CONTRACT}

Be concrete and cite the numbers you rely on. Answer only by calling the tool you are given,
exactly once, with every required field."""


# --------------------------------------------------------------------------- sections


def _json(value: Any) -> str:
    return json.dumps(value, separators=(", ", ": "), default=str)


def compact_diagnostics(diagnostics: Mapping[str, Any]) -> dict[str, Any]:
    """The diagnostics as the advisor sees them: aggregates and first/middle/last layer only."""
    if not diagnostics:
        return {}
    try:
        from service.diagnostics import compact_state

        compact = compact_state(diagnostics)
    except Exception:  # noqa: BLE001 - an unusual dict still goes out, minus the big tables
        return {k: v for k, v in diagnostics.items() if k not in ("layers", "history", "epochs")}
    # compact_state fills in the defaults of keys a partial dict lacks; show only what was given
    return {k: v for k, v in compact.items() if k in diagnostics}


def _value(changes: Mapping[str, Any]) -> str:
    parts = []
    for key, change in changes.items():
        value = change.get("value") if isinstance(change, Mapping) else change
        parts.append(f"{key}={value}")
    return ", ".join(parts) or "-"


def _fmt(x: float | None, pct: bool = False) -> str:
    if x is None:
        return "-"
    return f"{x:.1%}" if pct else f"{x:.4g}"


def history_table(history: list[HistoryEntry]) -> str:
    """One line per past job: what changed before it and how it went."""
    if not history:
        return "(no earlier jobs)"
    lines = ["gen | action before it | arch | changes | best val acc | last val loss | status"]
    for h in history:
        lines.append(
            f"{h.generation} | {h.action} | v{h.architecture_version} | {_value(h.changes)} | "
            f"{_fmt(h.best_val_accuracy, pct=True)} | {_fmt(h.final_val_loss)} | {h.summary or '-'}"
        )
    return "\n".join(lines)


def hyperparameter_table(hyperparameters: Mapping[str, Any]) -> str:
    """Current values with the range each may take (``RANGES``) or its choices."""
    choices = {
        "optimizer": "sgd | adam | adamw | rmsprop",
        "lr_schedule": "constant | step | cosine | onecycle",
        "nesterov": "true | false (sgd with momentum > 0)",
    }
    lines = []
    for key in (k for k in Hyperparameters.model_fields if k in TUNABLE_KEYS):
        current = hyperparameters.get(key, "-")
        if key in RANGES:
            low, high = RANGES[key]
            allowed = f"{low:g} .. {high:g}"
        else:
            allowed = choices.get(key, "")
        lines.append(f"- {key} = {current}   (allowed: {allowed})")
    return "\n".join(lines)


def _tail(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else "... (cut)\n" + text[-limit:]


def _task(ctx: AdvisorContext) -> str:
    c, h, w = ctx.input_shape
    budget = []
    if ctx.jobs_left is not None:
        budget.append(f"{ctx.jobs_left} jobs left")
    if ctx.epochs_left is not None:
        budget.append(f"{ctx.epochs_left} epochs left")
    return (
        f"Run {ctx.run_id}: dataset {ctx.dataset}, input shape ({c}, {h}, {w}), "
        f"{ctx.num_classes} classes; architecture version {ctx.architecture_version}"
        + (f"; budget: {', '.join(budget)}" if budget else "")
        + "."
    )


def _feedback(ctx: AdvisorContext) -> str:
    if not ctx.feedback:
        return ""
    return (
        "\n\n## The user's feedback on your previous proposal (they rejected it)\n"
        f"{ctx.feedback.strip()}\n"
        "Your new proposal must address this feedback."
    )


def _assessment(ctx: AdvisorContext) -> str:
    if ctx.assessment is None:
        return ""
    a = ctx.assessment
    return (
        "\n\n## Your assessment of this segment\n"
        f"recommendation: {a.recommendation}; severity {a.severity}/5; "
        f"issues: {', '.join(a.gradient_issues) or 'none'}; "
        f"affected layers: {', '.join(a.affected_layers) or '-'}\n{a.explanation}"
    )


def context_sections(ctx: AdvisorContext, *, with_source: bool = True) -> str:
    """What every request shows: task, diagnostics, history, hyperparameters, source, feedback."""
    parts = [
        f"## Task\n{_task(ctx)}",
        "## Diagnostics of the last segment\n" + _json(compact_diagnostics(ctx.diagnostics)),
        "## History of this run (previous changes and their outcomes)\n"
        + history_table(ctx.history),
        "## Current hyperparameters\n" + hyperparameter_table(ctx.hyperparameters),
    ]
    if with_source:
        parts.append(
            f"## Current model source (version {ctx.architecture_version})\n```python\n"
            f"{ctx.source.strip()}\n```"
        )
    return "\n\n".join(parts) + _assessment(ctx) + _feedback(ctx)


# --------------------------------------------------------------------------- requests


def assess_prompt(ctx: AdvisorContext) -> str:
    return (
        context_sections(ctx)
        + "\n\n## What to do\nAssess the health of this training segment: which gradient "
        "problems you see, in which layers, how severe, whether training is stable, and "
        "recommend continue, tune, redesign or finish. Call `HealthAssessment`."
    )


def tune_prompt(ctx: AdvisorContext) -> str:
    return (
        context_sections(ctx)
        + "\n\n## What to do\nPropose new hyperparameters for the next job (the current weights "
        "carry over; the optimizer and schedule restart). Change only what the diagnostics "
        "justify, stay inside the allowed ranges, give a reason for each change, and do not "
        "repeat a change that the history shows did not help. Call `HyperparameterProposal`."
    )


def writer_prompt(ctx: AdvisorContext) -> str:
    return (
        context_sections(ctx)
        + "\n\n## What to do\nWrite a new architecture that fixes the gradient problems above "
        "while keeping the model's purpose (the same input shape and number of classes). "
        "Send the complete module, following the model contract exactly. Say what should change "
        "in the gradient norms. The new model trains from scratch. Call `ArchitectureDesign`."
    )


def fixer_prompt(ctx: AdvisorContext, error: str, previous_source: str | None) -> str:
    previous = previous_source if previous_source is not None else ctx.source
    return (
        context_sections(ctx)
        + "\n\n## Your previous proposal\n```python\n"
        + previous.strip()
        + "\n```\n\n## It failed validation in the sandbox\n```\n"
        + _tail(error, MAX_ERROR_CHARS)
        + "\n```\n\n## What to do\nFix the proposal so that it passes validation and still "
        "addresses the gradient problems. Send the complete corrected module. "
        "Call `ArchitectureDesign`."
    )


def repair_prompt(ctx: AdvisorContext, error: str) -> str:
    return (
        context_sections(ctx)
        + "\n\n## The current model failed with this error\n```\n"
        + _tail(error, MAX_ERROR_CHARS)
        + "\n```\n\n## What to do\nRepair the current model so that it runs: fix the cause of "
        "the error with the smallest change that keeps its design (a redesign is a separate "
        "decision). Send the complete repaired module. Call `ModelRepair`."
    )


def report_prompt(ctx: AdvisorContext, report_markdown: str) -> str:
    return (
        f"## Task\n{_task(ctx)}\n\n## The run's report\n"
        + _tail(report_markdown, MAX_REPORT_CHARS)
        + "\n\n## What to do\nWrite a short narrative (one to three paragraphs of plain "
        "Markdown, no headings) for the top of this report: what was wrong with the original "
        "network, what the changes were and why, what they achieved in the numbers, and what "
        "to try next. Do not call any tool; answer with the text only."
    )


def correction_note(error: str, reply_excerpt: str, tool: str) -> str:
    """Appended to the request when the model's previous reply could not be used."""
    quoted = reply_excerpt.strip()
    if len(quoted) > MAX_REPLY_QUOTE:
        quoted = quoted[:MAX_REPLY_QUOTE] + " ... (cut)"
    return (
        "\n\n## Your previous reply could not be used\n"
        f"Error:\n```\n{_tail(error, MAX_ERROR_CHARS)}\n```\n"
        + (f"Your reply was:\n```\n{quoted}\n```\n" if quoted else "")
        + f"Call `{tool}` again with arguments that satisfy its schema exactly."
    )
