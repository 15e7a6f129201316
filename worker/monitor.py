"""Gradient-norm monitor: per parameter tensor and total L2 norm, every step, with no host sync.

The reference implementation called ``p.grad.norm(2).item()`` for every parameter on every
step (two host synchronisations per tensor per step), took the norms after clipping and averaged
them with the wrong divisor. Here one ``torch._foreach_norm`` computes every tensor's norm in a
fused kernel, a handful of element-wise ops fold them into accumulators that stay on the device,
and the host reads the accumulators once per epoch. The number of ops added per step does not
depend on how many parameter tensors the model has.

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


class GradientMonitor:
    """Accumulates per-tensor and total gradient L2 norms on the parameters' device.

    Call ``observe()`` after ``backward()`` (and after ``GradScaler.unscale_``) and before
    clipping or ``optimizer.step()``; it returns the total norm as a 0-dim tensor without
    reading it to the host. ``read_epoch()`` syncs once, returns the epoch's statistics and
    resets the accumulators.
    """

    def __init__(self, named_parameters: Iterable[tuple[str, nn.Parameter]]) -> None:
        pairs = [(n, p) for n, p in named_parameters if p.requires_grad]
        if not pairs:
            raise ValueError("the model has no trainable parameters to monitor")
        self.names = [n for n, _ in pairs]
        self.params = [p for _, p in pairs]
        self.device = self.params[0].device
        # Slot i is parameter tensor i; the last slot is the total.
        width = len(self.params) + 1
        opts: dict[str, Any] = {"device": self.device, "dtype": torch.float32}
        self._sum = torch.zeros(width, **opts)
        self._max = torch.full((width,), -math.inf, **opts)
        self._min = torch.full((width,), math.inf, **opts)
        self._finite = torch.zeros(width, **opts)
        self._nonfinite_steps = torch.zeros((), **opts)
        self._nan = torch.tensor(math.nan, **opts)
        self._steps = 0
        # Parameters that got no gradient (unused in forward) count as norm 0; the index of the
        # present ones is cached per pattern so that the common case allocates nothing.
        self._index_cache: dict[tuple[bool, ...], Tensor] = {}

    def observe(self) -> Tensor:
        """Fold this step's gradient norms into the accumulators; return the total norm."""
        grads = [p.grad for p in self.params if p.grad is not None]
        if not grads:
            raise RuntimeError("observe() was called before backward(): no gradients")
        norms = torch._foreach_norm(grads, 2)
        per = torch.stack(norms).to(torch.float32)
        if len(grads) != len(self.params):
            per = self._scatter(per)
        # As clip_grad_norm_: the L2 norm of the per-tensor norms.
        total = torch.linalg.vector_norm(per, 2)
        values = torch.cat((per, total.unsqueeze(0)))
        finite = torch.isfinite(values)
        masked = torch.where(finite, values, self._nan)
        torch.fmax(self._max, masked, out=self._max)
        torch.fmin(self._min, masked, out=self._min)
        self._sum.add_(masked.nan_to_num(nan=0.0))
        self._finite.add_(finite)
        # A step is non-finite when any gradient is (then the total is too).
        self._nonfinite_steps.add_(finite[-1].logical_not())
        self._steps += 1
        return total

    def _scatter(self, present_norms: Tensor) -> Tensor:
        pattern = tuple(p.grad is not None for p in self.params)
        index = self._index_cache.get(pattern)
        if index is None:
            index = torch.tensor(
                [i for i, has in enumerate(pattern) if has], device=self.device, dtype=torch.long
            )
            self._index_cache[pattern] = index
        full = torch.zeros(len(self.params), device=self.device, dtype=torch.float32)
        return full.index_copy_(0, index, present_norms)

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
        packed = torch.stack(
            (self._sum, self._max, self._min, self._finite)
        ).cpu()  # the one host sync per epoch
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
        self._sum.zero_()
        self._max.fill_(-math.inf)
        self._min.fill_(math.inf)
        self._finite.zero_()
        self._nonfinite_steps.zero_()
        self._steps = 0

    def state_dict(self) -> dict[str, object]:
        """The partial epoch's accumulators (for a checkpoint taken in the middle of an epoch)."""
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
