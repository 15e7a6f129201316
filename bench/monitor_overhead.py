"""What the gradient-norm monitor costs: step time, ops per step, host syncs; and throughput.

Measures, on the blog's revised CNN (``examples/blog_revised_cnn.py``), the time of a training
step (forward, loss, backward, optimizer step) three ways, interleaved in rounds so that drift
hits all three alike:

- ``none``: no gradient monitoring;
- ``monitor``: ``worker.monitor.GradientMonitor`` (``torch._foreach_norm`` into on-device
  accumulators, no host sync);
- ``reference``: the reference implementation's method, ``p.grad.norm(2).item()`` for every
  parameter tensor on every step.

It also counts, with ``torch.profiler``, the ops (and on CUDA the kernel launches) that one
``observe()`` adds, on models with more and more parameter tensors, checks with CUDA's sync
debug mode that ``observe()`` never synchronises with the host, and measures the worker's
training throughput (samples/s) on ``digits``. Figures are printed, not asserted.

    python bench/monitor_overhead.py            # CPU, and CUDA when present
    python bench/monitor_overhead.py --tiny     # a quick run
    python bench/monitor_overhead.py --json     # machine-readable
    python bench/monitor_overhead.py --out F    # also write the JSON to F (python -m bench does)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, cast

# Quiet the profiler's own start/stop lines on stderr.
os.environ.setdefault("KINETO_LOG_LEVEL", "5")

import torch  # noqa: E402
from torch import nn  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from worker.monitor import FOLD_EVERY, GradientMonitor, reference_norms  # noqa: E402

#: ``none_again``: a second unmonitored model; its ratio to ``none`` is the noise floor.
VARIANTS = ("none", "monitor", "reference", "none_again")


def load_revised_cnn() -> type[nn.Module]:
    """The example file is ours and trusted: imported directly, without the sandbox (so that the
    benchmark runs on a GPU machine that has torch and nothing else)."""
    path = ROOT / "examples" / "blog_revised_cnn.py"
    spec = importlib.util.spec_from_file_location("blog_revised_cnn", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.CNN  # type: ignore[no-any-return]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_step(
    model: nn.Module, device: torch.device, batch: int, variant: str, amp: bool
) -> Callable[[], None]:
    """One training step of ``model`` with the given monitoring variant."""
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, foreach=True)
    monitor = GradientMonitor(model.named_parameters()) if variant == "monitor" else None
    x = torch.randn(batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    loss_fn = getattr(model, "loss_function", nn.functional.cross_entropy)
    use_amp = amp and device.type == "cuda"

    def step() -> None:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
            loss = loss_fn(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if monitor is not None:
            monitor.record()
        elif variant == "reference":
            reference_norms(model.parameters())  # "none" and "none_again" do nothing here
        optimizer.step()

    return step


def time_variants(
    device: torch.device, batch: int, rounds: int, steps: int, warmup: int, amp: bool
) -> dict[str, Any]:
    """Median step time per variant over interleaved rounds; ratios to ``none``."""
    cnn = load_revised_cnn()
    torch.manual_seed(0)
    base = cnn().to(device)
    fns = {}
    for variant in VARIANTS:
        model = cnn().to(device)
        model.load_state_dict(base.state_dict())
        fns[variant] = make_step(model, device, batch, variant, amp)
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    _sync(device)
    samples: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for r in range(rounds):
        # Rotate the order so that no variant always runs first or after the same one.
        shift = r % len(VARIANTS)
        order = VARIANTS[shift:] + VARIANTS[:shift]
        for variant in order:
            fn = fns[variant]
            _sync(device)
            start = time.perf_counter()
            for _ in range(steps):
                fn()
            _sync(device)
            samples[variant].append((time.perf_counter() - start) / steps)
    median = {v: statistics.median(s) for v, s in samples.items()}
    return {
        "device": str(device),
        "batch": batch,
        "amp_bf16": amp and device.type == "cuda",
        "parameter_tensors": sum(1 for _ in base.parameters()),
        "step_ms": {v: round(t * 1e3, 3) for v, t in median.items()},
        "ratio_to_none": {v: round(t / median["none"], 4) for v, t in median.items()},
        "rounds": rounds,
        "steps_per_round": steps,
    }


def _mlp(tensors: int) -> nn.Module:
    layers: list[nn.Module] = []
    for _ in range(max(1, tensors // 2)):
        layers += [nn.Linear(16, 16), nn.ReLU()]
    return nn.Sequential(*layers)


def _count(device: torch.device, action: Callable[[], object], steps: int) -> dict[str, float]:
    """Ops and kernel launches per call of ``action``, averaged over ``steps`` calls."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    for _ in range(steps):  # warm-up (lazy initialisation is not per-step cost)
        action()
    _sync(device)
    with profile(activities=activities) as prof:
        for _ in range(steps):
            action()
        _sync(device)
    events = prof.events()
    ops = sum(1 for e in events if e.name.startswith("aten::") and e.cpu_parent is None)
    launches = sum(
        1 for e in events if e.name in ("cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel")
    )
    return {"aten_ops": round(ops / steps, 2), "kernel_launches": round(launches / steps, 2)}


