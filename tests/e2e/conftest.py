"""An embedded control plane (API + controller + local executor + real workers) per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from service.server import embedded_server
from service.settings import Settings
from tests.support.factories import USER_TOKEN
from tests.support.ports import free_port
from tests.support.stack import Stack


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
