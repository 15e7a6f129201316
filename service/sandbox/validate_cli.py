"""``gradpilot validate MODEL.py --dataset D``: the sandbox's check of one model file."""

from __future__ import annotations

from pathlib import Path

from service.errors import InvalidInput
from service.sandbox.report import ValidationReport
from service.sandbox.runner import SandboxLimits, validate_model
from service.schemas.datasets import DatasetSpec
from service.settings import Settings


def validate_file(path: Path, dataset: DatasetSpec, settings: Settings) -> ValidationReport:
    """Validate the model file at ``path`` for ``dataset``'s input shape and classes, under the
    sandbox limits of ``settings``. Raises ``InvalidInput`` when the file cannot be read."""
    try:
        source = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidInput(f"cannot read the model file {path}: {e}") from e
    input_shape, num_classes = dataset.shape()
    limits = SandboxLimits.from_settings(settings)
    return validate_model(
        source,
        input_shape,
        num_classes,
        timeout_s=limits.timeout_s,
        memory_mb=limits.memory_mb,
        max_parameters=limits.max_parameters,
        batch_size=limits.batch_size,
        max_step_seconds=limits.max_step_seconds,
    )
