"""User endpoints: create, list, show, cancel, approve/reject, and what a run produced."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.support.factories import run_body


def test_create_list_show(client: TestClient) -> None:
    r = client.post("/v1/runs", json=run_body())
    assert r.status_code == 201, r.text
    run = r.json()
    assert run["status"] == "pending"
    assert run["advisor"] == "rules"
    assert run["decisions"] == []
    listed = client.get("/v1/runs").json()
    assert listed["count"] == 1 and listed["data"][0]["id"] == run["id"]
    shown = client.get(f"/v1/runs/{run['id']}").json()
    assert shown["dataset_spec"]["name"] == "synthetic"
    assert shown["hyperparameters"]["learning_rate"] == 0.1
    archs = client.get(f"/v1/runs/{run['id']}/architectures").json()
    assert [a["version"] for a in archs] == [0] and archs[0]["author"] == "user"


def test_list_filters_by_status(client: TestClient) -> None:
    a = client.post("/v1/runs", json=run_body()).json()
    client.post("/v1/runs", json=run_body())
    client.post(f"/v1/runs/{a['id']}/cancel")
    assert client.get("/v1/runs", params={"status": "cancelled"}).json()["count"] == 1
    assert client.get("/v1/runs", params={"status": "pending"}).json()["count"] == 1


def test_cancel_then_cancel_again_conflicts(client: TestClient) -> None:
    run = client.post("/v1/runs", json=run_body()).json()
    assert client.post(f"/v1/runs/{run['id']}/cancel").json()["status"] == "cancelled"
    r = client.post(f"/v1/runs/{run['id']}/cancel")
    assert r.status_code == 409 and "already ended" in r.json()["detail"]


def test_approve_needs_a_paused_run(client: TestClient) -> None:
    run = client.post("/v1/runs", json=run_body()).json()
    r = client.post(f"/v1/runs/{run['id']}/approve")
    assert r.status_code == 409 and "not waiting for approval" in r.json()["detail"]
    r = client.post(f"/v1/runs/{run['id']}/reject", json={"feedback": "no"})
    assert r.status_code == 409


def test_approve_and_reject_record_the_answer(client: TestClient) -> None:
    sessions = client.app.state.gradpilot.sessions  # type: ignore[attr-defined]
    from service.db.models import Run

    for verb, body in (("approve", None), ("reject", {"feedback": "keep it small"})):
        run = client.post("/v1/runs", json=run_body()).json()
        with sessions() as s:
            row = s.get(Run, run["id"])
            row.status = "awaiting_approval"
            row.pending_approval = {
                "action": "redesign",
                "rationale": "why",
                "changes": {},
                "diff": "-a\n+b",
            }
            s.commit()
        shown = client.get(f"/v1/runs/{run['id']}").json()
        assert shown["pending_approval"]["diff"] == "-a\n+b"
        r = client.post(f"/v1/runs/{run['id']}/{verb}", json=body)
        assert r.status_code == 200, r.text
        with sessions() as s:
            answer = s.get(Run, run["id"]).approval_response
        assert answer["approved"] is (verb == "approve")
        if body:
            assert answer["feedback"] == "keep it small"
        # A second answer before the agent picked up the first is refused.
        assert client.post(f"/v1/runs/{run['id']}/approve").status_code == 409


def test_read_endpoints_of_a_new_run(client: TestClient) -> None:
    run = client.post("/v1/runs", json=run_body()).json()
    rid = run["id"]
    assert client.get(f"/v1/runs/{rid}/jobs").json() == {"data": [], "count": 0}
    assert client.get(f"/v1/runs/{rid}/metrics").json() == []
    assert client.get(f"/v1/runs/{rid}/decisions").json() == []
    diff = client.get(f"/v1/runs/{rid}/diff").json()
    assert diff["from_version"] == 0 and diff["to_version"] == 0 and diff["diff"] == ""
    r = client.get(f"/v1/runs/{rid}/report")
    assert r.status_code == 404 and "no report yet" in r.json()["detail"]


@pytest.mark.parametrize(
    ("path", "method"),
    [
        ("/v1/runs/nope", "get"),
        ("/v1/runs/nope/cancel", "post"),
        ("/v1/runs/nope/jobs", "get"),
        ("/v1/runs/nope/metrics", "get"),
        ("/v1/runs/nope/decisions", "get"),
        ("/v1/runs/nope/architectures", "get"),
        ("/v1/runs/nope/report", "get"),
        ("/v1/jobs/nope", "get"),
    ],
)
def test_unknown_ids_are_404(client: TestClient, path: str, method: str) -> None:
    r = getattr(client, method)(path)
    assert r.status_code == 404 and "nope" in r.json()["detail"]


def test_health_needs_no_token(client: TestClient) -> None:
    client.headers.pop("Authorization")
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}


def test_docs_render_offline(client: TestClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    assert "cdn" not in page.text.lower()
    assert "swagger-ui" in page.text.lower()
    # Every asset the page names is served by us.
    import re

    for asset in re.findall(r'(?:src|href)="(/[^"]+)"', page.text):
        assert client.get(asset).status_code == 200, asset
    schema = client.get("/openapi.json").json()
    lr = schema["components"]["schemas"]["Hyperparameters"]["properties"]["learning_rate"]
    assert lr["description"]


def test_runs_on_postgres(pg_client: TestClient) -> None:
    run = pg_client.post("/v1/runs", json=run_body()).json()
    assert pg_client.get(f"/v1/runs/{run['id']}").json()["id"] == run["id"]
    assert pg_client.get("/v1/runs").json()["count"] == 1
