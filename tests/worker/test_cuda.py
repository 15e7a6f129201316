"""The CUDA paths (run where a GPU is present; skipped elsewhere): the monitor's total equals
clip_grad_norm_'s and needs no host sync; training with bf16 autocast, torch.compile and
on-device augmentation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from service.schemas.datasets import DatasetSpec
from service.schemas.hyperparameters import Hyperparameters
from tests.support.factories import TINY_CNN
from worker.data import Batches, load_dataset
from worker.distributed import Context
from worker.model_loading import load_model
from worker.monitor import FOLD_EVERY, GradientMonitor
from worker.schedule import LrSchedule
from worker.training import EpochResult, Trainer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
CUDA = torch.device("cuda", 0)


def test_monitor_total_and_no_host_sync_on_cuda() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Linear(64, 64) for _ in range(20)]).to(CUDA)
    model(torch.randn(32, 64, device=CUDA)).square().mean().backward()
    monitor = GradientMonitor(model.named_parameters())
    monitor.observe()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(FOLD_EVERY):  # steps and a fold
            total = monitor.observe()
            monitor.clip_(total, 1e9)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    reference = nn.utils.clip_grad_norm_(model.parameters(), float("inf"))
    assert torch.equal(total, reference)
    epoch = monitor.read_epoch()
    assert epoch.steps == FOLD_EVERY + 1 and epoch.nonfinite_steps == 0


@pytest.mark.parametrize("compile_model", [False, True])
def test_trainer_with_amp_compile_and_augmentation(compile_model: bool) -> None:
    dataset = load_dataset(DatasetSpec(name="synthetic", synthetic_samples=600), 0)
    dataset.augment = True
    hp = Hyperparameters(
        optimizer="adamw",
        learning_rate=3e-3,
        batch_size=64,
        amp=True,
        compile=compile_model,
        gradient_clip=1.0,
        lr_schedule="cosine",
    )
    torch.manual_seed(0)
    loaded = load_model(TINY_CNN, (3, 32, 32), 10)
    trainer = Trainer(
        loaded.model,
        loaded.loss_fn,
        hp,
        LrSchedule.from_hyperparameters(hp, 3),
        Context(0, 1, 0, CUDA),
        10,
    )
    assert trainer.amp_dtype is torch.bfloat16 and trainer.scaler is None
    train = Batches(dataset.train, dataset, 64, CUDA, train=True, seed=0)
    val = Batches(dataset.val, dataset, 256, CUDA, train=False)
    assert train.x.is_cuda  # small data sets live on the GPU
    results = []
    for epoch in range(3):
        train.set_epoch(epoch)
        result = trainer.train_epoch(train, epoch)
        assert isinstance(result, EpochResult)
        results.append(result)
    first, last = results[0].train_loss, results[-1].train_loss
    assert first is not None and last is not None and last < first
    assert trainer.evaluate(val).accuracy > 0.3
    assert results[-1].gradients.nonfinite_steps == 0
