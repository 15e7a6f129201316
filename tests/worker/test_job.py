"""The worker end to end, in this process, against the fake API: reports, checkpoints, the
model's own loss, and a schedule that spans two segments."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from service.schemas import exit_codes
from service.schemas.datasets import DatasetSpec
from service.schemas.hyperparameters import Hyperparameters
from tests.support.factories import TINY_CNN, make_spec
from tests.support.fake_api import FakeApi, run_in_process
from worker import checkpoint


def test_segment_reports_every_epoch_and_finishes(
    api: FakeApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = make_spec(tmp_path, epochs=3, epoch_start=4, checkpoint_every=2)
    assert run_in_process(api, spec, tmp_path, monkeypatch) == exit_codes.SUCCESS
    assert api.epochs("job-1") == [4, 5, 6]
    first = api.summaries["job-1"][4]
    assert first["steps"] == len(range(0, 160, 32))  # 200 train+val, 160 train, batch 32
    assert set(first["grad_layers"]) == {"conv.weight", "conv.bias", "fc.weight", "fc.bias"}
    assert first["grad_total"]["min"] <= first["grad_total"]["mean"] <= first["grad_total"]["max"]
    assert set(first["weight_norms"]) == set(first["grad_layers"])
    assert first["samples_per_second"] > 0 and first["learning_rate"] == pytest.approx(0.05)
    # Checkpoints after the 2nd epoch of the segment and at the end, registered by epoch.
    assert [c["epoch"] for _, c in api.checkpoints] == [5, 6]
    ((job, finish),) = api.finishes
    assert finish["status"] == "succeeded" and finish["exit_code"] == 0
    assert 0 <= finish["test_accuracy"] <= 1
    payload = checkpoint.load_url(api.checkpoints[-1][1]["uri"])
    assert payload["model_sha256"] == spec.model_sha256
    assert payload["model_source"] == spec.model_source
    assert payload["hyperparameters"]["learning_rate"] == 0.05
    assert payload["next_epoch"] == 7 and payload["epoch"] == 6
    assert {"model", "optimizer", "schedule", "rng", "scaler"} <= set(payload)
    assert [s["epoch"] for s in payload["summaries"]] == [4, 5, 6]


LOSS_42 = (
    TINY_CNN
    + """

    def loss_function(self, outputs, targets):
        # A loss whose value is recognisable: the network still gets gradients from it.
        return (outputs - outputs.detach()).sum() + 42.0
"""
)


def test_custom_loss_function_is_used_for_training_and_validation(
    api: FakeApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = make_spec(tmp_path, source=LOSS_42, epochs=1)
    assert run_in_process(api, spec, tmp_path, monkeypatch) == exit_codes.SUCCESS
    summary = api.summaries["job-1"][0]
    assert summary["train_loss"] == pytest.approx(42.0)
    assert summary["val_loss"] == pytest.approx(42.0)


@pytest.mark.slow
def test_schedule_spanning_two_segments_equals_one_segment(
    api: FakeApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hp = Hyperparameters(
        optimizer="sgd", learning_rate=0.1, momentum=0.9, batch_size=32, lr_schedule="onecycle"
    )
    common = {"hyperparameters": hp, "schedule_total_epochs": 4}
    whole = make_spec(tmp_path / "whole", "whole", epochs=4, **common)
    assert run_in_process(api, whole, tmp_path / "w", monkeypatch) == exit_codes.SUCCESS
    first = make_spec(tmp_path / "first", "first", epochs=2, **common)
    assert run_in_process(api, first, tmp_path / "f", monkeypatch) == exit_codes.SUCCESS
    second = make_spec(
        tmp_path / "second",
        "second",
        epochs=2,
        epoch_start=2,
        schedule_epoch=2,
        resume_checkpoint=api.checkpoints[-1][1]["uri"],
        **common,
    )
    assert run_in_process(api, second, tmp_path / "s", monkeypatch) == exit_codes.SUCCESS

    split = {**api.summaries["first"], **api.summaries["second"]}
    assert sorted(split) == [0, 1, 2, 3]
    for epoch, one in api.summaries["whole"].items():
        two = split[epoch]
        assert two["learning_rate"] == pytest.approx(one["learning_rate"], rel=1e-9)
        assert two["train_loss"] == pytest.approx(one["train_loss"], rel=1e-5)
        assert two["grad_total"]["mean"] == pytest.approx(one["grad_total"]["mean"], rel=1e-5)
    a = checkpoint.load_url(next(c["uri"] for j, c in api.checkpoints[::-1] if j == "whole"))
    b = checkpoint.load_url(next(c["uri"] for j, c in api.checkpoints[::-1] if j == "second"))
    for key, value in a["model"].items():
        assert torch.allclose(value, b["model"][key], atol=1e-6), key


def test_weights_only_resume_starts_a_fresh_optimizer(
    api: FakeApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = make_spec(tmp_path / "a", "a", epochs=1)
    assert run_in_process(api, first, tmp_path / "a", monkeypatch) == exit_codes.SUCCESS
    url = api.checkpoints[-1][1]["uri"]
    hp = Hyperparameters(optimizer="adam", learning_rate=0.001, batch_size=16)
    second = make_spec(
        tmp_path / "b",
        "b",
        epochs=1,
        epoch_start=1,
        hyperparameters=hp,
        resume_checkpoint=url,
        resume_weights_only=True,
    )
    assert run_in_process(api, second, tmp_path / "b", monkeypatch) == exit_codes.SUCCESS
    b = checkpoint.load_url(api.checkpoints[-1][1]["uri"])
    assert b["optimizer_name"] == "adam"
    assert api.summaries["b"][1]["steps"] == 160 // 16


@pytest.mark.slow
def test_digits_trains_above_chance(
    api: FakeApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hp = Hyperparameters(optimizer="adam", learning_rate=0.01, batch_size=64, gradient_clip=1.0)
    spec = make_spec(
        tmp_path,
        epochs=3,
        hyperparameters=hp,
        dataset=DatasetSpec(name="digits", max_train_samples=600),
    )
    assert run_in_process(api, spec, tmp_path, monkeypatch) == exit_codes.SUCCESS
    assert api.summaries["job-1"][2]["val_accuracy"] > 0.5
    assert api.finishes[-1][1]["test_accuracy"] > 0.5


def test_cancel_requested_stops_after_a_checkpoint(
    api: FakeApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = make_spec(tmp_path, epochs=5, checkpoint_every=10)
    api.cancel.add("job-1")
    assert run_in_process(api, spec, tmp_path, monkeypatch) == exit_codes.PREEMPTED
    assert api.finishes[-1][1]["error_kind"] == "cancelled"
    assert api.epochs("job-1") == []


def test_outage_during_training_loses_no_summary(
    api: FakeApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    api.fail_summaries = 4  # the first four attempts to send summaries get 503
    spec = make_spec(tmp_path, epochs=4)
    assert run_in_process(api, spec, tmp_path, monkeypatch) == exit_codes.SUCCESS
    assert api.epochs("job-1") == [0, 1, 2, 3] and api.duplicates == 0
    assert api.fail_summaries == 0
