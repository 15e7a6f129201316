"""The ``gradpilot`` command: a typer app over the REST API, plus the server processes."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.text import Text

from service.cli.client import CliError
from service.cli.infra import app as infra_app
from service.cli.runs import runs_app
from service.cli.tokens import tokens_app

app = typer.Typer(
    help="gradpilot: diagnose a network from its gradient norms, fix it, train again.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(runs_app, name="runs")
app.add_typer(tokens_app, name="tokens")
console = Console()
err = Console(stderr=True)

app.add_typer(infra_app, name="infra", help="Create the AWS side (CloudFormation).")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Listen address (GRADPILOT_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (GRADPILOT_PORT).")] = None,
    embedded: Annotated[
        bool, typer.Option("--embedded", help="Also run the controller and executor in-process.")
    ] = False,
) -> None:
    """Run the API (migrating the database first); with --embedded, the whole control plane."""
    from service.server import serve as run_server

    if port is not None and not 1 <= port <= 65535:
        # uvicorn would listen on another port (the OS truncates it) while we announce this one
        raise CliError(f"--port {port} is not a TCP port: use 1-65535, for example --port 8765", 2)

    run_server(host=host, port=port, embedded=embedded)


@app.command()
def controller() -> None:
    """Run the controller's reconcile loop alone (several replicas may run against Postgres)."""
    from service.server import run_controller

    run_controller()


@app.command()
def validate(
    model: Annotated[Path, typer.Argument(help="The model file (.py).", exists=False)],
    dataset: Annotated[str, typer.Option(help="digits, cifar10, cifar100, synthetic.")] = "digits",
    as_json: Annotated[
        bool, typer.Option("--json", help="Print {ok, reason, ...} as JSON.")
    ] = False,
) -> None:
    """Check a model file statically and in the sandbox (build, forward, backward)."""
    from service.errors import GradpilotError
    from service.sandbox.validate_cli import validate_file
    from service.schemas.datasets import DatasetSpec
    from service.settings import load_settings

    try:
        report = validate_file(model, DatasetSpec(name=dataset), load_settings())  # type: ignore[arg-type]
    except (GradpilotError, ValueError, OSError) as e:
        message = getattr(e, "message", str(e))
        if as_json:
            console.file.write(json.dumps({"ok": False, "reason": message}) + "\n")
        else:
            err.print(Text.assemble(("invalid:", "red"), " ", str(message)))
        raise typer.Exit(1) from e
    data = report.to_dict() if hasattr(report, "to_dict") else dict(report.__dict__)
    if as_json:
        console.file.write(json.dumps(data, default=str) + "\n")
    elif report.ok:
        console.print(
            Text.assemble(
                ("ok", "green"),
                f": {data.get('parameters')} parameters, "
                f"output {data.get('output_shape')}, "
                f"loss {data.get('loss')}, {data.get('step_seconds')} s per step",
            )
        )
    else:
        err.print(Text.assemble(("invalid", "red"), f" ({data.get('stage')}): {report.reason}"))
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def demo(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Run the offline demo: a deep sigmoid CNN on digits, diagnosed and fixed offline."""
    from service.cli.demo import run_demo

    result = run_demo(as_json=as_json)
    if result["status"] != "succeeded":
        raise typer.Exit(1)


def main() -> None:
    from service.errors import GradpilotError

    try:
        app()
    except CliError as e:
        _error_line(e.message)
        sys.exit(e.exit_code)
    except GradpilotError as e:  # a settings or start-up problem: one line, not a traceback
        _error_line(e.message)
        sys.exit(2)


def _error_line(message: str) -> None:
    """``error: <message>`` on stderr as one line of literal text (the message may be the
    server's: it is never read as markup)."""
    err.print(Text.assemble(("error:", "red"), " ", message), soft_wrap=True)


if __name__ == "__main__":
    main()
