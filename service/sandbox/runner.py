"""Validate untrusted model code in a separate, limited process.

``validate_model`` first runs the static check, then starts ``python -m
service.sandbox._child`` with a clean environment (no credentials: only PATH, HOME and TMPDIR
in a fresh scratch directory, PYTHONPATH, and single-threaded math libraries), stdin closed,
in its own session (so that the whole process group can be killed), and lets the child confine
itself (``service.confinement``, the same code as the worker's trainer: namespaces without
network, read-only mounts, private tmpfs and ``/proc``, resource limits, ``nobody``, a seccomp
filter where namespaces are refused). Missing isolation fails closed (``SandboxUnavailable``
naming what is missing) unless ``allow_weak_isolation``.
The child builds the model, runs forward and backward on a random batch and reports as JSON on
a dedicated pipe; the model's prints go to a separate pipe of which the tail is kept.

Importing torch takes seconds and dominates a validation. ``Sandbox(keep_warm=True)`` therefore
keeps one spare child that has already imported torch and waits for its request; every child is
used once, so no model ever sees another's state.

Why one module of this length: the warm spare process, its pipes and its limits share one
lifecycle (start, hand over, kill the group); the confinement itself is in
``service.confinement``.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from service.confinement import scrubbed_environment, static_check_disabled, weak_allowed
from service.errors import GradpilotError
from service.sandbox.report import ValidationReport, describe_stage
from service.sandbox.static_check import StaticCheckRejected, find_violations

_LOG_TAIL_BYTES = 16 * 1024
_MAX_EVENT_BYTES = 4 * 1024 * 1024


class SandboxUnavailable(GradpilotError):
    """The sandbox itself could not run (not a verdict on the model): retry or fix the host."""

    status_code = 503


@dataclass(frozen=True)
class SandboxLimits:
    """The limits of one validation."""

    timeout_s: float
    """Wall-clock seconds for building and one training step (torch's import not included)."""
    memory_mb: int
    """Memory the model may allocate beyond what the interpreter and torch already map."""
    max_parameters: int
    batch_size: int = 8
    max_step_seconds: float | None = 20.0
    """Longest one forward and backward pass on the dummy batch may take on the CPU."""
    startup_timeout_s: float = 120.0
    """Wall-clock seconds for the child to start and import torch."""
    allow_weak_isolation: bool = field(default_factory=weak_allowed)
    """Validate even where a required isolation layer is missing (default: the
    ``GRADPILOT_ALLOW_WEAK_ISOLATION`` environment variable)."""

    @classmethod
    def from_settings(cls, settings: Any, **overrides: Any) -> SandboxLimits:
        values = {
            "timeout_s": settings.sandbox_timeout_s,
            "memory_mb": settings.sandbox_memory_mb,
            "max_parameters": settings.sandbox_max_parameters,
            "allow_weak_isolation": settings.allow_weak_isolation,
        }
        values.update(overrides)
        return cls(**values)


def validate_model(
    source: str,
    input_shape: Sequence[int],
    num_classes: int,
    *,
    timeout_s: float,
    memory_mb: int,
    max_parameters: int,
    batch_size: int = 8,
    max_step_seconds: float | None = 20.0,
    _unchecked: bool = False,
) -> ValidationReport:
    """Check ``source`` statically, then build it and run one training step in a sandbox.

    Returns a ``ValidationReport`` for every verdict on the model (it never raises for a bad
    model); raises ``SandboxUnavailable`` when the sandbox process itself cannot start.
    ``_unchecked`` (tests only, as is ``GRADPILOT_UNSAFE_DISABLE_STATIC_CHECK=1``) skips the
    static check and the restricted builtins, to show that the process boundary alone
    contains the code.
    """
    limits = SandboxLimits(
        timeout_s=timeout_s,
        memory_mb=memory_mb,
        max_parameters=max_parameters,
        batch_size=batch_size,
        max_step_seconds=max_step_seconds,
    )
    with Sandbox(limits, keep_warm=False) as sandbox:
        return sandbox.validate(source, input_shape, num_classes, _unchecked=_unchecked)


class Sandbox:
    """Validates model sources under fixed limits; with ``keep_warm`` it holds one spare child
    that has already imported torch, so that a validation takes a fraction of a second.

    Thread-safe. ``close()`` (or leaving the ``with`` block, or interpreter exit) ends the spare.
    """

    def __init__(
        self, limits: SandboxLimits, *, keep_warm: bool = True, namespaces: bool = True
    ) -> None:
        """``namespaces=False`` skips the Linux namespaces (network, mount, PID): only for
        platforms that forbid them, and for tests of the fallback."""
        self.limits = limits
        self.keep_warm = keep_warm
        self.namespaces = namespaces
        self._lock = threading.Lock()
        self._spare: list[_SandboxProcess] = []
        self._closed = False
        self._finalizer = weakref.finalize(self, _close_all, self._spare)
        if keep_warm:
            self._replenish()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._finalizer()

    def validate(
        self,
        source: str,
        input_shape: Sequence[int],
        num_classes: int,
        *,
        _unchecked: bool = False,
    ) -> ValidationReport:
        """Validate one model source (see ``validate_model``)."""
        started = time.monotonic()
        _unchecked = _unchecked or static_check_disabled()
        if not _unchecked:
            violations = find_violations(source)
            if violations:
                return ValidationReport(
                    ok=False,
                    stage="static",
                    reason=StaticCheckRejected(violations).message,
                    elapsed_seconds=round(time.monotonic() - started, 3),
                )
        process = self._take_spare() or _SandboxProcess.start(
            self.namespaces, self.limits.allow_weak_isolation
        )
        try:
            request = {
                "source": source,
                "input_shape": [int(v) for v in input_shape],
                "num_classes": int(num_classes),
                "batch_size": self.limits.batch_size,
                "max_parameters": self.limits.max_parameters,
                "max_step_seconds": self.limits.max_step_seconds,
                "memory_mb": self.limits.memory_mb,
                "timeout_s": self.limits.timeout_s,
                "unchecked": _unchecked,
            }
            report = process.run(request, self.limits)
        finally:
            process.close()
            if self.keep_warm:
                self._replenish()
        report.elapsed_seconds = round(time.monotonic() - started, 3)
        return report

    def _take_spare(self) -> _SandboxProcess | None:
        with self._lock:
            while self._spare:
                process = self._spare.pop()
                if process.alive():
                    return process
                process.close()
        return None

    def _replenish(self) -> None:
        with self._lock:
            if self._closed or self._spare:
                return
            with contextlib.suppress(SandboxUnavailable):
                self._spare.append(
                    _SandboxProcess.start(self.namespaces, self.limits.allow_weak_isolation)
                )


def _close_all(processes: list[_SandboxProcess]) -> None:
    while processes:
        processes.pop().close()


def child_environment(scratch: Path) -> dict[str, str]:
    """The child's whole environment: nothing inherited, so no credential can leak into it."""
    return scrubbed_environment(scratch)


class _SandboxProcess:
    """One child process, used for one validation."""

    def __init__(self, popen: subprocess.Popen[bytes], request_fd: int, scratch: Path) -> None:
        self.popen = popen
        self.request_fd: int | None = request_fd
        self.scratch = scratch
        self.started = time.monotonic()
        self.isolation: list[str] = []
        self.level: str | None = None
        self.ready = False
        self._lines = bytearray()
        self._log = bytearray()
        self._result_open = True
        self._log_open = True
        self._selector = selectors.DefaultSelector()
        assert popen.stdout is not None and popen.stderr is not None
        for stream in (popen.stdout, popen.stderr):
            os.set_blocking(stream.fileno(), False)
            self._selector.register(stream, selectors.EVENT_READ)

    @classmethod
    def start(cls, namespaces: bool = True, allow_weak: bool = False) -> _SandboxProcess:
        scratch = Path(tempfile.mkdtemp(prefix="gradpilot-sandbox-"))
        read_fd, write_fd = os.pipe()
        command = [sys.executable, "-s", "-P", "-m", "service.sandbox._child"]
        command += ["--request-fd", str(read_fd)]
        if not namespaces:
            command.append("--no-namespaces")
        if allow_weak:
            command.append("--allow-weak")
        try:
            popen = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=scratch,
                env=child_environment(scratch),
                pass_fds=(read_fd,),
                start_new_session=True,
                close_fds=True,
            )
        except OSError as e:
            os.close(write_fd)
            shutil.rmtree(scratch, ignore_errors=True)
            raise SandboxUnavailable(f"could not start the sandbox process: {e}") from e
        finally:
            os.close(read_fd)
        return cls(popen, write_fd, scratch)

    def alive(self) -> bool:
        return self.popen.poll() is None

    # -- reading the pipes -----------------------------------------------------------------

    def _next_event(self, deadline: float) -> dict[str, Any] | None:
        """The next event line, None at end of stream; raises TimeoutError at the deadline."""
        while True:
            newline = self._lines.find(b"\n")
            if newline >= 0:
                line = bytes(self._lines[:newline])
                del self._lines[: newline + 1]
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if isinstance(event, dict):
                    return event
                continue
            if not self._result_open:
                return None
            remaining = deadline - time.monotonic()
            # Poll at least once even past the deadline: a spare that has waited for hours
            # has its ready line in the pipe already.
            ready = self._selector.select(timeout=min(max(remaining, 0.0), 1.0))
            if not ready and remaining <= 0:
                raise TimeoutError
            for key, _ in ready:
                stream = key.fileobj
                assert hasattr(stream, "fileno")
                try:
                    data = os.read(stream.fileno(), 1 << 16)
                except BlockingIOError:
                    continue
                if stream is self.popen.stdout:
                    if not data:
                        self._result_open = False
                        self._selector.unregister(stream)
                    elif len(self._lines) + len(data) > _MAX_EVENT_BYTES:
                        self._result_open = False  # a runaway writer; stop listening
                        self._selector.unregister(stream)
                    else:
                        self._lines += data
                else:
                    if not data:
                        self._log_open = False
                        self._selector.unregister(stream)
                    else:
                        self._log += data
                        del self._log[:-_LOG_TAIL_BYTES]

    def _drain_log(self) -> None:
        """Read what the model printed that is already in the pipe, without waiting."""
        stream = self.popen.stderr
        assert stream is not None
        while self._log_open:
            try:
                data = os.read(stream.fileno(), 1 << 16)
            except (BlockingIOError, OSError):
                return
            if not data:
                return
            self._log += data
            del self._log[:-_LOG_TAIL_BYTES]

    def log_tail(self, lines: int = 20) -> str | None:
        text = self._log.decode("utf-8", errors="replace").strip()
        if not text:
            return None
        return "\n".join(text.splitlines()[-lines:])

    # -- the protocol ----------------------------------------------------------------------

    def wait_ready(self, limits: SandboxLimits) -> None:
        if self.ready:
            return
        deadline = self.started + limits.startup_timeout_s
        try:
            event = self._next_event(deadline)
        except TimeoutError:
            self.close()
            raise SandboxUnavailable(
                f"the sandbox process did not start within {limits.startup_timeout_s:g} s"
            ) from None
        if event is not None and event.get("event") == "refused":
            self.close()
            raise SandboxUnavailable(str(event.get("reason") or "the sandbox refused to run"))
        if event is None or event.get("event") != "ready":
            status = self._exit_status()
            self.close()
            raise SandboxUnavailable(
                f"the sandbox process failed to start (exit status {status}): "
                f"{self.log_tail(8) or 'no output'}"
            )
        self.isolation = [str(v) for v in event.get("isolation", [])]
        self.level = str(event["level"]) if event.get("level") else None
        self.ready = True

    def run(self, request: dict[str, Any], limits: SandboxLimits) -> ValidationReport:
        self.wait_ready(limits)
        assert self.request_fd is not None
        try:
            with os.fdopen(self.request_fd, "wb") as pipe:
                self.request_fd = None
                pipe.write(json.dumps(request).encode())
        except BrokenPipeError:
            pass  # the child died; reading below reports how
        deadline = time.monotonic() + limits.timeout_s
        stage = "import"
        while True:
            try:
                event = self._next_event(deadline)
            except TimeoutError:
                self.kill()
                return self._report(
                    stage=stage,
                    reason=f"timed out after {limits.timeout_s:g} s in {describe_stage(stage)} "
                    f"(the limit is {limits.timeout_s:g} s): the model loops forever or is far "
                    f"too slow for a batch of {limits.batch_size}",
                )
            if event is None:
                return self._crash_report(stage, limits)
            kind = event.get("event")
            if kind == "stage":
                stage = str(event.get("stage", stage))
            elif kind == "result":
                self._drain_log()
                fields = {
                    k: v
                    for k, v in event.items()
                    if k not in ("event", "isolation", "isolation_level")
                }
                fields.setdefault("stage", stage)
                try:
                    return self._report(**fields)
                except ValidationError:
                    return self._report(
                        stage=stage, reason="the sandbox process returned an unreadable result"
                    )

    def _report(self, **fields: Any) -> ValidationReport:
        fields.setdefault("ok", False)
        fields.pop("log_tail", None)
        return ValidationReport(
            isolation=self.isolation,
            isolation_level=self.level,
            log_tail=self.log_tail(),
            **fields,
        )

    def _crash_report(self, stage: str, limits: SandboxLimits) -> ValidationReport:
        status = self._exit_status()
        if status is None:
            what = "closed its result pipe and did not finish"
        elif status < 0 or status > 128:
            number = -status if status < 0 else status - 128
            try:
                name = signal.Signals(number).name
            except ValueError:
                name = f"signal {number}"
            what = f"was killed by {name}"
            if number == signal.SIGKILL:
                what += f" (most likely for exceeding the memory limit of {limits.memory_mb} MB)"
            elif number == signal.SIGXCPU:
                what += f" (it used more than {limits.timeout_s:g} s of CPU time)"
            elif number == signal.SIGSEGV:
                what += " (a crash in native code)"
        else:
            what = f"exited with status {status} without reporting"
        return self._report(
            stage=stage, reason=f"the model's process {what} in {describe_stage(stage)}"
        )

    def _exit_status(self) -> int | None:
        try:
            return self.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        """Kill the child's whole process group (the child, its PID namespace, any forks)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            self.popen.kill()

    def close(self) -> None:
        if self.request_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.request_fd)
            self.request_fd = None
        self.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=10)
        self._selector.close()
        for stream in (self.popen.stdout, self.popen.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        shutil.rmtree(self.scratch, ignore_errors=True)
