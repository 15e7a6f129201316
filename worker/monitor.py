"""Gradient-norm monitor: per parameter tensor and total L2 norm, every step, with no host sync.

The reference implementation called ``p.grad.norm(2).item()`` for every parameter on every
step (a host synchronisation per tensor per step), took the norms after clipping and averaged
them with the wrong divisor. Here one ``torch._foreach_norm`` per step computes every tensor's
norm in a fused kernel; the results are folded into accumulators that stay on the device, in
batches of steps, and the host reads the accumulators once per epoch. The number of ops added per
step does not depend on how many parameter tensors the model has.

The total is computed exactly as ``torch.nn.utils.clip_grad_norm_`` computes it (the L2 norm of
the stacked per-tensor norms), so ``observe()`` returns the value clipping needs and
``clip_()`` applies the clip without computing the norms a second time.

This module depends on torch alone (the benchmark runs it on machines without the service).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class Stats:
    """Mean, max and min of one norm over an epoch's finite steps (``None`` if there were none)."""

    mean: float
    max: float
    min: float


@dataclass(frozen=True)
class EpochGradients:
    """What the monitor measured over one epoch."""

    steps: int
    nonfinite_steps: int
    total: Stats | None
    layers: dict[str, Stats]


#: Per-step norms wait in a list and are folded into the accumulators this many at a time.
FOLD_EVERY = 32


