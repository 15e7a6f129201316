"""One gradpilot run through the embedded stack (API + controller + local executor), for the
tuning benchmark: real workers train, the advisor decides, and the run's epoch summaries say
how many epochs it took to reach the target."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

USER_TOKEN = "bench-tuning-user-token-0123456789"


def llm_advisor_spec() -> tuple[str | None, str]:
    """(advisor spec, why) — an LLM advisor only when AWS credentials are configured."""
    spec = os.environ.get(
        "GRADPILOT_BENCH_LLM_ADVISOR", "bedrock:us.anthropic.claude-sonnet-4-5-20250929-v1:0"
    )
    try:
        import boto3

        credentials = boto3.session.Session().get_credentials()
    except Exception as e:  # noqa: BLE001 - a broken AWS configuration means "no LLM run"
        return None, f"AWS credentials could not be read ({type(e).__name__})"
    if credentials is None:
        return None, "no AWS credentials are configured: the LLM advisor is skipped"
    return spec, f"AWS credentials found: {spec}"


def run(
    *,
    source: str,
    dataset: dict[str, Any],
    hyperparameters: dict[str, Any],
    budget: dict[str, Any],
    seed: int,
    advisor: str = "rules",
    timeout_s: float = 1800.0,
) -> dict[str, Any]:
    """Run gradpilot on one problem; returns its jobs, per-epoch validation accuracy in
    training order, decisions and wall time."""
    from service.cli.client import ApiClient
    from service.server import embedded_server
    from service.settings import Settings
    from tests.support.ports import free_port

    with tempfile.TemporaryDirectory(prefix="gp-bench-tuning-") as tmp:
        settings = Settings(
            home=Path(tmp) / "home",
            api_tokens=[USER_TOKEN],
            port=free_port(),
            controller_interval_s=0.5,
            local_max_parallel=1,
            sandbox_timeout_s=120,
        )
        started = time.perf_counter()
        with embedded_server(settings) as url:
            api = ApiClient(url, USER_TOKEN, timeout=120)
            created = api.post(
                "/v1/runs",
                {
                    "name": "tuning benchmark",
                    "model_source": source,
                    "dataset": dataset,
                    "hyperparameters": hyperparameters,
                    "budget": budget,
                    "advisor": advisor,
                    "seed": seed,
                },
            )
            run_id = created["id"]
            deadline = time.monotonic() + timeout_s
            while True:
                status = api.get(f"/v1/runs/{run_id}")
                if status["status"] in ("succeeded", "failed", "cancelled"):
                    break
                if time.monotonic() > deadline:
                    api.post(f"/v1/runs/{run_id}/cancel", {})
                    raise TimeoutError(f"the gradpilot run did not end in {timeout_s:g} s")
                time.sleep(0.5)
            wall = time.perf_counter() - started
            jobs = api.get(f"/v1/runs/{run_id}/jobs")["data"]
            metrics = api.get(f"/v1/runs/{run_id}/metrics")
    order = {j["id"]: (j["generation"], j["attempt"]) for j in jobs}
    metrics.sort(key=lambda m: (order.get(m["job_id"], (0, 0)), m["epoch"]))
    return {
        "status": status["status"],
        "error": status.get("error"),
        "wall_s": wall,
        # Training and validation time inside the workers; the rest of the wall time is the
        # control plane, worker start-up (a process per job), checkpoints and the sandbox.
        "train_s": sum(m["seconds"] for m in metrics),
        "val_accuracy_by_epoch": [m["val_accuracy"] for m in metrics],
        "jobs": [
            {
                "generation": j["generation"],
                "attempt": j["attempt"],
                "architecture_version": j["architecture_version"],
                "status": j["status"],
                "epochs": sum(1 for m in metrics if m["job_id"] == j["id"]),
                "best_val_accuracy": j["best_val_accuracy"],
                "optimizer": j["hyperparameters"]["optimizer"],
                "learning_rate": j["hyperparameters"]["learning_rate"],
            }
            for j in jobs
        ],
        "decisions": [
            {"action": d["action"], "advisor": d.get("advisor"), "rationale": d["rationale"]}
            for d in status.get("decisions", [])
        ],
        "final_test_accuracy": status.get("final_test_accuracy"),
    }
