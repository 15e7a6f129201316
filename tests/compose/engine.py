"""What the compose tier's tests share: the Docker engine and the images
``scripts/ensure-docker.sh images`` built (``make test-compose`` passes their names in the
environment)."""

from __future__ import annotations

import os
from typing import Any

import pytest


def engine() -> Any:
    """A Docker SDK client of a running engine, or fail saying how to get one."""
    import docker
    from docker.errors import DockerException

    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except DockerException as e:
        pytest.fail(
            f"no Docker engine answers ({e}): run `make test-compose` (scripts/ensure-docker.sh "
            "start installs and starts one)"
        )
    return client


def image(variable: str) -> str:
    """The image named by ``variable`` (GRADPILOT_IMAGE, ...), which must exist on the engine."""
    name = os.environ.get(variable)
    if not name:
        pytest.fail(
            f"{variable} is not set: run `make test-compose` (scripts/ensure-docker.sh images "
            "builds the images and prints their names)"
        )
    from docker.errors import ImageNotFound

    try:
        engine().images.get(name)
    except ImageNotFound:
        pytest.fail(f"{variable}={name} is not on the engine: run scripts/ensure-docker.sh images")
    return name
