"""Server text (run names, errors, rationales, statuses) reaches the terminal as literal text:
never read as Rich markup, never turned into a hyperlink, never a crash."""

from __future__ import annotations

import io

import pytest
from fastapi.testclient import TestClient
from rich.console import Console
from typer.testing import CliRunner

from service.cli import render
from service.cli import runs as runs_cli
from service.cli.client import ApiClient
from service.cli.main import app
from service.cli.watch import WatchState, generations_table, job_line, view, watch_run
from service.db.models import Architecture, Decision, Run
from service.runs import sha256
from service.schemas.statuses import ExecutorState, JobStatus, RunStatus
from tests.support.factories import TINY_MODEL, add_job, run_body

runner = CliRunner()
HOSTILE = ["[/]", "[link=file:///etc/passwd]click me[/link]", "[bold red]x", "$\\frac{1}{$"]
#: the escape sequence that opens a terminal hyperlink (OSC 8)
HYPERLINK = "\x1b]8;"


def recording_console() -> Console:
    """A console that records what is printed, 120 columns, no colour."""
    return Console(record=True, width=120, file=io.StringIO(), force_terminal=False)


def terminal_console() -> Console:
    """A console that writes escape sequences, as a real terminal gets them."""
    return Console(
        file=io.StringIO(), force_terminal=True, color_system="truecolor", width=200, record=True
    )


def _hostile_run(client: TestClient, name: str) -> str:
    """A paused run named ``name`` whose error, decisions and architecture rationale are
    ``name`` too."""
    run_id = client.post("/v1/runs", json=run_body(name=name)).json()["id"]
    with client.app.state.gradpilot.sessions() as s:  # type: ignore[attr-defined]
        run = s.get(Run, run_id)
        assert run is not None
        run.status, run.error = "awaiting_approval", f"error {name}"
        run.pending_approval = {"action": "tune", "rationale": f"why {name}", "diff": name}
        s.add(
            Decision(
                run_id=run_id,
                sequence=0,
                generation=0,
                action="tune",
                advisor=f"rules{name}",
                rationale=f"because {name}",
                diagnostics={"issues": [name]},
                assessment={},
                changes={name: {"value": name}},
            )
        )
        s.add(
            Architecture(
                run_id=run_id,
                version=1,
                parent_version=0,
                source=TINY_MODEL + "\n# v1\n",
                sha256=sha256(TINY_MODEL + "\n# v1\n"),
                rationale=f"rewritten {name}",
                author="rules",
            )
        )
        s.commit()
    return run_id


@pytest.mark.parametrize("name", HOSTILE)
def test_list_show_diff_print_server_text_literally(
    name: str, client: TestClient, api: ApiClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = _hostile_run(client, name)
    console = terminal_console()
    monkeypatch.setattr(runs_cli, "console", console)
    monkeypatch.setattr(runs_cli, "_client", lambda url, token: api)
    for args in (["runs", "list"], ["runs", "show", run_id], ["runs", "diff", run_id]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, (args, result.exception)
    out = console.file.getvalue()  # type: ignore[attr-defined]
    assert HYPERLINK not in out
    text = console.export_text()
    for literal in (f"error {name}", f"why {name}", f"because {name}", f"rewritten {name}"):
        assert literal in text, literal
    # the approval hint names the real run, not a placeholder
    assert f"gradpilot runs approve {run_id}" in text
    assert "approve RUN" not in text


@pytest.mark.parametrize("name", HOSTILE)
def test_watch_prints_server_text_literally(name: str, client: TestClient, api: ApiClient) -> None:
    run_id = _hostile_run(client, name)
    add_job(client, run_id)  # a submitted job: its status crashed the live view
    with client.app.state.gradpilot.sessions() as s:  # type: ignore[attr-defined]
        run = s.get(Run, run_id)
        assert run is not None
        run.status = "failed"
        s.commit()
    console = terminal_console()
    final = watch_run(api, run_id, console, poll_s=0.01)
    assert final["status"] == "failed"
    assert HYPERLINK not in console.file.getvalue()  # type: ignore[attr-defined]
    text = console.export_text()
    assert f"because {name}" in text and "submitted" in text


def test_every_status_of_every_enum_has_a_style() -> None:
    for enum in (RunStatus, JobStatus, ExecutorState):
        for status in enum:
            assert render.STATUS_STYLE[status.value], status
    assert render.STATUS_STYLE["submitted"] != render.DEFAULT_STATUS_STYLE


@pytest.mark.parametrize("status", [*render.STATUS_STYLE, "a-status-from-a-newer-server", "[/]"])
def test_live_view_renders_any_job_status(status: str) -> None:
    """The live view and its tables draw every status, also one this CLI has never heard of."""
    job = {
        "id": "j1",
        "generation": 0,
        "attempt": 1,
        "architecture_version": 0,
        "hyperparameters": {"optimizer": "sgd", "learning_rate": 0.1},
        "epoch_start": 0,
        "epochs": 2,
        "status": status,
        "error_kind": "code",
        "error_message": "[/]",
    }
    state = WatchState("r" * 32, jobs=[job])
    state.run = {
        "id": "r" * 32,
        "name": "[/]",
        "status": status,
        "dataset": "digits",
        "advisor": "rules",
        "pending_approval": {"action": "tune", "rationale": "[/]"},
    }
    console = recording_console()
    for renderable in (view(state), generations_table(state), job_line(job, None)):
        console.print(renderable)
    text = console.export_text()
    assert status in text and "[/]" in text
    assert f"gradpilot runs approve {'r' * 32}" in text
