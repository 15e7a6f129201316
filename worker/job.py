"""One training segment, from job spec to ``finish``: resume, train, report, checkpoint.

The order of things per epoch: train (honouring a stop request between steps), validate,
queue the summary (sent now or later), heartbeat (a cancel request stops the job cleanly),
checkpoint every ``checkpoint_every`` epochs and at the end. SIGTERM mid-epoch checkpoints the
partial epoch and exits ``PREEMPTED``; a restart of the same job resumes from its newest
checkpoint, else from the spec's resume checkpoint.
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Any

import torch

from service.schemas import exit_codes
from service.schemas.jobs import CheckpointIn, JobFinish, JobSpec
from service.schemas.summaries import EpochSummaryIn, NormStats
from worker import checkpoint, distributed
from worker.client import ApiClient
from worker.data import Batches, Dataset, load_dataset
from worker.errors import Preempted
from worker.model_loading import LoadedModel, load_model
from worker.monitor import Stats, weight_norms
from worker.schedule import LrSchedule, load_optimizer_state
from worker.signals import StopFlag
from worker.training import EpochResult, Evaluation, Interrupted, Trainer

log = logging.getLogger(__name__)

#: An epoch longer than this also heartbeats between steps.
MID_EPOCH_HEARTBEAT_S = 60.0


def _norm_stats(stats: Stats | None) -> NormStats:
    # The schema requires the total; an epoch with no finite step reports zeros, and
    # ``nonfinite_steps == steps`` says why.
    if stats is None:
        return NormStats(mean=0.0, max=0.0, min=0.0)
    return NormStats(mean=stats.mean, max=stats.max, min=stats.min)


def build_summary(
    epoch: int,
    result: EpochResult,
    val: Evaluation,
    weights: dict[str, float],
    seconds: float,
) -> EpochSummaryIn:
    g = result.gradients
    return EpochSummaryIn(
        epoch=epoch,
        train_loss=result.train_loss,
        val_loss=val.loss,
        train_accuracy=min(max(result.train_accuracy, 0.0), 1.0),
        val_accuracy=min(max(val.accuracy, 0.0), 1.0),
        learning_rate=result.learning_rate,
        grad_total=_norm_stats(g.total),
        grad_layers={name: _norm_stats(s) for name, s in g.layers.items()},
        weight_norms={k: v for k, v in weights.items() if v == v and abs(v) != float("inf")},
        nonfinite_steps=g.nonfinite_steps,
        steps=g.steps,
        seconds=seconds,
        samples_per_second=result.samples / result.train_seconds if result.train_seconds else 0.0,
    )


def _load_weights(model: torch.nn.Module, state: dict[str, Any], same_source: bool) -> None:
    if same_source:
        model.load_state_dict(state)
        return
    # Another architecture (a repair, a redesign that kept some layers): carry over the tensors
    # whose name and shape still match, train the rest from their initialisation.
    own = model.state_dict()
    matched = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(matched, strict=False)
    log.info(
        "checkpoint from another model source: loaded %d of %d tensors by name and shape",
        len(matched),
        len(own),
    )


class Job:
    """Runs one spec. ``client`` is None on ranks other than 0 (they never report)."""

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
        self.summaries: list[dict[str, Any]] = []
        self.last_saved: tuple[int, int] | None = None
        self.last_heartbeat = time.monotonic()
        self.cancel_seen = False

    # ------------------------------------------------------------------ set-up

    def _build(self) -> tuple[Dataset, LoadedModel, Trainer]:
        spec, hp = self.spec, self.spec.hyperparameters
        torch.manual_seed(spec.seed)
        data_spec = spec.dataset
        signed = getattr(self.store, "dataset_url", lambda: None)()
        if signed and (data_spec.uri or "").startswith("s3://"):
            data_spec = data_spec.model_copy(update={"uri": signed})
        dataset = load_dataset(data_spec, spec.seed)
        loaded = load_model(
            spec.model_source,
            dataset.input_shape,
            dataset.num_classes,
            expected_sha256=spec.model_sha256,
            label_smoothing=hp.label_smoothing,
        )
        if loaded.custom_loss and hp.label_smoothing:
            log.info("the model's own loss_function is used; label_smoothing is not applied")
        schedule = LrSchedule.from_hyperparameters(hp, spec.schedule_total_epochs)
        trainer = Trainer(loaded.model, loaded.loss_fn, hp, schedule, self.ctx, dataset.num_classes)
        return dataset, loaded, trainer

    def _resume(self, trainer: Trainer) -> tuple[int, int, dict[str, Any] | None]:
        """Load this job's newest checkpoint, else the spec's; returns (next epoch, step in it,
        partial epoch state)."""
        spec = self.spec
        # Loaded to the CPU: load_state_dict copies to the model's device, the optimizer moves
        # its state to its parameters', and RNG states must stay CPU byte tensors.
        found = checkpoint.latest(self.store, spec.job_id)
        if found is not None:
            p = found.payload
            log.info(
                "resuming this job from %s (epoch %d, step %d)",
                found.url,
                p["next_epoch"],
                p["step"],
            )
            trainer.model.load_state_dict(p["model"])
            trainer.optimizer.load_state_dict(p["optimizer"])
            if trainer.scaler is not None and p.get("scaler"):
                trainer.scaler.load_state_dict(p["scaler"])
            checkpoint.restore_rng(p["rng"])
            self.summaries = list(p.get("summaries") or [])
            self.last_saved = (p["next_epoch"], p["step"])
            partial = p.get("partial") if self.ctx.is_main else None
            if p.get("partial") and not self.ctx.is_main:
                # Other ranks resume the monitor (identical on all ranks) but not the sums.
                partial = {**p["partial"], "loss_sum": 0.0, "correct": 0, "count": 0}
            return int(p["next_epoch"]), int(p["step"]), partial
        if spec.resume_checkpoint:
            p = checkpoint.load_resume(self.store, spec.resume_checkpoint)
            same = p.get("model_sha256") == spec.model_sha256
            log.info(
                "starting from %s (%s)",
                spec.resume_checkpoint,
                "weights only" if spec.resume_weights_only or not same else "full state",
            )
            _load_weights(trainer.model, p["model"], same)
            if same and not spec.resume_weights_only:
                if p.get("optimizer_name") == spec.hyperparameters.optimizer:
                    try:
                        load_optimizer_state(trainer.optimizer, p["optimizer"])
                    except (ValueError, KeyError) as e:
                        log.warning("optimizer state not loaded (%s); starting it afresh", e)
                if trainer.scaler is not None and p.get("scaler"):
                    trainer.scaler.load_state_dict(p["scaler"])
                if p.get("rng"):
                    checkpoint.restore_rng(p["rng"])
        return spec.epoch_start, 0, None

    # ------------------------------------------------------------------ checkpoints

    def _save(
        self,
        trainer: Trainer,
        next_epoch: int,
        step: int = 0,
        partial: dict[str, Any] | None = None,
    ) -> None:
        if not self.ctx.is_main or self.last_saved == (next_epoch, step):
            return
        spec = self.spec
        payload = {
            **trainer.state(),
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
            "next_epoch": next_epoch,
            "step": step,
            "partial": partial,
            "summaries": list(self.summaries),
            "rng": checkpoint.capture_rng(),
            "torch_version": str(torch.__version__),
            "created_at": time.time(),
        }
        url = checkpoint.save(self.store, spec.job_id, payload)
        self.last_saved = (next_epoch, step)
        log.info("checkpoint %s", url)
        # Only epoch boundaries are registered: they are what a later job can start from. A
        # mid-epoch one only serves a restart of this job, which finds it in the store.
        if step == 0 and next_epoch - 1 >= 0 and self.client is not None:
            self.client.report_checkpoint(CheckpointIn(uri=url, epoch=next_epoch - 1))
        checkpoint.prune(self.store, spec.job_id, keep=2)

    def _preempt(
        self, trainer: Trainer, next_epoch: int, step: int = 0, partial: Any = None
    ) -> None:
        self._save(trainer, next_epoch, step, partial)
        if self.client is not None:
            self.client.flush(force=True)  # one try: the kill may follow soon
        raise Preempted(self.stop.signal_name or "stop requested")

    # ------------------------------------------------------------------ loop

    def run(self) -> int:
        spec = self.spec
        hp = spec.hyperparameters
        dataset, _loaded, trainer = self._build()
        ctx = self.ctx
        train = Batches(
            dataset.train,
            dataset,
            hp.batch_size,
            ctx.device,
            train=True,
            seed=spec.seed,
            rank=ctx.rank,
            world=ctx.world,
        )
        eval_batch = max(hp.batch_size, 256)
        val = Batches(
            dataset.val,
            dataset,
            eval_batch,
            ctx.device,
            train=False,
            rank=ctx.rank,
            world=ctx.world,
        )
        next_epoch, step, partial = self._resume(trainer)
        if self.client is not None:
            for item in self.summaries:  # re-send what a lost machine may not have sent
                self.client.outbox.add_summary(EpochSummaryIn.model_validate(item))
            self.client.flush(force=True)
        end = spec.epoch_start + spec.epochs
        cancel = self._heartbeat(next_epoch)
        for epoch in range(next_epoch, end):
            if cancel:
                break
            started = time.perf_counter()
            train.set_epoch(epoch)
            schedule_epoch = spec.schedule_epoch + (epoch - spec.epoch_start)
            result = trainer.train_epoch(
                train,
                schedule_epoch,
                start_step=step,
                partial=partial,
                should_stop=functools.partial(self._between_steps, epoch),
            )
            step, partial = 0, None
            if isinstance(result, Interrupted):
                self._preempt(trainer, epoch, result.step, result.partial)
            assert isinstance(result, EpochResult)
            evaluation = trainer.evaluate(val)
            weights = weight_norms(trainer.model.named_parameters())
            summary = build_summary(
                epoch, result, evaluation, weights, time.perf_counter() - started
            )
            log.info(
                "epoch %d: train loss %s acc %.4f, val loss %s acc %.4f, |g| %.4g, %.0f samples/s",
                epoch,
                summary.train_loss,
                summary.train_accuracy,
                summary.val_loss,
                summary.val_accuracy,
                summary.grad_total.mean,
                summary.samples_per_second,
            )
            self.summaries.append(summary.model_dump(mode="json"))
            if self.client is not None:
                self.client.report_summary(summary)
            cancel = self._heartbeat(epoch + 1 if epoch + 1 < end else epoch)
            done = epoch + 1 - spec.epoch_start
            if done % spec.checkpoint_every == 0 or epoch + 1 == end or cancel:
                self._save(trainer, epoch + 1)
            if distributed.any_rank(ctx, self.stop.requested):
                self._preempt(trainer, epoch + 1)
        if cancel:
            return self._finish_cancelled(trainer, next_epoch)
        test_accuracy = self._score_test(trainer, dataset)
        # A job resumed after its last epoch (its finish was lost) has nothing left to train.
        self._save(trainer, end)
        if self.client is not None:
            self.client.finish(
                JobFinish(
                    status="succeeded", exit_code=exit_codes.SUCCESS, test_accuracy=test_accuracy
                ),
                deadline_s=self.finish_deadline_s,
            )
        return exit_codes.SUCCESS

    def _heartbeat(self, epoch: int) -> bool:
        self.last_heartbeat = time.monotonic()
        cancel = self.client.heartbeat(epoch) if self.client is not None else False
        cancel = cancel or self.cancel_seen
        return distributed.from_main(self.ctx, cancel)

    def _between_steps(self, epoch: int) -> bool:
        """Checked between training steps: a stop request ends the epoch early; a long epoch
        also heartbeats (so that the controller does not take it for dead), and a cancel it
        hears of is acted on at the end of the epoch."""
        if self.stop.requested:
            return True
        due = time.monotonic() - self.last_heartbeat > MID_EPOCH_HEARTBEAT_S
        if due and self.client is not None:
            self.last_heartbeat = time.monotonic()
            self.cancel_seen = self.client.heartbeat(epoch) or self.cancel_seen
        return False

    def _finish_cancelled(self, trainer: Trainer, next_epoch: int) -> int:
        log.warning("the API asked to cancel this job: stopped after a checkpoint")
        if self.client is not None:
            self.client.finish(
                JobFinish(
                    status="failed",
                    error_kind="cancelled",
                    exit_code=exit_codes.PREEMPTED,
                    message="cancelled on request",
                ),
                deadline_s=self.finish_deadline_s,
            )
        return exit_codes.PREEMPTED

    def _score_test(self, trainer: Trainer, dataset: Dataset) -> float | None:
        if not self.spec.score_test or dataset.test is None or not len(dataset.test):
            return None
        batches = Batches(
            dataset.test,
            dataset,
            max(self.spec.hyperparameters.batch_size, 256),
            self.ctx.device,
            train=False,
            rank=self.ctx.rank,
            world=self.ctx.world,
        )
        result = trainer.evaluate(batches)
        log.info("test accuracy %.4f on %d samples", result.accuracy, result.samples)
        return result.accuracy
