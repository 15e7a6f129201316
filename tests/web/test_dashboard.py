"""The dashboard's pages, sign-in and escaping, through the in-process app."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import select

from service import auth
from service.app import create_app
from service.db.migrate import upgrade
from service.db.models import DashboardSession, Run
from service.settings import Settings
from service.web.auth import COOKIE
from tests.support.factories import (
    REDESIGN_RATIONALE,
    USER_TOKEN,
    add_job,
    finish_run,
    run_body,
    summary,
)


def finished(client: TestClient) -> str:
    state = client.app.state.gradpilot  # type: ignore[attr-defined]
    return finish_run(state.sessions, state.artifacts, client).run_id


# ----------------------------------------------------------------------------- sign-in


def test_pages_redirect_to_the_sign_in_form(browser: TestClient) -> None:
    response = browser.get("/ui/runs/abc")
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/login?next=/ui/runs/abc"
    form = browser.get("/ui/login?next=/ui/runs/abc")
    assert form.status_code == 200
    assert 'name="token" type="password"' in form.text
    assert 'method="post" action="/ui/login"' in form.text
    assert 'name="next" value="/ui/runs/abc"' in form.text


def test_sign_in_sets_a_session_cookie_not_the_token(browser: TestClient) -> None:
    response = browser.post("/ui/login", data={"token": USER_TOKEN, "next": "/ui/runs"})
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/runs"
    assert USER_TOKEN not in response.headers["location"]
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    assert USER_TOKEN not in cookie
    for attribute in ("HttpOnly", "SameSite=lax", "Path=/ui"):
        assert attribute.lower() in cookie.lower()
    assert "secure" not in cookie.lower()  # plain http on loopback
    assert browser.get("/ui/runs").status_code == 200
    # The server keeps only the session id's digest.
    session_id = browser.cookies[COOKIE]
    sessions = browser.app.state.gradpilot.sessions  # type: ignore[attr-defined]
    with sessions() as db:
        rows = db.execute(select(DashboardSession)).scalars().all()
    assert [r.id_sha256 for r in rows] == [auth.digest(session_id)]
    assert rows[0].token_sha256 == auth.digest(USER_TOKEN)


def test_the_cookie_is_secure_when_the_public_url_is_https(home: Path) -> None:
    settings = Settings(
        home=home, api_tokens=[USER_TOKEN], public_url="https://gradpilot.example.com"
    )
    settings.ensure_home()
    upgrade(settings.resolved_database_url)
    with TestClient(create_app(settings), follow_redirects=False) as browser:
        cookie = browser.post("/ui/login", data={"token": USER_TOKEN}).headers["set-cookie"]
    assert "secure" in cookie.lower().split("; ")


def test_sign_out_ends_the_session_on_the_server(signed_in: TestClient) -> None:
    copied = signed_in.cookies[COOKIE]
    signed_in.post("/ui/logout")
    signed_in.cookies.set(COOKIE, copied, path="/ui")
    assert signed_in.get("/ui/runs").status_code == 303


def test_an_expired_session_is_refused(signed_in: TestClient) -> None:
    sessions = signed_in.app.state.gradpilot.sessions  # type: ignore[attr-defined]
    with sessions() as db:
        row = db.execute(select(DashboardSession)).scalar_one()
        row.expires_at = datetime.now(UTC) - timedelta(seconds=1)
        db.commit()
    assert signed_in.get("/ui/runs").status_code == 303
    with sessions() as db:
        assert db.execute(select(DashboardSession)).first() is None


def test_revoking_the_token_ends_its_sessions(client: TestClient, browser: TestClient) -> None:
    created = client.post("/v1/tokens", json={"user": "alice"}).json()
    assert browser.post("/ui/login", data={"token": created["token"]}).status_code == 303
    assert browser.get("/ui/runs").status_code == 200
    assert client.delete(f"/v1/tokens/{created['id']}").status_code == 200
    assert browser.get("/ui/runs").status_code == 303


def test_a_user_sees_only_their_own_runs(client: TestClient, browser: TestClient) -> None:
    theirs = client.post("/v1/runs", json=run_body(name="admins-run")).json()["id"]
    alice = client.post("/v1/tokens", json={"user": "alice"}).json()["token"]
    mine = client.post(
        "/v1/runs", json=run_body(name="alices-run"), headers={"Authorization": f"Bearer {alice}"}
    ).json()["id"]
    browser.post("/ui/login", data={"token": alice})
    page = browser.get("/ui/runs").text
    assert "alices-run" in page and "admins-run" not in page
    assert browser.get(f"/ui/runs/{mine}").status_code == 200
    assert browser.get(f"/ui/runs/{theirs}").status_code == 404
    assert browser.get(f"/ui/runs/{theirs}/figure.png").status_code == 404


def test_wrong_and_job_tokens_cannot_sign_in(client: TestClient, browser: TestClient) -> None:
    wrong = browser.post("/ui/login", data={"token": "not-a-token-at-all"})
    assert wrong.status_code == 401
    assert "not a valid user token" in wrong.text
    assert "set-cookie" not in wrong.headers
    run_id = client.post("/v1/runs", json=run_body()).json()["id"]
    _, job_token = add_job(client, run_id)
    as_job = browser.post("/ui/login", data={"token": job_token})
    assert as_job.status_code == 401
    assert "Job tokens cannot sign in" in as_job.text
    browser.cookies.set(COOKIE, job_token, path="/ui")
    assert browser.get("/ui/runs").status_code == 303
    assert browser.get(f"/ui/runs/{run_id}/figure.png").status_code == 401


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/ui/runs/x", "/ui/runs/x"),
        ("https://evil.example/", "/ui/runs"),
        ("//evil.example/ui/", "/ui/runs"),
        ("/ui//evil.example", "/ui/runs"),
        ("/v1/runs", "/ui/runs"),
        ("", "/ui/runs"),
    ],
)
def test_sign_in_only_returns_to_dashboard_pages(
    browser: TestClient, target: str, expected: str
) -> None:
    response = browser.post("/ui/login", data={"token": USER_TOKEN, "next": target})
    assert response.headers["location"] == expected


def test_sign_out_clears_the_cookie(signed_in: TestClient) -> None:
    response = signed_in.post("/ui/logout")
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/login"
    assert f'{COOKIE}=""' in response.headers["set-cookie"]
    assert signed_in.get("/ui/runs").status_code == 303


def test_a_bearer_header_is_not_a_dashboard_session(browser: TestClient) -> None:
    response = browser.get("/ui/runs", headers={"Authorization": f"Bearer {USER_TOKEN}"})
    assert response.status_code == 303


# ----------------------------------------------------------------------------- pages


def test_runs_list(client: TestClient, signed_in: TestClient) -> None:
    assert "No runs yet" in signed_in.get("/ui/runs").text
    run_id = finished(client)
    page = signed_in.get("/ui/runs")
    assert page.status_code == 200
    assert f'href="/ui/runs/{run_id}"' in page.text
    assert "vanishing sigmoid" in page.text and "succeeded" in page.text
    assert 'http-equiv="refresh"' not in page.text  # nothing is active
    client.post("/v1/runs", json=run_body())
    assert 'http-equiv="refresh" content="3"' in signed_in.get("/ui/runs").text


def test_run_page_of_a_finished_run(client: TestClient, signed_in: TestClient) -> None:
    run_id = finished(client)
    page = signed_in.get(f"/ui/runs/{run_id}")
    assert page.status_code == 200
    html = page.text
    assert page.headers["cache-control"] == "no-store"
    assert "script-src" not in page.headers["content-security-policy"]  # default-src 'none'
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert 'http-equiv="refresh"' not in html
    assert 'id="run-status">succeeded<' in html
    assert f'src="/ui/runs/{run_id}/figure.png"' in html
    # decisions timeline: action, advisor, rationale, diagnosed issues, changes
    assert html.count('class="decision action-') == 3
    for action in ("redesign", "tune", "finish"):
        assert f'<span class="badge badge-{action}">{action}</span>' in html
    assert '<span class="chip issue">vanishing_gradients</span>' in html
    assert "first/last weight gradient ratio 1.0e-04" in html
    assert "<code>learning_rate</code></td><td><code>0.02</code></td><td>loss oscillates" in html
    # architecture versions with a coloured diff
    assert (
        '<span class="d-add">+    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, 64)'
        in html
    )
    assert (
        '<span class="d-del">-    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, 32)'
        in html
    )
    # the report, rendered, with its figure pointing at the dashboard's figure route
    assert re.search(r"<h1>gradpilot report — run <code>" + run_id, html)
    assert f'<img class="figure" src="/ui/runs/{run_id}/figure.png"' in html
    assert '<pre class="diff"><code><span class="d-meta">--- v0/model.py\n</span>' in html
    assert "<table>" in html  # the jobs table of the report


def test_everything_is_escaped(client: TestClient, signed_in: TestClient) -> None:
    run_id = finished(client)
    html = signed_in.get(f"/ui/runs/{run_id}").text
    assert "<script>" not in html
    assert "&lt;script&gt;alert(" in html
    assert REDESIGN_RATIONALE.split("<script>")[0] in html


def test_an_active_run_refreshes_and_shows_progress(
    client: TestClient, signed_in: TestClient
) -> None:
    run_id = client.post("/v1/runs", json=run_body()).json()["id"]
    job_id, token = add_job(client, run_id, epochs=4)
    client.post(
        f"/v1/jobs/{job_id}/summaries",
        json={"summaries": [summary(0), summary(1, train_loss=None)]},
        headers={"Authorization": f"Bearer {token}"},
    )
    with client.app.state.gradpilot.sessions() as s:  # type: ignore[attr-defined]
        run = s.get(Run, run_id)
        assert run is not None
        run.status = "running"
        s.commit()
    html = signed_in.get(f"/ui/runs/{run_id}").text
    assert '<meta http-equiv="refresh" content="3">' in html
    assert '<progress id="job-progress" max="4" value="2">' in html
    assert "epoch 2 of 4" in html
    assert "train loss non-finite" in html
    assert "The report is written when the run ends." in html
    assert "No decisions yet" in html


def test_figure_with_the_session_cookie(client: TestClient, signed_in: TestClient) -> None:
    run_id = finished(client)
    response = signed_in.get(f"/ui/runs/{run_id}/figure.png")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(response.content)).size == (1300, 850)


def test_unknown_run_page_is_404(signed_in: TestClient) -> None:
    response = signed_in.get("/ui/runs/nope")
    assert response.status_code == 404
    assert "no run with id" in response.text


def test_stylesheet_and_home(browser: TestClient) -> None:
    css = browser.get("/ui/static/style.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert browser.get("/ui/static/../routes.py").status_code == 404
    assert browser.get("/ui").headers["location"] == "/ui/runs"
