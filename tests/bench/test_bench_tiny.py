"""Every benchmark once in its tiny configuration, through ``python -m bench``'s own runner (a
process per benchmark), so that none rots. The figures are not asserted — these machines are
shared and noisy — but what each benchmark must get right is: the decisions it times are the
ones it meant, the rows it counts are exact, the calls it counts are the ones it expected."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from bench.__main__ import main as bench_main
from bench.__main__ import run_one


def _run(name: str, tmp_path: Path) -> dict[str, Any]:
    report = run_one(name, tiny=True, out=tmp_path / f"{name}.json")
    assert "error" not in report, report
    assert report["headline"], report
    for row in report["headline"]:
        assert {"figure", "value", "baseline", "ratio", "target", "met"} <= set(row)
    return report


def test_monitor_overhead(tmp_path: Path) -> None:
    report = _run("monitor_overhead", tmp_path)
    (step,) = report["step_time"]
    assert set(step["step_ms"]) == {"none", "monitor", "reference", "none_again"}
    # What the monitor adds per step does not grow with the number of parameter tensors.
    ops = [row["monitor"]["aten_ops"] for row in report["ops_per_step"]["cpu"]]
    assert len(set(ops)) == 1, ops


def test_decision_latency_through_the_runner(tmp_path: Path) -> None:
    """``python -m bench --tiny --only decision_latency --json PATH``: one combined document."""
    out = tmp_path / "bench.json"
    assert bench_main(["--tiny", "--only", "decision_latency", "--json", str(out)]) == 0
    combined = json.loads(out.read_text())
    assert combined["tiny"] is True and set(combined["benchmarks"]) == {"decision_latency"}
    report = combined["benchmarks"]["decision_latency"]
    assert report["headline"]
    (result,) = report["results"]
    assert result["unexpected_actions"] == []
    for action in ("redesign", "tune"):
        timing = result["by_action"][action]
        assert timing["n"] == 1 and timing["p50_s"] is not None and timing["p50_s"] > 0
    # Only a redesign goes through the sandbox; a tune does not.
    assert result["by_action"]["redesign"]["sandbox_p50_s"] > 0
    assert result["by_action"]["tune"]["sandbox_p50_s"] == 0


def test_controller_scale(tmp_path: Path, postgres_admin: str) -> None:
    report = _run("controller_scale", tmp_path)
    r = report["result"]
    assert r["submit"]["distinct_external_ids"] == r["jobs"] == 50
    assert r["submit"]["operations"]["SubmitJob"] == 50
    for cycle in r["steady_cycles"]:
        assert cycle["jobs_synced"] == 50 and cycle["describe_jobs"] == 1
        assert cycle["errors"] == []
    assert r["finishing_cycle"]["jobs_finished"] == 50
    assert r["outcomes_delivered"] == 50 and r["jobs_succeeded"] == 50


@pytest.mark.slow  # the MLflow server's own start (its migrations) takes ~30 s here
def test_ingest(tmp_path: Path, postgres_admin: str) -> None:
    report = _run("ingest", tmp_path)
    for part in report["gradpilot_by_workers"]:
        for r in part["results"]:
            rows = r["rows"]
            assert r["errors"] == 0 and rows["ok"], rows
            assert rows["lost"] == rows["duplicated"] == 0
            assert rows["rows"] == rows["acknowledged"] == rows["summaries_sent"] > 0
            # Re-posting a batch is acknowledged as duplicates and stores nothing.
            assert rows["reposted"]["accepted"] == 0
            assert rows["reposted"]["duplicates"] == rows["reposted"]["summaries"] > 0
    for method in ("executemany", "copy", "copy_lz4"):
        assert report["raw"][method]["stored"] == report["raw"]["rows"]
    if importlib.util.find_spec("mlflow") is None:
        assert "not installed" in report["mlflow_skipped"]
    else:
        (ml,) = report["mlflow"]["results"]
        assert ml["rows"]["ok"], ml["rows"]


@pytest.mark.slow  # a gradpilot run with two worker processes, then an Optuna study
def test_tuning_efficiency(tmp_path: Path) -> None:
    report = _run("tuning_efficiency", tmp_path)
    (run,) = report["runs"]
    gp, opt = run["gradpilot"], run["optuna"]
    assert gp["status"] == "succeeded"
    assert gp["decisions"] and gp["decisions"][-1] == "finish"
    assert sum(job["epochs"] for job in gp["jobs"]) == gp["epochs_run"] > 0
    # Optuna gets 4x gradpilot's epochs, and stops early only once the comparison is settled.
    assert gp["epochs_run"] <= opt["epochs_run"] <= 4 * gp["epochs_run"]
    assert opt["trials"] >= 1
