"""Child processes of tests and benchmarks: wait until one serves HTTP, stop one for good."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import urllib.request
from typing import Any


def wait_for_http(url: str, process: subprocess.Popen[Any], timeout_s: float = 300) -> None:
    """Until ``url`` answers a GET with a 2xx; fails at once if ``process`` exits first."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            urllib.request.urlopen(url, timeout=5).read()
            return
        except OSError:
            if process.poll() is not None:
                raise RuntimeError(f"the server exited with {process.returncode}") from None
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def stop(process: subprocess.Popen[Any], timeout_s: float = 30, *, group: bool = False) -> None:
    """SIGTERM, then SIGKILL if it has not exited after ``timeout_s``; reaps it either way.

    ``group=True`` signals the process group (a process started with ``start_new_session``
    whose children must go too, e.g. Chromium's renderers).
    """

    def send(signum: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):  # it has exited already
            if group:
                os.killpg(process.pid, signum)
            else:
                process.send_signal(signum)

    if group or process.poll() is None:  # a group may outlive its leader
        send(signal.SIGTERM)
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        process.wait(timeout_s)
