"""One training segment inside the confined trainer: resume, train, report, checkpoint.

The order per epoch is the worker's contract: train (honouring a stop request between steps),
validate, send the summary, heartbeat (a cancel request stops the job cleanly), checkpoint every
``checkpoint_every`` epochs and at the end. A stop request mid-epoch checkpoints the partial
epoch and ends ``preempted``. Everything that needs a secret (the API, the artifact store) is
the supervisor's: this code reaches it only through ``Link``, and hands checkpoints over as
files in its scratch directory.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from pathlib import Path
from typing import Any, Protocol

import torch

from service.schemas.jobs import JobSpec
from service.schemas.summaries import EpochSummaryIn, NormStats
from worker import checkpoint, distributed
from worker.data import Batches, Dataset, Split
from worker.errors import Preempted
from worker.integrity import Integrity
from worker.model_loading import load_model
from worker.monitor import Stats, weight_norms
from worker.schedule import LrSchedule, load_optimizer_state
from worker.signals import StopFlag
from worker.training import EpochResult, Evaluation, Interrupted, Trainer

log = logging.getLogger("worker.trainer")

#: An epoch longer than this also heartbeats between steps.
MID_EPOCH_HEARTBEAT_S = 60.0


class Link(Protocol):
    """What the trainer may ask of its supervisor."""

    def summary(self, summary: EpochSummaryIn) -> None: ...

    def heartbeat(self, epoch: int) -> bool:
        """True when the API asked to cancel the job."""
        ...

    def checkpoint(self, filename: str, next_epoch: int, step: int) -> None:
        """The supervisor validated and stored the checkpoint file (or raised)."""
        ...


def checkpoint_filename(next_epoch: int, step: int) -> str:
    return f"e{next_epoch:06d}-s{step:07d}.pt"


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


def load_weights(model: torch.nn.Module, state: dict[str, Any], same_source: bool) -> None:
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


def dataset_to_file(dataset: Dataset, path: Path) -> None:
    """The supervisor's half of handing a data set over: plain tensors, read with
    ``weights_only=True``."""
    payload: dict[str, Any] = {
        "name": dataset.name,
        "input_shape": list(dataset.input_shape),
        "num_classes": dataset.num_classes,
        "mean": list(dataset.mean),
        "std": list(dataset.std),
        "scale": dataset.scale,
        "augment": dataset.augment,
    }
    splits = {"train": dataset.train, "val": dataset.val, "test": dataset.test}
    for name, split in splits.items():
        if split is not None:
            payload[f"{name}_x"], payload[f"{name}_y"] = split.x, split.y
    torch.save(payload, path)


def dataset_from_file(path: Path) -> Dataset:
    p = torch.load(path, map_location="cpu", weights_only=True)
    shape = tuple(int(v) for v in p["input_shape"])
    assert len(shape) == 3
    test = Split(p["test_x"], p["test_y"]) if "test_x" in p else None
    return Dataset(
        name=str(p["name"]),
        input_shape=(shape[0], shape[1], shape[2]),
        num_classes=int(p["num_classes"]),
        train=Split(p["train_x"], p["train_y"]),
        val=Split(p["val_x"], p["val_y"]),
        test=test,
        mean=tuple(float(v) for v in p["mean"]),
        std=tuple(float(v) for v in p["std"]),
        scale=float(p["scale"]),
        augment=bool(p["augment"]),
    )


class TrainingRun:
    """Trains one spec. Only the main rank (``ctx.is_main``) reports and checkpoints."""

    def __init__(
        self,
        spec: JobSpec,
        link: Link,
        ctx: distributed.Context,
        stop: StopFlag,
        work: Path,
        dataset: Dataset,
        resume: dict[str, Any] | None,
    ) -> None:
        self.spec = spec
        self.link = link
        self.ctx = ctx
        self.stop = stop
        self.work = work
        self.dataset = dataset
        self.resume = resume
        self.summaries: list[dict[str, Any]] = []
        self.last_saved: tuple[int, int] | None = None
        self.last_heartbeat = time.monotonic()
        self.cancel_seen = False
        self.integrity = Integrity()

    # ------------------------------------------------------------------ set-up

    def _build(self) -> Trainer:
        spec, hp = self.spec, self.spec.hyperparameters
        torch.manual_seed(spec.seed)
        loaded = load_model(
            spec.model_source,
            self.dataset.input_shape,
            self.dataset.num_classes,
            expected_sha256=spec.model_sha256,
            label_smoothing=hp.label_smoothing,
        )
        self.integrity.verify()
        if loaded.custom_loss and hp.label_smoothing:
            log.info("the model's own loss_function is used; label_smoothing is not applied")
        schedule = LrSchedule.from_hyperparameters(hp, spec.schedule_total_epochs)
        return Trainer(
            loaded.model, loaded.loss_fn, hp, schedule, self.ctx, self.dataset.num_classes
        )

    def _resume(self, trainer: Trainer) -> tuple[int, int, dict[str, Any] | None]:
        """Load the checkpoint the supervisor fetched (this job's newest, else the spec's);
        returns (next epoch, step in it, partial epoch state)."""
        spec, resume = self.spec, self.resume
        if resume is None:
            return spec.epoch_start, 0, None
        # Loaded to the CPU: load_state_dict copies to the model's device, the optimizer moves
        # its state to its parameters', and RNG states must stay CPU byte tensors.
        p = checkpoint.loads(Path(resume["path"]).read_bytes())
        if resume["kind"] == "own":
            log.info(
                "resuming this job from %s (epoch %d, step %d)",
                resume["url"],
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
        same = p.get("model_sha256") == spec.model_sha256
        log.info(
            "starting from %s (%s)",
            resume["url"],
            "weights only" if spec.resume_weights_only or not same else "full state",
        )
        load_weights(trainer.model, p["model"], same)
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
        # Only the training state: the supervisor adds what the checkpoint is (job, source,
        # hyperparameters) from the spec it trusts.
        payload = {
            **trainer.state(),
            "epoch": next_epoch - 1,
            "next_epoch": next_epoch,
            "step": step,
            "partial": partial,
            "summaries": list(self.summaries),
            "rng": checkpoint.capture_rng(),
        }
        name = checkpoint_filename(next_epoch, step)
        partial_path = self.work / (name + ".part")
        torch.save(payload, partial_path)
        os.replace(partial_path, self.work / name)
        self.link.checkpoint(name, next_epoch, step)
        self.last_saved = (next_epoch, step)

    def _preempt(
        self, trainer: Trainer, next_epoch: int, step: int = 0, partial: Any = None
    ) -> None:
        self._save(trainer, next_epoch, step, partial)
        raise Preempted(self.stop.signal_name or "stop requested")

    # ------------------------------------------------------------------ loop

    def run(self) -> dict[str, Any]:
        """Train the segment; returns the outcome (``succeeded`` with the test accuracy, or
        ``cancelled``). Raises ``Preempted`` after a checkpoint on a stop request."""
        spec = self.spec
        hp = spec.hyperparameters
        trainer = self._build()
        ctx, dataset = self.ctx, self.dataset
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
            # The numbers about to be reported were computed by unpatched arithmetic.
            self.integrity.verify()
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
            if ctx.is_main:
                self.link.summary(summary)
            cancel = self._heartbeat(epoch + 1 if epoch + 1 < end else epoch)
            done = epoch + 1 - spec.epoch_start
            if done % spec.checkpoint_every == 0 or epoch + 1 == end or cancel:
                self._save(trainer, epoch + 1)
            if distributed.any_rank(ctx, self.stop.requested):
                self._preempt(trainer, epoch + 1)
        if cancel:
            log.warning("the API asked to cancel this job: stopped after a checkpoint")
            return {"status": "cancelled"}
        test_accuracy = self._score_test(trainer)
        self.integrity.verify()
        # A job resumed after its last epoch (its finish was lost) has nothing left to train.
        self._save(trainer, end)
        return {"status": "succeeded", "test_accuracy": test_accuracy}

    def _heartbeat(self, epoch: int) -> bool:
        self.last_heartbeat = time.monotonic()
        cancel = self.link.heartbeat(epoch) if self.ctx.is_main else False
        cancel = cancel or self.cancel_seen
        return distributed.from_main(self.ctx, cancel)

    def _between_steps(self, epoch: int) -> bool:
        """Checked between training steps: a stop request ends the epoch early; a long epoch
        also heartbeats (so that the controller does not take it for dead), and a cancel it
        hears of is acted on at the end of the epoch."""
        if self.stop.requested:
            return True
        due = time.monotonic() - self.last_heartbeat > MID_EPOCH_HEARTBEAT_S
        if due and self.ctx.is_main:
            self.last_heartbeat = time.monotonic()
            self.cancel_seen = self.link.heartbeat(epoch) or self.cancel_seen
        return self.stop.requested

    def _score_test(self, trainer: Trainer) -> float | None:
        dataset = self.dataset
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
