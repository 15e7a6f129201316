"""Picks the executor named by the ``executor`` setting.

Implementations are imported lazily so that the local executor never loads boto3 or the Docker
SDK, and the Batch executor never loads the subprocess machinery.
"""

from __future__ import annotations

from service.errors import ConfigurationError
from service.executors._protocol import Executor
from service.settings import Settings

EXECUTORS = ("local", "batch", "docker")


def make_executor(settings: Settings) -> Executor:
    """The executor for ``settings.executor``: ``local`` (subprocesses), ``batch`` (AWS) or
    ``docker`` (containers of the worker image on a Docker engine)."""
    if settings.executor == "local":
        from service.executors.local import LocalExecutor

        return LocalExecutor(settings)
    if settings.executor == "batch":
        from service.executors.batch import BatchExecutor

        return BatchExecutor(settings)
    if settings.executor == "docker":
        from service.executors.docker import DockerExecutor

        return DockerExecutor(settings)
    raise ConfigurationError(
        f"unknown executor {settings.executor!r}: set GRADPILOT_EXECUTOR to one of "
        + ", ".join(EXECUTORS)
    )
