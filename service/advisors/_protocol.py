"""The advisor interface: assess, tune, write an architecture, repair code, summarize.

Two implementations: ``rules`` (offline, deterministic; ``service.advisors.rules``) and ``llm``
(any LangChain chat model, Claude on Bedrock by default; ``service.advisors.llm``). The agent
graph talks only to this protocol; the registry (``service.advisors.registry``) picks one from
a run's advisor spec.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, Field

Recommendation = Literal["continue", "tune", "redesign", "finish"]


@dataclass
class Usage:
    """What one advisor call cost."""

    input_tokens: int = 0
    output_tokens: int = 0
    latency_ms: int = 0
    model: str = ""
    fallback: bool = False  # True when the LLM failed and the rules advisor answered instead

    def add(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.latency_ms + other.latency_ms,
            self.model or other.model,
            self.fallback or other.fallback,
        )


class Assessment(BaseModel):
    """The advisor's reading of the diagnostics (the blog's health assessment)."""

    gradient_issues: list[str] = Field(default_factory=list)
    affected_layers: list[str] = Field(default_factory=list)
    severity: int = Field(1, ge=1, le=5, description="1 = healthy, 5 = not learning at all.")
    is_stable: bool = True
    stability_score: int = Field(5, ge=1, le=10)
    explanation: str = ""
    recommendation: Recommendation = "continue"


class HyperparameterChange(BaseModel):
    """Proposed hyperparameter changes; the caller validates and clamps them."""

    changes: dict[str, Any] = Field(default_factory=dict)
    reasons: dict[str, str] = Field(default_factory=dict, description="Why, per changed key.")
    rationale: str = ""


class ArchitectureProposal(BaseModel):
    """A whole new model module that follows the model contract."""

    source: str
    rationale: str = ""
    expected_effect: str = Field("", description="What should change in the gradient norms.")


class CodeRepair(BaseModel):
    """Model source repaired after a failure (sandbox rejection or a job's code error)."""

    source: str
    explanation: str = ""


@dataclass
class HistoryEntry:
    """One past job, compactly: what it trained and how it went."""

    generation: int
    action: str
    architecture_version: int
    changes: dict[str, Any]
    best_val_accuracy: float | None
    final_val_loss: float | None
    summary: str = ""


@dataclass
class AdvisorContext:
    """Everything an advisor may see; never raw per-parameter histories of many epochs."""

    run_id: str
    input_shape: tuple[int, int, int]
    num_classes: int
    dataset: str
    source: str
    hyperparameters: dict[str, Any]
    diagnostics: dict[str, Any]
    history: list[HistoryEntry] = field(default_factory=list)
    feedback: str | None = None  # the user's rejection feedback, for the next proposal
    epochs_left: int | None = None
    jobs_left: int | None = None
    architecture_version: int = 0
    assessment: Assessment | None = None


@runtime_checkable
class Advisor(Protocol):
    """Decides what the next job trains. Each method returns its result and its usage."""

    name: str

    def assess(self, ctx: AdvisorContext) -> tuple[Assessment, Usage]: ...

    def tune(self, ctx: AdvisorContext) -> tuple[HyperparameterChange, Usage]: ...

    def write_architecture(
        self,
        ctx: AdvisorContext,
        *,
        previous_error: str | None = None,
        previous_source: str | None = None,
    ) -> tuple[ArchitectureProposal, Usage]:
        """A new architecture; with ``previous_error``, fix ``previous_source`` (the fixer)."""
        ...

    def repair(self, ctx: AdvisorContext, error: str) -> tuple[CodeRepair | None, Usage]:
        """Repair ``ctx.source`` that failed with ``error``; None when it cannot."""
        ...

    def summarize(self, ctx: AdvisorContext, report_markdown: str) -> tuple[str, Usage]:
        """A short narrative for the report (the rules advisor writes a deterministic one)."""
        ...
