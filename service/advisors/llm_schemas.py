"""What the LLM must answer, as Pydantic models bound with ``with_structured_output``.

Each model is sent to the chat model as one tool (its class name is the tool's name, its
docstring the tool's description, its field descriptions the argument docs), so the reply is
a JSON object that Pydantic validates; a reply that fails validation goes back to the model
with the error (see ``service.advisors.llm``). Each model converts itself into the advisor
protocol's type (``to_protocol``), which is all the agent graph sees.

The JSON contracts follow the blog's reference implementation (a ``gradient_analysis`` and a
``stability_assessment``), with the recommendation widened to the graph's four actions.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from service.advisors._protocol import (
    ArchitectureProposal,
    Assessment,
    CodeRepair,
    HyperparameterChange,
)
from service.schemas.hyperparameters import RANGES


def _range(key: str) -> str:
    low, high = RANGES[key]
    return f"allowed range {low:g} to {high:g}; values outside are clamped"


def strip_code_fences(source: str) -> str:
    """Models often wrap code in a Markdown fence even inside a JSON string; drop it."""
    text = source.strip()
    if text.startswith("```"):
        first_newline = text.find("\n")
        text = text[first_newline + 1 :] if first_newline >= 0 else ""
        if text.rstrip().endswith("```"):
            text = text.rstrip()[:-3]
    return text.strip("\n") + "\n"


# --------------------------------------------------------------------------- assessment


class GradientAnalysis(BaseModel):
    """What the gradient norms and learning curves say about the network."""

    gradient_issues: list[str] = Field(
        description="Named problems, e.g. 'vanishing gradients', 'dead layers'; empty if healthy."
    )
    affected_layers: list[str] = Field(
        description="Parameter names of the layers concerned, as in the diagnostics."
    )
    severity: int = Field(ge=1, le=5, description="1 = healthy ... 5 = not learning at all.")
    insights: str = Field(description="One or two sentences of reasoning from the numbers.")


class StabilityAssessment(BaseModel):
    """Whether training is healthy and what to do next."""

    is_stable: bool
    stability_score: int = Field(ge=1, le=10, description="1 = broken ... 10 = healthy.")
    explanation: str = Field(description="Why, citing the diagnostics.")
    remaining_issues: list[str] = Field(default_factory=list)
    recommendation: Literal["continue", "tune", "redesign", "finish"] = Field(
        description=(
            "continue: train the same model longer; tune: change hyperparameters (the weights "
            "carry over); redesign: a new architecture is needed; finish: nothing more to gain."
        )
    )


class HealthAssessment(BaseModel):
    """Record the health assessment of the training segment that just finished."""

    gradient_analysis: GradientAnalysis
    stability_assessment: StabilityAssessment

    def to_protocol(self) -> Assessment:
        g, s = self.gradient_analysis, self.stability_assessment
        explanation = s.explanation.strip()
        if explanation and explanation[-1] not in ".!?":
            explanation += "."
        if g.insights.strip():
            explanation = f"{explanation} {g.insights.strip()}".strip()
        if s.remaining_issues:
            explanation += " Remaining issues: " + "; ".join(s.remaining_issues) + "."
        return Assessment(
            gradient_issues=g.gradient_issues,
            affected_layers=g.affected_layers,
            severity=g.severity,
            is_stable=s.is_stable,
            stability_score=s.stability_score,
            explanation=explanation,
            recommendation=s.recommendation,
        )


# --------------------------------------------------------------------------- hyperparameters


class _Change(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(description="Why this change, in terms of the diagnostics.")


class FloatChange(_Change):
    value: float


class IntChange(_Change):
    value: int


class BoolChange(_Change):
    value: bool


class OptimizerChange(_Change):
    value: Literal["sgd", "adam", "adamw", "rmsprop"]


class ScheduleChange(_Change):
    value: Literal["constant", "step", "cosine", "onecycle"]


class HyperparameterProposal(BaseModel):
    """Propose hyperparameter changes. Name only the knobs that should change; leave the rest
    out. Unknown knobs are refused."""

    model_config = ConfigDict(extra="forbid")

    rationale: str = Field(description="The overall reasoning, citing the diagnostics.")
    optimizer: OptimizerChange | None = None
    learning_rate: FloatChange | None = Field(
        None, description=f"Peak rate; {_range('learning_rate')}."
    )
    momentum: FloatChange | None = Field(None, description=f"sgd/rmsprop; {_range('momentum')}.")
    nesterov: BoolChange | None = Field(None, description="sgd with momentum > 0 only.")
    weight_decay: FloatChange | None = Field(None, description=_range("weight_decay"))
    batch_size: IntChange | None = Field(None, description=_range("batch_size"))
    lr_schedule: ScheduleChange | None = None
    lr_step_size: IntChange | None = Field(
        None, description=f"Epochs between step decays; {_range('lr_step_size')}."
    )
    lr_gamma: FloatChange | None = Field(None, description=f"Step decay; {_range('lr_gamma')}.")
    gradient_clip: FloatChange | None = Field(
        None, description=f"Clip the total norm; 0 disables; {_range('gradient_clip')}."
    )
    label_smoothing: FloatChange | None = Field(None, description=_range("label_smoothing"))

    def to_protocol(self) -> HyperparameterChange:
        changes: dict[str, object] = {}
        reasons: dict[str, str] = {}
        for key in HyperparameterProposal.model_fields:
            item = getattr(self, key)
            if isinstance(item, _Change):
                changes[key] = item.value  # type: ignore[attr-defined]
                reasons[key] = item.reason
        return HyperparameterChange(changes=changes, reasons=reasons, rationale=self.rationale)


# --------------------------------------------------------------------------- code


class ArchitectureDesign(BaseModel):
    """Submit a complete new model module that follows the model contract."""

    rationale: str = Field(description="What is wrong with the current design and what changes.")
    expected_gradient_effect: str = Field(
        description="What should change in the gradient norms (e.g. first/last layer ratio)."
    )
    source: str = Field(description="The whole Python module, plain code without Markdown fences.")

    @field_validator("source")
    @classmethod
    def _code(cls, v: str) -> str:
        v = strip_code_fences(v)
        if not v.strip():
            raise ValueError("source is empty: send the whole module")
        return v

    def to_protocol(self) -> ArchitectureProposal:
        return ArchitectureProposal(
            source=self.source,
            rationale=self.rationale,
            expected_effect=self.expected_gradient_effect,
        )


class ModelRepair(BaseModel):
    """Submit the repaired model module."""

    explanation: str = Field(description="What caused the error and what was changed.")
    source: str = Field(
        description="The whole repaired Python module, plain code without Markdown fences."
    )

    @field_validator("source")
    @classmethod
    def _code(cls, v: str) -> str:
        v = strip_code_fences(v)
        if not v.strip():
            raise ValueError("source is empty: send the whole module")
        return v

    def to_protocol(self) -> CodeRepair:
        return CodeRepair(source=self.source, explanation=self.explanation)
