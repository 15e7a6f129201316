"""Per-epoch summaries that workers post: losses, accuracies and gradient statistics."""

from __future__ import annotations

import math
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from service.schemas.fields import NO_NUL_PATTERN, Count

#: most parameter tensors one epoch may report (large CNNs and transformers have hundreds)
MAX_TENSORS = 4096
#: longest parameter tensor name (``named_parameters()`` names are dotted module paths)
MAX_TENSOR_NAME = 300
TensorName = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_TENSOR_NAME, pattern=NO_NUL_PATTERN)
]


class NormStats(BaseModel):
    """Mean, max and min of an L2 norm over the steps of one epoch (non-finite steps excluded)."""

    model_config = ConfigDict(extra="forbid")

    mean: float = Field(ge=0, description="Mean over the epoch's finite steps.")
    max: float = Field(ge=0, description="Largest value in the epoch.")
    min: float = Field(ge=0, description="Smallest value in the epoch.")

    @field_validator("mean", "max", "min")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("gradient statistics must be finite; count non-finite steps instead")
        return v


class EpochSummaryIn(BaseModel):
    """One epoch of one job, as the worker measured it.

    Losses may be non-finite (a diverged network is a diagnosis, not bad input) and are sent as
    ``null``; gradient statistics cover the finite steps and ``nonfinite_steps`` counts the rest.
    """

    model_config = ConfigDict(extra="forbid")

    epoch: Count = Field(description="Run-wide epoch index (0-based); inside the job's segment.")
    train_loss: float | None = Field(None, description="Mean training loss; null if non-finite.")
    val_loss: float | None = Field(None, description="Validation loss; null if non-finite.")
    train_accuracy: float = Field(ge=0, le=1, description="Training accuracy in [0, 1].")
    val_accuracy: float = Field(ge=0, le=1, description="Validation accuracy in [0, 1].")
    learning_rate: float = Field(ge=0, description="Learning rate at the end of the epoch.")
    grad_total: NormStats = Field(description="Total gradient L2 norm, before clipping.")
    grad_layers: dict[TensorName, NormStats] = Field(
        default_factory=dict,
        max_length=MAX_TENSORS,
        description="Per parameter tensor gradient L2 norm, by name.",
    )
    weight_norms: dict[TensorName, float] = Field(
        default_factory=dict,
        max_length=MAX_TENSORS,
        description="Per parameter tensor weight L2 norm at epoch end.",
    )
    nonfinite_steps: Count = Field(0, description="Steps whose gradients were not finite.")
    steps: Count = Field(description="Optimizer steps in the epoch.")
    seconds: float = Field(ge=0, description="Wall time of the epoch (training + validation).")
    samples_per_second: float = Field(ge=0, description="Training throughput.")

    @field_validator("train_loss", "val_loss")
    @classmethod
    def _loss(cls, v: float | None) -> float | None:
        return v if v is None or math.isfinite(v) else None

    @field_validator("learning_rate", "seconds", "samples_per_second")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v

    @field_validator("weight_norms")
    @classmethod
    def _weights(cls, v: dict[str, float]) -> dict[str, float]:
        bad = [k for k, x in v.items() if not math.isfinite(x)]
        if bad:
            raise ValueError(f"weight norms must be finite (not finite: {', '.join(bad[:5])})")
        return v


class EpochSummaryBatch(BaseModel):
    """A batch of epoch summaries; a repeated epoch is accepted and ignored (idempotent)."""

    model_config = ConfigDict(extra="forbid")

    summaries: list[EpochSummaryIn] = Field(min_length=1, max_length=1000)


class EpochSummaryAck(BaseModel):
    accepted: int = Field(description="Summaries stored by this request.")
    duplicates: int = Field(description="Summaries already stored earlier (ignored).")


class EpochSummaryPublic(EpochSummaryIn):
    """An epoch summary as stored, with the job it belongs to."""

    model_config = ConfigDict(extra="ignore")

    job_id: str
    generation: int
    attempt: int
    #: stored names were checked on the way in
    grad_layers: dict[str, NormStats] = Field(default_factory=dict)
    weight_norms: dict[str, float] = Field(default_factory=dict)
