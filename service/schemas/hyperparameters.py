"""Training hyperparameters: the one place that says which knobs exist and their sane ranges.

The worker trains with them, the tuners (rules and LLM) propose changes to them, and the
benchmark's Optuna search samples from the same ranges. Values out of range are refused when a
user sends them (422) and clamped when an advisor proposes them (``clamp_changes``).
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Optimizer = Literal["sgd", "adam", "adamw", "rmsprop"]
Schedule = Literal["constant", "step", "cosine", "onecycle"]

#: (low, high) for every numeric knob; advisors' proposals are clamped into these.
RANGES: dict[str, tuple[float, float]] = {
    "learning_rate": (1e-6, 1.0),
    "momentum": (0.0, 0.99),
    "weight_decay": (0.0, 0.1),
    "batch_size": (8, 1024),
    "lr_step_size": (1, 1000),
    "lr_gamma": (0.01, 1.0),
    "gradient_clip": (0.0, 100.0),
    "label_smoothing": (0.0, 0.3),
}


class Hyperparameters(BaseModel):
    """Everything the training loop of one job needs besides the model and the data."""

    model_config = ConfigDict(extra="forbid")

    optimizer: Optimizer = Field("sgd", description="Optimizer: sgd, adam, adamw or rmsprop.")
    learning_rate: float = Field(0.1, gt=0, le=1.0, description="Peak learning rate.")
    momentum: float = Field(0.0, ge=0, le=0.99, description="Momentum (sgd, rmsprop).")
    nesterov: bool = Field(False, description="Nesterov momentum (sgd with momentum > 0).")
    weight_decay: float = Field(0.0, ge=0, le=0.1, description="Weight decay (L2 / decoupled).")
    batch_size: int = Field(64, ge=8, le=1024, description="Mini-batch size per device.")
    lr_schedule: Schedule = Field(
        "constant", description="constant, step (every lr_step_size epochs), cosine or onecycle."
    )
    lr_step_size: int = Field(30, ge=1, le=1000, description="Epochs between step decays.")
    lr_gamma: float = Field(0.1, ge=0.01, le=1.0, description="Step decay factor.")
    gradient_clip: float = Field(
        0.0, ge=0, le=100, description="Clip the total gradient norm to this; 0 disables."
    )
    label_smoothing: float = Field(0.0, ge=0, le=0.3, description="Cross-entropy smoothing.")
    amp: bool = Field(True, description="Mixed precision on CUDA (ignored on CPU).")
    compile: bool = Field(False, description="torch.compile the model on CUDA.")

    @field_validator("learning_rate", "momentum", "weight_decay", "lr_gamma", "gradient_clip")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v


CHOICES: dict[str, tuple[str, ...]] = {
    "optimizer": ("sgd", "adam", "adamw", "rmsprop"),
    "lr_schedule": ("constant", "step", "cosine", "onecycle"),
}

TUNABLE_KEYS: frozenset[str] = frozenset(Hyperparameters.model_fields) - {"amp", "compile"}


def clamp_changes(
    current: Hyperparameters, changes: dict[str, Any]
) -> tuple[Hyperparameters, dict[str, Any]]:
    """Apply an advisor's proposed changes, dropping unknown keys and clamping numbers.

    Returns the new hyperparameters and the changes that were really applied (after clamping),
    so that a decision records what happened rather than what was asked for.
    """
    applied: dict[str, Any] = {}
    data = current.model_dump()
    for key, value in changes.items():
        if key not in TUNABLE_KEYS or value is None:
            continue
        if key in RANGES:
            try:
                number = float(value)
            except (TypeError, ValueError):
                continue
            if not math.isfinite(number):
                continue
            low, high = RANGES[key]
            number = min(max(number, low), high)
            value = int(round(number)) if key in ("batch_size", "lr_step_size") else number
            if key == "learning_rate" and value <= 0:
                continue
        elif key in CHOICES and value not in CHOICES[key]:
            continue
        elif key == "nesterov":
            value = bool(value)
        if data.get(key) != value:
            applied[key] = value
            data[key] = value
    if data["optimizer"] != "sgd" or data["momentum"] == 0:
        data["nesterov"] = False
    return Hyperparameters.model_validate(data), applied
