"""Attempt timeouts derived from a segment: epochs × measured epoch time × margin, bounded."""

from __future__ import annotations

from pathlib import Path

from service.executors.timeouts import STARTUP_S, attempt_timeout_s, epoch_seconds
from service.settings import Settings


def test_unmeasured_runs_get_the_bound(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, job_attempt_timeout_max_s=7200)
    assert attempt_timeout_s(10, None, settings) == 7200


def test_measured_segments_scale_with_epochs(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, job_attempt_timeout_margin=2.0)
    assert attempt_timeout_s(10, 30.0, settings) == STARTUP_S + 10 * 30 * 2
    assert attempt_timeout_s(20, 30.0, settings) > attempt_timeout_s(10, 30.0, settings)


def test_the_bound_caps_a_long_segment(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, job_attempt_timeout_max_s=3600)
    assert attempt_timeout_s(1000, 60.0, settings) == 3600


def test_epoch_seconds_is_the_slowest_recent() -> None:
    assert epoch_seconds([]) is None
    assert epoch_seconds([5.0, 9.0, 7.0]) == 9.0
    assert epoch_seconds([100.0] + [1.0] * 5) == 1.0  # only the last five count
    assert epoch_seconds([float("nan"), 0.0]) is None
