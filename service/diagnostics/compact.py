"""The compact view of the diagnostics: what an advisor sees and what the agent state holds."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, TypeAlias

from service.diagnostics.model import Diagnostics

#: ``compact_state`` of a ``Diagnostics``: a subset of its keys, as JSON values, which
#: ``Diagnostics.model_validate`` reads back. The agent state and the decisions keep this form
#: (not the model) because it is what the advisor saw and what the database stores verbatim.
CompactDiagnostics: TypeAlias = dict[str, Any]

_COMPACT_DROP = {"layers"}


def _round(value: Any, digits: int = 4) -> Any:
    if isinstance(value, float):
        if not math.isfinite(value) or value == 0:
            return value
        return float(f"{value:.{digits}g}")
    if isinstance(value, dict):
        return {k: _round(v, digits) for k, v in value.items()}
    if isinstance(value, list):
        return [_round(v, digits) for v in value]
    return value


def compact_state(
    diagnostics: Diagnostics | Mapping[str, Any], *, max_names: int = 5, digits: int = 4
) -> CompactDiagnostics:
    """The diagnostics as an advisor sees them: aggregates and first/middle/last layer only.

    No per-tensor table and no per-epoch histories; numbers rounded to ``digits`` significant
    digits and lists of names cut to ``max_names``. The result has the same keys as
    ``Diagnostics`` (a subset), so ``Diagnostics.model_validate`` reads it back.
    """
    d = (
        diagnostics
        if isinstance(diagnostics, Diagnostics)
        else Diagnostics.model_validate(dict(diagnostics))
    )
    data = d.model_dump(exclude=_COMPACT_DROP, exclude_none=True)
    data["dead_tensors"] = data.get("dead_tensors", [])[:max_names]
    rounded: CompactDiagnostics = _round(data, digits)
    return rounded
