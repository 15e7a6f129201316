"""Epoch summaries as a worker posts them (``service.schemas.summaries.EpochSummaryIn``), built
without training: for the ingest load and for playing a worker in the decision benchmark."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

#: The scalar metrics of one summary besides the gradient statistics.
SCALARS = ("train_loss", "val_loss", "train_accuracy", "val_accuracy", "learning_rate", "seconds")


def tensor_names(count: int) -> list[str]:
    """Parameter tensor names in layer order, as ``named_parameters()`` gives them."""
    names = []
    for i in range(count):
        names.append(f"layers.{i // 2}.{'weight' if i % 2 == 0 else 'bias'}")
    return names


def load_summary(epoch: int, tensors: int = 64, seed: int = 0) -> dict[str, Any]:
    """A plausible summary with mean/max/min for ``tensors`` parameter tensors and the total:
    ``3 * tensors + 3`` gradient numbers and six scalars (201 metrics for 64 tensors)."""
    rng = random.Random(seed * 100_003 + epoch)
    layers = {}
    for name in tensor_names(tensors):
        mean = rng.uniform(1e-3, 1.0)
        layers[name] = {"mean": mean, "max": mean * rng.uniform(1.0, 3.0), "min": mean * 0.3}
    total = math.sqrt(sum(v["mean"] ** 2 for v in layers.values()))
    return {
        "epoch": epoch,
        "train_loss": 2.3 / (1 + epoch),
        "val_loss": 2.4 / (1 + epoch),
        "train_accuracy": min(1.0, 0.1 + 0.01 * epoch),
        "val_accuracy": min(1.0, 0.1 + 0.009 * epoch),
        "learning_rate": 0.1,
        "grad_total": {"mean": total, "max": total * 2.0, "min": total * 0.5},
        "grad_layers": layers,
        "weight_norms": {},
        "nonfinite_steps": 0,
        "steps": 100,
        "seconds": 12.5,
        "samples_per_second": 4000.0,
    }


def metric_count(summary: dict[str, Any]) -> int:
    """How many numbers a summary carries as MLflow metrics (one per value)."""
    return 3 + 3 * len(summary["grad_layers"]) + len(SCALARS)


def played_segment(
    names: Sequence[str],
    epoch_start: int,
    accuracies: Sequence[float],
    *,
    first_to_last: float,
    learning_rate: float,
    update_ratio: float = 2e-3,
) -> list[dict[str, Any]]:
    """What a worker would post for one segment of a model with these parameter ``names``:
    the given validation accuracies, a first-to-last gradient ratio, and weights sized so that
    a step moves them by ``update_ratio`` of their norm (a sane learning rate)."""
    weights = [n for n in names if n.endswith("weight")] or list(names)
    last = 0.05
    out = []
    for i, acc in enumerate(accuracies):
        layers: dict[str, dict[str, float]] = {}
        weight_norms: dict[str, float] = {}
        for k, name in enumerate(weights):
            # Log-linear from the first layer's norm to the last's.
            frac = k / max(1, len(weights) - 1)
            g = last * first_to_last ** (1.0 - frac)
            layers[name] = {"mean": g, "max": g * 1.8, "min": g * 0.4}
            weight_norms[name] = max(1e-3, learning_rate * g / update_ratio)
        total = math.sqrt(sum(v["mean"] ** 2 for v in layers.values()))
        loss = 2.303 if acc < 0.15 else max(0.05, 1.6 * (1 - acc))
        out.append(
            {
                "epoch": epoch_start + i,
                "train_loss": loss,
                "val_loss": loss * 1.05,
                "train_accuracy": min(1.0, acc + 0.01),
                "val_accuracy": acc,
                "learning_rate": learning_rate,
                "grad_total": {"mean": total, "max": total * 1.8, "min": total * 0.4},
                "grad_layers": layers,
                "weight_norms": weight_norms,
                "nonfinite_steps": 0,
                "steps": 18,
                "seconds": 2.0,
                "samples_per_second": 600.0,
            }
        )
    return out
