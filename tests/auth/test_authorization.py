"""Per-user authorization: a user sees and acts on their own runs only; another user's run is
a 404 (ids do not leak); an admin sees all; tokens are managed by admins and can be revoked."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from service.db.models import BUILTIN_ADMIN_ID, Run
from tests.support.factories import add_job, run_body
from tests.support.users import Users, bearer

# Every user route that names a run, with its method and body.
RUN_ROUTES = [
    ("GET", "", None),
    ("GET", "/jobs", None),
    ("GET", "/metrics", None),
    ("GET", "/decisions", None),
    ("GET", "/architectures", None),
    ("GET", "/diff", None),
    ("GET", "/report", None),
    ("GET", "/figure.png", None),
    ("POST", "/cancel", None),
    ("POST", "/approve", None),
    ("POST", "/reject", {"feedback": "no"}),
]


def _create(client: TestClient, headers: dict[str, str], name: str) -> str:
    r = client.post("/v1/runs", json=run_body(name=name), headers=headers)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


@pytest.mark.parametrize(("method", "suffix", "body"), RUN_ROUTES)
def test_another_users_run_is_not_found(
    client: TestClient, users: Users, method: str, suffix: str, body: dict[str, str] | None
) -> None:
    bobs = _create(client, users.bob, "bobs")
    r = client.request(method, f"/v1/runs/{bobs}{suffix}", headers=users.alice, json=body)
    assert r.status_code == 404, r.text
    assert r.json()["detail"] == f"no run with id {bobs!r}"  # the same as a run that is not there
    missing = client.request(method, f"/v1/runs/{'0' * 32}{suffix}", headers=users.alice, json=body)
    assert missing.status_code == 404
    # Nothing changed: bob's run is still his and still running.
    run = client.get(f"/v1/runs/{bobs}", headers=users.bob).json()
    assert run["status"] == "pending"


def test_another_users_jobs_are_not_found(client: TestClient, users: Users) -> None:
    bobs = _create(client, users.bob, "bobs")
    job_id, _ = add_job(client, bobs)
    assert client.get(f"/v1/jobs/{job_id}", headers=users.alice).status_code == 404
    assert client.get(f"/v1/jobs/{job_id}/spec", headers=users.alice).status_code == 404
    r = client.post(f"/v1/jobs/{job_id}/heartbeat", headers=users.alice, json={})
    assert r.status_code == 404
    assert client.get(f"/v1/jobs/{job_id}", headers=users.bob).status_code == 200
    assert client.get(f"/v1/jobs/{job_id}", headers=users.admin).status_code == 200


def test_the_list_shows_only_ones_own_runs_and_an_admin_sees_all(
    client: TestClient, users: Users
) -> None:
    alices = _create(client, users.alice, "alices")
    bobs = _create(client, users.bob, "bobs")
    builtin = _create(client, {}, "the built-in admin's")  # the fixture's configured token

    def ids(headers: dict[str, str]) -> tuple[set[str], int]:
        page = client.get("/v1/runs", headers=headers).json()
        return {r["id"] for r in page["data"]}, page["count"]

    assert ids(users.alice) == ({alices}, 1)
    assert ids(users.bob) == ({bobs}, 1)
    assert ids(users.admin) == ({alices, bobs, builtin}, 3)
    assert ids({}) == ({alices, bobs, builtin}, 3)  # configured tokens are the built-in admin
    # An admin acts on anyone's run.
    assert client.post(f"/v1/runs/{alices}/cancel", headers=users.admin).status_code == 200


def test_a_run_belongs_to_its_creator(client: TestClient, users: Users) -> None:
    alices = _create(client, users.alice, "alices")
    builtin = _create(client, {}, "mine")
    sessions = client.app.state.gradpilot.sessions  # type: ignore[attr-defined]
    with sessions() as session:
        owners = {r.id: r.owner_id for r in session.query(Run)}
        assert owners[builtin] == BUILTIN_ADMIN_ID
        assert owners[alices] not in (None, BUILTIN_ADMIN_ID)


def test_a_non_admin_gets_403_on_tokens(client: TestClient, users: Users) -> None:
    assert client.get("/v1/tokens", headers=users.alice).status_code == 403
    r = client.post("/v1/tokens", headers=users.alice, json={"user": "mallory", "role": "admin"})
    assert r.status_code == 403 and "admin" in r.json()["detail"]
    some_id = client.get("/v1/tokens", headers=users.admin).json()["data"][0]["id"]
    assert client.delete(f"/v1/tokens/{some_id}", headers=users.bob).status_code == 403
    # A job token is no user at all.
    run_id = _create(client, users.alice, "a")
    _, job_token = add_job(client, run_id)
    assert client.get("/v1/tokens", headers=bearer(job_token)).status_code == 403


def test_tokens_are_stored_hashed_listed_without_values_and_revocable(
    client: TestClient, users: Users
) -> None:
    created = client.post("/v1/tokens", json={"user": "carol", "name": "laptop"}).json()
    raw = created["token"]
    assert created["user"] == "carol" and created["role"] == "user"
    listed = client.get("/v1/tokens", headers=users.admin).json()
    assert raw not in str(listed)
    assert {t["user"] for t in listed["data"]} >= {"alice", "bob", "root", "carol"}
    assert client.get("/v1/runs", headers=bearer(raw)).status_code == 200
    revoked = client.delete(f"/v1/tokens/{created['id']}", headers=users.admin)
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    r = client.get("/v1/runs", headers=bearer(raw))
    assert r.status_code == 401 and "revoked" in r.json()["detail"]
    assert client.delete(f"/v1/tokens/{created['id']}", headers=users.admin).status_code == 409
    assert client.delete("/v1/tokens/nope", headers=users.admin).status_code == 404


def test_a_second_token_for_a_user_reaches_the_same_runs(client: TestClient, users: Users) -> None:
    alices = _create(client, users.alice, "alices")
    again = client.post("/v1/tokens", json={"user": "alice"}).json()
    assert client.get(f"/v1/runs/{alices}", headers=bearer(again["token"])).status_code == 200
    r = client.post("/v1/tokens", json={"user": "alice", "role": "admin"})
    assert r.status_code == 422 and "already exists with role 'user'" in r.json()["detail"]
