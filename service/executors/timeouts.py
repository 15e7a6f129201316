"""Attempt timeouts: how long one job attempt may run before its executor stops it.

Every job gets one, derived from its segment: ``epochs × the measured epoch time × a margin``
plus time to start (import torch, fetch data, load a checkpoint), never more than
``settings.job_attempt_timeout_max_s``. Before any epoch of the run has been timed the bound
itself is the timeout. AWS Batch receives it as ``timeout.attemptDurationSeconds`` (at least
60 s; a timed-out attempt is not retried by Batch), and the local executor enforces it the
same way (SIGTERM, then SIGKILL after its grace period).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from service.settings import Settings

#: Time an attempt needs besides its epochs: interpreter and torch import, data, checkpoint.
STARTUP_S = 300
#: AWS Batch refuses attempt durations under 60 s.
MIN_TIMEOUT_S = 60


def epoch_seconds(measured: Sequence[float]) -> float | None:
    """A cautious epoch time from the run's measured ones: the slowest of the last few
    (the first epoch of a job carries warm-up; a later architecture may be slower)."""
    recent = [s for s in measured[-5:] if s > 0 and math.isfinite(s)]
    return max(recent) if recent else None


def attempt_timeout_s(epochs: int, measured_epoch_s: float | None, settings: Settings) -> int:
    """The attempt timeout of a segment of ``epochs`` epochs, in whole seconds."""
    bound = settings.job_attempt_timeout_max_s
    if measured_epoch_s is None:
        return bound
    wanted = STARTUP_S + epochs * measured_epoch_s * settings.job_attempt_timeout_margin
    return int(min(bound, max(MIN_TIMEOUT_S, math.ceil(wanted))))
