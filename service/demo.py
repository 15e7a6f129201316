"""``gradpilot demo``: the whole loop on one machine, offline, in a few minutes.

A deep plain CNN with sigmoid activations (``examples/flawed_digits.py``) is trained on
scikit-learn's digits with SGD at learning rate 0.1. Its first layer's gradients are about
1e-7 of its last layer's, so it stays near chance. The rules advisor reads that from the
gradient norms, rewrites the architecture, tunes the optimizer, and trains again.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console

from service.settings import Settings

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def embedded_server(settings: Settings) -> Iterator[str]:
    """API + controller + local executor in this process, on ``settings.port``; yields the URL."""
    import uvicorn

    from service.api.app import build_state, create_app
    from service.db.migrate import upgrade
    from service.server import control_plane

    settings.ensure_home()
    upgrade(settings.resolved_database_url)
    state = build_state(settings)
    app = create_app(settings, state=state)
    server = uvicorn.Server(
        uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, name="api", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError(f"the API did not start on port {settings.port}")
        time.sleep(0.05)
    try:
        with control_plane(settings, state.sessions, state.artifacts):
            yield settings.resolved_public_url
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        state.engine.dispose()


def demo_body(model_source: str) -> dict[str, Any]:
    return {
        "name": "demo: deep sigmoid CNN on digits",
        "model_source": model_source,
        "dataset": {"name": "digits"},
        "hyperparameters": {
            "optimizer": "sgd",
            "learning_rate": 0.1,
            "momentum": 0.0,
            "batch_size": 64,
        },
        "budget": {"epochs_per_job": 6, "max_jobs": 6, "target_accuracy": 0.97, "patience": 3},
        "advisor": "rules",
        "approval": "auto",
        "seed": 0,
    }


def run_demo(*, as_json: bool = False, settings: Settings | None = None) -> dict[str, Any]:
    from service.cli.client import ApiClient
    from service.cli.render import decisions_table, pct
    from service.cli.runs import wait_for_run

    console = Console(stderr=as_json)
    settings = settings or Settings()
    settings = settings.model_copy(update={"port": free_port(), "public_url": None})
    source = (EXAMPLES / "flawed_digits.py").read_text()
    t0 = time.monotonic()
    with embedded_server(settings) as url:
        client = ApiClient(
            url, (settings.api_tokens[0].get_secret_value() if settings.api_tokens else None)
        )
        if not client.token:
            client = ApiClient(url, settings.token_file.read_text().strip())
        run = client.post("/v1/runs", demo_body(source))
        console.print(
            f"[bold]gradpilot demo[/]: run {run['id']} — a deep sigmoid CNN on digits, SGD lr 0.1"
        )
        run = wait_for_run(client, run["id"], quiet=False)
        jobs = client.get(f"/v1/runs/{run['id']}/jobs")["data"]
    dashboard = settings.model_copy(update={"public_url": None, "port": 8765}).resolved_public_url
    final = next(
        (j["best_val_accuracy"] for j in reversed(jobs) if j["status"] == "succeeded"), None
    )
    result = {
        "run_id": run["id"],
        "status": run["status"],
        "baseline_val_accuracy": run.get("baseline_val_accuracy"),
        "final_val_accuracy": final,
        "best_val_accuracy": run.get("best_val_accuracy"),
        "final_test_accuracy": run.get("final_test_accuracy"),
        "decisions": [
            {"action": d["action"], "generation": d["generation"], "rationale": d["rationale"]}
            for d in run["decisions"]
        ],
        "jobs": len(jobs),
        "seconds": round(time.monotonic() - t0, 1),
        "report": run.get("report_uri"),
        "dashboard": f"run `gradpilot serve --embedded` and open {dashboard}/ui/runs/{run['id']}",
    }
    if as_json:
        print(json.dumps(result, indent=2))
        return result
    console.print(decisions_table(run["decisions"]))
    console.print(
        f"validation accuracy: baseline [bold]{pct(result['baseline_val_accuracy'])}[/] → final "
        f"[bold green]{pct(final)}[/] (test {pct(result['final_test_accuracy'])}) "
        f"in {result['seconds']} s, "
        f"{len(jobs)} jobs"
    )
    console.print(f"report: {result['report']}")
    console.print(f"dashboard: {result['dashboard']}")
    return result
