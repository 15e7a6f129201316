"""``gradpilot runs list`` and ``runs diff`` against the in-process API."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient
from rich.console import Console
from typer.testing import CliRunner

from service.cli import render
from service.cli.main import app
from tests.support.factories import finish_run, run_body

runner = CliRunner()


def test_runs_list_is_a_table(client: TestClient, cli_console: Console) -> None:
    state = client.app.state.gradpilot  # type: ignore[attr-defined]
    pending = client.post("/v1/runs", json=run_body(name="fresh")).json()["id"]
    done = finish_run(state.sessions, state.artifacts, client).run_id
    result = runner.invoke(app, ["runs", "list"])
    assert result.exit_code == 0, result.output
    text = cli_console.export_text()
    lines = text.splitlines()
    assert "gradpilot runs" in lines[0]
    header = next(line for line in lines if "status" in line)
    for col in ("id", "name", "status", "dataset", "advisor", "jobs", "epochs", "baseline", "best"):
        assert col in header
    row_done = next(line for line in lines if done[:12] in line)
    row_new = next(line for line in lines if pending[:12] in line)
    assert "succeeded" in row_done and "vanishing" in row_done  # the name wraps at 120 columns
    assert "9.7%" in row_done and "   3 " in row_done and "  12 " in row_done
    assert "pending" in row_new and "fresh" in row_new
    assert lines.index(row_done) < lines.index(row_new)  # newest first


def test_runs_list_json_and_status_filter(client: TestClient, cli_console: Console) -> None:
    client.post("/v1/runs", json=run_body(name="a"))
    result = runner.invoke(app, ["runs", "list", "--status", "succeeded", "--json"])
    assert result.exit_code == 0
    assert json.loads(cli_console.file.getvalue())["count"] == 0  # type: ignore[attr-defined]


def test_runs_table_renders_every_status(console: Console) -> None:
    base = {
        "name": None,
        "dataset": "digits",
        "advisor": "rules",
        "jobs": 0,
        "epochs": 0,
        "baseline_val_accuracy": None,
        "best_val_accuracy": None,
        "created_at": "2025-01-01T00:00:00",
    }
    runs = [{**base, "id": f"{s:0<32}", "status": s} for s in render.STATUS_STYLE]
    console.print(render.runs_table(runs))
    text = console.export_text()
    for status in render.STATUS_STYLE:
        assert status in text
    assert "2025-01-01 00:00:00" in text


def test_runs_diff_shows_the_rationale_and_the_diff(
    client: TestClient, cli_console: Console
) -> None:
    state = client.app.state.gradpilot  # type: ignore[attr-defined]
    run_id = finish_run(state.sessions, state.artifacts, client).run_id
    result = runner.invoke(app, ["runs", "diff", run_id])
    assert result.exit_code == 0, result.output
    text = cli_console.export_text()
    assert "v0 → v1" in text
    assert "the gradients vanish" in text
    assert "+++ v1/model.py" in text
    assert "nn.BatchNorm1d(64)" in text


def test_runs_diff_of_explicit_versions_as_json(client: TestClient, cli_console: Console) -> None:
    state = client.app.state.gradpilot  # type: ignore[attr-defined]
    run_id = finish_run(state.sessions, state.artifacts, client).run_id
    result = runner.invoke(app, ["runs", "diff", run_id, "1", "0", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(cli_console.file.getvalue())  # type: ignore[attr-defined]
    assert (data["from_version"], data["to_version"]) == (1, 0)
    assert "-    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, 64)" in data["diff"]
