"""What tests create: model sources, run bodies, epoch summaries, jobs (rows, specs and
executor submissions), and a finished run written straight into the database.

The finished run is what the agent would have left: three generations (a redesign after
generation 0, a tune after generation 1), their epoch summaries, the decisions, two
architecture versions and the Markdown report with its figure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from service import auth
from service.db.models import Architecture, Decision, EpochSummary, Job, Run, utcnow
from service.executors import JobSubmission
from service.reports.report import build_report
from service.runs import sha256
from service.schemas.datasets import DatasetSpec
from service.schemas.hyperparameters import Hyperparameters
from service.schemas.jobs import JobSpec
from worker.model_loading import source_sha256

#: The bearer token of the API's one user in tests (``Settings(api_tokens=[USER_TOKEN])``).
USER_TOKEN = "test-user-token-0123456789"

# --------------------------------------------------------------------------- model sources

#: A two-layer MLP for any input shape (the API's, reports' and end-to-end tests).
TINY_MODEL = """
import torch
from torch import nn


def build_model(input_shape, num_classes):
    c, h, w = input_shape
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, 32), nn.ReLU(), nn.Linear(32, num_classes))
"""

#: A small CNN for 3x32x32 inputs, as a worker trains it (the worker's tests).
TINY_CNN = """
import torch
from torch import nn


class CNN(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, kernel_size=3, stride=4, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, num_classes)

    def forward(self, x):
        x = torch.relu(self.conv(x))
        return self.fc(torch.flatten(x, 1))
