"""The Markdown report embeds the figure (stored beside it) and the architecture diffs."""

from __future__ import annotations

import io

from fastapi.testclient import TestClient
from PIL import Image

from service.db.models import Architecture, Run
from service.reports.report import architecture_section, build_report
from service.runs import sha256
from tests.support.factories import REDESIGN_RATIONALE, TINY_MODEL, finish_run, run_body


def test_report_embeds_the_figure_and_the_diffs(client: TestClient) -> None:
    state = client.app.state.gradpilot  # type: ignore[attr-defined]
    done = finish_run(state.sessions, state.artifacts, client)
    key = f"runs/{done.run_id}/figure.png"
    assert state.artifacts.exists(key)
    Image.open(io.BytesIO(state.artifacts.get(key))).load()

    report = client.get(f"/v1/runs/{done.run_id}/report")
    assert report.status_code == 200
    text = report.text
    assert "](figure.png)" in text  # relative: the figure lies next to report.md
    assert "## Architecture changes" in text
    assert "### v1 (from v0) — rules, 12,345 parameters" in text
    assert REDESIGN_RATIONALE in text
    block = text.split("```diff\n", 1)[1].split("\n```", 1)[0]
    assert block.startswith("--- v0/model.py\n+++ v1/model.py")
    assert (
        "+    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, 64), nn.BatchNorm1d(64)"
        in block
    )
    assert "-    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, 32)" in block
    assert "The network learned once its gradients reached the first layer." in text


def test_report_keeps_the_summary_placeholder_and_works_without_a_store(client: TestClient) -> None:
    run_id = client.post("/v1/runs", json=run_body()).json()["id"]
    with client.app.state.gradpilot.sessions() as session:  # type: ignore[attr-defined]
        run = session.get(Run, run_id)
        assert run is not None
        text = build_report(session, run)
    assert "<!-- summary -->" in text
    assert "## Figure" not in text
    assert "The architecture was not changed." in text


def test_diff_fences_outlast_backticks_in_the_source() -> None:
    tricky = TINY_MODEL + '\nDOC = """```python\nx\n```"""\n'
    archs = [
        Architecture(
            version=0,
            parent_version=None,
            source=TINY_MODEL,
            sha256=sha256(TINY_MODEL),
            rationale="as submitted",
            author="user",
        ),
        Architecture(
            version=1,
            parent_version=0,
            source=tricky,
            sha256=sha256(tricky),
            rationale="adds a docstring",
            author="rules",
        ),
    ]
    lines = architecture_section(archs)
    assert "````diff" in lines
    assert lines.count("````") == 1
