"""The four-panel figure: what it draws, where it marks changes, and the API that serves it."""

from __future__ import annotations

import io
from types import SimpleNamespace as NS
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import select

from service.db.models import Decision, EpochSummary, Job
from service.reports.figure import (
    PANEL_TITLES,
    Marker,
    build_figure,
    change_markers,
    layer_order,
    render_figure,
)
from service.schemas.summaries import EpochSummaryIn, EpochSummaryPublic
from tests.support.factories import EXPECTED_MARKERS, finish_run, summary


def job(gen: int, start: int, *, attempt: int = 1, arch: int = 0, lr: float = 0.1) -> Any:
    return NS(
        generation=gen,
        attempt=attempt,
        epoch_start=start,
        architecture_version=arch,
        hyperparameters={"optimizer": "sgd", "learning_rate": lr},
    )


def dec(seq: int, gen: int, action: str) -> Any:
    return NS(sequence=seq, generation=gen, action=action)


def summaries(n: int, **overrides: Any) -> list[EpochSummaryIn]:
    return [EpochSummaryIn.model_validate(summary(e, **overrides)) for e in range(n)]


def marker_lines(ax: Any) -> list[float]:
    """x of the vertical marker lines on an axes (axvline: two equal x values)."""
    xs = []
    for line in ax.get_lines():
        x = list(line.get_xdata())
        if len(x) == 2 and x[0] == x[1] and line.get_linestyle() == "--":
            xs.append(float(x[0]))
    return xs


# ----------------------------------------------------------------------------- markers


def test_markers_at_the_first_epoch_of_each_changed_generation() -> None:
    jobs = [job(0, 0), job(1, 10, arch=1), job(2, 20, arch=1, lr=0.01), job(3, 30, arch=1, lr=0.01)]
    decisions = [
        dec(0, 0, "redesign"),
        dec(1, 1, "tune"),
        dec(2, 2, "continue"),
        dec(3, 3, "finish"),
    ]
    assert change_markers(jobs, decisions) == [Marker(10, 1, "redesign"), Marker(20, 2, "tune")]
    assert [m.label for m in change_markers(jobs, decisions)] == ["g1 redesign", "g2 tune"]


def test_a_retried_generation_is_marked_at_its_latest_attempt_and_a_retry_is_no_change() -> None:
    jobs = [job(0, 0), job(1, 5, lr=0.01), job(1, 7, attempt=2, lr=0.01)]
    decisions = [dec(0, 0, "tune"), dec(1, 1, "retry")]
    assert change_markers(jobs, decisions) == [Marker(7, 1, "tune")]


def test_a_repair_is_marked_where_the_repaired_job_starts() -> None:
    jobs = [job(0, 0), job(1, 3, arch=1)]  # generation 0 raised after epoch 2
    assert change_markers(jobs, [dec(0, 0, "repair")]) == [Marker(3, 1, "repair")]


def test_the_last_decision_after_a_generation_wins() -> None:
    # a repair before the first job ran (sandbox), then continue after generation 0
    jobs = [job(0, 0, arch=1), job(1, 5, arch=1)]
    assert change_markers(jobs, [dec(0, 0, "repair"), dec(1, 0, "continue")]) == []


def test_changes_without_decisions_are_still_marked() -> None:
    jobs = [job(0, 0), job(1, 4, lr=0.05), job(2, 8, arch=1, lr=0.05), job(3, 12, arch=1, lr=0.05)]
    assert change_markers(jobs, []) == [Marker(4, 1, "tune"), Marker(8, 2, "redesign")]


def test_layer_order_undoes_jsonb_key_sorting() -> None:
    registered = ["conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight", "out.weight"]
    assert layer_order(registered) == registered
    jsonb = sorted(registered, key=lambda n: (len(n), n))
    assert jsonb != registered
    assert layer_order(jsonb) == registered


# ----------------------------------------------------------------------------- drawing


def test_four_panels_with_markers_drawn_before_the_changed_epoch() -> None:
    fig = build_figure(summaries(12), [Marker(4, 1, "redesign"), Marker(8, 2, "tune")], title="t")
    axes = fig.get_axes()
    assert [ax.get_title() for ax in axes] == list(PANEL_TITLES)
    for ax in axes:
        assert marker_lines(ax) == [3.5, 7.5]
        labels = [t.get_text().strip() for t in ax.texts]
        assert labels == ["g1 redesign", "g2 tune"]
    loss, _acc, total, layers = axes
    assert loss.get_yscale() == total.get_yscale() == layers.get_yscale() == "log"


def test_png_decodes() -> None:
    png = render_figure(summaries(5), [Marker(2, 1, "tune")])
    image = Image.open(io.BytesIO(png))
    image.load()
    assert image.format == "PNG"
    assert image.size == (1300, 850)


def test_empty_run_draws_a_placeholder() -> None:
    fig = build_figure([])
    assert len(fig.get_axes()) == 1
    assert "no epochs yet" in [t.get_text() for t in fig.get_axes()[0].texts]
    Image.open(io.BytesIO(render_figure([]))).load()


