"""The one settings class. Built once at start-up and passed down (never an import-time global).

Every setting has an embedded default, so that a fresh machine runs with none set: SQLite and
artifacts under ``~/.gradpilot`` (``GRADPILOT_HOME`` moves it), local processes, the offline
rules advisor. Unsafe combinations fail at start-up with a message that says what to change.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from service.errors import ConfigurationError


def _default_home() -> Path:
    return Path.home() / ".gradpilot"


class Settings(BaseSettings):
    """gradpilot's configuration; each field is read from ``GRADPILOT_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="GRADPILOT_", extra="ignore")

    home: Path = Field(default_factory=_default_home, description="Folder for embedded state.")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; default: SQLite file under home."
    )
    artifact_url: str | None = Field(
        None, description="file:///path or s3://bucket/prefix; default: home/artifacts."
    )
    executor: Literal["local", "batch", "docker"] = "local"
    advisor: str = Field("rules", description="Default advisor of new runs.")
    aws_endpoint_url: str | None = Field(None, description="moto's URL for local testing.")
    aws_region: str = "us-east-1"

    # LLM advisor (used when a run's advisor is an LLM spec such as bedrock:<model id>)
    llm_writer_model: str | None = Field(
        None, description="Advisor spec of the model that writes architectures; default: the run's."
    )
    llm_fixer_model: str | None = Field(
        None, description="Advisor spec of the model that fixes and repairs code; default: writer."
    )
    llm_report_model: str | None = Field(
        None, description="Advisor spec of the model that writes the report; default: the run's."
    )
    llm_max_retries: int = Field(
        5, ge=0, le=20, description="Retries of throttled or 5xx LLM calls (adaptive backoff)."
    )
    llm_timeout_s: float = Field(120.0, gt=0, description="Read timeout of one LLM call.")

    # API
    host: str = "127.0.0.1"
    port: int = Field(8765, ge=1, le=65535)
    public_url: str | None = Field(
        None, description="URL workers use to reach the API; default http://host:port."
    )
    max_body_bytes: int = Field(
        16 * 1024 * 1024,
        ge=1024,
        description="Largest request body; larger ones get 413 before they are read or parsed.",
    )
    api_tokens: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Accepted user bearer tokens: a JSON list or a comma-separated string.",
    )

    # Local executor
    local_max_parallel: int = Field(2, ge=1, le=64)
    local_python: str | None = Field(None, description="Python for workers; default: this one.")

    # AWS Batch executor
    batch_job_queue: str | None = None
    batch_job_definition: str | None = None
    batch_runnable_timeout_s: int = Field(
        1800,
        ge=1,
        description="How long a job may wait in RUNNABLE (for capacity) before it is shown "
        "as stuck, with the likely causes.",
    )
    batch_runnable_action: Literal["fail", "wait"] = Field(
        "fail",
        description="What a job stuck in RUNNABLE past the timeout does: end its run with the "
        "diagnosis (fail), or keep waiting with the diagnosis shown (wait).",
    )
    batch_list_consistency_s: float = Field(
        30.0,
        ge=0,
        description="How long Batch's ListJobs may take to show a new job: a submission a "
        "crash interrupted is retried only after this long without the job appearing.",
    )

    # Docker executor (one container of the worker image per job; docs/docker.md)
    docker_image: str = Field(
        "gradpilot-worker:local", description="The worker image (built from Dockerfile.worker)."
    )
    docker_host: str | None = Field(
        None, description="The engine's URL (unix:///var/run/docker.sock); default: DOCKER_HOST."
    )
    docker_network: str = Field(
        "host",
        description="Network mode of job containers; host lets workers reach a loopback API.",
    )
    docker_gpus: Literal["auto", "always", "never"] = Field(
        "auto",
        description="Pass a job's GPUs as device requests: auto when the engine has the "
        "NVIDIA runtime, always (an error without it), never.",
    )
    docker_user: str | None = Field(
        None, description="uid:gid job containers run as; default: the image's user."
    )
    docker_env: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Names of this process's variables passed on to job containers "
        "(e.g. AWS_ACCESS_KEY_ID,AWS_SECRET_ACCESS_KEY for an s3:// store).",
    )

    # Controller
    controller_interval_s: float = Field(1.0, gt=0)
    job_heartbeat_timeout_s: int = Field(
        600,
        ge=1,
        description="A job the executor says runs, with no heartbeat for this long, is stopped "
        "as lost (a job queued again after a spot reclaim is not timed).",
    )
    controller_parallel_runs: int = Field(
        16,
        ge=1,
        le=512,
        description="How many runs one controller replica advances at once (graph steps, "
        "LLM calls and sandbox runs in parallel).",
    )
    job_attempt_timeout_max_s: int = Field(
        24 * 3600,
        ge=60,
        description="The longest a job attempt may run; also its timeout before any epoch "
        "of the run has been timed.",
    )
    job_attempt_timeout_margin: float = Field(
        3.0,
        ge=1.0,
        description="An attempt's timeout is epochs x the measured epoch time x this margin "
        "(plus start-up time), at most GRADPILOT_JOB_ATTEMPT_TIMEOUT_MAX_S.",
    )
    job_report_grace_s: float = Field(
        60.0,
        ge=0,
        description="How long to wait for a worker's own report after the executor "
        "says its job succeeded (the report may still be on its way or spooled).",
    )

    # Sandbox limits
    sandbox_timeout_s: float = Field(60.0, gt=0)
    sandbox_memory_mb: int = Field(4096, ge=256)
    sandbox_max_parameters: int = Field(50_000_000, ge=1000)
    allow_weak_isolation: bool = Field(
        False,
        description="Run untrusted model code (validation and training) even where a required "
        "isolation layer (network, process or file isolation) is missing. Off: such a host "
        "refuses with a message naming what is missing. The level each job and validation ran "
        "with is recorded either way.",
    )

    @field_validator("api_tokens", "docker_env", mode="before")
    @classmethod
    def _split_list(cls, value: Any) -> Any:
        # A list setting may be given as JSON (``["a", "b"]``) or as ``a,b``: the second is
        # what people type, and a plain string used to crash start-up with a traceback.
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    return json.loads(text)
                except json.JSONDecodeError as e:
                    raise ValueError(f"not a valid JSON list ({e.msg})") from None
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _safe(self) -> Settings:
        if not self.is_loopback() and not self.api_tokens:
            raise ConfigurationError(
                f"GRADPILOT_HOST={self.host} listens beyond this machine but no token is set: "
                "set GRADPILOT_API_TOKENS='[\"<a long random token>\"]' or listen on 127.0.0.1"
            )
        for token in self.api_tokens:
            if len(token.get_secret_value()) < 16:
                raise ConfigurationError(
                    "every GRADPILOT_API_TOKENS entry must be at least 16 characters long; "
                    f"for example {_EXAMPLES['api_tokens']}"
                )
        if self.executor == "batch":
            missing = [
                name
                for name, value in (
                    ("GRADPILOT_BATCH_JOB_QUEUE", self.batch_job_queue),
                    ("GRADPILOT_BATCH_JOB_DEFINITION", self.batch_job_definition),
                )
                if not value
            ]
            if missing:
                raise ConfigurationError(
                    f"executor 'batch' needs {' and '.join(missing)} "
                    "(`gradpilot infra deploy` prints them)"
                )
            if not self.resolved_artifact_url.startswith("s3://"):
                raise ConfigurationError(
                    "executor 'batch' needs an s3:// GRADPILOT_ARTIFACT_URL: Batch containers "
                    "cannot reach this machine's files"
                )
        return self

    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'gradpilot.db'}"

    @property
    def resolved_artifact_url(self) -> str:
        return self.artifact_url or (self.home / "artifacts").resolve().as_uri()

    @property
    def resolved_public_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"

    @property
    def token_file(self) -> Path:
        return self.home / "token"

    @property
    def is_sqlite(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")

    def ensure_home(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)


#: An example of the right form of each setting whose value people most often get wrong.
_EXAMPLES: dict[str, str] = {
    "api_tokens": "GRADPILOT_API_TOKENS=tok-aaaaaaaaaaaaaaaa,tok-bbbbbbbbbbbbbbbb",
    "port": "GRADPILOT_PORT=8765",
    "executor": "GRADPILOT_EXECUTOR=local (or batch, docker)",
    "local_max_parallel": "GRADPILOT_LOCAL_MAX_PARALLEL=2",
    "max_body_bytes": "GRADPILOT_MAX_BODY_BYTES=16777216",
}


def load_settings(**overrides: Any) -> Settings:
    """Build ``Settings`` from the environment (and ``overrides``), or raise one readable
    ``ConfigurationError`` that names the variable, what is wrong and an example of the right
    form — never a pydantic traceback."""
    try:
        return Settings(**overrides)
    except ValidationError as e:
        first = e.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else ""
        if not field:  # a model-level check; its message is already written for people
            raise ConfigurationError(str(first["msg"]).removeprefix("Value error, ")) from None
        variable = f"GRADPILOT_{field.upper()}"
        wrong = str(first["msg"]).removeprefix("Value error, ")
        example = _EXAMPLES.get(field)
        hint = f"; for example {example}" if example else ""
        raise ConfigurationError(f"{variable} is not valid: {wrong}{hint}") from None
    except SettingsError as e:
        raise ConfigurationError(f"a GRADPILOT_ setting could not be read: {e}") from None
