"""Architecture history: every version of a run's model and the diff between any two."""

from __future__ import annotations

from fastapi.testclient import TestClient

from service.db.models import Architecture
from service.runs import sha256
from tests.support.factories import (
    REDESIGN_RATIONALE,
    REDESIGNED_MODEL,
    TINY_MODEL,
    finish_run,
    run_body,
)


def finished(client: TestClient) -> str:
    state = client.app.state.gradpilot  # type: ignore[attr-defined]
    return finish_run(state.sessions, state.artifacts, client).run_id


def test_architectures_lists_every_version_with_its_rationale(client: TestClient) -> None:
    run_id = finished(client)
    response = client.get(f"/v1/runs/{run_id}/architectures")
    assert response.status_code == 200
    versions = response.json()
    assert [v["version"] for v in versions] == [0, 1]
    v0, v1 = versions
    assert (v0["author"], v0["parent_version"], v0["source"]) == ("user", None, TINY_MODEL)
    assert v0["rationale"] == "The model as submitted."
    assert (v1["author"], v1["parent_version"], v1["parameters"]) == ("rules", 0, 12_345)
    assert v1["rationale"] == REDESIGN_RATIONALE
    assert v1["sha256"] == sha256(REDESIGNED_MODEL)


def test_diff_defaults_to_the_latest_against_the_one_before(client: TestClient) -> None:
    run_id = finished(client)
    data = client.get(f"/v1/runs/{run_id}/diff").json()
    assert (data["run_id"], data["from_version"], data["to_version"]) == (run_id, 0, 1)
    assert data["rationale"] == REDESIGN_RATIONALE
    lines = data["diff"].splitlines()
    assert lines[:2] == ["--- v0/model.py", "+++ v1/model.py"]
    assert lines[2].startswith("@@ ")
    added = [line for line in lines if line.startswith("+") and not line.startswith("+++")]
    removed = [line for line in lines if line.startswith("-") and not line.startswith("---")]
    assert added == ["+" + line for line in REDESIGNED_MODEL.splitlines() if "BatchNorm1d" in line]
    assert removed == ["-" + line for line in TINY_MODEL.splitlines() if "Linear(32" in line]


def test_diff_between_chosen_versions(client: TestClient) -> None:
    run_id = finished(client)
    with client.app.state.gradpilot.sessions() as session:  # type: ignore[attr-defined]
        v2 = REDESIGNED_MODEL + "\n# v2: same model, a comment\n"
        session.add(
            Architecture(
                run_id=run_id,
                version=2,
                parent_version=1,
                source=v2,
                sha256=sha256(v2),
                rationale="note the change",
                author="bedrock:model",
            )
        )
        session.commit()
    latest = client.get(f"/v1/runs/{run_id}/diff").json()
    assert (latest["from_version"], latest["to_version"]) == (1, 2)
    assert latest["diff"].splitlines()[-1] == "+# v2: same model, a comment"
    first_to_last = client.get(f"/v1/runs/{run_id}/diff", params={"a": 0, "b": 2}).json()
    assert "+# v2: same model, a comment" in first_to_last["diff"]
    assert "nn.BatchNorm1d(64)" in first_to_last["diff"]
    backwards = client.get(f"/v1/runs/{run_id}/diff", params={"a": 1, "b": 0}).json()
    assert backwards["diff"].splitlines()[:2] == ["--- v1/model.py", "+++ v0/model.py"]
    assert backwards["rationale"] == "The model as submitted."
    same = client.get(f"/v1/runs/{run_id}/diff", params={"a": 1, "b": 1}).json()
    assert same["diff"] == ""


def test_a_new_run_has_one_version_and_an_empty_diff(client: TestClient) -> None:
    run_id = client.post("/v1/runs", json=run_body()).json()["id"]
    assert [v["version"] for v in client.get(f"/v1/runs/{run_id}/architectures").json()] == [0]
    data = client.get(f"/v1/runs/{run_id}/diff").json()
    assert (data["from_version"], data["to_version"], data["diff"]) == (0, 0, "")


def test_diff_errors_say_what_is_wrong(client: TestClient) -> None:
    run_id = finished(client)
    missing = client.get(f"/v1/runs/{run_id}/diff", params={"a": 0, "b": 7})
    assert missing.status_code == 404
    assert "has no architecture version 7" in missing.json()["detail"]
    negative = client.get(f"/v1/runs/{run_id}/diff", params={"a": -1})
    assert negative.status_code == 422
    assert client.get("/v1/runs/nope/diff").status_code == 404
    assert client.get("/v1/runs/nope/architectures").status_code == 404
    assert client.get(f"/v1/runs/{run_id}/diff", headers={"Authorization": ""}).status_code == 401