class GradientMonitor:
    """Per-tensor and total gradient L2 norms, accumulated on the parameters' device.

    Call ``record()`` (or ``observe()``, which also returns the total norm) after ``backward()``
    (and after ``GradScaler.unscale_``) and before clipping or ``optimizer.step()``. A step
    costs one op, ``torch._foreach_norm`` (a fused
    kernel over every gradient), whose per-tensor results wait in a list; every ``FOLD_EVERY``
    steps one ``torch.stack`` gathers them and a fixed handful of ops fold them into on-device
    accumulators (sum, max and min over finite steps, finite count, non-finite steps). On a
    launch-bound GPU step every op costs ~20 µs of CPU time, so folding per step (a dozen ops)
    showed as a 2-12 % slower step, folding in batches does not. ``read_epoch()`` reads the
    accumulators to the host (the epoch's one sync) and resets them.

    ``observe()`` returns the step's total norm as a 0-dim tensor, as ``clip_grad_norm_``
    computes it, for ``clip_()``.
    """

    def __init__(self, named_parameters: Iterable[tuple[str, nn.Parameter]]) -> None:
        pairs = [(n, p) for n, p in named_parameters if p.requires_grad]
        if not pairs:
            raise ValueError("the model has no trainable parameters to monitor")
        self.names = [n for n, _ in pairs]
        self.params = [p for _, p in pairs]
        self.device = self.params[0].device
        self.width = len(self.params)
        # Slot i is parameter tensor i; the last slot is the total.
        opts: dict[str, Any] = {"device": self.device, "dtype": torch.float32}
        self._sum = torch.zeros(self.width + 1, **opts)
        self._max = torch.full((self.width + 1,), -math.inf, **opts)
        self._min = torch.full((self.width + 1,), math.inf, **opts)
        self._finite = torch.zeros(self.width + 1, **opts)
        self._nonfinite_steps = torch.zeros((), **opts)
        self._nan = torch.tensor(math.nan, **opts)
        self._pending: list[tuple[list[Tensor], tuple[bool, ...] | None]] = []
        self._steps = 0
        # Parameters that got no gradient (unused in forward) count as norm 0; the index of the
        # present ones is cached per pattern.
        self._index_cache: dict[tuple[bool, ...], Tensor] = {}

    def record(self) -> list[Tensor]:
        """Record this step's gradient norms (one op); returns the per-tensor norms."""
        grads = [p.grad for p in self.params if p.grad is not None]
        if not grads:
            raise RuntimeError("the monitor was called before backward(): no gradients")
        norms = list(torch._foreach_norm(grads, 2))
        pattern = None
        if len(grads) != self.width:
            pattern = tuple(p.grad is not None for p in self.params)
        self._pending.append((norms, pattern))
        self._steps += 1
        if len(self._pending) >= FOLD_EVERY:
            self._fold()
        return norms

    def observe(self) -> Tensor:
        """Record this step's norms and return the total norm (two more ops), computed as
        ``clip_grad_norm_`` computes it: the L2 norm of the stacked per-tensor norms."""
        return torch.linalg.vector_norm(torch.stack(self.record()), 2)

    def _index(self, pattern: tuple[bool, ...]) -> Tensor:
        index = self._index_cache.get(pattern)
        if index is None:
            index = torch.tensor(
                [i for i, has in enumerate(pattern) if has], device=self.device, dtype=torch.long
            )
            self._index_cache[pattern] = index
        return index

    def _fold(self) -> None:
        """Fold the pending steps into the accumulators (a fixed number of ops)."""
        if not self._pending:
            return
        if all(pattern is None for _, pattern in self._pending):
            flat = [norm for norms, _ in self._pending for norm in norms]
            rows = torch.stack(flat).to(torch.float32).view(len(self._pending), self.width)
        else:
            rows = torch.zeros(len(self._pending), self.width, device=self.device)
            for i, (norms, pattern) in enumerate(self._pending):
                stacked = torch.stack(norms).to(torch.float32)
                if pattern is None:
                    rows[i] = stacked
                else:
                    rows[i].index_copy_(0, self._index(pattern), stacked)
        self._pending.clear()
        totals = torch.linalg.vector_norm(rows, 2, dim=1, keepdim=True)
        values = torch.cat((rows, totals), dim=1)
        finite = torch.isfinite(values)
        masked = torch.where(finite, values, self._nan)
        torch.fmax(self._max, masked.nan_to_num(nan=-math.inf).amax(dim=0), out=self._max)
        torch.fmin(self._min, masked.nan_to_num(nan=math.inf).amin(dim=0), out=self._min)
        self._sum.add_(masked.nan_to_num(nan=0.0).sum(dim=0))
        self._finite.add_(finite.sum(dim=0))
        # A step is non-finite when any gradient is (then its total is too).
        self._nonfinite_steps.add_(finite[:, -1].logical_not().sum())

    def clip_(self, total: Tensor, max_norm: float) -> None:
        """Scale the gradients so that their total norm is at most ``max_norm``.

        Exactly what ``clip_grad_norm_`` does with the norm it computes, reusing ``total`` from
        ``observe()`` instead of computing the norms again, and without a host sync.
        """
        grads = [p.grad for p in self.params if p.grad is not None]
        coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
        torch._foreach_mul_(grads, coef.to(grads[0].device))

    @property
    def steps(self) -> int:
        return self._steps

    def read_epoch(self, reset: bool = True) -> EpochGradients:
        """Read the accumulators to the host (one sync) and optionally reset them."""
        self._fold()
        packed = torch.stack((self._sum, self._max, self._min, self._finite)).cpu()
        nonfinite = int(self._nonfinite_steps.item())
        sums, maxs, mins, counts = packed.tolist()

        def stats(i: int) -> Stats | None:
            if counts[i] == 0:
                return None
            return Stats(mean=sums[i] / counts[i], max=maxs[i], min=mins[i])

        layers = {}
        for i, name in enumerate(self.names):
            s = stats(i)
            if s is not None:
                layers[name] = s
        result = EpochGradients(
            steps=self._steps, nonfinite_steps=nonfinite, total=stats(-1), layers=layers
        )
        if reset:
            self.reset()
        return result

    def reset(self) -> None:
        self._pending.clear()
        self._sum.zero_()
        self._max.fill_(-math.inf)
        self._min.fill_(math.inf)
        self._finite.zero_()
        self._nonfinite_steps.zero_()
        self._steps = 0

    def state_dict(self) -> dict[str, object]:
        """The partial epoch's accumulators (for a checkpoint taken in the middle of an epoch)."""
        self._fold()
        return {
            "sum": self._sum.detach().cpu(),
            "max": self._max.detach().cpu(),
            "min": self._min.detach().cpu(),
            "finite": self._finite.detach().cpu(),
            "nonfinite_steps": self._nonfinite_steps.detach().cpu(),
            "steps": self._steps,
            "names": list(self.names),
        }

    def load_state_dict(self, state: dict[str, object]) -> None:
        if state.get("names") != self.names:
            raise ValueError("monitor state belongs to a model with other parameters")
        self._pending.clear()
        for key in ("sum", "max", "min", "finite", "nonfinite_steps"):
            value = state[key]
            assert isinstance(value, Tensor)
            getattr(self, f"_{key}").copy_(value)
        steps = state["steps"]
        assert isinstance(steps, int)
        self._steps = steps


def weight_norms(named_parameters: Iterable[tuple[str, nn.Parameter]]) -> dict[str, float]:
    """L2 norm of every trainable parameter tensor (one fused op, one host sync)."""
    pairs = [(n, p) for n, p in named_parameters if p.requires_grad]
    if not pairs:
        return {}
    with torch.no_grad():
        norms = torch._foreach_norm([p.detach() for _, p in pairs], 2)
        values = torch.stack([n.to(torch.float32) for n in norms]).cpu().tolist()
    return {name: value for (name, _), value in zip(pairs, values, strict=True)}


def reference_norms(parameters: Iterable[nn.Parameter]) -> tuple[list[float], float]:
    """The reference implementation's method, kept for the benchmark only: one ``.item()`` per
    parameter per step (a host sync each), total from the Python floats."""
    per: list[float] = []
    for p in parameters:
        if p.grad is not None:
            per.append(p.grad.detach().norm(2).item())
    total = math.sqrt(sum(v * v for v in per))
    return per, total
