"""The training loop of one epoch and the evaluation of a split, with no architecture code.

Per step: forward (autocast on CUDA when asked), the model's loss, backward, the gradient
monitor (before clipping), clipping from the monitor's total, the learning rate for this exact
position in the schedule, the optimizer step. Metrics accumulate on the device; the host reads
them once per epoch, and are computed with methods of ``torch._C.TensorBase`` taken when this
module is imported, before any model code runs (see ``worker.integrity``).
A stop request (SIGTERM) is honoured between steps and hands back the
partial epoch so that a checkpoint can carry it.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from service.schemas.hyperparameters import Hyperparameters
from worker import distributed
from worker.data import Batches
from worker.model_loading import LossFn, check_loss, check_outputs
from worker.monitor import EpochGradients, GradientMonitor
from worker.schedule import LrSchedule, make_optimizer, set_lr

log = logging.getLogger(__name__)

# The metric arithmetic, bound before any model is imported. TensorBase is an immutable C type:
# a model can replace ``torch.Tensor.argmax`` but not these.
_TENSOR = torch.Tensor
_argmax = torch._C.TensorBase.argmax
_eq = torch._C.TensorBase.eq
_sum = torch._C.TensorBase.sum
_detach = torch._C.TensorBase.detach
_to = torch._C.TensorBase.to
_mul = torch._C.TensorBase.mul
_add_ = torch._C.TensorBase.add_
_grad_enabled = torch.is_grad_enabled


def _count_correct(outputs: Tensor, y: Tensor) -> Tensor:
    return _sum(_eq(_argmax(_detach(outputs), dim=1), y))


def _weighted(loss: Tensor, n: int) -> Tensor:
    return _mul(_to(_detach(loss), torch.float64), n)


#: Under DDP the ranks agree on a stop request every this many steps (one tiny all-reduce).
DDP_STOP_CHECK_EVERY = 10


@dataclass
class EpochResult:
    """What one (complete) epoch of training measured."""

    train_loss: float | None
    train_accuracy: float
    learning_rate: float
    gradients: EpochGradients
    samples: int
    train_seconds: float


@dataclass
class Interrupted:
    """A stop request arrived after ``step`` steps of the epoch; ``partial`` resumes it."""

    step: int
    partial: dict[str, Any] = field(default_factory=dict)


@dataclass
class Evaluation:
    loss: float | None
    accuracy: float
    samples: int


def _finite_or_none(value: float) -> float | None:
    return value if value == value and abs(value) != float("inf") else None


class Trainer:
    """Owns the model (wrapped for DDP/compile as asked), optimizer, schedule and monitor."""

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        hp: Hyperparameters,
        schedule: LrSchedule,
        ctx: distributed.Context,
        num_classes: int,
    ) -> None:
        self.ctx = ctx
        self.device = ctx.device
        self.hp = hp
        self.schedule = schedule
        self.num_classes = num_classes
        self.loss_fn = loss_fn
        self.model = model.to(self.device)
        self.monitor = GradientMonitor(self.model.named_parameters())
        self.optimizer = make_optimizer(self.monitor.params, hp)

        cuda = self.device.type == "cuda"
        self.amp_dtype: torch.dtype | None = None
        if cuda and hp.amp:
            self.amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        # bf16 needs no loss scaling; fp16 (older GPUs) does.
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype is torch.float16 else None

        train_model: nn.Module = self.model
        if ctx.enabled:
            from torch.nn.parallel import DistributedDataParallel

            train_model = DistributedDataParallel(
                self.model, device_ids=[ctx.local_rank] if cuda else None
            )
        eval_model: nn.Module = self.model
        if cuda and hp.compile:
            from torch import _dynamo

            # A model dynamo cannot trace runs eagerly rather than failing the job.
            _dynamo.config.suppress_errors = True
            train_model = torch.compile(train_model)  # type: ignore[assignment]
            eval_model = torch.compile(self.model)  # type: ignore[assignment]
        self.train_model = train_model
        # Evaluation uses the bare model: ranks evaluate shards of different lengths, and a DDP
        # forward would wait for the others.
        self.eval_model = eval_model
        self._contract_checked = False

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=self.amp_dtype)

    def _loss(self, x: Tensor, y: Tensor, model: nn.Module) -> tuple[Tensor, Tensor]:
        with self._autocast():
            outputs = model(x)
            # Every step, not only the first: a tensor subclass could fake the metrics.
            if not self._contract_checked or type(outputs) is not _TENSOR:
                check_outputs(outputs, x.shape[0], self.num_classes)
            loss = self.loss_fn(outputs, y)
            if not self._contract_checked or type(loss) is not _TENSOR or loss.dim():
                loss = check_loss(loss, needs_grad=_grad_enabled())
        return outputs, loss

    def train_epoch(
        self,
        batches: Batches,
        schedule_epoch: float,
        *,
        start_step: int = 0,
        partial: dict[str, Any] | None = None,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> EpochResult | Interrupted:
        """Train one epoch (from ``start_step`` with ``partial`` when resuming mid-epoch)."""
        self.train_model.train()
        steps = len(batches)
        dev = self.device
        loss_sum = torch.zeros((), device=dev, dtype=torch.float64)
        correct = torch.zeros((), device=dev, dtype=torch.int64)
        count = torch.zeros((), device=dev, dtype=torch.int64)
        elapsed_before = 0.0
        self.monitor.reset()
        if partial:
            loss_sum += partial["loss_sum"]
            correct += partial["correct"]
            count += partial["count"]
            elapsed_before = float(partial["elapsed_s"])
            self.monitor.load_state_dict(partial["monitor"])
        lr = self.schedule.lr_at(schedule_epoch + start_step / steps)
        start = time.perf_counter()
        step = start_step
        iterator: Iterator[tuple[Tensor, Tensor]] = batches.iterate(start_step)
        for step, (x, y) in enumerate(iterator, start=start_step):
            outputs, loss = self._loss(x, y, self.train_model)
            self._contract_checked = True
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
                self.scaler.unscale_(self.optimizer)
            else:
                loss.backward()
            # The monitor sees the gradients before clipping; clipping reuses its total.
            if self.hp.gradient_clip > 0:
                self.monitor.clip_(self.monitor.observe(), self.hp.gradient_clip)
            else:
                self.monitor.record()
            lr = self.schedule.lr_at(schedule_epoch + step / steps)
            set_lr(self.optimizer, lr)
            if self.scaler is not None:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
            n = y.shape[0]
            _add_(loss_sum, _weighted(loss, n))
            _add_(correct, _count_correct(outputs, y))
            count += n
            if self._stop_now(should_stop, step) and step + 1 < steps:
                return self._interrupted(step + 1, loss_sum, correct, count, elapsed_before, start)
        seconds = elapsed_before + time.perf_counter() - start
        totals = distributed.all_reduce_sum(
            self.ctx, torch.stack((loss_sum, correct.to(torch.float64), count.to(torch.float64)))
        ).tolist()
        gradients = self.monitor.read_epoch()
        samples = int(totals[2])
        return EpochResult(
            train_loss=_finite_or_none(totals[0] / samples) if samples else None,
            train_accuracy=totals[1] / samples if samples else 0.0,
            learning_rate=lr,
            gradients=gradients,
            samples=samples,
            train_seconds=seconds,
        )

    def _stop_now(self, should_stop: Callable[[], bool], step: int) -> bool:
        if not self.ctx.enabled:
            return should_stop()
        # Ranks must stop after the same step: agree every few steps (a host sync each time).
        if (step + 1) % DDP_STOP_CHECK_EVERY:
            return False
        return distributed.any_rank(self.ctx, should_stop())

    def _interrupted(
        self,
        step: int,
        loss_sum: Tensor,
        correct: Tensor,
        count: Tensor,
        elapsed_before: float,
        start: float,
    ) -> Interrupted:
        stacked = distributed.all_reduce_sum(
            self.ctx, torch.stack((loss_sum, correct.to(torch.float64), count.to(torch.float64)))
        ).cpu()
        # Rank 0 carries the whole partial sums; on resume the other ranks start from zero.
        return Interrupted(
            step=step,
            partial={
                "loss_sum": stacked[0].clone(),
                "correct": stacked[1].to(torch.int64),
                "count": stacked[2].to(torch.int64),
                "elapsed_s": elapsed_before + time.perf_counter() - start,
                "monitor": self.monitor.state_dict(),
            },
        )

    @torch.no_grad()
    def evaluate(self, batches: Batches) -> Evaluation:
        """Loss (the model's own loss function) and accuracy over a split, summed over ranks."""
        self.eval_model.eval()
        dev = self.device
        loss_sum = torch.zeros((), device=dev, dtype=torch.float64)
        correct = torch.zeros((), device=dev, dtype=torch.int64)
        count = torch.zeros((), device=dev, dtype=torch.int64)
        for x, y in batches:
            outputs, loss = self._loss(x, y, self.eval_model)
            n = y.shape[0]
            _add_(loss_sum, _weighted(loss, n))
            _add_(correct, _count_correct(outputs, y))
            count += n
        totals = distributed.all_reduce_sum(
            self.ctx, torch.stack((loss_sum, correct.to(torch.float64), count.to(torch.float64)))
        ).tolist()
        samples = int(totals[2])
        if not samples:
            return Evaluation(None, 0.0, 0)
        return Evaluation(_finite_or_none(totals[0] / samples), totals[1] / samples, samples)

    # ------------------------------------------------------------------ state

    def state(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "optimizer_name": self.hp.optimizer,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "schedule": self.schedule.state_dict(),
        }
