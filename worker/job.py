"""One training segment as the supervisor sees it: fetch, start the confined trainer, relay.

The supervisor (this process, ``python -m worker``) alone holds the job token and any cloud
credentials. It fetches what the trainer needs into files the trainer can read (the data set,
including ``s3://`` and CIFAR files, as plain tensors; the checkpoint to resume from: this
job's newest, else the spec's), re-sends the summaries a lost machine may not have sent, starts
``python -m worker.trainer`` (``worker.supervisor``), and then serves it over the link:

- ``summary``: validated against the schema, queued for the API (sent now or spooled);
- ``heartbeat``: sent to the API; the answer (cancel, and any stop request this process got)
  goes back;
- ``checkpoint``: the trainer's file is read as untrusted data (``read_checkpoint``), given the
  metadata the supervisor trusts (job, run, source and hash, hyperparameters, data set), stored,
  registered at epoch boundaries, and pruned;
- ``outcome``: succeeded, cancelled, preempted (after its checkpoint) or failed (code or
  infrastructure, with the model's traceback), reported with the isolation level it ran under.

SIGTERM (spot reclaim, a local cancel) is passed on to the trainer, which checkpoints at the
next step; the job then exits ``PREEMPTED``. A trainer that dies without an outcome (killed by
the kernel, a limit, the wall-clock timeout) is an infrastructure failure.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from service.schemas import exit_codes
from service.schemas.jobs import CheckpointIn, JobFinish, JobSpec
from service.schemas.summaries import EpochSummaryIn
from worker import checkpoint, distributed
from worker.channel import ChannelClosed
from worker.client import ApiClient
from worker.data import load_dataset
from worker.errors import ModelCodeError, Preempted, WorkerError
from worker.signals import StopFlag
from worker.supervisor import TrainerProcess, max_checkpoint_bytes, trainer_timeout_s
from worker.trainer_run import dataset_to_file

log = logging.getLogger(__name__)

#: How long the trainer may take to confine itself and import torch.
TRAINER_STARTUP_S = 300.0


class IsolationUnavailable(WorkerError):
    """The trainer refused to run: a required isolation layer is missing on this host."""

    exit_code = exit_codes.BAD_SPEC  # the same host refuses again: do not retry


def supervisor_context() -> distributed.Context:
    """This rank's place under ``torchrun`` without joining the process group: the trainers
    join it (the supervisor runs no collective and needs no device)."""
    return distributed.Context(
        rank=int(os.environ.get("RANK", "0")),
        world=int(os.environ.get("WORLD_SIZE", "1")),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        device=torch.device("cpu"),
    )


def _hidden_paths(spec: JobSpec) -> list[str]:
    """Folders the trainer must not see even where it keeps the supervisor's uid."""
    paths = [os.path.expanduser("~"), "/root"]
    for name in ("GRADPILOT_SPOOL_DIR", "GRADPILOT_HOME", "AWS_CONFIG_FILE"):
        value = os.environ.get(name)
        if value:
            paths.append(os.path.dirname(value) if name == "AWS_CONFIG_FILE" else value)
    if spec.artifact_prefix.startswith("file://"):
        from urllib.parse import unquote, urlparse

        paths.append(unquote(urlparse(spec.artifact_prefix).path))
    return [p for p in dict.fromkeys(os.path.realpath(p) for p in paths) if os.path.isdir(p)]


