"""Loopback ports: a free one to listen on, and waiting until something listens."""

from __future__ import annotations

import socket
import subprocess
import time

# The service's own copy (the demo and the embedded server use it); re-exported so that tests
# and benchmarks have one place to import their helpers from.
from service.server import free_port

__all__ = ["free_port", "wait_for_port"]


def wait_for_port(
    port: int, timeout_s: float = 60.0, process: subprocess.Popen[bytes] | None = None
) -> None:
    """Until something accepts connections on 127.0.0.1:port (or ``process`` exits)."""
    deadline = time.monotonic() + timeout_s
    while True:
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server on port {port} exited with {process.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing listens on port {port} after {timeout_s:g} s")
        time.sleep(0.1)
