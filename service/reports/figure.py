"""The run's four-panel figure, after the blog's Figures 2 and 3: loss, accuracy, total gradient
norm and per-layer gradient norms over every epoch of the run, with a marker wherever the agent
changed the hyperparameters or the architecture.

The API renders it from worker threads, so this module never touches pyplot (whose global
state is not thread-safe): it builds a ``matplotlib.figure.Figure`` and prints it with the Agg
canvas. Rendering is serialised by a lock all the same, because matplotlib's text and font
caches are shared between threads.
"""

from __future__ import annotations

import io
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.db.models import Decision, EpochSummary, Job, Run
from service.diagnostics import weight_names
from service.jobs import metrics
from service.schemas.summaries import EpochSummaryIn

#: decisions that change what the next job trains (continue and retry do not)
CHANGE_ACTIONS = ("tune", "redesign", "repair")
ACTION_COLORS = {"tune": "#d97706", "redesign": "#dc2626", "repair": "#7c3aed", "change": "#6b7280"}
TRAIN, VAL = "#2563eb", "#ea580c"
#: with more weight tensors than this, the per-layer panel shows tensors at a few depths only
MAX_LAYER_LINES = 8
DEPTHS = ((0.0, "first"), (0.25, "¼ depth"), (0.5, "middle"), (0.75, "¾ depth"), (1.0, "last"))
PANEL_TITLES = (
    "Loss",
    "Accuracy",
    "Total gradient norm (mean, min–max band)",
    "Per-layer gradient norm (weights, mean)",
)

_render_lock = threading.RLock()


class JobLike(Protocol):
    generation: int
    attempt: int
    epoch_start: int
    architecture_version: int
    hyperparameters: dict[str, Any]


class DecisionLike(Protocol):
    sequence: int
    generation: int
    action: str


@dataclass(frozen=True)
class Marker:
    """A change in what was trained: drawn as a vertical line before ``epoch``."""

    epoch: int
    generation: int
    action: str

    @property
    def label(self) -> str:
        return f"g{self.generation} {self.action}"


def change_markers(jobs: Sequence[JobLike], decisions: Sequence[DecisionLike]) -> list[Marker]:
    """Where the architecture or hyperparameters changed: the first epoch of each generation
    that a tune/redesign/repair decision made (the latest attempt of a retried generation).

    A decision's ``generation`` is the job whose outcome led to it, so the last decision taken
    after generation ``g - 1`` is what made generation ``g``. Without any decision for it (rows
    written by hand), a generation whose architecture or hyperparameters differ from the
    previous one's is still marked.
    """
    latest: dict[int, JobLike] = {}
    for job in sorted(jobs, key=lambda j: (j.generation, j.attempt)):
        latest[job.generation] = job
    made_by: dict[int, str] = {}
    for d in sorted(decisions, key=lambda d: d.sequence):
        made_by[d.generation + 1] = d.action
    markers = []
    generations = sorted(latest)
    for previous, generation in zip(generations, generations[1:], strict=False):
        job, before = latest[generation], latest[previous]
        action = made_by.get(generation)
        if action is None:
            if job.architecture_version != before.architecture_version:
                action = "redesign"
            elif job.hyperparameters != before.hyperparameters:
                action = "tune"
        if action in CHANGE_ACTIONS:
            markers.append(Marker(job.epoch_start, generation, action))
    return markers


# --------------------------------------------------------------------------- drawing


def _natural_key(name: str) -> list[Any]:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


def layer_order(names: Sequence[str]) -> list[str]:
    """Parameter names in the model's order, as posted. PostgreSQL's JSONB does not keep key
    order (it sorts keys by length, then bytes); a list in exactly that order is re-sorted
    naturally, which matches registration order for the usual ``conv1``/``features.3`` names."""
    names = list(names)
    jsonb_order = sorted(names, key=lambda n: (len(n.encode()), n.encode()))
    if len(names) > 2 and names == jsonb_order:
        return sorted(names, key=_natural_key)
    return names


def _positive(values: Sequence[float | None]) -> list[float]:
    """Values for a log axis: missing, non-finite and non-positive ones become gaps."""
    return [v if v is not None and math.isfinite(v) and v > 0 else math.nan for v in values]


def _has_data(values: Sequence[float]) -> bool:
    return any(not math.isnan(v) for v in values)