class Job:
    """Supervises one spec. ``client`` is None on ranks other than 0 (they never report)."""

    def __init__(
        self,
        spec: JobSpec,
        client: ApiClient | None,
        ctx: distributed.Context,
        stop: StopFlag,
        *,
        finish_deadline_s: float = 300.0,
        artifact_urls: checkpoint.UrlSource | None = None,
    ) -> None:
        self.spec = spec
        self.client = client
        self.ctx = ctx
        self.stop = stop
        self.finish_deadline_s = finish_deadline_s
        # On S3, only through the URLs the API signs for this job (it holds no S3 permission).
        self.store = checkpoint.job_store(spec, artifact_urls)
        self.isolation: str | None = None
        self._stop_forwarded = False

    # ------------------------------------------------------------------ inputs

    def _prepare_inputs(self, inputs: Path) -> dict[str, Any]:
        spec = self.spec
        data_spec = spec.dataset
        signed = getattr(self.store, "dataset_url", lambda: None)()
        if signed and (data_spec.uri or "").startswith("s3://"):
            data_spec = data_spec.model_copy(update={"uri": signed})
        dataset = load_dataset(data_spec, spec.seed)
        dataset_to_file(dataset, inputs / "dataset.pt")
        start: dict[str, Any] = {
            "spec": spec.model_dump(mode="json"),
            "dataset": str(inputs / "dataset.pt"),
            "resume": None,
        }
        found = checkpoint.latest(self.store, spec.job_id)
        if found is not None:
            path = inputs / "resume.pt"
            path.write_bytes(checkpoint.dumps(found.payload))
            start["resume"] = {"kind": "own", "path": str(path), "url": found.url}
            if self.client is not None:  # re-send what a lost machine may not have sent
                for item in found.payload.get("summaries") or []:
                    self.client.outbox.add_summary(EpochSummaryIn.model_validate(item))
        elif spec.resume_checkpoint:
            payload = checkpoint.load_resume(self.store, spec.resume_checkpoint)  # validates it
            path = inputs / "start.pt"
            path.write_bytes(checkpoint.dumps(payload))
            start["resume"] = {"kind": "start", "path": str(path), "url": spec.resume_checkpoint}
        for file in inputs.iterdir():
            file.chmod(0o644)
        if self.client is not None:
            self.client.flush(force=True)
        return start

    # ------------------------------------------------------------------ the run

    def run(self) -> int:
        job_dir, work, inputs = TrainerProcess.prepare()
        process: TrainerProcess | None = None
        try:
            start = self._prepare_inputs(inputs)
            process = TrainerProcess.start(
                job_dir, work, inputs, world=self.ctx.world, hide=_hidden_paths(self.spec)
            )
            self._wait_ready(process)
            process.channel.send({"event": "start", **start})
            return self._serve(process)
        finally:
            if process is not None:
                process.close()
            else:
                import shutil

                shutil.rmtree(job_dir, ignore_errors=True)

    def _wait_ready(self, process: TrainerProcess) -> None:
        deadline = time.monotonic() + TRAINER_STARTUP_S
        while True:
            self._forward_stop(process)
            try:
                message = process.channel.receive(timeout=0.5)
            except (ChannelClosed, ValueError):
                status = process.exit_status()
                raise WorkerError(
                    f"the trainer process exited (status {status}) before it was ready"
                ) from None
            if message is not None:
                break
            if time.monotonic() > deadline:
                raise WorkerError(f"the trainer did not start within {TRAINER_STARTUP_S:g} s")
        if message.get("event") == "refused":
            raise IsolationUnavailable(str(message.get("reason")))
        if message.get("event") != "ready":
            raise WorkerError("the trainer sent something else than its ready message")
        self.isolation = str(message.get("level") or "")[:300] or None
        log.info("trainer confined: %s", self.isolation)

    def _forward_stop(self, process: TrainerProcess) -> None:
        if self.stop.requested and not self._stop_forwarded:
            self._stop_forwarded = True
            process.signal(signal.SIGTERM)

    def _serve(self, process: TrainerProcess) -> int:
        deadline = process.started + trainer_timeout_s()
        while True:
            self._forward_stop(process)
            if time.monotonic() > deadline:
                process.kill()
                raise WorkerError(
                    f"the trainer ran past its limit of {trainer_timeout_s():g} s and was killed"
                )
            try:
                message = process.channel.receive(timeout=0.5)
            except ChannelClosed:
                return self._died(process)
            except ValueError as e:
                process.kill()
                raise ModelCodeError(f"the trainer broke its protocol: {e}") from None
            if message is None:
                continue
            kind = message.get("event")
            if kind == "summary":
                self._summary(message)
            elif kind == "heartbeat":
                cancel = False
                if self.client is not None:
                    epoch = message.get("epoch")
                    cancel = self.client.heartbeat(epoch if isinstance(epoch, int) else None)
                self._reply(process, cancel=cancel)
            elif kind == "checkpoint":
                self._checkpoint(process, message)
            elif kind == "outcome":
                return self._outcome(process, message)

    def _reply(self, process: TrainerProcess, **fields: Any) -> None:
        self._forward_stop(process)
        signal_name = self.stop.signal_name
        # A closed link: the next receive reports how the trainer died.
        with contextlib.suppress(ChannelClosed):
            process.channel.send({**fields, "stop": self.stop.requested, "signal": signal_name})

    def _summary(self, message: dict[str, Any]) -> None:
        try:
            summary = EpochSummaryIn.model_validate(message.get("summary"))
        except ValidationError as e:
            raise ModelCodeError(f"the trainer sent an invalid epoch summary: {e}") from None
        spec = self.spec
        if not spec.epoch_start <= summary.epoch < spec.epoch_start + spec.epochs:
            raise ModelCodeError(f"the trainer sent a summary for epoch {summary.epoch}")
        if self.client is not None:
            self.client.report_summary(summary)

    def _checkpoint(self, process: TrainerProcess, message: dict[str, Any]) -> None:
        spec = self.spec
        next_epoch, step = message.get("next_epoch"), message.get("step")
        if not isinstance(next_epoch, int) or not isinstance(step, int) or step < 0:
            raise ModelCodeError("the trainer announced a checkpoint without a position")
        try:
            state = process.read_checkpoint(next_epoch, step, max_checkpoint_bytes())
        except ValueError as e:
            process.kill()
            raise ModelCodeError(f"the trainer's checkpoint was refused: {e}") from None
        if self.ctx.is_main:
            payload = {
                **state,
                "job_id": spec.job_id,
                "run_id": spec.run_id,
                "generation": spec.generation,
                "attempt": spec.attempt,
                "model_source": spec.model_source,
                "model_sha256": spec.model_sha256,
                "hyperparameters": spec.hyperparameters.model_dump(mode="json"),
                "dataset": spec.dataset.model_dump(mode="json"),
                "seed": spec.seed,
                "epoch": next_epoch - 1,
                "torch_version": str(torch.__version__),
                "created_at": time.time(),
            }
            url = checkpoint.save(self.store, spec.job_id, payload)
            log.info("checkpoint %s", url)
            # Only epoch boundaries are registered: they are what a later job can start from.
            # A mid-epoch one only serves a restart of this job, which finds it in the store.
            if step == 0 and next_epoch - 1 >= 0 and self.client is not None:
                self.client.report_checkpoint(CheckpointIn(uri=url, epoch=next_epoch - 1))
            checkpoint.prune(self.store, spec.job_id, keep=2)
        self._reply(process, ok=True)

    def _outcome(self, process: TrainerProcess, message: dict[str, Any]) -> int:
        status = message.get("status")
        if status == "preempted":
            if self.client is not None:
                self.client.flush(force=True)  # one try: the kill may follow soon
            raise Preempted(str(message.get("reason") or self.stop.signal_name or "stopped"))
        if status == "cancelled":
            log.warning("the API asked to cancel this job: stopped after a checkpoint")
            self._finish(
                JobFinish(
                    status="failed",
                    error_kind="cancelled",
                    exit_code=exit_codes.PREEMPTED,
                    message="cancelled on request",
                )
            )
            return exit_codes.PREEMPTED
        if status == "succeeded":
            accuracy = message.get("test_accuracy")
            if accuracy is not None and not (
                isinstance(accuracy, int | float) and 0 <= accuracy <= 1
            ):
                raise ModelCodeError("the trainer reported an impossible test accuracy")
            self._finish(
                JobFinish(
                    status="succeeded",
                    exit_code=exit_codes.SUCCESS,
                    test_accuracy=accuracy,
                )
            )
            return exit_codes.SUCCESS
        if status == "failed":
            return self._failed(message)
        return self._died(process)

    def _failed(self, message: dict[str, Any]) -> int:
        kind = "code" if message.get("kind") == "code" else "infrastructure"
        allowed = {exit_codes.CODE_ERROR, exit_codes.INFRASTRUCTURE_ERROR, exit_codes.BAD_SPEC}
        code = message.get("exit_code")
        exit_code = code if code in allowed else exit_codes.INFRASTRUCTURE_ERROR
        text, trace = str(message.get("message") or ""), str(message.get("traceback") or "")
        log.error("job failed (%s):\n%s", kind, trace)
        self._finish(
            JobFinish(
                status="failed",
                error_kind=kind,
                exit_code=exit_code,
                message=text[:20_000],
                traceback=trace[-200_000:],
            ),
            deadline_s=min(self.finish_deadline_s, 120.0),
        )
        return int(exit_code)

    def _died(self, process: TrainerProcess) -> int:
        status = process.exit_status()
        if status is not None and status < 0:
            what = f"was killed by {signal.Signals(-status).name}"
        elif status is not None and status > 128:
            what = f"was killed by signal {status - 128}"
        else:
            what = f"exited with status {status}"
        if self.stop.requested:
            # Stopped before it could checkpoint (e.g. still starting): resume from the last.
            raise Preempted(self.stop.signal_name or "stopped")
        raise WorkerError(f"the trainer process {what} without reporting an outcome")

    def _finish(self, outcome: JobFinish, deadline_s: float | None = None) -> None:
        if self.client is None:
            return
        outcome.isolation = self.isolation
        self.client.finish(outcome, deadline_s=deadline_s or self.finish_deadline_s)
