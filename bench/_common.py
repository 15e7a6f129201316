"""What every benchmark shares: arguments, the machine's description, headline figures, JSON
output and percentiles. Scratch Postgres databases, free ports, the moto server and process
stops are the tests' own helpers, in ``tests/support``.

Every benchmark module has ``main(argv) -> int`` and takes ``--tiny`` (a quick, rough run),
``--json`` (print the report as JSON only) and ``--out PATH`` (also write the JSON there). Its
report is a dict with a ``headline`` list: the few figures that ``python -m bench`` puts in its
summary table, each with the baseline it is compared against and its target.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # ``python bench/x.py`` as well as ``python -m bench.x``
    sys.path.insert(0, str(ROOT))


def parser(doc: str | None) -> argparse.ArgumentParser:
    """An argument parser with the options every benchmark takes."""
    first = (doc or "").strip().splitlines()[0] if doc else None
    p = argparse.ArgumentParser(description=first)
    p.add_argument("--tiny", action="store_true", help="a quick, rough run (what the tests run)")
    p.add_argument("--json", action="store_true", help="print the report as JSON only")
    p.add_argument("--out", type=Path, help="also write the report as JSON to this file")
    return p


def machine() -> dict[str, Any]:
    """What the figures were measured on (these machines are shared: load matters)."""
    info: dict[str, Any] = {
        "host": platform.node(),
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    try:
        import torch

        info["torch"] = str(torch.__version__)
        info["torch_threads"] = torch.get_num_threads()
        info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return info


def headline(
    figure: str,
    value: float | None,
    unit: str,
    *,
    baseline: float | None = None,
    baseline_name: str | None = None,
    target: str | None = None,
    met: bool | None = None,
    note: str | None = None,
) -> dict[str, Any]:
    """One row of the summary table. ``ratio`` is value / baseline when both exist."""
    ratio = None
    if value is not None and baseline not in (None, 0) and math.isfinite(value):
        assert baseline is not None
        ratio = value / baseline
    return {
        "figure": figure,
        "value": value,
        "unit": unit,
        "baseline": baseline,
        "baseline_name": baseline_name,
        "ratio": ratio,
        "target": target,
        "met": met,
        "note": note,
    }


def finish(report: dict[str, Any], args: argparse.Namespace, printer: Any) -> int:
    """Print the report (as text, or as JSON with ``--json``) and write ``--out``."""
    report.setdefault("machine", machine())
    text = json.dumps(report, indent=2, default=_json_default)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    if args.json:
        print(text)
    else:
        printer(report)
        print_headline(report.get("headline", []))
    return 0


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.{digits}g}"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:.{digits}g}"
    return str(value)


def print_headline(rows: Sequence[dict[str, Any]], title: str | None = None) -> None:
    if not rows:
        return
    if title:
        print(f"\n{title}")
    print(
        f"\n{'figure':52} {'value':>12} {'baseline':>12} {'ratio':>8}  {'target':28} met"
        f"\n{'-' * 52} {'-' * 12} {'-' * 12} {'-' * 8}  {'-' * 28} ---"
    )
    for r in rows:
        value = f"{fmt(r['value'])} {r['unit']}".strip() if r["value"] is not None else "—"
        print(
            f"{r['figure'][:52]:52} {value:>12} {fmt(r.get('baseline')):>12} "
            f"{fmt(r.get('ratio')):>8}  {(r.get('target') or '')[:28]:28} {fmt(r.get('met'))}"
        )
        if r.get("baseline_name"):
            print(f"{'':52}   (baseline: {r['baseline_name']})")
        if r.get("note"):
            print(f"{'':52}   {r['note']}")


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100) by linear interpolation; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    if lo == hi:
        return ordered[int(k)]
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def round_floats(value: Any, digits: int = 5) -> Any:
    """Round every float in a nested structure to ``digits`` significant digits."""
    if isinstance(value, float):
        return float(f"{value:.{digits}g}") if math.isfinite(value) else value
    if isinstance(value, dict):
        return {k: round_floats(v, digits) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [round_floats(v, digits) for v in value]
    return value
