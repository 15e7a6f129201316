"""Schemathesis over every operation of the API, in-process (ASGI), on SQLite and Postgres,
with a user token and with a job token: every check on, a bounded number of examples (the
user's requests also get schemathesis' coverage phase: every boundary the schema states).

It must find no 5xx and no response that disagrees with the OpenAPI document. Generated ids
are random, so every other positive case is pointed at a run and a job that exist, to reach
past the 404s into the handlers.
"""

from __future__ import annotations

import os
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from schemathesis.config import SchemathesisConfig
from schemathesis.generation import GenerationMode

from service.api.app import build_state
from service.app import create_app
from service.db.migrate import upgrade
from service.db.models import Run
from service.settings import Settings
from tests.support.factories import USER_TOKEN, add_job, run_body, summary
from tests.support.postgres import scratch_database

pytestmark = [pytest.mark.slow]

#: generated examples per operation (fuzzing phase); the job token's fewer: it reaches only the
#: worker's operations, and a 403 for the rest says all there is to say
USER_EXAMPLES = int(os.environ.get("GRADPILOT_FUZZ_EXAMPLES", "5"))
JOB_EXAMPLES = max(1, USER_EXAMPLES // 2)


def _config(max_examples: int, *, coverage: bool) -> SchemathesisConfig:
    return SchemathesisConfig.from_dict(
        {
            "generation": {
                "mode": "all",
                "max-examples": max_examples,
                "deterministic": True,
                "allow-x00": True,
                "no-shrink": True,
            },
            "phases": {"coverage": {"enabled": coverage}},
            "checks": {
                # A request can fit the schema and still be refused by what it asks for: a
                # model the static check refuses, an advisor that does not exist (422).
                "positive_data_acceptance": {
                    "expected-statuses": ["2xx", "401", "403", "404", "409", "422"]
                },
            },
        }
    )


@dataclass
class Target:
    """An app with one run, paused for approval, and one job that has a token."""

    app: Any
    run_id: str
    job_id: str
    job_token: str


def _target(settings: Settings) -> Iterator[Target]:
    settings.ensure_home()
    upgrade(settings.resolved_database_url)
    state = build_state(settings)
    app = create_app(settings, state=state)
    with TestClient(app, headers={"Authorization": f"Bearer {USER_TOKEN}"}) as client:
        run_id = client.post("/v1/runs", json=run_body()).json()["id"]
        job_id, token = add_job(client, run_id, epochs=5)
        r = client.post(
            f"/v1/jobs/{job_id}/summaries",
            headers={"Authorization": f"Bearer {token}"},
            json={"summaries": [summary(0), summary(1)]},
        )
        assert r.status_code == 200, r.text
    with state.sessions() as s:
        run = s.get(Run, run_id)
        assert run is not None
        run.status = "awaiting_approval"
        run.pending_approval = {"action": "tune", "rationale": "lower the learning rate"}
        s.commit()
    yield Target(app, run_id, job_id, token)
    state.engine.dispose()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def target(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Target]:
    home = Path(tmp_path_factory.mktemp("fuzz-home"))
    if request.param == "sqlite":
        yield from _target(Settings(home=home, api_tokens=[USER_TOKEN]))
        return
    admin = request.getfixturevalue("postgres_admin")
    with scratch_database("gradpilot_fuzz", admin=admin) as url:
        yield from _target(Settings(home=home, api_tokens=[USER_TOKEN], database_url=url))


def _schema(config: SchemathesisConfig) -> Any:
    """The OpenAPI document, read from an app that is never called: it is the same for every
    database (schemathesis' lazy ``from_fixture`` does not work with pytest 9)."""
    home = Path(tempfile.mkdtemp(prefix="gradpilot-fuzz-schema-"))
    app = create_app(Settings(home=home, api_tokens=[USER_TOKEN]))
    return schemathesis.openapi.from_asgi("/openapi.json", app, config=config)


user_schema = _schema(_config(USER_EXAMPLES, coverage=True))
job_schema = _schema(_config(JOB_EXAMPLES, coverage=False))


def _point_at_real_ids(case: Any, target: Target) -> None:
    """Half of the positive cases (chosen by a stable hash) go to the run and job that exist."""
    if case.meta is None or case.meta.generation.mode != GenerationMode.POSITIVE:
        return
    if zlib.crc32(repr((case.path_parameters, case.query, case.body)).encode()) % 2:
        return
    params = case.path_parameters or {}
    if "run_id" in params:
        params["run_id"] = target.run_id
    if "job_id" in params:
        params["job_id"] = target.job_id


@user_schema.parametrize()
def test_api_holds_with_a_user_token(case: Any, target: Target) -> None:
    _point_at_real_ids(case, target)
    case.call_and_validate(app=target.app, headers={"Authorization": f"Bearer {USER_TOKEN}"})


@job_schema.parametrize()
def test_api_holds_with_a_job_token(case: Any, target: Target) -> None:
    _point_at_real_ids(case, target)
    case.call_and_validate(app=target.app, headers={"Authorization": f"Bearer {target.job_token}"})
