"""The supervisor–trainer link: JSON lines over one end of a ``socketpair``.

Both sides use ``Channel``. The trainer sends events (``ready``/``refused``, ``summary``,
``heartbeat``, ``checkpoint``, ``outcome``); ``heartbeat`` and ``checkpoint`` wait for the
supervisor's answer, which always carries ``stop`` (a stop request the supervisor received:
the trainer checkpoints at the next step). The supervisor treats everything it reads as
untrusted input: lines are size-bounded and parsed as JSON objects only.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
from typing import Any

#: Longest line either side accepts (an epoch summary with many layers is a few hundred KB).
MAX_LINE_BYTES = 8 * 1024 * 1024


class ChannelClosed(Exception):
    """The other side closed the link (exited, was killed)."""


class Channel:
    """One end of the link."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buffer = bytearray()

    @classmethod
    def from_fd(cls, fd: int) -> Channel:
        return cls(socket.socket(fileno=fd))

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, message: dict[str, Any]) -> None:
        data = (json.dumps(message, default=str, allow_nan=False) + "\n").encode()
        try:
            self.sock.sendall(data)
        except OSError as e:
            raise ChannelClosed(str(e)) from e

    def has_line(self) -> bool:
        return b"\n" in self._buffer

    def receive(self, timeout: float | None = None) -> dict[str, Any] | None:
        """The next message; None when ``timeout`` passes first. Raises ``ChannelClosed`` at
        end of stream and ``ValueError`` for a line that is not a JSON object or too long."""
        while True:
            newline = self._buffer.find(b"\n")
            if newline >= 0:
                line = bytes(self._buffer[:newline])
                del self._buffer[: newline + 1]
                message = json.loads(line)
                if not isinstance(message, dict):
                    raise ValueError("a message on the trainer link is not a JSON object")
                return message
            if len(self._buffer) > MAX_LINE_BYTES:
                raise ValueError("a message on the trainer link is too long")
            if timeout is not None:
                ready, _, _ = select.select([self.sock], [], [], timeout)
                if not ready:
                    return None
            try:
                chunk = self.sock.recv(1 << 16)
            except InterruptedError:
                continue
            except OSError as e:
                raise ChannelClosed(str(e)) from e
            if not chunk:
                raise ChannelClosed("the other side closed the link")
            self._buffer += chunk

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def socketpair() -> tuple[Channel, int]:
    """The supervisor's end, and the trainer's end as a raw inheritable fd."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    fd = theirs.detach()
    os.set_inheritable(fd, True)
    return Channel(ours), fd
