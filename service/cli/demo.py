"""``gradpilot demo``: the whole loop on one machine, offline, in a few minutes.

A deep plain CNN with sigmoid activations (``examples/flawed_digits.py``) is trained on
scikit-learn's digits with SGD at learning rate 0.1. Its first layer's gradients are about
1e-7 of its last layer's, so it stays near chance. The rules advisor reads that from the
gradient norms, rewrites the architecture, tunes the optimizer, and trains again.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.text import Text

from service.server import embedded_server, free_port
from service.settings import Settings, load_settings

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


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
    settings = settings or load_settings()
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
            Text.assemble(
                ("gradpilot demo", "bold"),
                f": run {run['id']} — a deep sigmoid CNN on digits, SGD lr 0.1",
            )
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
        Text.assemble(
            "validation accuracy: baseline ",
            (pct(result["baseline_val_accuracy"]), "bold"),
            " → final ",
            (pct(final), "bold green"),
            f" (test {pct(result['final_test_accuracy'])}) in {result['seconds']} s, "
            f"{len(jobs)} jobs",
        )
    )
    console.print(Text(f"report: {result['report']}"))
    console.print(Text(f"dashboard: {result['dashboard']}"))
    return result
