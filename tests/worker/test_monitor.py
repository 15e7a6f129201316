"""The gradient-norm monitor: its total is clip_grad_norm_'s, its statistics are right, and it
adds a constant number of ops per step."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from worker.monitor import FOLD_EVERY, GradientMonitor, reference_norms, weight_norms


def _mlp(depth: int, width: int = 8) -> nn.Module:
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Linear(width, width), nn.Tanh()]
    return nn.Sequential(*layers, nn.Linear(width, 3))


def _backward(model: nn.Module, seed: int, scale: float = 1.0) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(16, 8, generator=g) * scale
    y = torch.randint(0, 3, (16,), generator=g)
    model.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(model(x), y).backward()


def test_total_equals_clip_grad_norm() -> None:
    torch.manual_seed(0)
    model = _mlp(3)
    monitor = GradientMonitor(model.named_parameters())
    for seed in range(5):
        _backward(model, seed, scale=10.0 ** (seed - 2))
        total = monitor.observe()
        reference = nn.utils.clip_grad_norm_(model.parameters(), max_norm=float("inf"))
        assert torch.equal(total, reference), (total, reference)


def test_clip_matches_clip_grad_norm() -> None:
    torch.manual_seed(0)
    model = _mlp(2)
    twin = _mlp(2)
    twin.load_state_dict(model.state_dict())
    monitor = GradientMonitor(model.named_parameters())
    _backward(model, 1, scale=50.0)
    _backward(twin, 1, scale=50.0)
    total = monitor.observe()
    monitor.clip_(total, 0.5)
    returned = nn.utils.clip_grad_norm_(twin.parameters(), 0.5)
    assert torch.equal(total, returned)
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    twin_grads = [p.grad for p in twin.parameters() if p.grad is not None]
    for a, b in zip(grads, twin_grads, strict=True):
        assert torch.equal(a, b)
    clipped = torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))
    assert clipped.item() == pytest.approx(0.5, rel=1e-4)


def test_per_tensor_statistics_over_an_epoch() -> None:
    torch.manual_seed(0)
    model = _mlp(2)
    monitor = GradientMonitor(model.named_parameters())
    names = [n for n, _ in model.named_parameters()]
    seen: dict[str, list[float]] = {n: [] for n in names}
    totals: list[float] = []
    for seed in range(4):
        _backward(model, seed)
        monitor.observe()
        per, total = reference_norms(model.parameters())
        for n, v in zip(names, per, strict=True):
            seen[n].append(v)
        totals.append(total)
    epoch = monitor.read_epoch()
    assert epoch.steps == 4 and epoch.nonfinite_steps == 0
    assert set(epoch.layers) == set(names)
    for n in names:
        s = epoch.layers[n]
        assert s.mean == pytest.approx(sum(seen[n]) / 4, rel=1e-5)
        assert s.max == pytest.approx(max(seen[n]), rel=1e-6)
        assert s.min == pytest.approx(min(seen[n]), rel=1e-6)
    assert epoch.total is not None
    assert epoch.total.mean == pytest.approx(sum(totals) / 4, rel=1e-5)
    # read_epoch resets: the next epoch starts empty.
    assert monitor.read_epoch().steps == 0


def test_nonfinite_steps_are_counted_and_excluded() -> None:
    torch.manual_seed(0)
    model = _mlp(1)
    monitor = GradientMonitor(model.named_parameters())
    _backward(model, 0)
    monitor.observe()
    finite_total = reference_norms(model.parameters())[1]
    _backward(model, 1)
    first = next(model.parameters()).grad
    assert first is not None
    first[0, 0] = math.nan
    total = monitor.observe()
    assert not torch.isfinite(total)
    epoch = monitor.read_epoch()
    assert epoch.steps == 2 and epoch.nonfinite_steps == 1
    assert epoch.total is not None
    assert epoch.total.mean == pytest.approx(finite_total, rel=1e-5)
    # The tensor with the NaN has one finite step; the others have two.
    name = next(n for n, _ in model.named_parameters())
    assert epoch.layers[name].max == epoch.layers[name].min


def test_unused_parameters_count_as_zero() -> None:
    class TwoHeads(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.used = nn.Linear(4, 2)
            self.unused = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.used(x)

    model = TwoHeads()
    monitor = GradientMonitor(model.named_parameters())
    model(torch.randn(3, 4)).sum().backward()
    total = monitor.observe()
    assert torch.equal(total, nn.utils.clip_grad_norm_(model.parameters(), float("inf")))
    epoch = monitor.read_epoch()
    assert epoch.layers["unused.weight"].max == 0.0
    assert epoch.layers["used.weight"].max > 0


def test_weight_norms() -> None:
    model = _mlp(1)
    norms = weight_norms(model.named_parameters())
    for name, p in model.named_parameters():
        assert norms[name] == pytest.approx(p.detach().norm().item(), rel=1e-6)


def test_partial_state_round_trip() -> None:
    torch.manual_seed(0)
    model = _mlp(1)
    a = GradientMonitor(model.named_parameters())
    _backward(model, 0)
    a.observe()
    b = GradientMonitor(model.named_parameters())
    b.load_state_dict(a.state_dict())
    _backward(model, 1)
    a.observe()
    b.observe()
    assert a.read_epoch() == b.read_epoch()


def _ops_per_step(depth: int) -> float:
    from torch.profiler import ProfilerActivity, profile

    model = _mlp(depth)
    monitor = GradientMonitor(model.named_parameters())
    _backward(model, 0)
    for _ in range(FOLD_EVERY):  # warm-up
        monitor.record()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(FOLD_EVERY):  # one fold period, the fold included
            monitor.record()
    ops = sum(1 for e in prof.events() if e.name.startswith("aten::") and e.cpu_parent is None)
    return ops / FOLD_EVERY


def test_ops_per_step_do_not_grow_with_parameter_tensors() -> None:
    small, large = _ops_per_step(1), _ops_per_step(40)
    assert small == large, (small, large)
    assert small < 2  # one _foreach_norm per step, plus the fold's share


def test_statistics_span_several_folds() -> None:
    torch.manual_seed(0)
    model = _mlp(1)
    monitor = GradientMonitor(model.named_parameters())
    totals = []
    for seed in range(FOLD_EVERY * 2 + 5):
        _backward(model, seed)
        totals.append(float(monitor.observe()))
    epoch = monitor.read_epoch()
    assert epoch.steps == len(totals)
    assert epoch.total is not None
    assert epoch.total.mean == pytest.approx(sum(totals) / len(totals), rel=1e-5)
    assert epoch.total.max == pytest.approx(max(totals), rel=1e-6)
    assert epoch.total.min == pytest.approx(min(totals), rel=1e-6)
