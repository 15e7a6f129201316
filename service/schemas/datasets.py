"""Which data a run trains on, and the input shape and class count that follow from it."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.schemas.fields import Text

DatasetName = Literal["digits", "cifar10", "cifar100", "synthetic", "npz"]

#: input shape (C, H, W) and number of classes of each built-in dataset.
BUILTIN_SHAPES: dict[str, tuple[tuple[int, int, int], int]] = {
    "digits": ((3, 32, 32), 10),
    "cifar10": ((3, 32, 32), 10),
    "cifar100": ((3, 32, 32), 100),
    "synthetic": ((3, 32, 32), 10),
}


class DatasetSpec(BaseModel):
    """A data set: a built-in one by name, or a user's ``.npz`` by path or ``s3://`` URL."""

    model_config = ConfigDict(extra="forbid")

    name: DatasetName = Field(
        description="digits (offline, scikit-learn), cifar10, cifar100, synthetic (for tests) "
        "or npz (a file with x_train, y_train and optionally x_test, y_test)."
    )
    uri: Text | None = Field(
        None, max_length=2000, description="Path or s3:// URL of the .npz file (npz only)."
    )
    data_dir: Text | None = Field(
        None,
        max_length=2000,
        description="Folder holding torchvision's CIFAR files (cifar10/cifar100).",
    )
    input_shape: tuple[int, int, int] | None = Field(
        None, description="(channels, height, width) of one sample; required for npz."
    )
    num_classes: int | None = Field(None, ge=2, le=10000, description="Classes; required for npz.")
    validation_fraction: float = Field(
        0.2, gt=0.0, lt=0.5, description="Share of the training set held out for decisions."
    )
    max_train_samples: int | None = Field(
        None, ge=16, description="Use at most this many training samples (seeded subset)."
    )
    synthetic_samples: int = Field(
        1024, ge=64, le=200_000, description="Number of samples of the synthetic data set."
    )

    @model_validator(mode="after")
    def _check(self) -> DatasetSpec:
        if self.name == "npz":
            if not self.uri:
                raise ValueError("dataset 'npz' needs 'uri': a path or s3:// URL of the .npz file")
            if self.input_shape is None or self.num_classes is None:
                raise ValueError("dataset 'npz' needs 'input_shape' and 'num_classes'")
        elif self.uri:
            raise ValueError(f"'uri' is only for dataset 'npz', not {self.name!r}")
        if self.input_shape is not None and min(self.input_shape) < 1:
            raise ValueError("input_shape entries must be positive")
        return self

    def shape(self) -> tuple[tuple[int, int, int], int]:
        """Input shape (C, H, W) and number of classes."""
        if self.name == "npz":
            assert self.input_shape is not None and self.num_classes is not None
            return self.input_shape, self.num_classes
        return BUILTIN_SHAPES[self.name]
