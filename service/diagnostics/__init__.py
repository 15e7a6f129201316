"""Deterministic diagnostics of a training segment, computed from its epoch summaries.

The agent computes these before every assessment; they are stored with the decision, shown to
users, and handed to the advisor in compact form (``compact_state``). Everything here is plain
arithmetic over the summaries the worker posted, so the same summaries always give the same
diagnostics.

The package, in the order a segment goes through it:

* ``thresholds``: the numbers behind every verdict, with the rules of thumb they come from.
* ``model``: ``Diagnostics`` and ``LayerStat``, what a segment's diagnostics are.
* ``features``: ``compute_diagnostics``, the features (losses, accuracy, gradients).
* ``verdicts``: the issues those features show, each with a note saying why.
* ``compact``: ``compact_state``, the view an advisor sees and the agent state keeps.
"""

from __future__ import annotations

from service.diagnostics.compact import CompactDiagnostics, compact_state
from service.diagnostics.features import (
    SummaryLike,
    compute_diagnostics,
    is_weight_tensor,
    weight_names,
)
from service.diagnostics.model import Diagnostics, Issue, LayerStat
from service.diagnostics.thresholds import (
    ADAPTIVE_OPTIMIZERS,
    DEAD_ABSOLUTE,
    DEAD_RELATIVE,
    DEFAULT_WINDOW,
    EXPLODING_NORM,
    EXPLODING_RATIO,
    JUMP_RATIO,
    NEAR_CHANCE_FACTOR,
    OVERFIT_GAP,
    OVERFIT_LOSS_RISE,
    PLATEAU_ACCURACY,
    PLATEAU_LOSS,
    SPIKE_RATIO,
    UPDATE_RATIO_HEALTHY,
    UPDATE_RATIO_HIGH,
    UPDATE_RATIO_LOW,
    VANISHING_RATIO,
)

__all__ = [
    "ADAPTIVE_OPTIMIZERS",
    "DEAD_ABSOLUTE",
    "DEAD_RELATIVE",
    "DEFAULT_WINDOW",
    "EXPLODING_NORM",
    "EXPLODING_RATIO",
    "JUMP_RATIO",
    "NEAR_CHANCE_FACTOR",
    "OVERFIT_GAP",
    "OVERFIT_LOSS_RISE",
    "PLATEAU_ACCURACY",
    "PLATEAU_LOSS",
    "SPIKE_RATIO",
    "UPDATE_RATIO_HEALTHY",
    "UPDATE_RATIO_HIGH",
    "UPDATE_RATIO_LOW",
    "VANISHING_RATIO",
    "CompactDiagnostics",
    "Diagnostics",
    "Issue",
    "LayerStat",
    "SummaryLike",
    "compact_state",
    "compute_diagnostics",
    "is_weight_tensor",
    "weight_names",
]
