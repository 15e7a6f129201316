"""``gradpilot runs watch``: the live view follows a run that a background thread drives to
completion by writing rows as the worker and the agent would."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from fastapi.testclient import TestClient
from rich.console import Console
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from service.cli.client import ApiClient, CliError
from service.cli.main import app
from service.cli.watch import WatchState, watch_run
from service.db.models import Decision, EpochSummary, Job, Run, utcnow
from tests.support.factories import finish_run, run_body, summary

STEP_S = 0.03


def drive(sessions: sessionmaker[Session], run_id: str, errors: list[BaseException]) -> None:
    """Two generations of two epochs, a tune between them, then finish."""
    try:
        plan = [
            (0, 0.1, "tune", "loss is flat: raise the learning rate"),
            (1, 0.3, "finish", "target reached"),
        ]
        for seq, (gen, lr, action, why) in enumerate(plan):
            with sessions() as s:
                run = s.get(Run, run_id)
                assert run is not None
                run.status = "running"
                job = Job(
                    run_id=run_id,
                    generation=gen,
                    attempt=1,
                    architecture_version=0,
                    hyperparameters={"optimizer": "sgd", "learning_rate": lr},
                    epoch_start=2 * gen,
                    epochs=2,
                    schedule_epoch=0,
                    schedule_total_epochs=2,
                    status="running",
                )
                s.add(job)
                s.commit()
                job_id = job.id
            for epoch in (2 * gen, 2 * gen + 1):
                time.sleep(STEP_S)
                with sessions() as s:
                    row = summary(epoch, val_accuracy=0.2 + 0.1 * epoch, learning_rate=lr)
                    s.add(EpochSummary(job_id=job_id, run_id=run_id, **row))
                    s.commit()
            time.sleep(STEP_S)
            with sessions() as s:
                job = s.get(Job, job_id)
                assert job is not None
                job.status, job.finished_at = "succeeded", utcnow()
                job.best_val_accuracy = 0.2 + 0.1 * (2 * gen + 1)
                s.add(
                    Decision(
                        run_id=run_id,
                        sequence=seq,
                        generation=gen,
                        action=action,
                        advisor="rules",
                        rationale=why,
                        diagnostics={"issues": ["plateau"] if gen == 0 else []},
                        assessment={},
                        changes={"learning_rate": {"value": 0.3, "reason": "flat"}}
                        if gen == 0
                        else {},
                    )
                )
                s.commit()
        with sessions() as s:
            run = s.get(Run, run_id)
            assert run is not None
            run.status, run.best_val_accuracy = "succeeded", 0.5
            s.commit()
    except BaseException as e:  # surfaced by the test
        errors.append(e)


class Recording:
    """Wraps an ApiClient and remembers which metrics were asked for."""

    def __init__(self, api: ApiClient) -> None:
        self.api = api
        self.metrics: list[tuple[int | None, list[int]]] = []

    def get(self, path: str, **kwargs: Any) -> Any:
        data = self.api.get(path, **kwargs)
        if path.endswith("/metrics"):
            since = (kwargs.get("params") or {}).get("since_epoch")
            self.metrics.append((since, [s["epoch"] for s in data]))
        return data


def test_watch_follows_a_run_to_the_end(
    client: TestClient, api: ApiClient, console: Console
) -> None:
    sessions = client.app.state.gradpilot.sessions  # type: ignore[attr-defined]
    run_id = client.post("/v1/runs", json=run_body(name="watched")).json()["id"]
    errors: list[BaseException] = []
    driver = threading.Thread(target=drive, args=(sessions, run_id, errors), daemon=True)
    recording = Recording(api)
    driver.start()
    final = watch_run(recording, run_id, console, poll_s=0.01)  # type: ignore[arg-type]
    driver.join(10)
    assert not errors, errors
    assert final["status"] == "succeeded"

    text = console.export_text()
    tune = text.index("decision #0 tune after generation 0 by rules: loss is flat")
    finish = text.index("decision #1 finish after generation 1 by rules: target reached")
    assert tune < finish
    assert "diagnosed: plateau" in text
    assert "changes: learning_rate → 0.3" in text
    assert (
        "generation 0 (attempt 1, architecture v0) succeeded: best validation accuracy 30.0%"
        in text
    )
    # the final view: status, progress of the last job, latest epoch, the generations
    assert "succeeded" in text.splitlines()[-1] or "succeeded" in text
    assert "2/2 epochs (2–3)" in text
    assert "latest epoch (3)" in text
    assert "generations" in text

    # summaries are fetched incrementally: never an epoch before since_epoch, every epoch seen
    assert recording.metrics, "no metrics were fetched"
    for since, epochs in recording.metrics:
        assert since is not None and all(e >= since for e in epochs)
    assert sorted({e for _, epochs in recording.metrics for e in epochs}) == [0, 1, 2, 3]


def test_since_epoch_rereads_a_new_attempt_from_its_start() -> None:
    state = WatchState("r")
    assert state.since_epoch() is None
    state.jobs = [{"id": "j1", "epoch_start": 0}]
    assert state.since_epoch() == 0
    state.fetched_job_id = "j1"
    state.summaries = {0: {"job_id": "j1"}}
    assert state.since_epoch() == 1
    # the next generation appeared before the last epoch of the previous one was read
    state.jobs.append({"id": "j2", "epoch_start": 2})
    assert state.since_epoch() == 1
    state.fetched_job_id = "j2"
    state.summaries = {e: {"job_id": "j2" if e >= 2 else "j1"} for e in range(4)}
    assert state.since_epoch() == 4
    state.jobs.append({"id": "j2-retry", "epoch_start": 2})  # attempt 2 resumes from epoch 2
    assert state.since_epoch() == 2


def test_watch_of_a_finished_run_returns_at_once(
    client: TestClient, api: ApiClient, console: Console
) -> None:
    state = client.app.state.gradpilot  # type: ignore[attr-defined]
    run_id = finish_run(state.sessions, state.artifacts, client).run_id
    final = watch_run(api, run_id, console, poll_s=10)
    assert final["status"] == "succeeded"
    text = console.export_text()
    for action in ("redesign", "tune", "finish"):
        assert f" {action} after generation" in text
    assert "diagnosed: vanishing_gradients, near_chance" in text
    assert "4/4 epochs (8–11)" in text


def test_watch_of_an_unknown_run_fails_with_a_message(api: ApiClient, console: Console) -> None:
    with pytest.raises(CliError) as e:
        watch_run(api, "nope", console, poll_s=0.01)
    assert "404" in e.value.message


def test_runs_watch_command_exits_non_zero_for_a_failed_run(
    client: TestClient, cli_console: Console
) -> None:
    run_id = client.post("/v1/runs", json=run_body()).json()["id"]
    with client.app.state.gradpilot.sessions() as s:  # type: ignore[attr-defined]
        run = s.get(Run, run_id)
        assert run is not None
        run.status, run.error = "failed", "the model's code still fails"
        s.commit()
    result = CliRunner().invoke(app, ["runs", "watch", run_id])
    assert result.exit_code == 1
    assert "failed" in cli_console.export_text()
