"""``python -m worker.trainer``: the untrusted half of a job, which imports and trains the model.

Started by the supervisor (``worker.supervisor``) with a scrubbed environment (no token, no
``AWS_*``, HOME in its scratch directory) and one end of a socketpair. Before it reads the
spec it confines itself (``service.confinement``: namespaces without network, read-only mounts
with its own ``/proc`` and ``/tmp``, the supervisor's home and spool hidden, another uid when
the supervisor may change uids, rlimits, ``no_new_privs``, a seccomp filter where namespaces
are refused) and refuses to go on when a required layer is missing unless weak isolation was
allowed. Then it receives the spec, the data set file and the checkpoint to resume from, and
runs ``TrainingRun``; summaries, heartbeats and checkpoint files go to the supervisor over the
link, and its last message is the outcome (the failure classified as before: code or
infrastructure, with the model's traceback).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import Any

from service.confinement import Confinement, IsolationRefused, _linux, confine, enforce
from worker.channel import Channel, ChannelClosed
from worker.signals import StopFlag

log = logging.getLogger("worker.trainer")

#: Largest file the trainer may write (its checkpoints).
MAX_FILE_BYTES = 64 << 30


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m worker.trainer")
    parser.add_argument("--channel-fd", type=int, required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--user", help="uid:gid to become (when the supervisor may)")
    parser.add_argument("--hide", action="append", default=[])
    parser.add_argument("--no-namespaces", action="store_true")
    parser.add_argument("--host-network", action="store_true")
    parser.add_argument("--allow-weak", action="store_true")
    parser.add_argument("--memory-mb", type=int, default=0)
    parser.add_argument("--cpu-seconds", type=float, default=0)
    return parser.parse_args(argv)


def _preload() -> None:
    """Import, as the starting user, what training needs: after the uid change the interpreter
    may no longer read its own installation (e.g. a Python under /root)."""
    import collections.abc  # noqa: F401
    import dataclasses  # noqa: F401
    import functools  # noqa: F401
    import itertools  # noqa: F401
    import typing  # noqa: F401

    import torch
    import torch.distributed  # noqa: F401
    import torch.fft  # noqa: F401
    import torch.linalg  # noqa: F401
    import torch.nn.functional as F
    import torch.nn.init  # noqa: F401
    import torch.special  # noqa: F401

    import service.sandbox.static_check  # noqa: F401
    import worker.trainer_run  # noqa: F401

    # One tiny training step loads the lazily imported parts of autograd and the CPU kernels.
    layer = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten())
    out = layer(torch.randn(2, 3, 6, 6))
    F.cross_entropy(out[:, :3], torch.tensor([0, 1])).backward()


class ChannelLink:
    """``trainer_run.Link`` over the channel; every answer may carry a stop request."""

    def __init__(self, channel: Channel, stop: StopFlag) -> None:
        self.channel = channel
        self.stop = stop

    def _call(self, message: dict[str, Any]) -> dict[str, Any]:
        self.channel.send(message)
        reply = self.channel.receive()
        assert reply is not None
        if reply.get("stop") and not self.stop.requested:
            self.stop.signal_name = self.stop.signal_name or str(reply.get("signal") or "SIGTERM")
            self.stop.requested = True
        return reply

    def summary(self, summary: Any) -> None:
        self.channel.send({"event": "summary", "summary": summary.model_dump(mode="json")})

    def heartbeat(self, epoch: int) -> bool:
        return bool(self._call({"event": "heartbeat", "epoch": epoch}).get("cancel"))

    def checkpoint(self, filename: str, next_epoch: int, step: int) -> None:
        from worker.errors import WorkerError

        reply = self._call(
            {"event": "checkpoint", "file": filename, "next_epoch": next_epoch, "step": step}
        )
        if not reply.get("ok"):
            raise WorkerError(f"the supervisor did not store the checkpoint: {reply.get('error')}")


def _user(value: str | None) -> tuple[int, int] | None:
    if not value:
        return None
    uid, _, gid = value.partition(":")
    return int(uid), int(gid or uid)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    stop = StopFlag().install()
    layers = confine(
        Confinement(
            scratch=args.work,
            private_scratch=False,
            keep_fds=(args.channel_fd,),
            namespaces=not args.no_namespaces,
            network_namespace=not args.host_network,
            hide=tuple(args.hide),
            user=_user(args.user),
            die_with_parent=True,
            max_file_bytes=MAX_FILE_BYTES,
            max_open_files=4096,
        ),
        preload=_preload,
    )
    channel = Channel.from_fd(args.channel_fd)
    try:
        level = enforce(
            layers,
            allow_weak=args.allow_weak,
            what="the trainer",
            need_network=not args.host_network,
        ).describe()
    except IsolationRefused as e:
        channel.send({"event": "refused", "reason": e.message, "isolation": layers})
        return 0
    channel.send({"event": "ready", "isolation": layers, "level": level})
    try:
        start = channel.receive()
    except ChannelClosed:
        return 0
    assert start is not None
    _apply_limits(args)
    outcome = _train(start, channel, stop)
    with contextlib.suppress(ChannelClosed):
        channel.send({"event": "outcome", **outcome})
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip torch's slow teardown (and any atexit hook the model registered).
    os._exit(0)


def _apply_limits(args: argparse.Namespace) -> None:
    import resource

    import torch

    # The address-space cap breaks CUDA (it maps far more than it uses): CPU only.
    if args.memory_mb and not torch.cuda.is_available():
        _linux.apply_request_limits(args.memory_mb, args.cpu_seconds or 10**9)
    elif args.cpu_seconds:
        soft = int(args.cpu_seconds) + 1
        resource.setrlimit(resource.RLIMIT_CPU, (soft, soft + 5))


def _train(start: dict[str, Any], channel: Channel, stop: StopFlag) -> dict[str, Any]:
    from service.schemas.jobs import JobSpec
    from worker import distributed
    from worker.errors import Preempted, classify
    from worker.trainer_run import TrainingRun, dataset_from_file

    ctx = None
    try:
        ctx = distributed.setup()
        logging.basicConfig(
            level=os.environ.get("GRADPILOT_LOG_LEVEL", "INFO").upper(),
            format=f"%(asctime)s rank{ctx.rank} %(levelname)s %(name)s: %(message)s",
            stream=sys.stderr,
        )
        spec = JobSpec.model_validate(start["spec"])
        dataset = dataset_from_file(Path(start["dataset"]))
        run = TrainingRun(
            spec,
            ChannelLink(channel, stop),
            ctx,
            stop,
            Path.cwd(),
            dataset,
            start.get("resume"),
        )
        return run.run()
    except Preempted as e:
        return {"status": "preempted", "reason": str(e)}
    except ChannelClosed:
        return {"status": "gone"}
    except BaseException as e:  # noqa: BLE001 - SystemExit from the model is its failure too
        failure = classify(e)
        return {
            "status": "failed",
            "kind": failure.kind,
            "exit_code": failure.exit_code,
            "message": failure.message[:20_000],
            "traceback": failure.traceback[-200_000:],
        }
    finally:
        if ctx is not None:
            distributed.teardown(ctx)


if __name__ == "__main__":
    sys.exit(main())