def test_null_losses_leave_gaps_and_are_flagged() -> None:
    items = summaries(6)
    items[2] = items[2].model_copy(update={"train_loss": None, "val_loss": None})
    fig = build_figure(items)
    loss = fig.get_axes()[0]
    assert "non-finite loss" in loss.get_legend_handles_labels()[1]
    render_figure(items)  # draws without error


def test_all_losses_null_keeps_a_linear_axis() -> None:
    fig = build_figure(summaries(3, train_loss=None, val_loss=None))
    assert fig.get_axes()[0].get_yscale() == "linear"
    render_figure(summaries(3, train_loss=None, val_loss=None))


def test_many_layers_are_shown_at_a_few_depths() -> None:
    layers = {
        f"features.{i}.weight": {"mean": 10.0**-i, "max": 1.0, "min": 1e-9} for i in range(30)
    }
    layers.update({f"features.{i}.bias": {"mean": 1.0, "max": 1.0, "min": 1.0} for i in range(30)})
    fig = build_figure(summaries(4, grad_layers=layers))
    labels = fig.get_axes()[3].get_legend_handles_labels()[1]
    assert labels == [
        "first: features.0.weight",
        "¼ depth: features.7.weight",
        "middle: features.14.weight",
        "¾ depth: features.22.weight",
        "last: features.29.weight",
    ]


def test_few_layers_get_one_line_each_and_biases_are_left_out() -> None:
    layers = {
        "conv1.weight": {"mean": 0.1, "max": 0.2, "min": 0.05},
        "conv1.bias": {"mean": 0.1, "max": 0.2, "min": 0.05},
        "fc.weight": {"mean": 1.0, "max": 2.0, "min": 0.5},
    }
    fig = build_figure(summaries(3, grad_layers=layers))
    assert fig.get_axes()[3].get_legend_handles_labels()[1] == ["conv1.weight", "fc.weight"]


def test_a_redesign_that_renames_layers_is_drawn_by_depth() -> None:
    old = {
        "a.weight": {"mean": 1e-4, "max": 1.0, "min": 0.0},
        "b.weight": {"mean": 1.0, "max": 1.0, "min": 0.0},
    }
    new = {f"n{i}.weight": {"mean": 0.5, "max": 1.0, "min": 0.0} for i in range(3)}
    items = summaries(2, grad_layers=old) + [
        EpochSummaryIn.model_validate(summary(e, grad_layers=new)) for e in (2, 3)
    ]
    labels = build_figure(items).get_axes()[3].get_legend_handles_labels()[1]
    assert labels[0] == "first" and labels[-1] == "last"


# ----------------------------------------------------------------------------- a run's figure


def test_run_figure_endpoint_marks_the_agents_changes(client: TestClient) -> None:
    state = client.app.state.gradpilot  # type: ignore[attr-defined]
    done = finish_run(state.sessions, state.artifacts, client)
    with state.sessions() as session:
        jobs = list(session.execute(select(Job).where(Job.run_id == done.run_id)).scalars())
        decisions = list(
            session.execute(select(Decision).where(Decision.run_id == done.run_id)).scalars()
        )
        assert [(m.epoch, m.label) for m in change_markers(jobs, decisions)] == EXPECTED_MARKERS
    response = client.get(f"/v1/runs/{done.run_id}/figure.png")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    Image.open(io.BytesIO(response.content)).load()


def test_run_figure_of_a_new_run_and_cache_invalidation(client: TestClient) -> None:
    from tests.support.factories import add_job, run_body

    run_id = client.post("/v1/runs", json=run_body()).json()["id"]
    empty = client.get(f"/v1/runs/{run_id}/figure.png")
    assert empty.status_code == 200
    assert client.get(f"/v1/runs/{run_id}/figure.png").content == empty.content  # cached
    job_id, token = add_job(client, run_id)
    posted = client.post(
        f"/v1/jobs/{job_id}/summaries",
        json={"summaries": [summary(0), summary(1)]},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert posted.status_code == 200
    drawn = client.get(f"/v1/runs/{run_id}/figure.png")
    assert drawn.content != empty.content
    Image.open(io.BytesIO(drawn.content)).load()


def test_figure_needs_a_user_token(client: TestClient) -> None:
    from tests.support.factories import run_body

    run_id = client.post("/v1/runs", json=run_body()).json()["id"]
    assert (
        client.get(f"/v1/runs/{run_id}/figure.png", headers={"Authorization": ""}).status_code
        == 401
    )


@pytest.mark.parametrize("missing", ["nope"])
def test_figure_of_unknown_run_is_404(client: TestClient, missing: str) -> None:
    assert client.get(f"/v1/runs/{missing}/figure.png").status_code == 404


def test_summaries_in_db_match_the_figures_epochs(client: TestClient) -> None:
    state = client.app.state.gradpilot  # type: ignore[attr-defined]
    done = finish_run(state.sessions, state.artifacts, client)
    with state.sessions() as session:
        count = session.query(EpochSummary).filter_by(run_id=done.run_id).count()
    assert count == 12
    metrics = client.get(f"/v1/runs/{done.run_id}/metrics").json()
    fig = build_figure([EpochSummaryPublic.model_validate(m) for m in metrics])
    xs = list(fig.get_axes()[1].get_lines()[0].get_xdata())
    assert xs == list(range(12))
