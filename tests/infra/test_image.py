"""Dockerfile.worker and its entrypoint (no Docker engine here: the file is read, the entrypoint
script is run with sh), and the package data the image relies on. tests/compose/ builds and
runs the image for real."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from service.schemas.worker_env import resolve_array_environment

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile.worker"
ENTRYPOINT = ROOT / "infra" / "docker-entrypoint.sh"


def _instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in lines
        if line and not line.startswith("#")
    ]


def test_the_image_runs_the_worker_as_a_non_root_user() -> None:
    instructions = _instructions()
    final_stage = instructions[max(i for i, (op, _) in enumerate(instructions) if op == "FROM") :]
    users = [arg for op, arg in final_stage if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert ("ENTRYPOINT", '["gradpilot-entrypoint"]') in final_stage
    assert ("CMD", '["python", "-m", "worker"]') in final_stage


def test_everything_the_image_copies_exists() -> None:
    for op, arg in _instructions():
        if op != "COPY" or "--from=" in arg:
            continue
        sources = [word for word in arg.split() if not word.startswith("--")][:-1]
        for source in sources:
            assert (ROOT / source).exists(), f"Dockerfile.worker copies missing {source}"


def test_the_dockerfile_builds_without_a_registry_or_buildkit() -> None:
    text = DOCKERFILE.read_text()
    # A `# syntax=` line makes BuildKit fetch a frontend image from a registry.
    assert not re.search(r"^#\s*syntax\s*=", text, re.MULTILINE | re.IGNORECASE)
    instructions = _instructions()
    # The legacy builder (Debian's plain `docker build`) has no COPY --chmod / --link.
    for op, arg in instructions:
        if op in ("COPY", "ADD"):
            assert "--chmod" not in arg and "--link" not in arg, arg
        assert not (op == "RUN" and "--mount" in arg), arg
    assert ("ARG", "BASE_IMAGE=python:3.11-slim-bookworm") in instructions
    # Every stage starts from the base or from an earlier stage: no other image is named.
    stages: set[str] = set()
    for op, arg in instructions:
        if op == "FROM":
            source, _, name = arg.partition(" AS ")
            assert source == "${BASE_IMAGE}" or source in stages, arg
            stages.add(name.strip())


def test_torch_is_not_reinstalled_for_a_readme_or_code_change() -> None:
    instructions = _instructions()
    first_install = next(i for i, (op, arg) in enumerate(instructions) if "pip install ." in arg)
    copied = [arg for op, arg in instructions[:first_install] if op == "COPY"]
    assert copied == ["pyproject.toml ./"], copied
    # ... and the runtime stage copies that environment before the code's own small layer.
    runtime = instructions[max(i for i, (op, _) in enumerate(instructions) if op == "FROM") :]
    copies = [arg for op, arg in runtime if op == "COPY" and arg.startswith("--from=")]
    assert copies[0] == "--from=build /opt/gradpilot /opt/gradpilot", copies


def test_the_migrations_ship_inside_the_package(tmp_path: Path) -> None:
    """The bug of issue 14: `gradpilot serve` in the image looked for the Alembic scripts in
    site-packages. Build the wheel, install it elsewhere, migrate from there."""
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path / "wheels"), str(ROOT)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr[-2000:]
    wheel = next((tmp_path / "wheels").glob("gradpilot-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "service/db/migrations/env.py" in names
    assert "service/db/migrations/script.py.mako" in names
    versions = [n for n in names if n.startswith("service/db/migrations/versions/")]
    assert versions and all(n.endswith(".py") for n in versions), versions
    target = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(target)
    database = tmp_path / "db.sqlite"
    script = (
        "import service.db.migrate as m, sqlalchemy as sa; "
        f"assert m.__file__.startswith({str(target)!r}), m.__file__; "
        f"m.upgrade('sqlite:///{database}'); "
        f"print(sa.inspect(sa.create_engine('sqlite:///{database}')).get_table_names())"
    )
    migrated = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,  # not the checkout: only the installed copy can be found
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(target)},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert migrated.returncode == 0, migrated.stderr[-2000:]
    assert "runs" in migrated.stdout and "alembic_version" in migrated.stdout


def _entrypoint(
    args: list[str], env: dict[str, str], tmp_path: Path
) -> subprocess.CompletedProcess:
    # A stand-in `python` on PATH shows what the entrypoint runs by default.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "python"
    fake.write_text('#!/bin/sh\necho "python $*"\n')
    fake.chmod(0o755)
    full_env = {"PATH": f"{bin_dir}:/usr/bin:/bin", **env}
    return subprocess.run(
        ["sh", str(ENTRYPOINT), *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_without_arguments_the_entrypoint_runs_the_worker(tmp_path: Path) -> None:
    result = _entrypoint([], {}, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "python -m worker"


def test_with_arguments_the_entrypoint_runs_them(tmp_path: Path) -> None:
    result = _entrypoint(["sh", "-c", "echo serving $0", "api"], {}, tmp_path)
    assert result.stdout.strip() == "serving api"


def test_an_array_child_gets_its_own_values_like_the_executor_says(tmp_path: Path) -> None:
    array_env = {
        "GRADPILOT_ARRAY_VARS": "GRADPILOT_JOB_ID,GRADPILOT_JOB_TOKEN,ONLY_FIRST",
        "GRADPILOT_JOB_ID__0": "job-a",
        "GRADPILOT_JOB_ID__1": "job-b",
        "GRADPILOT_JOB_TOKEN__0": "token a",
        "GRADPILOT_JOB_TOKEN__1": "token 'b' $HOME",
        "ONLY_FIRST__0": "x",
        "ONLY_FIRST": "stale",
        "GRADPILOT_API_URL": "http://api:8765",
    }
    for index in (0, 1):
        env = {**array_env, "AWS_BATCH_JOB_ARRAY_INDEX": str(index)}
        result = _entrypoint(["env", "-0"], env, tmp_path)
        assert result.returncode == 0, result.stderr
        seen = dict(item.split("=", 1) for item in result.stdout.split("\0") if "=" in item)
        expected = resolve_array_environment(array_env, index)
        for key in ("GRADPILOT_JOB_ID", "GRADPILOT_JOB_TOKEN", "GRADPILOT_API_URL"):
            assert seen[key] == expected[key]
        assert ("ONLY_FIRST" in seen) == ("ONLY_FIRST" in expected)
    assert expected["GRADPILOT_JOB_TOKEN"] == "token 'b' $HOME"


@pytest.mark.parametrize(
    "env",
    [
        {"GRADPILOT_ARRAY_VARS": "A;touch /tmp/pwned", "AWS_BATCH_JOB_ARRAY_INDEX": "0"},
        {"GRADPILOT_ARRAY_VARS": "A", "AWS_BATCH_JOB_ARRAY_INDEX": "0;id"},
    ],
)
def test_the_entrypoint_refuses_names_it_would_evaluate(
    tmp_path: Path, env: dict[str, str]
) -> None:
    result = _entrypoint(["true"], env, tmp_path)
    assert result.returncode == 6  # service.schemas.exit_codes.BAD_SPEC: not retried
    assert "bad" in result.stderr


def test_the_entrypoint_is_executable() -> None:
    assert os.access(ENTRYPOINT, os.X_OK)
