"""Failure classification: whose fault an exception is decides the exit code and the retry.

- The model's own code raised (its frames are in the traceback, or it broke the model
  contract): ``code``, exit ``CODE_ERROR``; the agent repairs the code, a retry cannot help.
- Data, network, artifact store, out of memory, anything else in the worker's machinery:
  ``infrastructure``, exit ``INFRASTRUCTURE_ERROR``; a retry may help.
- A spec that cannot be fetched or used: exit ``BAD_SPEC``; a retry cannot help.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from types import TracebackType

from service.schemas import exit_codes
from service.schemas.statuses import ErrorKind

#: Source file names given to model modules start with this, so that their frames are found in
#: any traceback (see ``model_loading``).
MODEL_FILENAME_PREFIX = "<gradpilot-model "


class WorkerError(Exception):
    """Root of the errors the worker raises on purpose."""

    kind: ErrorKind = ErrorKind.INFRASTRUCTURE
    exit_code: int = exit_codes.INFRASTRUCTURE_ERROR


class ModelCodeError(WorkerError):
    """The model file broke the model contract (no ``build_model``/``CNN``, wrong output shape,
    a loss that is not a scalar, rejected by the static check)."""

    kind = ErrorKind.CODE
    exit_code = exit_codes.CODE_ERROR


class DataError(WorkerError):
    """The data set could not be read (missing files, unreachable store): retryable."""


class InvalidDataError(WorkerError):
    """The data set is readable but unusable (wrong shapes, labels out of range): not retryable."""

    exit_code = exit_codes.BAD_SPEC


class BadSpecError(WorkerError):
    """The job spec could not be fetched or does not make sense."""

    exit_code = exit_codes.BAD_SPEC


class ApiUnavailable(WorkerError):
    """The control plane could not be reached within the worker's patience."""


class Preempted(BaseException):
    """Raised inside the loop when SIGTERM arrived; not an ``Exception`` so that nothing catches
    it by accident on its way out."""


@dataclass(frozen=True)
class Failure:
    """How a job failed, ready for ``JobFinish`` (``kind`` is ``code`` or ``infrastructure``)."""

    kind: ErrorKind
    exit_code: int
    message: str
    traceback: str


def _frames(tb: TracebackType | None) -> list[str]:
    names = []
    while tb is not None:
        names.append(tb.tb_frame.f_code.co_filename)
        tb = tb.tb_next
    return names


def _is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    import torch

    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    # Some back ends raise a plain RuntimeError for allocation failures.
    text = str(exc)
    return isinstance(exc, RuntimeError) and (
        "out of memory" in text.lower() or "DefaultCPUAllocator: can't allocate" in text
    )


def raised_in_model_code(exc: BaseException) -> bool:
    """True when a frame of the model's module is anywhere in the exception's traceback chain."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if any(f.startswith(MODEL_FILENAME_PREFIX) for f in _frames(current.__traceback__)):
            return True
        current = current.__cause__ or current.__context__
    return False


def classify(exc: BaseException) -> Failure:
    """Decide whose fault ``exc`` is and what the job reports."""
    text = "".join(traceback.format_exception(exc))
    message = f"{type(exc).__name__}: {exc}"
    if _is_out_of_memory(exc):
        # Even when the model's forward allocated it: a smaller batch or a bigger GPU helps.
        return Failure(ErrorKind.INFRASTRUCTURE, exit_codes.INFRASTRUCTURE_ERROR, message, text)
    if isinstance(exc, WorkerError):
        return Failure(exc.kind, exc.exit_code, message, text)
    if raised_in_model_code(exc):
        return Failure(ErrorKind.CODE, exit_codes.CODE_ERROR, message, text)
    return Failure(ErrorKind.INFRASTRUCTURE, exit_codes.INFRASTRUCTURE_ERROR, message, text)
