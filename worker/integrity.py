"""The training loop's arithmetic, guarded against a model that patches it.

Losses and accuracies are what every decision is made from, and the model's code runs in the
same process as the loop. Two layers keep its numbers honest:

- the loop computes its metrics with C-level methods of ``torch._C.TensorBase`` (an immutable
  type: ``TensorBase.argmax = …`` raises) taken when ``worker.training`` was imported, before
  any model code, and accepts only plain ``torch.Tensor`` logits (a subclass could override
  the arithmetic through ``__torch_function__``);
- ``Integrity`` records, before the model is imported, the functions the loop and the default
  loss go through (``torch.Tensor.argmax``, ``F.cross_entropy``, ``nn.Module.__call__``, the
  optimizer's ``step``, the loop's own methods …) and ``verify`` fails the job as a code error
  when any was replaced: after the model is built, after each epoch's evaluation (before its
  summary is sent) and before the final score.

This stops the patches a model file can make with ordinary Python. Code that escapes the static
check runs arbitrary Python in the trainer and could forge its own job's numbers by other means
(docs/security.md says so); it still reaches no secret: that is the process boundary's job.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from worker.errors import ModelCodeError


def _watched() -> list[tuple[Any, str, str]]:
    from worker import distributed, monitor, schedule, training

    tensor_methods = (
        "argmax", "sum", "eq", "__eq__", "detach", "to", "backward", "item", "tolist",
        "__add__", "__iadd__", "__mul__", "__truediv__", "float", "reshape", "numel",
    )  # fmt: skip
    watched: list[tuple[Any, str, str]] = [
        (torch.Tensor, m, "torch.Tensor") for m in tensor_methods
    ]
    for name in ("cross_entropy", "nll_loss", "log_softmax"):
        watched.append((F, name, "torch.nn.functional"))
    watched.append((torch._C._nn, "cross_entropy_loss", "torch._C._nn"))
    for name in ("stack", "zeros", "no_grad", "autocast"):
        watched.append((torch, name, "torch"))
    for name in ("__call__", "_call_impl", "train", "eval", "state_dict", "load_state_dict"):
        watched.append((nn.Module, name, "torch.nn.Module"))
    watched.append((nn.CrossEntropyLoss, "forward", "torch.nn.CrossEntropyLoss"))
    for name in ("zero_grad", "state_dict", "load_state_dict"):
        watched.append((torch.optim.Optimizer, name, "torch.optim.Optimizer"))
    for name in ("train_epoch", "evaluate", "_loss", "state"):
        watched.append((training.Trainer, name, "worker.training.Trainer"))
    for name in ("_finite_or_none",):
        watched.append((training, name, "worker.training"))
    for name in ("all_reduce_sum", "any_rank", "from_main"):
        watched.append((distributed, name, "worker.distributed"))
    for name in ("record", "observe", "read_epoch", "clip_"):
        watched.append((monitor.GradientMonitor, name, "worker.monitor.GradientMonitor"))
    for name in ("set_lr", "make_optimizer"):
        watched.append((schedule, name, "worker.schedule"))
    return watched


class Integrity:
    """References taken now; ``verify`` says which were replaced since."""

    def __init__(self) -> None:
        self._refs = [
            (owner, name, where, getattr(owner, name)) for owner, name, where in _watched()
        ]

    def changed(self) -> list[str]:
        return [
            f"{where}.{name}"
            for owner, name, where, ref in self._refs
            if getattr(owner, name, None) is not ref
        ]

    def verify(self) -> None:
        """Raise ``ModelCodeError`` when the model replaced any watched function."""
        changed = self.changed()
        if changed:
            raise ModelCodeError(
                "the model replaced " + ", ".join(changed) + ": the training loop's loss and "
                "accuracy would no longer be computed by gradpilot; a model may not patch torch "
                "or the trainer"
            )