def count_ops(device: torch.device, sizes: list[int]) -> list[dict[str, Any]]:
    """Ops one step adds: the monitor's ``observe()`` (averaged over a fold period, so that its
    batched fold is counted) vs the reference method, by number of parameter tensors."""
    rows = []
    for tensors in sizes:
        torch.manual_seed(0)
        model = _mlp(tensors).to(device)
        model(torch.randn(8, 16, device=device)).sum().backward()
        monitor = GradientMonitor(model.named_parameters())
        params = list(model.parameters())
        rows.append(
            {
                "parameter_tensors": len(monitor.params),
                "monitor": _count(device, monitor.record, FOLD_EVERY),
                "reference": _count(device, partial(reference_norms, params), 4),
            }
        )
    return rows


def check_no_sync(device: torch.device) -> dict[str, Any]:
    """Run ``observe()`` under CUDA's sync debug mode set to error: any host sync raises."""
    if device.type != "cuda":
        return {"checked": False, "why": "CUDA only"}
    model = load_revised_cnn()().to(device)
    loss = model(torch.randn(8, 3, 32, 32, device=device)).sum()
    loss.backward()
    monitor = GradientMonitor(model.named_parameters())
    monitor.record()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(2 * FOLD_EVERY):  # steps and folds
            monitor.record()
        result: dict[str, Any] = {"checked": True, "host_syncs_per_step": 0}
    except RuntimeError as e:
        result = {"checked": True, "host_syncs_per_step": "≥1", "error": str(e)[:200]}
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return result


