"""The rules advisor on real broken networks, its templates, repairs, tuning and narrative.

The broken networks are trained for a few epochs on scikit-learn's digits (8x8, one channel,
offline) by a small loop below that measures what the worker measures (per-tensor gradient
norms per step, weight norms, losses, accuracies), so the advisor is judged on realistic
summaries rather than on numbers written to fit it.
"""

from __future__ import annotations

import math
import time
from typing import Any

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from service.advisors._protocol import (
    Advisor,
    AdvisorContext,
    Assessment,
    HistoryEntry,
)
from service.advisors.rules import RulesAdvisor, repair_source
from service.advisors.templates import TEMPLATE_MARKER, inspect_source, plan_template
from service.diagnostics import compact_state, compute_diagnostics
from service.schemas.hyperparameters import TUNABLE_KEYS, Hyperparameters, clamp_changes

# --------------------------------------------------------------------------- tiny training


@pytest.fixture(scope="module")
def digits() -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = (x - x.mean()) / x.std()
    y = torch.tensor(data.target)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))[:800]
    x, y = x[perm], y[perm]
    return (x[200:], y[200:]), (x[:200], y[:200])


def train_summaries(
    model: nn.Module, data: Any, *, epochs: int, lr: float, momentum: float = 0.0, seed: int = 0
) -> list[dict[str, Any]]:
    """Train with SGD and return one worker-shaped epoch summary per epoch."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is faster and fair to parallel tests
    try:
        return _train(model, data, epochs=epochs, lr=lr, momentum=momentum, seed=seed)
    finally:
        torch.set_num_threads(threads)


def _stats(s: list[float], finite: int) -> dict[str, float]:
    if not finite:
        return dict.fromkeys(("mean", "max", "min"), 0.0)
    return {"mean": s[0] / finite, "max": s[1], "min": s[2]}


def _train(
    model: nn.Module, data: Any, *, epochs: int, lr: float, momentum: float, seed: int
) -> list[dict[str, Any]]:
    torch.manual_seed(seed)
    (xt, yt), (xv, yv) = data
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    names = [n for n, _ in model.named_parameters()]
    out = []
    for epoch in range(epochs):
        started = time.perf_counter()
        model.train()
        sums = {n: [0.0, 0.0, math.inf] for n in names + ["<total>"]}
        finite = nonfinite = correct = 0
        loss_sum, loss_ok = 0.0, True
        perm = torch.randperm(len(yt))
        for i in range(0, len(yt), 64):
            idx = perm[i : i + 64]
            opt.zero_grad()
            logits = model(xt[idx])
            loss = F.cross_entropy(logits, yt[idx])
            loss.backward()
            norms = {
                n: (p.grad.norm().item() if p.grad is not None else 0.0)
                for n, p in model.named_parameters()
            }
            norms["<total>"] = math.sqrt(sum(v * v for v in norms.values()))
            if math.isfinite(norms["<total>"]):
                finite += 1
                for n, v in norms.items():
                    s = sums[n]
                    s[0], s[1], s[2] = s[0] + v, max(s[1], v), min(s[2], v)
            else:
                nonfinite += 1
            opt.step()
            loss_ok = loss_ok and math.isfinite(loss.item())
            loss_sum += loss.item() * len(idx)
            correct += int((logits.argmax(1) == yt[idx]).sum())
        model.eval()
        with torch.no_grad():
            logits = model(xv)
            val_loss = F.cross_entropy(logits, yv).item()
            val_acc = (logits.argmax(1) == yv).float().mean().item()

        weights = {n: p.detach().norm().item() for n, p in model.named_parameters()}
        out.append(
            {
                "epoch": epoch,
                "train_loss": loss_sum / len(yt) if loss_ok else None,
                "val_loss": val_loss if math.isfinite(val_loss) else None,
                "train_accuracy": correct / len(yt),
                "val_accuracy": val_acc,
                "learning_rate": lr,
                "grad_total": _stats(sums["<total>"], finite),
                "grad_layers": {n: _stats(sums[n], finite) for n in names},
                "weight_norms": {n: v for n, v in weights.items() if math.isfinite(v)},
                "nonfinite_steps": nonfinite,
                "steps": finite + nonfinite,
                "seconds": time.perf_counter() - started,
                "samples_per_second": 1.0,
            }
        )
    return out


# The broken networks, as model sources (what the advisor reads) and as modules (what trains).
HEALTHY = """
import torch.nn as nn

