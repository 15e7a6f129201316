"""Schemas of training jobs: the spec a worker fetches and what it reports back."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from service.schemas.datasets import DatasetSpec
from service.schemas.fields import AwareTime, Count, Int32, Text
from service.schemas.hyperparameters import Hyperparameters
from service.schemas.statuses import ErrorKind, JobStatus


class JobSpec(BaseModel):
    """Everything a worker needs to train one segment; fetched from ``GET /v1/jobs/{id}/spec``."""

    job_id: str
    run_id: str
    generation: int
    attempt: int
    model_source: str
    model_sha256: str
    dataset: DatasetSpec
    hyperparameters: Hyperparameters
    epoch_start: int = Field(description="Run-wide index of the segment's first epoch.")
    epochs: int = Field(description="Epochs in this segment.")
    schedule_epoch: int = Field(
        0, description="Position in the learning-rate schedule at the segment's start."
    )
    schedule_total_epochs: int = Field(
        description="Planned length of the schedule (cosine and onecycle span segments)."
    )
    resume_checkpoint: str | None = Field(
        None, description="Checkpoint URL to start from when this job has none of its own."
    )
    resume_weights_only: bool = Field(
        False, description="Load only the weights (a new optimizer or schedule) from it."
    )
    artifact_prefix: str = Field(description="URL prefix where the job writes checkpoints.")
    checkpoint_every: int = Field(5, ge=1, description="Checkpoint every this many epochs.")
    seed: int
    score_test: bool = Field(True, description="Score the test split at the end (report only).")


class JobPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    run_id: str
    generation: int
    attempt: int
    architecture_version: int
    hyperparameters: Hyperparameters
    epoch_start: int
    epochs: int
    status: JobStatus
    external_id: str | None
    error_kind: ErrorKind | None
    exit_code: int | None
    error_message: str | None
    traceback: str | None
    checkpoint_uri: str | None
    checkpoint_epoch: int | None
    best_val_accuracy: float | None
    test_accuracy: float | None
    log_location: str | None
    isolation: str | None = None
    created_at: AwareTime
    submitted_at: AwareTime | None
    started_at: AwareTime | None
    finished_at: AwareTime | None
    heartbeat_at: AwareTime | None


class CheckpointIn(BaseModel):
    """A checkpoint the worker has written to the artifact store."""

    model_config = ConfigDict(extra="forbid")

    uri: Text = Field(min_length=1, max_length=2000, description="URL of the checkpoint object.")
    epoch: Count = Field(description="Run-wide epoch after which it was taken.")


class HeartbeatIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    epoch: Count | None = Field(None, description="Epoch the worker is training.")


class JobFinish(BaseModel):
    """How a job ended, posted once by the worker before it exits."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["succeeded", "failed"]
    error_kind: ErrorKind | None = Field(
        None, description="code (the model's code raised) or infrastructure (retryable)."
    )
    exit_code: Int32 | None = Field(None, description="The worker's exit status.")
    message: Text | None = Field(None, max_length=20_000)
    traceback: Text | None = Field(None, max_length=200_000)
    test_accuracy: float | None = Field(None, ge=0, le=1)
    isolation: str | None = Field(
        None,
        max_length=300,
        description="The isolation the trainer ran with: 'full: …' or 'weak (no … isolation): "
        "…' followed by the layers (see docs/security.md).",
    )


class JobsPublic(BaseModel):
    data: list[JobPublic]
    count: int
