"""One training trial with the worker's own pieces, for the Optuna side of the tuning benchmark.

The same data set loading and validation split (``worker.data``), model loading by the model
contract with the static check (``worker.model_loading``), optimizer and schedule
(``worker.schedule``) and training loop with the gradient monitor (``worker.training``) as a
gradpilot job uses: the two sides differ only in who picks the hyperparameters. What a trial
skips is the job's plumbing (the API, checkpoints, a process per job).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from service.schemas.datasets import DatasetSpec
from service.schemas.hyperparameters import Hyperparameters
from worker.data import Batches, Dataset, load_dataset
from worker.distributed import Context
from worker.model_loading import load_model
from worker.schedule import LrSchedule
from worker.training import EpochResult, Trainer


@functools.lru_cache(maxsize=4)
def dataset(spec_json: str, seed: int) -> Dataset:
    """The data set with the validation split a job seeded ``seed`` carves (cached)."""
    return load_dataset(DatasetSpec.model_validate_json(spec_json), seed)


@dataclass
class EpochRecord:
    epoch: int
    val_accuracy: float
    train_loss: float | None
    seconds: float


def train(
    source: str,
    spec: DatasetSpec,
    hp: Hyperparameters,
    epochs: int,
    seed: int,
    on_epoch: Callable[[EpochRecord], bool] | None = None,
) -> list[EpochRecord]:
    """Train ``epochs`` epochs from scratch; ``on_epoch`` returns True to stop (pruning)."""
    data = dataset(spec.model_dump_json(), seed)
    torch.manual_seed(seed)
    loaded = load_model(
        source, data.input_shape, data.num_classes, label_smoothing=hp.label_smoothing
    )
    device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    trainer = Trainer(
        loaded.model,
        loaded.loss_fn,
        hp,
        LrSchedule.from_hyperparameters(hp, epochs),
        Context(0, 1, 0, device),
        data.num_classes,
    )
    train_batches = Batches(data.train, data, hp.batch_size, device, train=True, seed=seed)
    val_batches = Batches(data.val, data, max(hp.batch_size, 256), device, train=False)
    records: list[EpochRecord] = []
    for epoch in range(epochs):
        started = time.perf_counter()
        train_batches.set_epoch(epoch)
        result = trainer.train_epoch(train_batches, epoch)
        assert isinstance(result, EpochResult)
        evaluation = trainer.evaluate(val_batches)
        record = EpochRecord(
            epoch, evaluation.accuracy, result.train_loss, time.perf_counter() - started
        )
        records.append(record)
        if on_epoch is not None and on_epoch(record):
            break
    return records


def describe(hp: Hyperparameters) -> dict[str, Any]:
    """The hyperparameters a search varies, for reports."""
    keys = (
        "optimizer",
        "learning_rate",
        "momentum",
        "nesterov",
        "weight_decay",
        "batch_size",
        "lr_schedule",
        "gradient_clip",
    )
    data = hp.model_dump()
    return {k: data[k] for k in keys}
