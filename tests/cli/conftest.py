"""The CLI against the in-process API: an ApiClient whose HTTP client is the TestClient, and
the ``runs`` commands' console swapped for a recording one, and a recording console to hand to
the CLI's functions."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from rich.console import Console

from service.cli import runs as runs_cli
from service.cli.client import ApiClient
from tests.support.factories import USER_TOKEN


@pytest.fixture
def console() -> Console:
    """A console that records what is printed (``export_text()``), 120 columns, no colour."""
    return Console(record=True, width=120, file=io.StringIO(), force_terminal=False)


@pytest.fixture
def api(client: TestClient) -> ApiClient:
    api = ApiClient("http://testserver", USER_TOKEN)
    api._http = client  # TestClient is an httpx.Client bound to the app
    return api


@pytest.fixture
def cli_console(
    api: ApiClient, console: Console, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Console]:
    monkeypatch.setattr(runs_cli, "console", console)
    monkeypatch.setattr(runs_cli, "_client", lambda url, token: api)
    yield console
