"""Optimizers and learning-rate schedules as pure functions of the position in the schedule.

The learning rate is a function of the run-wide schedule position (epochs, fractional within an
epoch), not of a scheduler object's step counter, so a schedule that spans several jobs
continues exactly where the previous segment stopped: segment k starts at the spec's
``schedule_epoch`` and the schedule's length is ``schedule_total_epochs``. (The reference
implementation restarted the schedule at every change.)
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from service.schemas.hyperparameters import Hyperparameters

#: One-cycle shape, as torch.optim.lr_scheduler.OneCycleLR's defaults.
ONECYCLE_PCT_START = 0.3
ONECYCLE_DIV = 25.0
ONECYCLE_FINAL_DIV = 1e4


def make_optimizer(params: Iterable[nn.Parameter], hp: Hyperparameters) -> torch.optim.Optimizer:
    """The spec's optimizer; ``foreach`` kernels keep the step to a few launches."""
    params = list(params)
    if hp.optimizer == "sgd":
        return torch.optim.SGD(
            params,
            lr=hp.learning_rate,
            momentum=hp.momentum,
            nesterov=hp.nesterov and hp.momentum > 0,
            weight_decay=hp.weight_decay,
            foreach=True,
        )
    if hp.optimizer == "adam":
        return torch.optim.Adam(
            params, lr=hp.learning_rate, weight_decay=hp.weight_decay, foreach=True
        )
    if hp.optimizer == "adamw":
        return torch.optim.AdamW(
            params, lr=hp.learning_rate, weight_decay=hp.weight_decay, foreach=True
        )
    if hp.optimizer == "rmsprop":
        return torch.optim.RMSprop(
            params,
            lr=hp.learning_rate,
            momentum=hp.momentum,
            weight_decay=hp.weight_decay,
            foreach=True,
        )
    raise ValueError(f"unknown optimizer {hp.optimizer!r}")  # the schema admits no other


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Load moments and step counts but keep this job's hyperparameters: ``load_state_dict``
    would otherwise bring back the old job's momentum and weight decay."""
    keep = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, values in zip(optimizer.param_groups, keep, strict=True):
        group.update(values)


def _cos_anneal(start: float, end: float, fraction: float) -> float:
    return end + (start - end) / 2.0 * (1.0 + math.cos(math.pi * fraction))


@dataclass(frozen=True)
class LrSchedule:
    """Learning rate at a schedule position measured in epochs."""

    kind: str
    base_lr: float
    total_epochs: int
    step_size: int = 30
    gamma: float = 0.1

    @classmethod
    def from_hyperparameters(cls, hp: Hyperparameters, total_epochs: int) -> LrSchedule:
        return cls(
            hp.lr_schedule, hp.learning_rate, max(1, total_epochs), hp.lr_step_size, hp.lr_gamma
        )

    def lr_at(self, position: float) -> float:
        """``position``: epochs since the schedule began (fractional inside an epoch). Past the
        planned length the schedule holds its last value."""
        t = min(max(position, 0.0), float(self.total_epochs))
        if self.kind == "constant":
            return self.base_lr
        if self.kind == "step":
            # Decays at epoch boundaries, as StepLR stepped once per epoch.
            return self.base_lr * self.gamma ** (int(position) // self.step_size)
        if self.kind == "cosine":
            return _cos_anneal(self.base_lr, 0.0, t / self.total_epochs)
        if self.kind == "onecycle":
            initial = self.base_lr / ONECYCLE_DIV
            warmup = ONECYCLE_PCT_START * self.total_epochs
            if t < warmup:
                return _cos_anneal(initial, self.base_lr, t / warmup)
            rest = self.total_epochs - warmup
            return _cos_anneal(self.base_lr, initial / ONECYCLE_FINAL_DIV, (t - warmup) / rest)
        raise ValueError(f"unknown schedule {self.kind!r}")

    def state_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "base_lr": self.base_lr,
            "total_epochs": self.total_epochs,
            "step_size": self.step_size,
            "gamma": self.gamma,
        }


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
