"""`gradpilot demo --json`: the offline demo reaches its targets (baseline <= 20%, final >= 95%)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_demo_fixes_the_flawed_network(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRADPILOT_")}
    env["GRADPILOT_HOME"] = str(tmp_path / "home")
    out = subprocess.run(
        [sys.executable, "-m", "service.cli.main", "demo", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    result = json.loads(out.stdout)
    assert result["status"] == "succeeded", result
    assert result["baseline_val_accuracy"] <= 0.20, result
    assert result["final_val_accuracy"] >= 0.95, result
    actions = [d["action"] for d in result["decisions"]]
    assert "redesign" in actions and actions[-1] == "finish", actions
    report = Path(result["report"].removeprefix("file://"))
    text = report.read_text()
    assert "redesign" in text and "figure.png" in text
    assert (report.parent / "figure.png").stat().st_size > 10_000