def _layer_series(summaries: Sequence[EpochSummaryIn]) -> list[tuple[str, list[float]]]:
    """(label, mean gradient norm per epoch) for the weight tensors worth a line.

    One line per tensor when the run kept one set of tensor names and has few of them;
    otherwise lines at fixed relative depths (first, ¼, middle, ¾, last weight tensor), which
    stay comparable across a redesign that changed the layers.
    """
    orders = [weight_names(layer_order(list(s.grad_layers))) for s in summaries]
    distinct = {tuple(o) for o in orders if o}
    if len(distinct) == 1:
        names = next(iter(distinct))
        if len(names) <= MAX_LAYER_LINES:
            return [(name, _positive([_mean(s, name) for s in summaries])) for name in names]
    chosen: dict[tuple[int, ...], tuple[float, str]] = {}
    # first and last before the depths between: in a small network ¾ depth may be the last
    # tensor again, and then it is shown as "last"
    for fraction, label in sorted(DEPTHS, key=lambda d: d[0] not in (0.0, 1.0)):
        picks = tuple(round(fraction * (len(o) - 1)) if o else -1 for o in orders)
        chosen.setdefault(picks, (fraction, label))
    series = []
    for picks, (_, label) in sorted(chosen.items(), key=lambda item: item[1][0]):
        values = [
            _mean(s, o[i]) if o else None for s, o, i in zip(summaries, orders, picks, strict=True)
        ]
        if len(distinct) == 1:
            label = f"{label}: {orders[0][picks[0]]}"
        series.append((label, _positive(values)))
    return series


def _mean(summary: EpochSummaryIn, name: str) -> float | None:
    stats = summary.grad_layers.get(name)
    return stats.mean if stats is not None else None


def _log_if_data(ax: Axes, *series: Sequence[float]) -> bool:
    if any(_has_data(s) for s in series):
        ax.set_yscale("log")
        return True
    return False


_plain = FuncFormatter(lambda v, _pos: f"{v:.3g}")


def _draw_markers(axes: Sequence[Axes], markers: Sequence[Marker]) -> None:
    for ax in axes:
        for m in markers:
            color = ACTION_COLORS.get(m.action, ACTION_COLORS["change"])
            ax.axvline(m.epoch - 0.5, color=color, linestyle="--", linewidth=1.2, alpha=0.85)
            ax.text(
                m.epoch - 0.5,
                0.98,
                f" {m.label}",
                transform=ax.get_xaxis_transform(),
                rotation=90,
                va="top",
                ha="right",
                fontsize=7.5,
                color=color,
            )


