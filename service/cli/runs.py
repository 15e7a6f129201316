"""``gradpilot runs``: create, list, show, watch, cancel, approve, reject, report, figure, diff."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

from service.cli import render
from service.cli.client import ApiClient, CliError
from service.cli.ids import resolve_run_id

runs_app = typer.Typer(help="Create and inspect tuning runs.", no_args_is_help=True)
console = Console()

UrlOpt = Annotated[str | None, typer.Option("--url", help="Server URL (GRADPILOT_URL).")]
TokenOpt = Annotated[str | None, typer.Option("--token", help="Bearer token (GRADPILOT_TOKEN).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]


def _client(url: str | None, token: str | None) -> ApiClient:
    return ApiClient(url, token)


def _writable(output: Path) -> Path:
    """Refuse an output file whose folder is missing before asking the server for anything."""
    folder = output.parent
    if not folder.is_dir():
        raise CliError(
            f"cannot write {output}: the folder {folder} does not exist; create it or pick "
            f"another path, for example -o {output.name}",
            2,
        )
    return output


def _write(output: Path, data: bytes) -> None:
    try:
        output.write_bytes(data)
    except OSError as e:
        raise CliError(f"cannot write {output}: {e.strerror}; pick another path with -o", 2) from e


def _read_model(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CliError(f"cannot read the model file {path}: {e.strerror}", 2) from e
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CliError(
            f"{path} is not UTF-8 text (byte {e.start}); save the model file as UTF-8", 2
        ) from e


def wait_for_run(
    client: ApiClient, run_id: str, *, poll_s: float = 1.0, quiet: bool = False
) -> dict[str, Any]:
    """Poll until the run ends, showing a one-line status while it runs."""
    last = None
    with console.status("waiting for the run…", spinner="dots") as status:
        while True:
            run = client.get(f"/v1/runs/{run_id}")
            line = (
                f"run {run_id[:12]}: {run['status']}, {run['jobs']} jobs, {run['epochs']} epochs, "
                f"best {render.pct(run.get('best_val_accuracy'))}"
            )
            if line != last and not quiet:
                status.update(line)
                last = line
            if run["status"] in render.TERMINAL:
                return run
            time.sleep(poll_s)


@runs_app.command("create")
def create(
    model: Annotated[
        Path,
        typer.Argument(
            help="The model file: build_model(input_shape, num_classes) or a CNN class."
        ),
    ],
    dataset: Annotated[
        str, typer.Option(help="digits, cifar10, cifar100, synthetic or npz.")
    ] = "digits",
    npz_uri: Annotated[
        str | None, typer.Option(help="Path or s3:// URL of the .npz (dataset npz).")
    ] = None,
    input_shape: Annotated[
        str | None, typer.Option(help="C,H,W of one sample (dataset npz).")
    ] = None,
    num_classes: Annotated[
        int | None, typer.Option(help="Number of classes (dataset npz).")
    ] = None,
    data_dir: Annotated[
        str | None, typer.Option(help="Folder of torchvision's CIFAR files.")
    ] = None,
    name: Annotated[str | None, typer.Option(help="A label for the run.")] = None,
    epochs_per_job: Annotated[
        int, typer.Option(help="Epochs per job (the analysis interval).")
    ] = 10,
    max_jobs: Annotated[int, typer.Option(help="Most training jobs.")] = 8,
    max_total_epochs: Annotated[int | None, typer.Option(help="Most epochs over all jobs.")] = None,
    target_accuracy: Annotated[
        float | None, typer.Option(help="Stop at this validation accuracy (0-1).")
    ] = None,
    patience: Annotated[
        int, typer.Option(help="Stop after this many assessments without improvement.")
    ] = 3,
    optimizer: Annotated[str, typer.Option(help="sgd, adam, adamw or rmsprop.")] = "sgd",
    lr: Annotated[float, typer.Option(help="Learning rate.")] = 0.1,
    momentum: Annotated[float, typer.Option(help="Momentum (sgd, rmsprop).")] = 0.0,
    weight_decay: Annotated[float, typer.Option(help="Weight decay.")] = 0.0,
    batch_size: Annotated[int, typer.Option(help="Batch size.")] = 64,
    schedule: Annotated[str, typer.Option(help="constant, step, cosine or onecycle.")] = "constant",
    clip: Annotated[float, typer.Option(help="Gradient clipping norm (0: off).")] = 0.0,
    advisor: Annotated[
        str | None, typer.Option(help="rules, or bedrock:<model id>, or provider:model.")
    ] = None,
    approval: Annotated[str, typer.Option(help="auto, architecture or always.")] = "auto",
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    gpus: Annotated[int, typer.Option(help="GPUs per job (AWS Batch).")] = 1,
    wait: Annotated[bool, typer.Option("--wait", help="Block until the run ends.")] = False,
    watch: Annotated[
        bool, typer.Option("--watch", help="Show the live view until the run ends.")
    ] = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a run from a model file."""
    dataset_spec: dict[str, Any] = {"name": dataset}
    if npz_uri:
        dataset_spec["uri"] = npz_uri
    if input_shape:
        try:
            dataset_spec["input_shape"] = [int(x) for x in input_shape.split(",")]
        except ValueError as e:
            raise CliError("--input-shape must look like 3,32,32", 2) from e
    if num_classes:
        dataset_spec["num_classes"] = num_classes
    if data_dir:
        dataset_spec["data_dir"] = data_dir
    body = {
        "name": name,
        "model_source": _read_model(model),
        "dataset": dataset_spec,
        "hyperparameters": {
            "optimizer": optimizer,
            "learning_rate": lr,
            "momentum": momentum,
            "weight_decay": weight_decay,
            "batch_size": batch_size,
            "lr_schedule": schedule,
            "gradient_clip": clip,
        },
        "budget": {
            "epochs_per_job": epochs_per_job,
            "max_jobs": max_jobs,
            "max_total_epochs": max_total_epochs,
            "target_accuracy": target_accuracy,
            "patience": patience,
        },
        "advisor": advisor,
        "approval": approval,
        "seed": seed,
        "resources": {"gpus": gpus},
    }
    client = _client(url, token)
    run = client.post("/v1/runs", body)
    if watch:
        from service.cli.watch import watch_run

        run = watch_run(client, run["id"], console)
    elif wait:
        if not as_json:
            console.print(Text.assemble("created run ", (str(run["id"]), "bold")))
        run = wait_for_run(client, run["id"], quiet=as_json)
    if as_json:
        render.print_json(console, run)
    else:
        render.show_run(console, run)
    if run["status"] == "failed":
        raise typer.Exit(1)


