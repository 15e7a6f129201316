"""An embedded control plane for end-to-end tests: its URL, settings and an API client as the
user's, and waiting for a run to reach a status."""

from __future__ import annotations

import time
from typing import Any

from service.cli.client import ApiClient
from service.settings import Settings
from tests.support.factories import USER_TOKEN


class Stack:
    """API + controller + local executor (``service.server.embedded_server``) at ``url``."""

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
        """The run once its status is in ``until``; fails after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            run = self.api.get(f"/v1/runs/{run_id}")
            if run["status"] in until:
                return run
            time.sleep(0.5)
        raise AssertionError(f"run {run_id} did not reach {until} in {timeout_s}s: {run}")
