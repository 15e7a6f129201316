"""What the diagnostics of one training segment are: ``Diagnostics`` and its ``LayerStat``s."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from service.diagnostics.thresholds import DEFAULT_WINDOW

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
