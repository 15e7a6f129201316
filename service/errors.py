"""One root exception for gradpilot; the API maps each subclass to an HTTP status.

Errors from drivers and SDKs are translated into these where they enter our code
(``raise ... from e``), so that callers never need to know about botocore or psycopg.
"""

from __future__ import annotations


class GradpilotError(Exception):
    """Root of every error gradpilot raises on purpose."""

    status_code = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(GradpilotError):
    """The caller sent something we cannot use; the message says what to fix."""

    status_code = 422


class NotFound(GradpilotError):
    status_code = 404


class Conflict(GradpilotError):
    """The request is valid but does not fit the current state (e.g. cancelling a finished run)."""

    status_code = 409


class Unauthorized(GradpilotError):
    status_code = 401


class Forbidden(GradpilotError):
    status_code = 403


class ConfigurationError(GradpilotError):
    """Settings that are unsafe or inconsistent; raised at start-up."""


class ExecutorError(GradpilotError):
    """The executor (local processes, AWS Batch) refused or failed an operation."""

    status_code = 502
    #: True for a failure that trying again later may not have (throttling, no connection).
    transient = False


class TransientExecutorError(ExecutorError):
    """The executor's service throttled or was unreachable after retries; try again later."""

    status_code = 503
    transient = True


class ArtifactError(GradpilotError):
    """The artifact store could not read or write an object."""

    status_code = 502
    #: True for a failure that trying again later may not have (throttling, no connection).
    transient = False


class TransientArtifactError(ArtifactError):
    """The artifact store throttled or was unreachable after retries; try again later."""

    status_code = 503
    transient = True


class AdvisorError(GradpilotError):
    """An advisor could not produce a decision (after its own retries)."""


class SandboxRejected(GradpilotError):
    """Model code failed the static check or the sandboxed trial run."""

    status_code = 422
