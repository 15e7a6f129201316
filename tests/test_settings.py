"""Settings: embedded defaults, GRADPILOT_ environment, unsafe combinations refused at start-up."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from service.errors import ConfigurationError
from service.settings import Settings, load_settings


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


@pytest.mark.parametrize(
    "value",
    ["0123456789abcdef0123,fedcba9876543210fedc", " 0123456789abcdef0123 , fedcba9876543210fedc "],
)
def test_list_settings_take_a_comma_separated_string(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("GRADPILOT_API_TOKENS", value)
    tokens = [t.get_secret_value() for t in load_settings().api_tokens]
    assert tokens == ["0123456789abcdef0123", "fedcba9876543210fedc"]


def test_a_single_plain_token_is_a_list_of_one(monkeypatch: pytest.MonkeyPatch) -> None:
    # The form that used to crash `gradpilot serve` with a pydantic SettingsError traceback.
    monkeypatch.setenv("GRADPILOT_API_TOKENS", "0123456789abcdef0123")
    assert [t.get_secret_value() for t in load_settings().api_tokens] == ["0123456789abcdef0123"]


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("GRADPILOT_PORT", "abc", "GRADPILOT_PORT is not valid"),
        (
            "GRADPILOT_API_TOKENS",
            '["unterminated',
            "GRADPILOT_API_TOKENS is not valid: not a valid",
        ),
        ("GRADPILOT_EXECUTOR", "kubernetes", "GRADPILOT_EXECUTOR is not valid"),
        ("GRADPILOT_API_TOKENS", "short", "at least 16 characters"),
    ],
)
def test_wrong_settings_are_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as info:
        load_settings()
    assert expected in info.value.message
    assert "\n" not in info.value.message


def test_cli_prints_a_settings_error_as_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "GRADPILOT_HOME": str(tmp_path), "GRADPILOT_PORT": "abc"}
    result = subprocess.run(
        [sys.executable, "-m", "service.cli.main", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [lines[0]] and lines[0].startswith("error: GRADPILOT_PORT is not valid"), (
        result.stderr
    )
    assert "for example GRADPILOT_PORT=8765" in lines[0]
