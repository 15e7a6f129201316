"""Settings: embedded defaults, GRADPILOT_ environment, unsafe combinations refused at start-up."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.errors import ConfigurationError
from service.settings import Settings


def test_embedded_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GRADPILOT_HOME", str(tmp_path))
    s = Settings()
    assert s.resolved_database_url == f"sqlite:///{tmp_path / 'gradpilot.db'}"
    assert s.resolved_artifact_url == (tmp_path / "artifacts").as_uri()
    assert s.executor == "local" and s.advisor == "rules"
    assert s.resolved_public_url == "http://127.0.0.1:8765"


def test_env_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRADPILOT_DATABASE_URL", "postgresql+psycopg://u@h/db")
    monkeypatch.setenv("GRADPILOT_API_TOKENS", '["0123456789abcdef0123"]')
    s = Settings()
    assert s.resolved_database_url == "postgresql+psycopg://u@h/db"
    assert s.api_tokens[0].get_secret_value() == "0123456789abcdef0123"


def test_no_token_beyond_loopback_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="no token is set"):
        Settings(host="0.0.0.0")
    Settings(host="0.0.0.0", api_tokens=["0123456789abcdef0123"])  # fine with a token


def test_short_token_refused() -> None:
    with pytest.raises(ConfigurationError, match="16 characters"):
        Settings(api_tokens=["short"])


def test_batch_needs_queue_definition_and_s3() -> None:
    with pytest.raises(ConfigurationError, match="GRADPILOT_BATCH_JOB_QUEUE"):
        Settings(executor="batch")
    with pytest.raises(ConfigurationError, match="s3://"):
        Settings(executor="batch", batch_job_queue="q", batch_job_definition="d")
    Settings(
        executor="batch", batch_job_queue="q", batch_job_definition="d", artifact_url="s3://b/p"
    )
