"""Schemas of runs: what a user sends to create one, and what the API shows of it."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from service.schemas.datasets import DatasetSpec
from service.schemas.decisions import DecisionPublic
from service.schemas.fields import AwareTime, Text
from service.schemas.hyperparameters import Hyperparameters
from service.schemas.statuses import RunStatus

#: model sources larger than this are refused (a model file is code, not weights).
MAX_MODEL_SOURCE_BYTES = 256 * 1024

ApprovalPolicy = Literal["auto", "architecture", "always"]


class Budget(BaseModel):
    """Limits that end a run; whichever is reached first routes the agent to ``finish``."""

    model_config = ConfigDict(extra="forbid")

    epochs_per_job: int = Field(10, ge=1, le=1000, description="Epochs per job (the segment).")
    max_jobs: int = Field(8, ge=1, le=200, description="Most training jobs in the run.")
    max_total_epochs: int | None = Field(
        None, ge=1, le=100_000, description="Most epochs over all jobs (default: unlimited)."
    )
    target_accuracy: float | None = Field(
        None, gt=0, le=1, description="Finish once validation accuracy reaches this."
    )
    patience: int = Field(
        3, ge=1, le=50, description="Finish after this many assessments without improvement."
    )
    max_retries: int = Field(3, ge=0, le=20, description="Infrastructure retries per job.")
    max_repairs: int = Field(3, ge=0, le=20, description="Code-error repairs per run.")


class Resources(BaseModel):
    """What one job asks of the executor (used by AWS Batch; the local executor ignores GPUs)."""

    model_config = ConfigDict(extra="forbid")

    gpus: int = Field(1, ge=0, le=8, description="GPUs per job; more than 1 runs torchrun (DDP).")
    vcpus: int = Field(4, ge=1, le=192, description="vCPUs per job.")
    memory_mib: int = Field(15000, ge=512, le=768_000, description="Memory per job in MiB.")


class RunCreate(BaseModel):
    """Everything needed to start tuning one model on one data set."""

    model_config = ConfigDict(extra="forbid")

    name: Text | None = Field(None, max_length=200, description="A label for people.")
    model_source: str = Field(
        description="Python source of the model module (the model contract: build_model(...) "
        "or a CNN class; optional loss_function). At most 256 KiB of UTF-8."
    )
    dataset: DatasetSpec
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    budget: Budget = Field(default_factory=Budget)
    advisor: Text | None = Field(
        None,
        max_length=300,
        description="'rules', or 'bedrock:<model id or inference profile>', or any "
        "'provider:model' LangChain spec. Default: the server's setting.",
    )
    approval: ApprovalPolicy = Field(
        "auto", description="auto, architecture (pause before a new architecture) or always."
    )
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Seed for data splits and init.")
    resources: Resources = Field(default_factory=Resources)

    @field_validator("model_source")
    @classmethod
    def _source_size(cls, v: str) -> str:
        size = len(v.encode("utf-8", errors="surrogatepass"))
        if size > MAX_MODEL_SOURCE_BYTES:
            raise ValueError(
                f"model source is {size} bytes; the limit is {MAX_MODEL_SOURCE_BYTES} bytes "
                "(send code, not weights)"
            )
        if not v.strip():
            raise ValueError("model source is empty")
        if "\x00" in v:
            raise ValueError("model source contains NUL bytes; send a UTF-8 text file")
        return v

    @model_validator(mode="after")
    def _epochs(self) -> RunCreate:
        b = self.budget
        if b.max_total_epochs is not None and b.max_total_epochs < b.epochs_per_job:
            raise ValueError("budget.max_total_epochs must be at least budget.epochs_per_job")
        return self


class ApprovalRequest(BaseModel):
    """A proposal waiting for the user (approval policy ``architecture`` or ``always``)."""

    action: str = Field(description="The action that waits: tune or redesign.")
    rationale: str
    changes: dict[str, Any] = Field(default_factory=dict)
    diff: str | None = Field(None, description="Unified diff of the proposed architecture.")


class RejectBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    feedback: Text = Field("", max_length=10_000, description="What the advisor should do instead.")


class RunSummary(BaseModel):
    """A run as listed."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str | None
    status: RunStatus
    dataset: str = Field(description="Dataset name.")
    advisor: str
    approval: ApprovalPolicy
    jobs: int = Field(description="Jobs so far.")
    epochs: int = Field(description="Epochs trained so far (all jobs).")
    best_val_accuracy: float | None
    baseline_val_accuracy: float | None = Field(description="Best validation accuracy of job 0.")
    created_at: AwareTime
    updated_at: AwareTime
    error: str | None = Field(None, description="Why the run failed, when it did.")


class RunPublic(RunSummary):
    """A run with its settings, current state and decisions."""

    dataset_spec: DatasetSpec
    hyperparameters: Hyperparameters = Field(description="The hyperparameters of the latest job.")
    isolation: str | None = Field(
        None, description="The isolation level the latest finished job's trainer ran with."
    )
    budget: Budget
    resources: Resources
    seed: int
    architecture_version: int = Field(description="Version of the current architecture.")
    final_test_accuracy: float | None = Field(
        None, description="Test-split accuracy of the final model (scored for the report only)."
    )
    pending_approval: ApprovalRequest | None = None
    report_uri: str | None = Field(None, description="Where the Markdown report is stored.")
    input_tokens: int = 0
    output_tokens: int = 0
    decisions: list[DecisionPublic] = Field(default_factory=list)


class RunsPublic(BaseModel):
    data: list[RunSummary]
    count: int
