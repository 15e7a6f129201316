"""The fake worker API of tests/worker, for the confinement tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.worker.conftest import FakeApi


@pytest.fixture
def api() -> Iterator[FakeApi]:
    fake = FakeApi()
    fake.start()
    try:
        yield fake
    finally:
        if fake.hold is not None:
            fake.hold.release.set()
        fake.stop()