def build_model(input_shape, num_classes):
    return nn.Sequential(
        nn.Conv2d(input_shape[0], 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1, stride=2), nn.BatchNorm2d(32), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, num_classes),
    )
"""

SIGMOID_STACK = """
import torch.nn as nn

DEPTH = 8
WIDTH = 16

def build_model(input_shape, num_classes):
    layers, channels = [], input_shape[0]
    for _ in range(DEPTH):
        layers += [nn.Conv2d(channels, WIDTH, 3, padding=1), nn.Sigmoid()]
        channels = WIDTH
    head = [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(WIDTH, num_classes)]
    return nn.Sequential(*layers, *head)
"""

EXPLODING_INIT = """
import torch.nn as nn

def build_model(input_shape, num_classes):
    layers, channels = [], input_shape[0]
    for _ in range(5):
        layers += [nn.Conv2d(channels, 16, 3, padding=1), nn.ReLU()]
        channels = 16
    model = nn.Sequential(*layers, nn.Flatten(), nn.Linear(16 * 64, num_classes))
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.normal_(module.weight, 0.0, 1.0)
    return model
"""

RELU_MLP = """
import torch.nn as nn

def build_model(input_shape, num_classes):
    return nn.Sequential(
        nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),
        nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, num_classes),
    )
"""

BOTTLENECK = """
import torch.nn as nn

