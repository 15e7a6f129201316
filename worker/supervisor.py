"""The trusted side of the trainer link: start the confined trainer, and take its checkpoints.

``TrainerProcess.start`` lays out the job's folder — ``<job>/work`` (the trainer's scratch
and HOME, owned by the trainer's uid) and ``<job>/work/inputs`` (files the supervisor fetched
for it, read-only to it) — and starts ``python -m worker.trainer`` with a scrubbed environment,
its own session, and one end of a socketpair. ``read_checkpoint`` takes a checkpoint file the
trainer wrote as untrusted data: no symlinks, a regular file, a size bound, ``weights_only``
loading and the expected keys.

Settings (environment of ``python -m worker``): ``GRADPILOT_TRAINER_USER`` (the uid the
trainer becomes when the supervisor may change uids; default ``nobody``, the image uses
10002), ``GRADPILOT_TRAINER_SCRATCH`` (where job folders go; default the temp folder),
``GRADPILOT_TRAINER_TIMEOUT_S`` (wall-clock limit, default 7 days), ``GRADPILOT_TRAINER_MEMORY_MB``
(address-space cap on the CPU), ``GRADPILOT_MAX_CHECKPOINT_MB`` (default 8192),
``GRADPILOT_ALLOW_WEAK_ISOLATION``, and, for tests of the fallback only,
``GRADPILOT_DISABLE_NAMESPACES``.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from service.confinement import _linux, scrubbed_environment, weak_allowed
from service.confinement.policy import truthy
from worker.channel import Channel, socketpair

#: Keys every checkpoint from the trainer must carry.
CHECKPOINT_KEYS = frozenset({"model", "optimizer", "rng", "next_epoch", "step", "summaries"})
_CAP_SETUID = 7


def _may_change_uid() -> bool:
    """Root, or holding CAP_SETUID (the image's supervisor, uid 10001)."""
    if os.geteuid() == 0:
        return True
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> _CAP_SETUID & 1)
    except OSError:
        pass
    return False


def trainer_user() -> tuple[int, int] | None:
    """The (uid, gid) the trainer becomes, or None when this process may not change uids."""
    if not _may_change_uid():
        return None
    return _linux.resolve_user(os.environ.get("GRADPILOT_TRAINER_USER", "nobody"))


@dataclass
class TrainerProcess:
    popen: subprocess.Popen[bytes]
    channel: Channel
    job_dir: Path
    work: Path
    inputs: Path
    work_fd: int
    started: float

    @classmethod
    def prepare(cls) -> tuple[Path, Path, Path]:
        """The job folder, the trainer's work folder and its inputs folder."""
        root = os.environ.get("GRADPILOT_TRAINER_SCRATCH") or tempfile.gettempdir()
        Path(root).mkdir(parents=True, exist_ok=True)
        job_dir = Path(tempfile.mkdtemp(prefix="gradpilot-job-", dir=root))
        job_dir.chmod(0o711)
        work = job_dir / "work"
        work.mkdir(mode=0o755)
        inputs = work / "inputs"
        inputs.mkdir(mode=0o755)
        return job_dir, work, inputs

    @classmethod
    def start(
        cls, job_dir: Path, work: Path, inputs: Path, *, world: int, hide: list[str]
    ) -> TrainerProcess:
        user = trainer_user()
        if user is not None:
            # Root, or the image's supervisor with CAP_CHOWN: the work folder is the trainer's.
            with contextlib.suppress(PermissionError):
                os.chown(work, *user)
        ours, theirs = socketpair()
        command = [sys.executable, "-s", "-P", "-m", "worker.trainer"]
        command += ["--channel-fd", str(theirs), "--work", str(work)]
        if user is not None:
            command += ["--user", f"{user[0]}:{user[1]}"]
        for path in hide:
            command += ["--hide", path]
        if truthy(os.environ.get("GRADPILOT_DISABLE_NAMESPACES")):
            command.append("--no-namespaces")
        if world > 1:
            command.append("--host-network")  # the ranks' trainers rendezvous over TCP
        if weak_allowed():
            command.append("--allow-weak")
        memory = os.environ.get("GRADPILOT_TRAINER_MEMORY_MB")
        if memory:
            command += ["--memory-mb", memory]
        timeout = trainer_timeout_s()
        command += ["--cpu-seconds", str(int(timeout * (os.cpu_count() or 1)))]
        env = scrubbed_environment(work, inherit_from=os.environ, threads=None)
        try:
            popen = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                cwd=work,
                env=env,
                pass_fds=(theirs,),
                start_new_session=True,
                close_fds=True,
            )
        finally:
            os.close(theirs)
        work_fd = os.open(work, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        return cls(popen, ours, job_dir, work, inputs, work_fd, time.monotonic())

    def signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(self.popen.pid, signum)

    def kill(self) -> None:
        """Kill the trainer's whole session (it, its PID namespace, anything it started)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            self.popen.kill()

    def exit_status(self, timeout: float = 30) -> int | None:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def read_checkpoint(self, next_epoch: int, step: int, max_bytes: int) -> dict[str, Any]:
        """The checkpoint file the trainer says it wrote, loaded as data; raises ValueError
        when it is not a plain file of a plausible checkpoint."""
        from worker.trainer_run import checkpoint_filename

        name = checkpoint_filename(int(next_epoch), int(step))
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
        try:
            fd = os.open(name, flags, dir_fd=self.work_fd)
        except OSError as e:
            raise ValueError(f"cannot open the checkpoint file {name}: {e}") from e
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise ValueError(f"{name} is not a regular file")
            if info.st_size > max_bytes:
                raise ValueError(f"{name} is {info.st_size} bytes; the limit is {max_bytes}")
            with os.fdopen(fd, "rb", closefd=False) as f:
                data = f.read(max_bytes + 1)
        finally:
            os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(name, dir_fd=self.work_fd)
        if len(data) > max_bytes:
            raise ValueError(f"{name} grew past the limit of {max_bytes} bytes")
        try:
            payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as e:
            raise ValueError(f"{name} is not a checkpoint ({type(e).__name__}: {e})") from e
        if not isinstance(payload, dict) or not set(payload) >= CHECKPOINT_KEYS:
            raise ValueError(f"{name} lacks the keys of a checkpoint")
        if (payload["next_epoch"], payload["step"]) != (next_epoch, step):
            raise ValueError(f"{name} holds another position than announced")
        model = payload["model"]
        if not isinstance(model, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in model.items()
        ):
            raise ValueError(f"{name}: the model state is not a mapping of names to tensors")
        return payload

    def close(self) -> None:
        self.kill()
        self.exit_status(10)
        self.channel.close()
        with contextlib.suppress(OSError):
            os.close(self.work_fd)
        shutil.rmtree(self.job_dir, ignore_errors=True)


def trainer_timeout_s() -> float:
    return float(os.environ.get("GRADPILOT_TRAINER_TIMEOUT_S") or 7 * 24 * 3600)


def max_checkpoint_bytes() -> int:
    return int(float(os.environ.get("GRADPILOT_MAX_CHECKPOINT_MB") or 8192) * 1024 * 1024)
