"""The dashboard in headless Chromium: sign in through the form, open a finished run, and see
its figure and its decisions. The screenshot is kept as test-artifacts/dashboard.png."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from fastapi.testclient import TestClient

from tests.support.chromium import CHROMIUM, chromium
from tests.support.factories import USER_TOKEN, finish_run
from tests.support.ports import free_port

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

pytestmark = pytest.mark.slow


@pytest.fixture
def need_chromium() -> None:
    if CHROMIUM.exists():
        return
    message = (
        f"{CHROMIUM} is missing: install it with scripts/ensure-chromium.sh (Debian's chromium)"
    )
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def server(client: TestClient) -> Iterator[str]:
    """The same app as ``client``, served by uvicorn on a free loopback port."""
    port = free_port()
    config = uvicorn.Config(
        client.app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"
    )
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        assert thread.is_alive(), "uvicorn stopped"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(10)


def test_finished_run_in_chromium(
    need_chromium: None, client: TestClient, server: str, tmp_path: Path
) -> None:
    state = client.app.state.gradpilot  # type: ignore[attr-defined]
    run_id = finish_run(state.sessions, state.artifacts, client).run_id
    with chromium(tmp_path / "profile") as page:
        page.send("Page.navigate", {"url": f"{server}/ui/runs/{run_id}"})
        # not signed in: the run page sends the browser to the form, which returns to the run
        page.wait_for("location.pathname === '/ui/login' && !!document.querySelector('#token')")
        assert page.evaluate("location.search") == f"?next=/ui/runs/{run_id}"
        page.evaluate(
            f"document.querySelector('#token').value = {json.dumps(USER_TOKEN)};"
            "document.querySelector('form[action=\"/ui/login\"]').requestSubmit(); true"
        )
        page.wait_for(
            f"location.pathname === '/ui/runs/{run_id}' && document.readyState === 'complete'"
        )
        figure = page.wait_for(
            "(() => { const i = document.querySelector('#run-figure');"
            " return i && i.complete && i.naturalWidth > 0"
            " ? {w: i.naturalWidth, h: i.naturalHeight} : null })()"
        )
        assert figure == {"w": 1300, "h": 850}
        seen = page.evaluate(
            "({status: document.querySelector('#run-status').textContent,"
            " actions: [...document.querySelectorAll('.decision .badge')].map(b => b.textContent),"
            " rationale: document.querySelector('.decision .rationale').textContent,"
            " issues: [...document.querySelectorAll('.decision .chip.issue')]"
            "   .map(c => c.textContent),"
            " diffAdds: document.querySelectorAll('#architectures .d-add').length,"
            " reportFigure: [...document.querySelectorAll('#report img')].map(i => i.naturalWidth),"
            " scripts: document.querySelectorAll('script').length,"
            " cookie: document.cookie})"
        )
        assert seen["status"] == "succeeded"
        assert seen["actions"] == ["redesign", "tune", "finish"]
        assert "the gradients vanish" in seen["rationale"]
        assert "vanishing_gradients" in seen["issues"]
        assert seen["diffAdds"] >= 1
        assert seen["reportFigure"] == [1300]  # the report's own figure loads too
        assert seen["scripts"] == 0  # the rationale's <script> stayed text
        assert seen["cookie"] == ""  # HttpOnly: page scripts cannot read the token
        page.screenshot(ARTIFACTS / "dashboard.png")

        # signing out ends the session
        page.evaluate("document.querySelector('form.logout').requestSubmit(); true")
        page.wait_for("location.pathname === '/ui/login'")
        page.send("Page.navigate", {"url": f"{server}/ui/runs"})
        page.wait_for("location.pathname === '/ui/login' && !!document.querySelector('#token')")
    assert (ARTIFACTS / "dashboard.png").stat().st_size > 10_000