def build_model(input_shape, num_classes):
    return nn.Sequential(
        nn.Conv2d(input_shape[0], 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.Flatten(),
        nn.Linear(16 * 64, 2), nn.ReLU(), nn.Linear(2, num_classes),
    )
"""


def build(source: str, input_shape: tuple[int, int, int] = (1, 8, 8), classes: int = 10) -> Any:
    namespace: dict[str, Any] = {}
    exec(compile(source, "<model>", "exec"), namespace)
    return namespace["build_model"](input_shape, classes)


def context(
    source: str,
    summaries: list[dict[str, Any]],
    hp: dict[str, Any],
    *,
    input_shape: tuple[int, int, int] = (1, 8, 8),
    history: list[HistoryEntry] | None = None,
    architecture_version: int = 0,
) -> AdvisorContext:
    d = compute_diagnostics(summaries, 10, hyperparameters=hp)
    return AdvisorContext(
        run_id="run",
        input_shape=input_shape,
        num_classes=10,
        dataset="digits",
        source=source,
        hyperparameters=Hyperparameters.model_validate(hp).model_dump(),
        diagnostics=compact_state(d),
        history=history or [],
        architecture_version=architecture_version,
    )


def assess(ctx: AdvisorContext) -> Assessment:
    assessment, usage = RulesAdvisor().assess(ctx)
    assert usage.model == "rules" and usage.input_tokens == 0
    return assessment


def checked_changes(ctx: AdvisorContext) -> dict[str, Any]:
    change, _ = RulesAdvisor().tune(ctx)
    assert set(change.changes) <= TUNABLE_KEYS
    assert set(change.reasons) == set(change.changes)
    current = Hyperparameters.model_validate(ctx.hyperparameters)
    _, applied = clamp_changes(current, change.changes)
    assert applied == change.changes  # nothing out of range, nothing unknown
    return change.changes


# --------------------------------------------------------------------------- decisions


def test_is_an_advisor() -> None:
    assert isinstance(RulesAdvisor(), Advisor)
    assert RulesAdvisor.name == "rules"


def test_healthy_network_continues(digits: Any) -> None:
    torch.manual_seed(0)
    hp = {"optimizer": "sgd", "learning_rate": 0.05, "momentum": 0.9}
    s = train_summaries(build(HEALTHY), digits, epochs=4, lr=0.05, momentum=0.9)
    a = assess(context(HEALTHY, s, hp))
    assert a.recommendation == "continue", a.explanation
    assert a.severity == 1 and a.is_stable and a.gradient_issues == []


@pytest.fixture(scope="module")
def sigmoid_run(digits: Any) -> list[dict[str, Any]]:
    torch.manual_seed(0)
    return train_summaries(build(SIGMOID_STACK), digits, epochs=3, lr=0.1)


def test_vanishing_sigmoid_stack_is_redesigned(sigmoid_run: list[dict[str, Any]]) -> None:
    hp = {"optimizer": "sgd", "learning_rate": 0.1}
    ctx = context(SIGMOID_STACK, sigmoid_run, hp)
    assert ctx.diagnostics["first_to_last_ratio"] < 1e-4
    a = assess(ctx)
    assert a.recommendation == "redesign", a.explanation
    assert "vanishing_gradients" in a.gradient_issues
    assert a.affected_layers[0] == "0.weight" and a.severity == 5


def test_exploding_initialisation_is_redesigned(digits: Any) -> None:
    torch.manual_seed(0)
    hp = {"optimizer": "sgd", "learning_rate": 0.01}
    s = train_summaries(build(EXPLODING_INIT), digits, epochs=2, lr=0.01)
    a = assess(context(EXPLODING_INIT, s, hp))
    assert a.recommendation == "redesign", a.explanation
    assert {"nonfinite", "exploding_gradients"} <= set(a.gradient_issues)
    assert not a.is_stable
    # The next network gets a safety clip since this one diverged.
    ctx = context(EXPLODING_INIT, s, hp)
    ctx.assessment = a
    assert checked_changes(ctx)["gradient_clip"] > 0


def test_relu_units_killed_by_a_huge_learning_rate_are_redesigned(digits: Any) -> None:
    torch.manual_seed(0)
    # Learning rate 1 with momentum 0.9: an effective step of 10 pushes the ReLUs' biases
    # so far negative that no unit fires again (3 or 4 of the 4 layers die, whatever the seed).
    hp = {"optimizer": "sgd", "learning_rate": 1.0, "momentum": 0.9}
    s = train_summaries(build(RELU_MLP), digits, epochs=4, lr=1.0, momentum=0.9)
    ctx = context(RELU_MLP, s, hp)
    assert ctx.diagnostics["dead_count"] >= 3
    a = assess(ctx)
    assert a.recommendation == "redesign", a.explanation
    assert "dead_tensors" in a.gradient_issues
    # ...and the recipe for the new network brings the learning rate back to earth.
    ctx.assessment = a
    assert checked_changes(ctx)["learning_rate"] <= 0.1


def test_narrow_bottleneck_is_redesigned(digits: Any) -> None:
    torch.manual_seed(0)
    hp = {"optimizer": "sgd", "learning_rate": 0.05, "momentum": 0.9}
    s = train_summaries(build(BOTTLENECK), digits, epochs=3, lr=0.05, momentum=0.9)
    a = assess(context(BOTTLENECK, s, hp))
    assert a.recommendation == "redesign", a.explanation
    assert "2-unit" in a.explanation and a.severity >= 3


def test_sound_network_with_tiny_learning_rate_is_tuned_not_redesigned(digits: Any) -> None:
    torch.manual_seed(0)
    hp = {"optimizer": "sgd", "learning_rate": 1e-5}
    s = train_summaries(build(HEALTHY), digits, epochs=3, lr=1e-5)
    ctx = context(HEALTHY, s, hp)
    a = assess(ctx)
    assert a.recommendation == "tune", a.explanation
    assert "lr_too_small" in a.gradient_issues
    ctx.assessment = a
    changes = checked_changes(ctx)
    effective = changes["learning_rate"] / (1 - changes.get("momentum", 0.0))
    assert effective >= 100 * 1e-5


def test_target_reached_finishes() -> None:
    ctx = context(HEALTHY, [], {"optimizer": "sgd"})
    ctx.diagnostics = {"issues": ["target_reached"], "num_classes": 10}
    assert assess(ctx).recommendation == "finish"


def _plateau_summaries(train_acc: float, val_acc: float) -> list[dict[str, Any]]:
    grads = {"0.weight": 0.1, "8.weight": 0.2}
    return [
        {
            "epoch": e,
            "train_loss": 0.05,
            "val_loss": 0.1,
            "train_accuracy": train_acc,
            "val_accuracy": val_acc,
            "learning_rate": 0.05,
            "grad_total": {"mean": 0.3, "max": 0.45, "min": 0.2},
            "grad_layers": {n: {"mean": g, "max": g, "min": g} for n, g in grads.items()},
            "weight_norms": {"0.weight": 5.0, "8.weight": 5.0},
            "nonfinite_steps": 0,
            "steps": 20,
            "seconds": 1.0,
            "samples_per_second": 1.0,
        }
        for e in range(8)
    ]


def test_converged_plateau_finishes_and_stalled_one_is_tuned_then_finished() -> None:
    hp = {"optimizer": "sgd", "learning_rate": 0.05, "momentum": 0.9}
    fitted = context(HEALTHY, _plateau_summaries(1.0, 0.97), hp)
    assert assess(fitted).recommendation == "finish"

    stalled = context(HEALTHY, _plateau_summaries(0.9, 0.88), hp)
    a = assess(stalled)
    assert a.recommendation == "tune"
    stalled.assessment = a
    assert checked_changes(stalled) == {"lr_schedule": "cosine"}

    tuned_twice = [HistoryEntry(g, "tune", 0, {"learning_rate": 0.01}, 0.88, 0.1) for g in (1, 2)]
    stalled.history = tuned_twice
    assert assess(stalled).recommendation == "finish"


def test_after_a_redesign_it_tunes_before_redesigning_again() -> None:
    template, _ = RulesAdvisor().write_architecture(
        context(SIGMOID_STACK, [], {"optimizer": "sgd"})
    )
    near_chance = {
        "num_classes": 10,
        "chance_accuracy": 0.1,
        "issues": ["near_chance", "plateau"],
        "near_chance": True,
        "plateau": True,
        "best_val_accuracy": 0.1,
        "lr_verdict": "ok",
    }
    redesigned = [
        HistoryEntry(0, "start", 0, {}, 0.1, 2.3),
        HistoryEntry(1, "redesign", 1, {}, 0.1, 2.3),
    ]
    ctx = context(template.source, [], {"optimizer": "sgd", "learning_rate": 0.05})
    ctx.diagnostics, ctx.history, ctx.architecture_version = near_chance, redesigned, 1
    first = assess(ctx)
    assert first.recommendation == "tune"
    ctx.assessment = first
    assert checked_changes(ctx)["optimizer"] == "adamw"

    ctx.history = redesigned + [HistoryEntry(2, "tune", 1, {"optimizer": "adamw"}, 0.1, 2.3)]
    assert assess(ctx).recommendation == "redesign"
    # A second redesign of a template changes the template (deeper), it does not repeat it.
    second, _ = RulesAdvisor().write_architecture(ctx)
    assert second.source != template.source and "blocks=2" in second.source.splitlines()[0]
    # The redesign budget is bounded.
    ctx.history = ctx.history + [HistoryEntry(3, "redesign", 2, {}, 0.1, 2.3)]
    ctx.architecture_version = 2
    ctx.history.append(HistoryEntry(4, "tune", 2, {"learning_rate": 0.01}, 0.1, 2.3))
    assert assess(ctx).recommendation == "tune"


def test_tune_after_redesign_gives_a_proven_recipe() -> None:
    ctx = context(SIGMOID_STACK, [], {"optimizer": "sgd", "learning_rate": 0.1})
    ctx.assessment = Assessment(recommendation="redesign")
    changes = checked_changes(ctx)
    assert changes == {
        "momentum": 0.9,
        "nesterov": True,
        "learning_rate": 0.05,
        "weight_decay": 5e-4,
        "lr_schedule": "cosine",
    }
    ctx.hyperparameters = Hyperparameters(optimizer="adam", learning_rate=0.01).model_dump()
    changes = checked_changes(ctx)
    assert changes["optimizer"] == "adamw" and changes["learning_rate"] == 1e-3


def test_assessment_reads_full_and_compact_diagnostics_alike(
    sigmoid_run: list[dict[str, Any]],
) -> None:
    hp = {"optimizer": "sgd", "learning_rate": 0.1}
    ctx = context(SIGMOID_STACK, sigmoid_run, hp)
    compact = assess(ctx)
    ctx.diagnostics = compute_diagnostics(sigmoid_run, 10, hyperparameters=hp).model_dump()
    assert assess(ctx) == compact


# --------------------------------------------------------------------------- architectures


def _static_check(source: str) -> None:
    static_check = pytest.importorskip("service.sandbox.static_check")
    static_check.check_source(source)


@pytest.mark.parametrize(
    ("shape", "classes"),
    [((3, 32, 32), 10), ((1, 28, 28), 10), ((3, 16, 16), 2), ((1, 8, 8), 100), ((4, 5, 7), 3)],
)
def test_templates_pass_the_static_check_and_train_for_any_shape(
    shape: tuple[int, int, int], classes: int
) -> None:
    ctx = context(SIGMOID_STACK, [], {"optimizer": "sgd"}, input_shape=shape)
    ctx.num_classes = classes
    proposal, usage = RulesAdvisor().write_architecture(ctx)
    assert proposal.source.startswith(TEMPLATE_MARKER)
    assert proposal.rationale and proposal.expected_effect and usage.model == "rules"
    _static_check(proposal.source)
    model = build(proposal.source, shape, classes)
    x = torch.randn(4, *shape)
    out = model(x)
    assert out.shape == (4, classes)
    loss = F.cross_entropy(out, torch.randint(0, classes, (4,)))
    loss.backward()
    assert math.isfinite(loss.item())
    assert all(p.grad is not None for p in model.parameters())
    assert sum(p.numel() for p in model.parameters()) < 3_000_000


def test_template_keeps_the_original_width_ballpark() -> None:
    wide = HEALTHY.replace("16", "64").replace("32", "128")
    assert plan_template((3, 32, 32), 10, inspect_source(wide)).widths == (64, 128, 256)
    assert plan_template((3, 32, 32), 10, inspect_source(SIGMOID_STACK)).widths == (32, 64, 128)
    assert plan_template((3, 32, 32), 100, inspect_source(HEALTHY)).widths[0] == 64
    assert len(plan_template((1, 6, 6), 10).widths) == 2  # small inputs get fewer stages


def test_source_facts() -> None:
    facts = inspect_source(SIGMOID_STACK)
    assert facts.saturating and not facts.has_norm
    assert facts.conv_widths == [16]  # WIDTH resolved from the module constant
    assert inspect_source(BOTTLENECK).bottleneck(10) == 2
    assert inspect_source(HEALTHY).bottleneck(10) is None
    assert not inspect_source("def (:").parsed


def test_the_fixer_repairs_a_proposal_or_falls_back_to_a_compact_template() -> None:
    advisor = RulesAdvisor()
    ctx = context(SIGMOID_STACK, [], {"optimizer": "sgd"}, input_shape=(3, 32, 32))
    broken = "import torch.nn as nn\n\ndef build_model(s, n):\n    return nn.Linear(100, n)\n"
    fixed, _ = advisor.write_architecture(
        ctx,
        previous_error="mat1 and mat2 shapes cannot be multiplied (4x3072 and 100x10)",
        previous_source=broken,
    )
    assert "nn.Linear(3072, n)" in fixed.source
    compact, _ = advisor.write_architecture(
        ctx, previous_error="took 30 s per step", previous_source=broken
    )
    assert compact.source.startswith(TEMPLATE_MARKER)
    assert "widths=(16, 32)" in compact.source.splitlines()[0]
    _static_check(compact.source)


# --------------------------------------------------------------------------- repairs

BLOG_CNN = """
import torch
import torch.nn as nn

class CNN(nn.Module):
    def __init__(self):
        super(CNN, self).__init__()
        self.conv1 = nn.Conv2d(3, 16, kernel_size=15, padding=1)
        # With no pooling, feature size remains 32x32, so: 32x32x16 = 16384
        self.fc = nn.Linear(16384, 10)

    def forward(self, x):
        x = torch.sigmoid(self.conv1(x))
        x = torch.flatten(x, 1)
        return self.fc(x)
"""


def _first_error(source: str, shape: tuple[int, int, int]) -> str:
    namespace: dict[str, Any] = {}
    exec(compile(source, "<model>", "exec"), namespace)
    model = namespace["CNN"]() if "CNN" in namespace else namespace["build_model"](shape, 10)
    with pytest.raises(RuntimeError) as info:
        model(torch.randn(2, *shape))
    return f"Traceback (most recent call last):\n  ...\nRuntimeError: {info.value}"


def _forward(source: str, shape: tuple[int, int, int]) -> torch.Tensor:
    namespace: dict[str, Any] = {}
    exec(compile(source, "<model>", "exec"), namespace)
    model = namespace["CNN"]() if "CNN" in namespace else namespace["build_model"](shape, 10)
    out: torch.Tensor = model(torch.randn(2, *shape))
    return out


def test_repairs_the_blogs_flawed_cnn() -> None:
    error = _first_error(BLOG_CNN, (3, 32, 32))
    assert "2x6400 and 16384x10" in error
    ctx = context(BLOG_CNN, [], {"optimizer": "sgd"}, input_shape=(3, 32, 32))
    repair, usage = RulesAdvisor().repair(ctx, error)
    assert repair is not None and usage.model == "rules"
    assert "nn.Linear(6400, 10)" in repair.source and "6400" in repair.explanation
    assert _forward(repair.source, (3, 32, 32)).shape == (2, 10)
    _static_check(repair.source)


def test_repairs_the_example_file_when_it_exists() -> None:
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "examples" / "blog_flawed_cnn.py"
    if not path.exists():
        pytest.skip("examples/blog_flawed_cnn.py is not there yet")
    source = path.read_text()
    repair = repair_source(source, _first_error(source, (3, 32, 32)))
    assert repair is not None
    assert _forward(repair.source, (3, 32, 32)).shape == (2, 10)


def test_repairs_channel_and_batchnorm_mismatches() -> None:
    rgb_only = HEALTHY.replace("input_shape[0]", "3")
    error = _first_error(rgb_only, (1, 28, 28))
    assert "to have 3 channels, but got 1" in error
    repair = repair_source(rgb_only, error)
    assert repair is not None and "nn.Conv2d(1, 16, 3" in repair.source
    assert _forward(repair.source, (1, 28, 28)).shape == (2, 10)

    wrong_bn = HEALTHY.replace("nn.BatchNorm2d(32)", "nn.BatchNorm2d(64)")
    repair = repair_source(wrong_bn, _first_error(wrong_bn, (3, 16, 16)))
    assert repair is not None and "BatchNorm2d(32)" in repair.source
    assert _forward(repair.source, (3, 16, 16)).shape == (2, 10)


def test_does_not_guess_when_it_cannot_repair() -> None:
    twins = "import torch.nn as nn\na = nn.Linear(100, 10)\nb = nn.Linear(100, 10)\n"
    matmul = "mat1 and mat2 shapes cannot be multiplied (4x50 and 100x10)"
    assert repair_source(twins, matmul) is None  # ambiguous
    computed = "import torch.nn as nn\ndef f(k):\n    return nn.Linear(k, 10)\n"
    assert repair_source(computed, matmul) is None  # in_features is not a constant
    assert repair_source(BLOG_CNN, "CUDA out of memory") is None
    assert repair_source("def (:", matmul) is None


# --------------------------------------------------------------------------- narrative


def test_summary_is_deterministic_and_tells_the_story() -> None:
    ctx = context(HEALTHY, [], {"optimizer": "sgd"})
    ctx.history = [
        HistoryEntry(0, "start", 0, {}, 0.11, 2.3),
        HistoryEntry(1, "redesign", 1, {}, 0.93, 0.3),
        HistoryEntry(2, "tune", 1, {"lr_schedule": "cosine"}, 0.98, 0.08),
    ]
    advisor = RulesAdvisor()
    text, usage = advisor.summarize(ctx, "# report")
    again, _ = advisor.summarize(ctx, "# report")
    assert text == again and usage.model == "rules"
    assert "11.0%" in text and "98.0%" in text and "new architecture" in text
    assert "lr_schedule=cosine" in text


# --------------------------------------------------------------------------- the demo's fix


@pytest.mark.slow
def test_redesigned_flawed_digits_model_reaches_95_percent_in_ten_epochs() -> None:
    """The rules' replacement for the offline demo model, trained as the worker would."""
    from pathlib import Path

    from sklearn.datasets import load_digits

    path = Path(__file__).resolve().parents[2] / "examples" / "flawed_digits.py"
    flawed = path.read_text() if path.exists() else SIGMOID_STACK
    advisor = RulesAdvisor()
    hp0 = Hyperparameters(optimizer="sgd", learning_rate=0.1)
    ctx = AdvisorContext(
        run_id="run",
        input_shape=(3, 32, 32),
        num_classes=10,
        dataset="digits",
        source=flawed,
        hyperparameters=hp0.model_dump(),
        diagnostics={
            "num_classes": 10,
            "issues": ["vanishing_gradients", "near_chance"],
            "vanishing": True,
            "near_chance": True,
            "first_to_last_ratio": 1e-7,
        },
    )
    assessment, _ = advisor.assess(ctx)
    assert assessment.recommendation == "redesign"
    proposal, _ = advisor.write_architecture(ctx)
    ctx.assessment, ctx.source = assessment, proposal.source
    change, _ = advisor.tune(ctx)
    hp, _ = clamp_changes(hp0, change.changes)

    torch.manual_seed(0)
    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False).repeat(1, 3, 1, 1)
    y = torch.tensor(data.target)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    x, y = x[perm][360:], y[perm][360:]  # the rest would be the test split
    n_val = int(0.2 * len(y))
    xv, yv, xt, yt = x[:n_val], y[:n_val], x[n_val:], y[n_val:]
    mean, std = xt.mean(), xt.std()
    xt, xv = (xt - mean) / std, (xv - mean) / std

    model = build(proposal.source, (3, 32, 32), 10)
    opt = torch.optim.SGD(
        model.parameters(),
        lr=hp.learning_rate,
        momentum=hp.momentum,
        nesterov=hp.nesterov,
        weight_decay=hp.weight_decay,
    )
    epochs = 10
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    best = 0.0
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(yt))
        for i in range(0, len(yt), hp.batch_size):
            idx = order[i : i + hp.batch_size]
            opt.zero_grad()
            F.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
        sched.step()
        model.eval()
        with torch.no_grad():
            best = max(best, (model(xv).argmax(1) == yv).float().mean().item())
    assert best >= 0.95
