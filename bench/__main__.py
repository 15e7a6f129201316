"""``python -m bench``: every benchmark in turn, a summary table of the headline figures, JSON.

Each benchmark runs as its own process (``python -m bench.<name> --out FILE``, with
``--tiny`` for the quick configuration), so that one that fails or hangs does not take the
others with it and each starts with a clean interpreter. Their own reports print as they go;
at the end comes one table of every headline figure with its baseline (Optuna, MLflow, raw
Postgres, no monitoring, the target) and the ratio of the two, and everything is written as
one JSON document (``--json PATH``; by default ``bench/results/bench-<time>[-tiny].json``).

    python -m bench                   # everything (make bench; ~20 min on 2 shared cores)
    python -m bench --tiny            # a quick pass over everything (make bench-tiny; ~2 min)
    python -m bench --only ingest,controller_scale --json /tmp/bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import _common

#: name → (seconds allowed in the full run, seconds allowed in the tiny run); in run order.
BENCHMARKS: dict[str, tuple[int, int]] = {
    "monitor_overhead": (900, 180),
    "decision_latency": (600, 180),
    "controller_scale": (900, 180),
    "ingest": (900, 300),
    "tuning_efficiency": (3600, 600),
}
RESULTS = Path(__file__).resolve().parent / "results"


def run_one(name: str, tiny: bool, out: Path) -> dict[str, Any]:
    """Run one benchmark's process; its report, or what went wrong."""
    full_s, tiny_s = BENCHMARKS[name]
    command = [sys.executable, "-m", f"bench.{name}", "--out", str(out)]
    if tiny:
        command.append("--tiny")
    env = {**os.environ, "PYTHONPATH": str(_common.ROOT)}
    started = time.perf_counter()
    try:
        done = subprocess.run(
            command, cwd=_common.ROOT, env=env, timeout=tiny_s if tiny else full_s, check=False
        )
        code: int | str = done.returncode
    except subprocess.TimeoutExpired:
        code = f"timed out after {tiny_s if tiny else full_s} s"
    elapsed = time.perf_counter() - started
    if code == 0 and out.exists():
        report: dict[str, Any] = json.loads(out.read_text())
    else:
        report = {"error": f"exit status {code}" if isinstance(code, int) else code}
    report["elapsed_s"] = round(elapsed, 1)
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="each benchmark's quick configuration")
    p.add_argument("--json", type=Path, help="write the combined report here")
    p.add_argument("--only", help=f"comma-separated subset of {', '.join(BENCHMARKS)}")
    args = p.parse_args(argv)
    names = list(BENCHMARKS)
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in BENCHMARKS]
        if unknown:
            p.error(f"unknown benchmark(s) {unknown}; choose from {list(BENCHMARKS)}")
    started = time.perf_counter()
    combined: dict[str, Any] = {
        "tiny": args.tiny,
        "machine": _common.machine(),
        "benchmarks": {},
    }
    with tempfile.TemporaryDirectory(prefix="gp-bench-") as tmp:
        for name in names:
            print(f"\n{'=' * 30} {name}{' (tiny)' if args.tiny else ''} {'=' * 30}", flush=True)
            combined["benchmarks"][name] = run_one(name, args.tiny, Path(tmp) / f"{name}.json")
    combined["elapsed_s"] = round(time.perf_counter() - started, 1)
    combined["machine_after"] = {"load_average": _common.machine()["load_average"]}
    path = args.json or RESULTS / (
        time.strftime("bench-%Y%m%d-%H%M%S") + ("-tiny" if args.tiny else "") + ".json"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(combined, indent=2) + "\n")
    print_summary(combined)
    print(f"\nJSON: {path}")
    failed = [n for n, r in combined["benchmarks"].items() if "error" in r]
    return 1 if failed else 0


def print_summary(combined: dict[str, Any]) -> None:
    m = combined["machine"]
    print(
        f"\n{'=' * 30} summary {'(tiny) ' if combined['tiny'] else ''}{'=' * 30}\n"
        f"{m['host']}: {m['cpus']} CPUs, load average {m['load_average']} at the start, "
        f"{combined['machine_after']['load_average']} at the end; torch {m.get('torch')}, "
        f"GPU {m.get('gpu')}; {combined['elapsed_s']:.0f} s in all"
    )
    for name, report in combined["benchmarks"].items():
        status = f"{report['elapsed_s']:.0f} s"
        if "error" in report:
            status += f", FAILED: {report['error']}"
        elif report.get("skipped"):
            status += f", skipped: {report['skipped']}"
        _common.print_headline(report.get("headline", []), title=f"{name} ({status})")
        if not report.get("headline"):
            print(f"\n{name} ({status})")


if __name__ == "__main__":
    raise SystemExit(main())
