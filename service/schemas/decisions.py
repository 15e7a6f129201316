"""Schemas of the agent's decisions and of architecture versions."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.schemas.fields import AwareTime

Action = Literal["continue", "tune", "redesign", "repair", "retry", "finish"]
ACTIONS: tuple[str, ...] = ("continue", "tune", "redesign", "repair", "retry", "finish")


class DecisionPublic(BaseModel):
    """One decision of the agent: what it saw, what it concluded and what it did."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    sequence: int = Field(description="Order of the decision within the run.")
    generation: int = Field(description="The job generation whose outcome led to it.")
    action: Action
    advisor: str = Field(description="Which advisor decided (e.g. rules, bedrock:...).")
    fallback: bool = Field(description="True when the LLM failed and the rules advisor decided.")
    rationale: str
    diagnostics: dict[str, Any] = Field(default_factory=dict)
    assessment: dict[str, Any] = Field(default_factory=dict)
    changes: dict[str, Any] = Field(default_factory=dict)
    architecture_version: int | None = None
    latency_ms: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    created_at: AwareTime


class ArchitecturePublic(BaseModel):
    """One version of the run's model source."""

    model_config = ConfigDict(from_attributes=True)

    version: int
    sha256: str
    parent_version: int | None
    rationale: str
    author: str = Field(description="user, or the advisor that wrote it.")
    source: str
    parameters: int | None = Field(None, description="Parameter count measured by the sandbox.")
    created_at: AwareTime


class ArchitectureDiff(BaseModel):
    run_id: str
    from_version: int
    to_version: int
    diff: str = Field(description="Unified diff of the two sources.")
    rationale: str = Field(description="Why the newer version was written.")