def digits_throughput(device: torch.device, epochs: int, batch: int) -> dict[str, Any]:
    """Samples/s of the worker's own training loop (monitor included) on ``digits``."""
    try:
        from service.schemas.datasets import DatasetSpec
        from service.schemas.hyperparameters import Hyperparameters
        from worker.data import Batches, load_dataset
        from worker.distributed import Context
        from worker.model_loading import LossFn
        from worker.schedule import LrSchedule
        from worker.training import EpochResult, Trainer
    except ImportError as e:  # e.g. a GPU machine with torch but not the service's packages
        return {"skipped": f"needs the service's packages ({e.name})"}
    dataset = load_dataset(DatasetSpec(name="digits"), seed=0)
    hp = Hyperparameters(optimizer="adam", learning_rate=1e-3, batch_size=batch)
    torch.manual_seed(0)
    model = load_revised_cnn()()
    trainer = Trainer(
        model,
        cast(LossFn, model.loss_function),
        hp,
        LrSchedule.from_hyperparameters(hp, epochs),
        Context(0, 1, 0, device),
        10,
    )
    batches = Batches(dataset.train, dataset, batch, device, train=True, seed=0)
    rates = []
    for epoch in range(epochs):
        batches.set_epoch(epoch)
        result = trainer.train_epoch(batches, epoch)
        assert isinstance(result, EpochResult)
        rates.append(result.samples / result.train_seconds)
    return {
        "device": str(device),
        "batch": batch,
        "train_samples": len(dataset.train),
        "samples_per_second_by_epoch": [round(r, 1) for r in rates],
        "samples_per_second": round(rates[-1], 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print JSON only")
    parser.add_argument("--out", type=Path, help="also write the JSON report to this file")
    parser.add_argument("--tiny", action="store_true", help="a quick, rough run")
    parser.add_argument("--device", choices=["cpu", "cuda", "all"], default="all")
    parser.add_argument("--skip-digits", action="store_true")
    parser.add_argument("--timing-only", action="store_true", help="only the step times")
    parser.add_argument("--rounds", type=int, help="override the rounds of timed steps")
    args = parser.parse_args(argv)

    devices = []
    if args.device in ("cpu", "all"):
        devices.append(torch.device("cpu"))
    if args.device in ("cuda", "all") and torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    report: dict[str, Any] = {
        "machine": {
            "python": platform.python_version(),
            "torch": str(torch.__version__),
            "cpu": platform.processor() or platform.machine(),
            "cpu_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        },
        "step_time": [],
        "ops_per_step": {},
        "sync_check": {},
        "digits": {},
    }
    sizes = [4, 16, 64] if args.tiny else [4, 16, 64, 256]
    for device in devices:
        cuda = device.type == "cuda"
        if args.tiny:
            configs = [(16, 2, 2, 1)]
        elif cuda:
            configs = [(64, 7, 50, 20), (256, 7, 30, 10)]
        else:
            configs = [(64, 5, 4, 2)]
        if args.rounds:
            configs = [(b, args.rounds, s, w) for b, _, s, w in configs]
        for batch, rounds, steps, warmup in configs:
            for amp in [False, True] if cuda and not args.tiny else [False]:
                report["step_time"].append(time_variants(device, batch, rounds, steps, warmup, amp))
        if args.timing_only:
            continue
        report["ops_per_step"][device.type] = count_ops(device, sizes)
        report["sync_check"][device.type] = check_no_sync(device)
        if not args.skip_digits:
            report["digits"][device.type] = digits_throughput(
                device, epochs=1 if args.tiny else 3, batch=64
            )

    report["headline"] = headline(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 0


def headline(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows ``python -m bench`` shows: step-time ratios, ops per step, throughput."""
    rows: list[dict[str, Any]] = []
    for t in report["step_time"]:
        where = f"{t['device']}, batch {t['batch']}{', bf16' if t['amp_bf16'] else ''}"
        cuda = t["device"].startswith("cuda")
        for variant, target in (("monitor", "≤ 1.02 on CUDA"), ("reference", None)):
            ratio = t["ratio_to_none"][variant]
            rows.append(
                {
                    "figure": f"step time with {variant} ({where})",
                    "value": t["step_ms"][variant],
                    "unit": "ms",
                    "baseline": t["step_ms"]["none"],
                    "baseline_name": "no monitoring",
                    "ratio": ratio,
                    "target": target if variant == "monitor" else "(the reference's method)",
                    "met": (ratio <= 1.02) if (variant == "monitor" and cuda) else None,
                    "note": f"noise floor (unmonitored twice): {t['ratio_to_none']['none_again']}",
                }
            )
    for device, sizes in report["ops_per_step"].items():
        few, many = sizes[0], sizes[-1]
        rows.append(
            {
                "figure": f"ops the monitor adds per step ({device})",
                "value": many["monitor"]["aten_ops"],
                "unit": "ops",
                "baseline": few["monitor"]["aten_ops"],
                "baseline_name": f"{few['parameter_tensors']} vs {many['parameter_tensors']} "
                "parameter tensors",
                "ratio": many["monitor"]["aten_ops"] / few["monitor"]["aten_ops"]
                if few["monitor"]["aten_ops"]
                else None,
                "target": "constant in the tensor count",
                "met": many["monitor"]["aten_ops"] == few["monitor"]["aten_ops"],
                "note": f"reference: {many['reference']['aten_ops']} ops at "
                f"{many['parameter_tensors']} tensors",
            }
        )
    for device, check in report["sync_check"].items():
        if check.get("checked"):
            rows.append(
                {
                    "figure": f"host syncs per monitored step ({device})",
                    "value": check["host_syncs_per_step"],
                    "unit": "",
                    "baseline": None,
                    "baseline_name": None,
                    "ratio": None,
                    "target": "0",
                    "met": check["host_syncs_per_step"] == 0,
                    "note": None,
                }
            )
    for device, row in report["digits"].items():
        if "samples_per_second" in row:
            rows.append(
                {
                    "figure": f"worker throughput on digits ({device})",
                    "value": row["samples_per_second"],
                    "unit": "samples/s",
                    "baseline": None,
                    "baseline_name": None,
                    "ratio": None,
                    "target": None,
                    "met": None,
                    "note": None,
                }
            )
    return rows


def print_report(report: dict[str, Any]) -> None:
    m = report["machine"]
    print(
        f"torch {m['torch']}, python {m['python']}, {m['cpu_threads']} CPU threads, GPU {m['gpu']}"
    )
    print("\nStep time on the blog's revised CNN (median of interleaved rounds)")
    print(
        f"{'device':8} {'batch':>5} {'bf16':>5} {'none ms':>9} {'monitor ms':>11} "
        f"{'reference ms':>13} {'monitor/none':>13} {'reference/none':>15} "
        f"{'noise (none again/none)':>24}"
    )
    for row in report["step_time"]:
        t, r = row["step_ms"], row["ratio_to_none"]
        print(
            f"{row['device']:8} {row['batch']:>5} {row['amp_bf16']!s:>5} {t['none']:>9.3f} "
            f"{t['monitor']:>11.3f} {t['reference']:>13.3f} {r['monitor']:>13.4f} "
            f"{r['reference']:>15.4f} {r.get('none_again', math.nan):>24.4f}"
        )
    if report["ops_per_step"]:
        print("\nOps one step adds (profiler), by number of parameter tensors")
    for device, rows in report["ops_per_step"].items():
        for row in rows:
            mon, ref = row["monitor"], row["reference"]
            print(
                f"{device:5} tensors {row['parameter_tensors']:>4}: monitor "
                f"{mon['aten_ops']:>5} ops / {mon['kernel_launches']:>5} launches per step; "
                f"reference {ref['aten_ops']:>6} ops / {ref['kernel_launches']:>6} launches"
            )
    for device, check in report["sync_check"].items():
        print(f"\nhost syncs per observe() on {device}: {check}")
    for device, row in report["digits"].items():
        print(f"\nworker throughput on digits ({device}): {row}")


if __name__ == "__main__":
    sys.exit(main())
