"""The worker's fake API (``tests/support/fake_api.py``), started per test, for the
confinement tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.fake_api import FakeApi, serving


@pytest.fixture
def api() -> Iterator[FakeApi]:
    with serving() as fake:
        yield fake
