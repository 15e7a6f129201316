"""The worker's fixture: a started ``FakeApi`` (``tests/support/fake_api.py``) per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.fake_api import FakeApi


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
