"""SIGTERM: what AWS Batch sends before a spot reclaim, and what the local executor's cancel
sends. The handler only sets a flag; the training loop checks it between steps, writes a
checkpoint and exits ``PREEMPTED`` (a handler that wrote the checkpoint itself could run in the
middle of an optimizer step)."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

log = logging.getLogger(__name__)


class StopFlag:
    """Set by SIGTERM (or SIGINT); read by the loop with no cost beyond a Python attribute."""

    def __init__(self) -> None:
        self.requested = False
        self.signal_name: str | None = None

    def install(self) -> StopFlag:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._handle)
            signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signal_name = signal.Signals(signum).name
        if not self.requested:
            log.warning(
                "%s received: stopping at the next step with a checkpoint", self.signal_name
            )
        self.requested = True
