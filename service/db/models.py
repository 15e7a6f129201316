"""The service's tables. Alembic (``migrations/``) owns the schema; this module describes it.

JSON columns hold structured values that are read whole (hyperparameters, diagnostics,
per-tensor gradient statistics); one row per epoch summary keeps ingest to one insert.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

JSONType = JSON().with_variant(JSONB(), "postgresql")


#: The built-in administrator: the owner of every token in ``GRADPILOT_API_TOKENS`` and of the
#: embedded server's token file, and of the runs that existed before users did.
BUILTIN_ADMIN_ID = "admin"


def new_id() -> str:
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSONType, list[Any]: JSONType}


class User(Base):
    """Someone who owns runs; ``role`` is ``admin`` (sees and acts on every run) or ``user``."""

    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    role: Mapped[str] = mapped_column(String(16), default="user", comment="admin or user")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Run(Base):
    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(
        ForeignKey("users.id"),
        index=True,
        default=BUILTIN_ADMIN_ID,
        server_default=BUILTIN_ADMIN_ID,
        comment="The user who created the run.",
    )
    name: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(32), default="pending", index=True)
    dataset: Mapped[dict[str, Any]]
    hyperparameters: Mapped[dict[str, Any]] = mapped_column(comment="Initial hyperparameters.")
    budget: Mapped[dict[str, Any]]
    resources: Mapped[dict[str, Any]]
    advisor: Mapped[str] = mapped_column(String(300))
    approval: Mapped[str] = mapped_column(String(32), default="auto")
    seed: Mapped[int] = mapped_column(Integer, default=0)
    best_val_accuracy: Mapped[float | None] = mapped_column(Float)
    baseline_val_accuracy: Mapped[float | None] = mapped_column(Float)
    final_test_accuracy: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    pending_approval: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    approval_response: Mapped[dict[str, Any] | None] = mapped_column(
        JSONType, comment="The user's answer, until the controller hands it to the graph."
    )
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    report_uri: Mapped[str | None] = mapped_column(String(2000))
    input_tokens: Mapped[int] = mapped_column(Integer, default=0)
    output_tokens: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(
        String(100), comment="Controller replica advancing this run's agent graph."
    )
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )

    jobs: Mapped[list[Job]] = relationship(
        back_populates="run", order_by="Job.created_at", cascade="all, delete-orphan"
    )
    architectures: Mapped[list[Architecture]] = relationship(
        back_populates="run", order_by="Architecture.version", cascade="all, delete-orphan"
    )
    decisions: Mapped[list[Decision]] = relationship(
        back_populates="run", order_by="Decision.sequence", cascade="all, delete-orphan"
    )


class Architecture(Base):
    __tablename__ = "architectures"
    __table_args__ = (UniqueConstraint("run_id", "version", name="uq_architecture_version"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    parent_version: Mapped[int | None] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    rationale: Mapped[str] = mapped_column(Text, default="")
    author: Mapped[str] = mapped_column(String(300), default="user")
    parameters: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    run: Mapped[Run] = relationship(back_populates="architectures")


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("run_id", "generation", "attempt", name="uq_job_generation_attempt"),
        Index("ix_jobs_status", "status"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    generation: Mapped[int] = mapped_column(Integer)
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    architecture_version: Mapped[int] = mapped_column(Integer)
    hyperparameters: Mapped[dict[str, Any]]
    epoch_start: Mapped[int] = mapped_column(Integer)
    epochs: Mapped[int] = mapped_column(Integer)
    schedule_epoch: Mapped[int] = mapped_column(Integer, default=0)
    schedule_total_epochs: Mapped[int] = mapped_column(Integer)
    resume_checkpoint: Mapped[str | None] = mapped_column(String(2000))
    resume_weights_only: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(32), default="pending")
    external_id: Mapped[str | None] = mapped_column(String(200))
    log_location: Mapped[str | None] = mapped_column(String(2000))
    error_kind: Mapped[str | None] = mapped_column(String(32))
    exit_code: Mapped[int | None] = mapped_column(Integer)
    error_message: Mapped[str | None] = mapped_column(Text)
    traceback: Mapped[str | None] = mapped_column(Text)
    checkpoint_uri: Mapped[str | None] = mapped_column(String(2000))
    checkpoint_epoch: Mapped[int | None] = mapped_column(Integer)
    best_val_accuracy: Mapped[float | None] = mapped_column(Float)
    test_accuracy: Mapped[float | None] = mapped_column(Float)
    isolation: Mapped[str | None] = mapped_column(
        String(300), comment="The isolation level the trainer reported it ran with."
    )
    outcome_delivered: Mapped[bool] = mapped_column(
        Boolean, default=False, comment="The agent graph has been resumed with this outcome."
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    submitted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    run: Mapped[Run] = relationship(back_populates="jobs")


class EpochSummary(Base):
    __tablename__ = "epoch_summaries"
    __table_args__ = (UniqueConstraint("job_id", "epoch", name="uq_summary_job_epoch"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    epoch: Mapped[int] = mapped_column(Integer)
    train_loss: Mapped[float | None] = mapped_column(Float)
    val_loss: Mapped[float | None] = mapped_column(Float)
    train_accuracy: Mapped[float] = mapped_column(Float)
    val_accuracy: Mapped[float] = mapped_column(Float)
    learning_rate: Mapped[float] = mapped_column(Float)
    grad_total: Mapped[dict[str, Any]]
    # json, not jsonb: jsonb reorders keys, and the tensors' order is the model's layer order,
    # which the diagnostics need to tell the first layer from the last.
    grad_layers: Mapped[dict[str, Any]] = mapped_column(JSON)
    weight_norms: Mapped[dict[str, Any]] = mapped_column(JSON)
    nonfinite_steps: Mapped[int] = mapped_column(Integer, default=0)
    steps: Mapped[int] = mapped_column(Integer, default=0)
    seconds: Mapped[float] = mapped_column(Float)
    samples_per_second: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Decision(Base):
    __tablename__ = "decisions"
    __table_args__ = (UniqueConstraint("run_id", "sequence", name="uq_decision_sequence"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    sequence: Mapped[int] = mapped_column(Integer)
    generation: Mapped[int] = mapped_column(Integer)
    action: Mapped[str] = mapped_column(String(32))
    advisor: Mapped[str] = mapped_column(String(300))
    fallback: Mapped[bool] = mapped_column(Boolean, default=False)
    rationale: Mapped[str] = mapped_column(Text, default="")
    diagnostics: Mapped[dict[str, Any]]
    assessment: Mapped[dict[str, Any]]
    changes: Mapped[dict[str, Any]]
    architecture_version: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[int] = mapped_column(Integer, default=0)
    input_tokens: Mapped[int] = mapped_column(Integer, default=0)
    output_tokens: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    run: Mapped[Run] = relationship(back_populates="decisions")


class ApiToken(Base):
    """A bearer token, stored as its SHA-256. A user token acts for its user; a job token
    reaches only its own job, and only while the job lives. Revoked tokens stay, marked."""

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(16), comment="user or job")
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    user_id: Mapped[str | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class DashboardSession(Base):
    """A signed-in browser: the cookie holds a random id, this row only its SHA-256.

    ``token_sha256`` is the digest of the token that signed in, so that revoking that token
    (or removing it from the settings) ends the session too."""

    __tablename__ = "dashboard_sessions"

    id_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    token_sha256: Mapped[str] = mapped_column(String(64), index=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