"""

# --------------------------------------------------------------------------- runs and jobs


def run_body(**overrides: Any) -> dict[str, Any]:
    """The body of ``POST /v1/runs``: the tiny model on synthetic data, two jobs of two epochs."""
    body: dict[str, Any] = {
        "name": "test",
        "model_source": TINY_MODEL,
        "dataset": {"name": "synthetic"},
        "hyperparameters": {"optimizer": "sgd", "learning_rate": 0.1},
        "budget": {"epochs_per_job": 2, "max_jobs": 2},
    }
    body.update(overrides)
    return body


def summary(epoch: int, **overrides: Any) -> dict[str, Any]:
    """One epoch summary as a worker posts it (losses falling, accuracy rising with ``epoch``)."""
    s: dict[str, Any] = {
        "epoch": epoch,
        "train_loss": 2.0 - 0.1 * epoch,
        "val_loss": 2.1 - 0.1 * epoch,
        "train_accuracy": 0.1 + 0.05 * epoch,
        "val_accuracy": 0.1 + 0.04 * epoch,
        "learning_rate": 0.1,
        "grad_total": {"mean": 1.0, "max": 2.0, "min": 0.5},
        "grad_layers": {"0.weight": {"mean": 0.5, "max": 1.0, "min": 0.1}},
        "weight_norms": {"0.weight": 3.0},
        "nonfinite_steps": 0,
        "steps": 10,
        "seconds": 1.5,
        "samples_per_second": 400.0,
    }
    s.update(overrides)
    return s


def add_job(
    client: TestClient, run_id: str, *, generation: int = 0, epoch_start: int = 0, epochs: int = 2
) -> tuple[str, str]:
    """Create a job row for a run (as the agent would) and return (job id, job token)."""
    sessions: sessionmaker[Session] = client.app.state.gradpilot.sessions  # type: ignore[attr-defined]
    with sessions() as session:
        job = Job(
            run_id=run_id,
            generation=generation,
            attempt=1,
            architecture_version=0,
            hyperparameters={"optimizer": "sgd", "learning_rate": 0.1},
            epoch_start=epoch_start,
            epochs=epochs,
            schedule_epoch=0,
            schedule_total_epochs=epochs,
            status="submitted",
        )
        session.add(job)
        session.flush()
        token = auth.mint_job_token(session, job.id)
        session.commit()
        return job.id, token


def make_spec(
    tmp_path: Path,
    job_id: str = "job-1",
    *,
    source: str = TINY_CNN,
    epochs: int = 2,
    epoch_start: int = 0,
    schedule_epoch: int = 0,
    schedule_total_epochs: int | None = None,
    dataset: DatasetSpec | None = None,
    hyperparameters: Hyperparameters | None = None,
    resume_checkpoint: str | None = None,
    resume_weights_only: bool = False,
    checkpoint_every: int = 1,
    seed: int = 0,
    score_test: bool = True,
) -> JobSpec:
    """The spec a worker fetches for one job: the tiny CNN on 240 synthetic samples."""
    return JobSpec(
        job_id=job_id,
        run_id="run-0123456789",
        generation=0,
        attempt=0,
        model_source=source,
        model_sha256=source_sha256(source),
        dataset=dataset or DatasetSpec(name="synthetic", synthetic_samples=240),
        hyperparameters=hyperparameters
        or Hyperparameters(optimizer="sgd", learning_rate=0.05, momentum=0.9, batch_size=32),
        epoch_start=epoch_start,
        epochs=epochs,
        schedule_epoch=schedule_epoch,
        schedule_total_epochs=schedule_total_epochs or epoch_start + epochs,
        resume_checkpoint=resume_checkpoint,
        resume_weights_only=resume_weights_only,
        artifact_prefix=(tmp_path / "artifacts").as_uri(),
        checkpoint_every=checkpoint_every,
        seed=seed,
        score_test=score_test,
    )


def submission(name: str, **overrides: Any) -> JobSubmission:
    """What the controller hands an executor for one job named ``name``."""
    values: dict[str, Any] = {
        "job_id": f"job-{name}",
        "run_id": "0123456789abcdef",
        "generation": 1,
        "attempt": 1,
        "name": name,
        "environment": {
            "GRADPILOT_API_URL": "http://api:8765",
            "GRADPILOT_JOB_ID": f"job-{name}",
            "GRADPILOT_JOB_TOKEN": f"token-{name}",
        },
        "timeout_s": 3600,
    }
    values.update(overrides)
    return JobSubmission(**values)


# --------------------------------------------------------------------------- a finished run

EPOCHS_PER_JOB = 4
#: generation -> (architecture version, learning rate)
GENERATIONS = {0: (0, 0.1), 1: (1, 0.1), 2: (1, 0.02)}
#: the epochs where the figure must mark a change, and their labels
EXPECTED_MARKERS = [(4, "g1 redesign"), (8, "g2 tune")]

REDESIGNED_MODEL = TINY_MODEL.replace(
    "nn.Linear(c * h * w, 32), nn.ReLU()",
    "nn.Linear(c * h * w, 64), nn.BatchNorm1d(64), nn.ReLU()",
).replace("nn.Linear(32, num_classes)", "nn.Linear(64, num_classes)")

REDESIGN_RATIONALE = (
    "The first layer's gradient norm is 1e-4 of the last layer's: the gradients vanish. "
    "Widen the hidden layer and normalise it. <script>alert('x')</script>"
)


@dataclass
class FinishedRun:
    run_id: str
    job_ids: dict[int, str]


def layer_stats(generation: int, epoch: int) -> dict[str, dict[str, float]]:
    """Gradient norms per tensor: vanishing towards the input in generation 0, healthy after."""
    names = (
        ["1.weight", "1.bias", "3.weight", "3.bias"]
        if generation == 0
        else ["1.weight", "1.bias", "2.weight", "2.bias", "4.weight", "4.bias"]
    )
    out = {}
    weights = [n for n in names if n.endswith("weight")]
    for name in names:
        depth = weights.index(name) / max(1, len(weights) - 1) if name in weights else 1.0
        base = 10 ** (-4 + 4 * depth) if generation == 0 else 0.2 + 0.3 * depth
        mean = base * (1 + 0.05 * math.sin(epoch))
        out[name] = {"mean": mean, "max": 2 * mean, "min": mean / 2}
    return out


def summary_row(job: Job, epoch: int) -> EpochSummary:
    gen = job.generation
    acc = 0.1 if gen == 0 else min(0.97, 0.35 + 0.07 * (epoch - 4))
    loss = 2.3 if gen == 0 else 2.0 * math.exp(-0.25 * (epoch - 3))
    return EpochSummary(
        job_id=job.id,
        run_id=job.run_id,
        epoch=epoch,
        train_loss=None if epoch == 2 else loss,
        val_loss=loss * 1.05,
        train_accuracy=acc,
        val_accuracy=acc * 0.97,
        learning_rate=job.hyperparameters["learning_rate"],
        grad_total={"mean": 0.5 + gen, "max": 1.5 + gen, "min": 0.1 + gen / 2},
        grad_layers=layer_stats(gen, epoch),
        weight_norms={"1.weight": 3.0},
        nonfinite_steps=1 if epoch == 2 else 0,
        steps=10,
        seconds=1.0,
        samples_per_second=500.0,
    )


def decision(run_id: str, seq: int, gen: int, action: str, rationale: str, **kw: Any) -> Decision:
    return Decision(
        run_id=run_id,
        sequence=seq,
        generation=gen,
        action=action,
        advisor="rules",
        rationale=rationale,
        diagnostics=kw.pop("diagnostics", {}),
        assessment=kw.pop("assessment", {}),
        changes=kw.pop("changes", {}),
        **kw,
    )


def add_generation(session: Session, run_id: str, gen: int, *, status: str = "succeeded") -> Job:
    version, lr = GENERATIONS[gen]
    job = Job(
        run_id=run_id,
        generation=gen,
        attempt=1,
        architecture_version=version,
        hyperparameters={"optimizer": "sgd", "learning_rate": lr},
        epoch_start=gen * EPOCHS_PER_JOB,
        epochs=EPOCHS_PER_JOB,
        schedule_epoch=0,
        schedule_total_epochs=EPOCHS_PER_JOB,
        status=status,
    )
    session.add(job)
    session.flush()
    return job


def finish_run(sessions: sessionmaker[Session], artifacts: Any, client: TestClient) -> FinishedRun:
    """Create the run through the API, then write what the agent would have written."""
    run_id = client.post("/v1/runs", json=run_body(name="vanishing sigmoid")).json()["id"]
    job_ids: dict[int, str] = {}
    with sessions() as session:
        run = session.get(Run, run_id)
        assert run is not None
        for gen in GENERATIONS:
            job = add_generation(session, run_id, gen)
            job_ids[gen] = job.id
            rows = [
                summary_row(job, e) for e in range(job.epoch_start, job.epoch_start + job.epochs)
            ]
            session.add_all(rows)
            job.best_val_accuracy = max(r.val_accuracy for r in rows)
            job.finished_at = utcnow()
            if gen == 0:
                session.add(
                    Architecture(
                        run_id=run_id,
                        version=1,
                        parent_version=0,
                        source=REDESIGNED_MODEL,
                        sha256=sha256(REDESIGNED_MODEL),
                        rationale=REDESIGN_RATIONALE,
                        author="rules",
                        parameters=12_345,
                    )
                )
                session.add(
                    decision(
                        run_id,
                        0,
                        0,
                        "redesign",
                        REDESIGN_RATIONALE,
                        architecture_version=1,
                        diagnostics={
                            "issues": ["vanishing_gradients", "near_chance"],
                            "notes": ["first/last weight gradient ratio 1.0e-04"],
                            "layers": [{"name": "1.weight"}],
                        },
                        changes={"architecture_version": 1},
                    )
                )
            elif gen == 1:
                session.add(
                    decision(
                        run_id,
                        1,
                        1,
                        "tune",
                        "Validation loss oscillates: lower the learning rate.",
                        diagnostics={"issues": ["grad_spikes"], "notes": []},
                        changes={"learning_rate": {"value": 0.02, "reason": "loss oscillates"}},
                    )
                )
        session.add(
            decision(
                run_id,
                2,
                2,
                "finish",
                "target accuracy reached",
                diagnostics={"issues": ["target_reached"]},
            )
        )
        run.status = "succeeded"
        run.baseline_val_accuracy = 0.097
        run.best_val_accuracy = max(
            s.val_accuracy for s in session.query(EpochSummary).filter_by(run_id=run_id)
        )
        run.final_test_accuracy = 0.9
        session.flush()
        markdown = build_report(session, run, artifacts).replace(
            "<!-- summary -->", "The network learned once its gradients reached the first layer.", 1
        )
        run.report_uri = artifacts.put(
            f"runs/{run_id}/report.md", markdown.encode(), "text/markdown"
        )
        session.commit()
    return FinishedRun(run_id, job_ids)