@runs_app.command("list")
def list_(
    status: Annotated[str | None, typer.Option(help="Only runs with this status.")] = None,
    limit: Annotated[int, typer.Option(help="Most runs to show.")] = 50,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List runs, newest first."""
    params: dict[str, Any] = {"limit": limit}
    if status:
        params["status"] = status
    data = _client(url, token).get("/v1/runs", params=params)
    if as_json:
        render.print_json(console, data)
    else:
        console.print(render.runs_table(data["data"]))


@runs_app.command("show")
def show(
    run_id: Annotated[str, typer.Argument(help="Run id.")],
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show a run, its scores and its decisions."""
    client = _client(url, token)
    run = client.get(f"/v1/runs/{resolve_run_id(client, run_id)}")
    render.print_json(console, run) if as_json else render.show_run(console, run)


@runs_app.command("watch")
def watch(
    run_id: Annotated[str, typer.Argument(help="Run id.")],
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Follow a run live until it ends."""
    from service.cli.watch import watch_run

    client = _client(url, token)
    run = watch_run(client, resolve_run_id(client, run_id), console)
    if run["status"] == "failed":
        raise typer.Exit(1)


@runs_app.command("cancel")
def cancel(
    run_id: Annotated[str, typer.Argument(help="Run id.")],
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Cancel a run; its active job is stopped."""
    client = _client(url, token)
    run_id = resolve_run_id(client, run_id)
    run = client.post(f"/v1/runs/{run_id}/cancel")
    render.print_json(console, run) if as_json else console.print(Text(f"run {run_id} cancelled"))


@runs_app.command("approve")
def approve(
    run_id: Annotated[str, typer.Argument(help="Run id.")],
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Approve the change a paused run proposes."""
    client = _client(url, token)
    run_id = resolve_run_id(client, run_id)
    run = client.post(f"/v1/runs/{run_id}/approve")
    render.print_json(console, run) if as_json else console.print(
        Text(f"approved; run {run_id} goes on")
    )


@runs_app.command("reject")
def reject(
    run_id: Annotated[str, typer.Argument(help="Run id.")],
    feedback: Annotated[str, typer.Option(help="What the advisor should do instead.")] = "",
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Reject the proposed change; the feedback reaches the advisor's next proposal."""
    client = _client(url, token)
    run = client.post(f"/v1/runs/{resolve_run_id(client, run_id)}/reject", {"feedback": feedback})
    render.print_json(console, run) if as_json else console.print(
        "rejected; the advisor will propose again"
    )


@runs_app.command("report")
def report(
    run_id: Annotated[str, typer.Argument(help="Run id.")],
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Write to this file.")
    ] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Print (or save) the run's Markdown report."""
    if output:
        _writable(output)
    client = _client(url, token)
    text = client.request("GET", f"/v1/runs/{resolve_run_id(client, run_id)}/report").text
    if output:
        _write(output, text.encode("utf-8"))
        console.print(Text(f"report written to {output}"))
    else:
        console.file.write(text)


@runs_app.command("figure")
def figure(
    run_id: Annotated[str, typer.Argument(help="Run id.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="PNG file to write.")] = Path(
        "run.png"
    ),
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Save the four-panel figure (loss, accuracy, total and per-layer gradient norms)."""
    _writable(output)
    client = _client(url, token)
    _write(output, client.get_bytes(f"/v1/runs/{resolve_run_id(client, run_id)}/figure.png"))
    console.print(Text(f"figure written to {output}"))


@runs_app.command("diff")
def diff(
    run_id: Annotated[str, typer.Argument(help="Run id.")],
    version_a: Annotated[int | None, typer.Argument(help="Older architecture version.")] = None,
    version_b: Annotated[int | None, typer.Argument(help="Newer architecture version.")] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Unified diff between two architecture versions, and why the newer one was written."""
    params = {k: v for k, v in (("a", version_a), ("b", version_b)) if v is not None}
    client = _client(url, token)
    data = client.get(f"/v1/runs/{resolve_run_id(client, run_id)}/diff", params=params)
    if as_json:
        render.print_json(console, data)
        return
    console.print(
        Text.assemble(
            (f"v{data['from_version']} → v{data['to_version']}", "bold"),
            ": ",
            str(data["rationale"]),
        )
    )
    console.print(render.plain(data["diff"] or "(identical)"))
