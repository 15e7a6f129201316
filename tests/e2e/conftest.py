"""An embedded control plane (API + controller + local executor + real workers) per test."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from service.cli.client import ApiClient
from service.server import embedded_server, free_port
from service.settings import Settings
from tests.conftest import USER_TOKEN

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


class Stack:
    def __init__(self, url: str, settings: Settings) -> None:
        self.url = url
        self.settings = settings
        self.api = ApiClient(url, USER_TOKEN, timeout=60)

    def wait(
        self,
        run_id: str,
        timeout_s: float = 600,
        until: tuple[str, ...] = ("succeeded", "failed", "cancelled"),
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            run = self.api.get(f"/v1/runs/{run_id}")
            if run["status"] in until:
                return run
            time.sleep(0.5)
        raise AssertionError(f"run {run_id} did not reach {until} in {timeout_s}s: {run}")


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    settings = Settings(
        home=tmp_path / "home",
        api_tokens=[USER_TOKEN],
        port=free_port(),
        controller_interval_s=0.3,
        sandbox_timeout_s=120,
    )
    with embedded_server(settings) as url:
        yield Stack(url, settings)
