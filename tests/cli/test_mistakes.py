"""Each configuration or argument mistake prints one line (what is wrong, and an example of the
right form) and exits non-zero; ids the CLI prints are ids it accepts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from rich.console import Console
from typer.testing import CliRunner

from service.cli import main as cli_main
from service.cli.client import ApiClient, CliError
from service.cli.ids import resolve_run_id
from service.cli.main import app
from tests.support.factories import run_body

runner = CliRunner()
REPO = Path(__file__).resolve().parents[2]


def _main(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str]:
    """Run ``gradpilot ARGV`` as the console script does; returns (exit code, stderr)."""
    monkeypatch.setattr(sys, "argv", ["gradpilot", *argv])
    with pytest.raises(SystemExit) as exit_:
        cli_main.main()
    return int(exit_.value.code or 0), capsys.readouterr().err


@pytest.mark.parametrize(
    ("env", "argv", "expect"),
    [
        ({}, ["serve", "--host", "0.0.0.0"], "GRADPILOT_API_TOKENS="),
        ({"GRADPILOT_API_TOKENS": "short"}, ["serve"], "for example GRADPILOT_API_TOKENS="),
        ({"GRADPILOT_PORT": "abc"}, ["serve"], "for example GRADPILOT_PORT=8765"),
        ({"GRADPILOT_PORT": "99999"}, ["serve"], "for example GRADPILOT_PORT=8765"),
        ({}, ["serve", "--port", "99999"], "for example --port 8765"),
        ({}, ["serve", "--port", "0"], "for example --port 8765"),
        ({}, ["runs", "figure", "abc", "-o", "missing_dir/f.png"], "for example -o f.png"),
        ({}, ["runs", "report", "abc", "-o", "missing_dir/r.md"], "for example -o r.md"),
    ],
)
def test_mistakes_are_one_line_with_an_example(
    env: dict[str, str],
    argv: list[str],
    expect: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GRADPILOT_HOME", str(tmp_path / "home"))
    # nothing listens here: a mistake must be caught before any request is made
    monkeypatch.setenv("GRADPILOT_URL", "http://127.0.0.1:9")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    code, err = _main(argv, monkeypatch, capsys)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and expect in lines[0], lines[0]
    assert not (tmp_path / "home" / "gradpilot.db").exists()  # refused before any start-up


def test_serve_never_listens_beside_the_port_it_announces() -> None:
    """The console script itself (a subprocess): ``--port 99999`` is refused, not served."""
    proc = subprocess.run(
        [sys.executable, "-m", "service.cli.main", "serve", "--port", "99999"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "GRADPILOT_HOME": "/nonexistent"},
    )
    assert proc.returncode == 2
    assert ":99999" not in proc.stdout + proc.stderr.replace("--port 99999", "")
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_printed_prefixes_are_accepted(client: TestClient, cli_console: Console) -> None:
    run_id = client.post("/v1/runs", json=run_body(name="mine")).json()["id"]
    result = runner.invoke(app, ["runs", "list"])
    assert result.exit_code == 0
    assert run_id[:12] in cli_console.export_text()
    result = runner.invoke(app, ["runs", "show", run_id[:12]])
    assert result.exit_code == 0, result.exception
    assert f"run {run_id}" in cli_console.export_text()
    result = runner.invoke(app, ["runs", "cancel", run_id[:6]])
    assert result.exit_code == 0, result.exception
    assert client.get(f"/v1/runs/{run_id}").json()["status"] == "cancelled"


def test_ambiguous_and_unknown_prefixes(client: TestClient, api: ApiClient) -> None:
    ids = [client.post("/v1/runs", json=run_body()).json()["id"] for _ in range(3)]
    assert resolve_run_id(api, ids[0]) == ids[0]
    assert resolve_run_id(api, ids[1][:10].upper()) == ids[1]
    with pytest.raises(CliError) as e:
        resolve_run_id(api, "")  # every id starts with the empty string
    assert e.value.exit_code == 2
    # the first hex digit is shared by some pair of the 16+1 ids of this many runs
    for _ in range(14):
        ids.append(client.post("/v1/runs", json=run_body()).json()["id"])
    first = next(c for c in "0123456789abcdef" if sum(i.startswith(c) for i in ids) > 1)
    with pytest.raises(CliError) as e:
        resolve_run_id(api, first)
    assert "ambiguous" in e.value.message and e.value.exit_code == 2
    assert all(i[:12] in e.value.message for i in ids if i.startswith(first))
    with pytest.raises(CliError) as e:
        resolve_run_id(api, "zz")
    assert "no run id starts with 'zz'" in e.value.message


def test_make_demo_is_quiet_and_says_how_to_run_gradpilot() -> None:
    plan = subprocess.run(
        ["make", "-n", "demo", "VENV=/nonexistent-venv"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=30,
    ).stdout
    install = next(line for line in plan.splitlines() if "pip install" in line and "-e ." in line)
    assert "PYTHONWARNINGS=ignore" in install
    assert "/nonexistent-venv/bin/gradpilot" in plan.split("gradpilot demo", 1)[1]
    assert "/nonexistent-venv/bin/activate" in plan
