"""``gradpilot infra``: create the AWS side with CloudFormation and print the settings it needs.

Mounted by ``service.cli.main`` as ``gradpilot infra``; see ``infra/README.md``.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from service.errors import GradpilotError
from service.infra import (
    DEFAULT_STACK_NAME,
    StackEvent,
    deploy_stack,
    parse_params,
    read_outputs,
    settings_from_outputs,
)

app = typer.Typer(
    help="Create the AWS side (Batch on g6, S3, IAM, logs, ECR) with CloudFormation.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
out = Console(soft_wrap=True)
err = Console(stderr=True)

EndpointOption = Annotated[
    str | None,
    typer.Option(
        "--endpoint-url",
        envvar="GRADPILOT_AWS_ENDPOINT_URL",
        help="AWS endpoint for every service (moto: http://localhost:5000); unset on AWS.",
    ),
]
StackOption = Annotated[
    str, typer.Option("--stack-name", help="CloudFormation stack name (lowercase).")
]
RegionOption = Annotated[
    str,
    typer.Option("--region", envvar=["GRADPILOT_AWS_REGION", "AWS_REGION", "AWS_DEFAULT_REGION"]),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print {stack, outputs, settings} as one JSON object.")
]


def _print_event(event: StackEvent) -> None:
    colour = "red" if "FAILED" in event.status or "ROLLBACK" in event.status else "green"
    if "IN_PROGRESS" in event.status:
        colour = "yellow"
    reason = f" - {event.reason}" if event.reason else ""
    err.print(
        f"  [{colour}]{event.status:<22}[/] {event.logical_id} ({event.resource_type}){reason}",
        highlight=False,
    )


def _print_settings(stack: str, outputs: dict[str, str], settings: dict[str, str], as_json: bool):
    if as_json:
        out.file.write(
            json.dumps({"stack": stack, "outputs": outputs, "settings": settings}, indent=2) + "\n"
        )
        return
    err.print(f"[green]stack {stack} is ready.[/] The service needs these settings:")
    for key, value in settings.items():
        out.file.write(f"export {key}={shlex.quote(value)}\n")
    if "RepositoryUri" in outputs:
        err.print(f"Push the worker image to {outputs['RepositoryUri']}:latest (infra/README.md).")


@app.command()
def deploy(
    endpoint_url: EndpointOption = None,
    stack_name: StackOption = DEFAULT_STACK_NAME,
    region: RegionOption = "us-east-1",
    param: Annotated[
        list[str] | None,
        typer.Option(
            "--param",
            "-p",
            help="Template parameter KEY=VALUE (repeatable), e.g. UseSpot=false, MaxVcpus=96, "
            "ImageUri=..., VpcId=vpc-..., SubnetIds=subnet-a,subnet-b.",
        ),
    ] = None,
    template: Annotated[
        Path | None, typer.Option("--template", help="Template file; default infra/gradpilot.yaml.")
    ] = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Wait for the stack.")] = True,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the stack.")] = 3600.0,
    as_json: JsonOption = False,
) -> None:
    """Create or update the stack, wait for it, and print the GRADPILOT_* settings."""
    try:
        params = parse_params(param or [])
        if not as_json:
            where = endpoint_url or f"AWS {region}"
            err.print(f"Deploying stack [bold]{stack_name}[/] to {where} ...")
        outputs = deploy_stack(
            params,
            endpoint_url=endpoint_url,
            stack_name=stack_name,
            region=region,
            wait=wait,
            template_path=template,
            timeout_s=timeout,
            on_event=None if as_json else _print_event,
        )
    except GradpilotError as e:
        err.print(f"[red]error:[/] {e.message}", highlight=False)
        raise typer.Exit(1) from e
    if not wait:
        err.print(
            f"stack {stack_name} is being deployed; `gradpilot infra settings` prints "
            "the settings once it is ready"
        )
        return
    settings = settings_from_outputs(outputs, endpoint_url=endpoint_url, region=region)
    _print_settings(stack_name, outputs, settings, as_json)


@app.command("settings")
def show_settings(
    endpoint_url: EndpointOption = None,
    stack_name: StackOption = DEFAULT_STACK_NAME,
    region: RegionOption = "us-east-1",
    as_json: JsonOption = False,
) -> None:
    """Print the GRADPILOT_* settings of an already deployed stack."""
    try:
        outputs = read_outputs(endpoint_url=endpoint_url, stack_name=stack_name, region=region)
        settings = settings_from_outputs(outputs, endpoint_url=endpoint_url, region=region)
    except (GradpilotError, KeyError) as e:
        message = getattr(e, "message", f"the stack has no output {e}")
        err.print(f"[red]error:[/] {message}", highlight=False)
        raise typer.Exit(1) from e
    _print_settings(stack_name, outputs, settings, as_json)


if __name__ == "__main__":  # python -m service.cli.infra (used where `gradpilot` is not on PATH)
    app()