def build_figure(
    summaries: Sequence[EpochSummaryIn],
    markers: Sequence[Marker] = (),
    *,
    title: str | None = None,
) -> Figure:
    """The four-panel figure as a matplotlib ``Figure`` (tests inspect its axes)."""
    # Fixed margins rather than a layout engine: the panels never change, and constrained
    # layout doubles the time to draw, which a dashboard that refreshes feels.
    fig = Figure(figsize=(13, 8.5), dpi=100)
    FigureCanvasAgg(fig)
    if title:
        # a run's name is the user's text, not mathtext: "$\frac{1}{$" must not break the figure
        fig.suptitle(title, fontsize=12, parse_math=False)
    ordered = sorted({s.epoch: s for s in summaries}.values(), key=lambda s: s.epoch)
    if not ordered:
        ax = fig.add_subplot()
        ax.set_axis_off()
        ax.text(0.5, 0.5, "no epochs yet", ha="center", va="center", fontsize=20, color="#6b7280")
        return fig

    epochs = [s.epoch for s in ordered]
    grid = {
        "left": 0.06,
        "right": 0.985,
        "bottom": 0.065,
        "top": 0.915,
        "hspace": 0.2,
        "wspace": 0.14,
    }
    ax_loss, ax_acc, ax_total, ax_layers = fig.subplots(2, 2, sharex=True, gridspec_kw=grid).flat

    train_loss = _positive([s.train_loss for s in ordered])
    val_loss = _positive([s.val_loss for s in ordered])
    ax_loss.plot(epochs, train_loss, label="training", color=TRAIN)
    ax_loss.plot(epochs, val_loss, label="validation", color=VAL)
    if _log_if_data(ax_loss, train_loss, val_loss):
        # plain numbers read better than 2×10⁰; minor ticks are labelled only when the losses
        # span less than a decade (otherwise the labels crowd each other)
        ax_loss.yaxis.set_major_formatter(_plain)
        finite = [v for v in (*train_loss, *val_loss) if not math.isnan(v)]
        narrow = max(finite) / min(finite) < 10
        ax_loss.yaxis.set_minor_formatter(_plain if narrow else NullFormatter())
    diverged = [s.epoch for s in ordered if s.train_loss is None or s.val_loss is None]
    if diverged:
        ax_loss.plot(
            diverged,
            [0.02] * len(diverged),
            "x",
            color="#dc2626",
            transform=ax_loss.get_xaxis_transform(),
            label="non-finite loss",
        )

    ax_acc.plot(
        epochs, [100 * s.train_accuracy for s in ordered], label="training", color="#2563eb"
    )
    ax_acc.plot(
        epochs, [100 * s.val_accuracy for s in ordered], label="validation", color="#ea580c"
    )
    ax_acc.set_ylim(0, 100)
    ax_acc.set_ylabel("%")

    mean = _positive([s.grad_total.mean for s in ordered])
    low = _positive([s.grad_total.min for s in ordered])
    high = _positive([s.grad_total.max for s in ordered])
    ax_total.fill_between(epochs, low, high, color="#16a34a", alpha=0.2, label="min–max")
    ax_total.plot(epochs, mean, color="#16a34a", label="mean")
    _log_if_data(ax_total, mean, low, high)

    layers = _layer_series(ordered)
    for i, (label, values) in enumerate(layers):
        ax_layers.plot(
            epochs,
            values,
            label=label.replace("$", r"\$"),  # tensor names are the user's text, not mathtext
            color=_depth_color(i, len(layers)),
            lw=1.3,
        )
    _log_if_data(ax_layers, *(v for _, v in layers))

    for ax, panel_title in zip((ax_loss, ax_acc, ax_total, ax_layers), PANEL_TITLES, strict=True):
        ax.set_title(panel_title, fontsize=10.5)
        ax.grid(True, which="major", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(
                fontsize=7.5, loc="best", ncol=2 if ax is ax_layers and len(layers) > 4 else 1
            )
    for ax in (ax_total, ax_layers):
        ax.set_xlabel("epoch")
    ax_layers.xaxis.set_major_locator(MaxNLocator(integer=True))
    _draw_markers((ax_loss, ax_acc, ax_total, ax_layers), markers)
    return fig


def _depth_color(i: int, n: int) -> Any:
    """Dark for the first layers, bright for the last (viridis, trimmed of its pale yellow)."""
    return colormaps["viridis"](0.85 * i / max(1, n - 1))


def figure_png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    with _render_lock:
        fig.savefig(buf, format="png")
    return buf.getvalue()


def render_figure(
    summaries: Sequence[EpochSummaryIn],
    changes: Sequence[Marker] = (),
    *,
    title: str | None = None,
) -> bytes:
    """PNG of the four-panel figure for ``summaries`` with ``changes`` marked."""
    with _render_lock:
        return figure_png(build_figure(summaries, changes, title=title))


# --------------------------------------------------------------------------- a run's figure


def run_title(run: Run) -> str:
    best = "—" if run.best_val_accuracy is None else f"{100 * run.best_val_accuracy:.1f}%"
    name = f"{run.name} ({run.id[:12]})" if run.name else f"run {run.id[:12]}"
    return f"{name} — {run.dataset.get('name', '?')}, {run.status}, best validation accuracy {best}"


class _Cache:
    """The last few PNGs by a fingerprint of what they show: a dashboard that refreshes every
    few seconds must not redraw an unchanged run each time."""

    def __init__(self, size: int = 32) -> None:
        self.size = size
        self._items: OrderedDict[tuple[Any, ...], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[Any, ...]) -> bytes | None:
        with self._lock:
            png = self._items.get(key)
            if png is not None:
                self._items.move_to_end(key)
            return png

    def put(self, key: tuple[Any, ...], png: bytes) -> None:
        with self._lock:
            self._items[key] = png
            while len(self._items) > self.size:
                self._items.popitem(last=False)


_cache = _Cache()


def _fingerprint(session: Session, run: Run) -> tuple[Any, ...]:
    summaries = session.execute(
        select(func.count(EpochSummary.id), func.max(EpochSummary.id)).where(
            EpochSummary.run_id == run.id
        )
    ).one()
    jobs = session.execute(
        select(func.count(Job.id), func.max(Job.epoch_start)).where(Job.run_id == run.id)
    ).one()
    decisions = session.execute(
        select(func.count(Decision.id)).where(Decision.run_id == run.id)
    ).scalar_one()
    return (run.id, run_title(run), *summaries, *jobs, decisions)


def render_run_figure(session: Session, run: Run) -> bytes:
    """PNG of a run's figure: every epoch (a retried generation's latest attempt) and a marker
    at each change the agent made."""
    key = _fingerprint(session, run)
    cached = _cache.get(key)
    if cached is not None:
        return cached
    summaries = metrics(session, run.id)
    jobs = list(session.execute(select(Job).where(Job.run_id == run.id)).scalars())
    decisions = list(session.execute(select(Decision).where(Decision.run_id == run.id)).scalars())
    png = render_figure(summaries, change_markers(jobs, decisions), title=run_title(run))
    _cache.put(key, png)
    return png
