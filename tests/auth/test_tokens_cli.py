"""``gradpilot tokens create|list|revoke`` against the in-process API."""

from __future__ import annotations

import io
import json

import pytest
from fastapi.testclient import TestClient
from rich.console import Console
from typer.testing import CliRunner

from service.cli import tokens as tokens_cli
from service.cli.client import ApiClient, CliError
from service.cli.main import app
from tests.support.factories import USER_TOKEN

runner = CliRunner()


@pytest.fixture
def console(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> Console:
    """The commands' console recorded, their client the in-process API with ``--token``."""
    recorded = Console(record=True, width=160, file=io.StringIO(), force_terminal=False)
    monkeypatch.setattr(tokens_cli, "console", recorded)

    def make(url: str | None, token: str | None) -> ApiClient:
        api = ApiClient("http://testserver", token or USER_TOKEN)
        api._http = TestClient(client.app, headers={"Authorization": f"Bearer {api.token}"})
        return api

    monkeypatch.setattr(tokens_cli, "_client", make)
    return recorded


def test_create_list_revoke(client: TestClient, console: Console) -> None:
    result = runner.invoke(app, ["tokens", "create", "alice", "--name", "laptop", "--json"])
    assert result.exit_code == 0, result.output
    created = json.loads(console.file.getvalue())  # type: ignore[attr-defined]
    raw = created["token"]
    assert created["user"] == "alice" and created["role"] == "user" and created["name"] == "laptop"
    assert client.get("/v1/runs", headers={"Authorization": f"Bearer {raw}"}).status_code == 200

    result = runner.invoke(app, ["tokens", "list"])
    assert result.exit_code == 0, result.output
    table = console.export_text()
    assert created["id"] in table and "alice" in table and "laptop" in table
    assert raw not in table  # the value is shown once, at creation

    result = runner.invoke(app, ["tokens", "revoke", created["id"]])
    assert result.exit_code == 0, result.output
    assert f"revoked token {created['id']} (alice)" in console.export_text()
    assert client.get("/v1/runs", headers={"Authorization": f"Bearer {raw}"}).status_code == 401


def test_create_prints_the_token_once(console: Console) -> None:
    result = runner.invoke(app, ["tokens", "create", "bob", "--role", "admin"])
    assert result.exit_code == 0, result.output
    text = console.export_text()
    assert "for bob (admin)" in text and "not shown again" in text


def test_a_non_admin_is_refused(client: TestClient, console: Console) -> None:
    user_token = client.post("/v1/tokens", json={"user": "carol"}).json()["token"]
    result = runner.invoke(app, ["tokens", "list", "--token", user_token])
    assert isinstance(result.exception, CliError)
    assert result.exception.message.startswith("403: only an admin manages tokens")
    result = runner.invoke(app, ["tokens", "create", "dave", "--role", "root"])
    assert isinstance(result.exception, CliError) and "--role must be" in result.exception.message
