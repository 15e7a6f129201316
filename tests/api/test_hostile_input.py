"""Hostile and careless requests get a 4xx that says what to fix, never a 5xx: integers beyond
the columns, NUL characters, mathtext in a name, oversized bodies and summaries, and runs that
could never train. Each runs on SQLite and, where the database matters, on Postgres."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.db.models import Run
from service.reports.report import build_report
from service.runs import BEDROCK_PROVIDERS
from service.schemas.fields import INT32_MAX
from service.schemas.summaries import MAX_TENSOR_NAME, MAX_TENSORS
from tests.support.factories import USER_TOKEN, add_job, finish_run, run_body, summary

BIG = 2**31  # the first integer a Postgres Integer column cannot hold
HUGE = 2**63  # the first one SQLite cannot


@pytest.fixture(params=["sqlite", "postgres"])
def any_client(request: pytest.FixtureRequest) -> Iterator[TestClient]:
    yield request.getfixturevalue("client" if request.param == "sqlite" else "pg_client")


def _run_and_job(client: TestClient) -> tuple[str, str, str]:
    run_id = client.post("/v1/runs", json=run_body()).json()["id"]
    job_id, token = add_job(client, run_id, epochs=2)
    return run_id, job_id, token


def _assert_422(r, field: str, text: str) -> None:  # type: ignore[no-untyped-def]
    assert r.status_code == 422, r.text
    body = r.json()
    assert isinstance(body["detail"], str) and text in body["detail"], body
    assert any(field in e["field"] for e in body["errors"]), body


@pytest.mark.parametrize("value", [BIG, HUGE, 10**30])
def test_integers_beyond_the_columns(any_client: TestClient, value: int) -> None:
    c = any_client
    run_id, job_id, token = _run_and_job(c)
    job = {"Authorization": f"Bearer {token}"}
    bound = str(INT32_MAX)
    _assert_422(c.get("/v1/runs", params={"offset": value}), "offset", bound)
    _assert_422(c.get(f"/v1/runs/{run_id}/metrics", params={"since_epoch": value}), "since", bound)
    _assert_422(c.get(f"/v1/runs/{run_id}/diff", params={"a": value}), "a", bound)
    _assert_422(c.get(f"/v1/runs/{run_id}/diff", params={"b": value}), "b", bound)
    r = c.post(
        f"/v1/jobs/{job_id}/summaries", headers=job, json={"summaries": [summary(0, steps=value)]}
    )
    _assert_422(r, "steps", bound)
    r = c.post(
        f"/v1/jobs/{job_id}/finish", headers=job, json={"status": "succeeded", "exit_code": value}
    )
    _assert_422(r, "exit_code", bound)
    r = c.post(f"/v1/jobs/{job_id}/checkpoints", headers=job, json={"uri": "x", "epoch": value})
    _assert_422(r, "epoch", bound)
    # the job is untouched, and the largest storable values still work
    assert c.get(f"/v1/jobs/{job_id}").json()["status"] == "submitted"
    assert c.get("/v1/runs", params={"offset": INT32_MAX}).json()["data"] == []
    r = c.post(
        f"/v1/jobs/{job_id}/finish",
        headers=job,
        json={"status": "failed", "error_kind": "code", "exit_code": -(2**31)},
    )
    assert r.status_code == 200, r.text


def test_nul_characters_anywhere(any_client: TestClient) -> None:
    c = any_client
    run_id, job_id, token = _run_and_job(c)
    job = {"Authorization": f"Bearer {token}"}
    for path in ("/v1/runs/%00", f"/v1/runs/{run_id}%00/jobs", "/v1/jobs/%00"):
        _assert_422(c.get(path), "path", "NUL")
    _assert_422(c.get("/v1/runs", params={"status": "\x00"}), "query", "NUL")
    for overrides, field in (
        ({"name": "a\x00b"}, "name"),
        ({"advisor": "bedrock:\x00"}, "advisor"),
        (
            {"dataset": {"name": "npz", "uri": "/x\x00", "input_shape": [1, 2, 2]}},
            "dataset.uri",
        ),
        ({"dataset": {"name": "cifar10", "data_dir": "/\x00"}}, "dataset.data_dir"),
    ):
        _assert_422(c.post("/v1/runs", json=run_body(**overrides)), field, "NUL")
    layers = {"bad\x00name": {"mean": 1.0, "max": 1.0, "min": 1.0}}
    r = c.post(
        f"/v1/jobs/{job_id}/summaries",
        headers=job,
        json={"summaries": [summary(0, grad_layers=layers)]},
    )
    _assert_422(r, "grad_layers", "NUL")
    r = c.post(f"/v1/jobs/{job_id}/checkpoints", headers=job, json={"uri": "s3://\x00", "epoch": 1})
    _assert_422(r, "uri", "NUL")
    for field in ("message", "traceback"):
        body = {"status": "failed", "error_kind": "code", field: "boom\x00"}
        _assert_422(c.post(f"/v1/jobs/{job_id}/finish", headers=job, json=body), field, "NUL")
    paused = c.app.state.gradpilot.sessions  # type: ignore[attr-defined]
    with paused() as s:
        run = s.get(Run, run_id)
        assert run is not None
        run.status, run.pending_approval = "awaiting_approval", {"action": "tune", "rationale": ""}
        s.commit()
    r = c.post(f"/v1/runs/{run_id}/reject", json={"feedback": "no\x00"})
    _assert_422(r, "feedback", "NUL")
    assert c.get("/v1/runs").json()["count"] == 1


def test_a_mathtext_name_keeps_its_figure_and_report(client: TestClient) -> None:
    state = client.app.state.gradpilot  # type: ignore[attr-defined]
    run_id = finish_run(state.sessions, state.artifacts, client).run_id
    with state.sessions() as s:
        run = s.get(Run, run_id)
        assert run is not None
        run.name = "$\\frac{1}{$"
        s.commit()
    r = client.get(f"/v1/runs/{run_id}/figure.png")
    assert r.status_code == 200, r.text
    assert Image.open(io.BytesIO(r.content)).size[0] > 500
    with state.sessions() as s:
        run = s.get(Run, run_id)
        assert run is not None
        report = build_report(s, run, state.artifacts)
    assert "could not be stored" not in report and "figure.png" in report


def test_a_body_over_the_limit_is_refused_before_parsing_and_auth(client: TestClient) -> None:
    limit = client.app.state.gradpilot.settings.max_body_bytes  # type: ignore[attr-defined]
    big = b'{"name": "' + b"x" * limit + b'"}'
    # no token at all: the size is refused first, and the body is never parsed
    r = client.post(
        "/v1/runs", content=big, headers={"Authorization": "", "Content-Type": "application/json"}
    )
    assert r.status_code == 413, r.text
    assert str(limit) in r.json()["detail"] and "GRADPILOT_MAX_BODY_BYTES" in r.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
        yield b'{"summaries": ['
        for _ in range(limit // 1000 + 1):
            yield b" " * 1000
        yield b"]}"

    r = client.post("/v1/runs", content=chunks(), headers={"Authorization": ""})
    assert r.status_code == 413, r.text
    _, job_id, token = _run_and_job(client)  # the worker route reads its body itself
    r = client.post(
        f"/v1/jobs/{job_id}/summaries",
        content=chunks(),
        headers={"Authorization": f"Bearer {token}"},
    )
    assert r.status_code == 413, r.text
    assert client.post("/v1/runs", json=run_body()).status_code == 201  # small bodies still pass


def test_the_limit_is_a_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from service.api.app import build_state
    from service.app import create_app
    from service.db.migrate import upgrade
    from service.settings import load_settings

    monkeypatch.setenv("GRADPILOT_MAX_BODY_BYTES", "2048")
    settings = load_settings(home=tmp_path, api_tokens=[USER_TOKEN])
    settings.ensure_home()
    upgrade(settings.resolved_database_url)
    with TestClient(create_app(settings, state=build_state(settings))) as c:
        r = c.post("/v1/runs", content=b"{" + b" " * 2048 + b"}")
        assert r.status_code == 413 and "2048 bytes" in r.json()["detail"]


def test_summaries_are_bounded(client: TestClient) -> None:
    _, job_id, token = _run_and_job(client)
    job = {"Authorization": f"Bearer {token}"}
    norm = {"mean": 1.0, "max": 1.0, "min": 1.0}
    many = {f"l{i}.weight": norm for i in range(MAX_TENSORS + 1)}
    r = client.post(
        f"/v1/jobs/{job_id}/summaries",
        headers=job,
        json={"summaries": [summary(0, grad_layers=many)]},
    )
    _assert_422(r, "grad_layers", str(MAX_TENSORS))
    weights = {f"l{i}.weight": 1.0 for i in range(MAX_TENSORS + 1)}
    r = client.post(
        f"/v1/jobs/{job_id}/summaries",
        headers=job,
        json={"summaries": [summary(0, weight_norms=weights)]},
    )
    _assert_422(r, "weight_norms", str(MAX_TENSORS))
    long = {"x" * (MAX_TENSOR_NAME + 1): norm}
    r = client.post(
        f"/v1/jobs/{job_id}/summaries",
        headers=job,
        json={"summaries": [summary(0, grad_layers=long)]},
    )
    _assert_422(r, "grad_layers", str(MAX_TENSOR_NAME))
    ok = {f"l{i}.weight": norm for i in range(MAX_TENSORS)}
    r = client.post(
        f"/v1/jobs/{job_id}/summaries",
        headers=job,
        json={"summaries": [summary(0, grad_layers=ok)]},
    )
    assert r.status_code == 200, r.text


def _npz(path: Path, **arrays: np.ndarray) -> str:
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return str(path)


def test_creation_refuses_what_cannot_be_a_run(client: TestClient, tmp_path: Path) -> None:
    npz = {"name": "npz", "input_shape": [1, 2, 2], "num_classes": 2}
    not_zip = tmp_path / "notes.npz"
    not_zip.write_text("hello")
    no_labels = _npz(tmp_path / "x.npz", x_train=np.zeros((4, 1, 2, 2)))
    for overrides, expect in (
        ({"model_source": "x = 1\n"}, "defines neither build_model"),
        ({"model_source": "def build(input_shape, num_classes):\n    pass\n"}, "neither"),
        ({"advisor": "foo:bar"}, "unknown advisor 'foo:bar'"),
        ({"dataset": {**npz, "uri": str(tmp_path / "missing.npz")}}, "cannot be read"),
        ({"dataset": {**npz, "uri": str(not_zip)}}, "cannot be read as an .npz"),
        ({"dataset": {**npz, "uri": no_labels}}, "lacks y_train"),
    ):
        r = client.post("/v1/runs", json=run_body(**overrides))
        assert r.status_code == 422, (overrides, r.text)
        assert expect in r.json()["detail"], r.json()
    assert client.get("/v1/runs").json()["count"] == 0  # nothing stored, no job spent
    good = _npz(tmp_path / "ok.npz", x_train=np.zeros((4, 1, 2, 2)), y_train=np.zeros(4))
    for overrides in (
        {"dataset": {**npz, "uri": good}},
        {"dataset": {**npz, "uri": "file://" + good}},
        {"model_source": "from torch import nn\n\n\nclass CNN(nn.Module):\n    pass\n"},
        {"advisor": "bedrock:us.anthropic.claude-sonnet-4-5-20250929-v1:0"},
    ):
        r = client.post("/v1/runs", json=run_body(**overrides))
        assert r.status_code == 201, (overrides, r.text)


def test_bedrock_aliases_match_the_advisors() -> None:
    from service.advisors.llm_models import BEDROCK_PROVIDERS as ADVISORS_BEDROCK

    assert BEDROCK_PROVIDERS == ADVISORS_BEDROCK


def test_timestamps_carry_their_zone(any_client: TestClient) -> None:
    run_id, job_id, _ = _run_and_job(any_client)
    for value in (
        any_client.get(f"/v1/runs/{run_id}").json()["created_at"],
        any_client.get("/v1/runs").json()["data"][0]["updated_at"],
        any_client.get(f"/v1/jobs/{job_id}").json()["created_at"],
        any_client.get(f"/v1/runs/{run_id}/architectures").json()[0]["created_at"],
    ):
        assert datetime.fromisoformat(value).utcoffset() is not None, value


def test_head_of_health_probes(client: TestClient) -> None:
    for path in ("/healthz", "/readyz"):
        r = client.head(path, headers={"Authorization": ""})
        assert r.status_code == 200, path


def test_validation_errors_are_documented_as_sent(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    schemas = doc["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    body = schemas["ValidationErrorBody"]
    assert body["properties"]["detail"]["type"] == "string"
    sent = client.post("/v1/runs", json={}).json()
    assert set(sent) == set(body["properties"]) and set(sent["errors"][0]) == {"field", "message"}
    ops = doc["paths"]
    expected = {
        ("/v1/runs", "post"): {"400", "401", "403", "413", "422"},
        ("/v1/runs/{run_id}", "get"): {"401", "403", "404", "422"},
        ("/v1/runs/{run_id}/cancel", "post"): {"401", "403", "404", "409", "413"},
        ("/v1/jobs/{job_id}/finish", "post"): {"400", "401", "403", "404", "409", "413", "422"},
        ("/v1/jobs/{job_id}/summaries", "post"): {"400", "401", "403", "404", "413", "422"},
    }
    for (path, method), codes in expected.items():
        documented = set(ops[path][method]["responses"])
        assert codes <= documented, (path, method, codes - documented)
    ref = ops["/v1/runs"]["post"]["responses"]["422"]["content"]["application/json"]["schema"]
    assert ref["$ref"].endswith("/ValidationErrorBody")
