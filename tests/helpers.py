"""Builders shared by tests: a valid model, a run body, a job with a token, a summary."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from service import auth
from service.db.models import Job

TINY_MODEL = """
import torch
from torch import nn


def build_model(input_shape, num_classes):
    c, h, w = input_shape
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, 32), nn.ReLU(), nn.Linear(32, num_classes))
"""


def run_body(**overrides: Any) -> dict[str, Any]:
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
    sessions = client.app.state.gradpilot.sessions  # type: ignore[attr-defined]
    with sessions() as session:
        session: Session
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
