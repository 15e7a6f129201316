"""Data sets: shapes, seeded disjoint splits, npz layouts and errors, CIFAR from torchvision's
files, and batches that resume mid-epoch exactly."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from service.schemas.datasets import DatasetSpec
from worker.data import Batches, load_dataset, random_crop_flip
from worker.errors import DataError, InvalidDataError


def _rows(x: torch.Tensor) -> set[bytes]:
    return {r.numpy().tobytes() for r in x.reshape(len(x), -1)}


def test_digits_offline_resized_and_split() -> None:
    ds = load_dataset(DatasetSpec(name="digits"), seed=3)
    assert ds.input_shape == (3, 32, 32) and ds.num_classes == 10
    assert ds.train.x.shape[1:] == (3, 32, 32)
    assert ds.test is not None
    total = len(ds.train) + len(ds.val) + len(ds.test)
    assert total == 1797
    assert len(ds.val) == round(0.2 * (len(ds.train) + len(ds.val)))
    # Splits are disjoint (digits has a few exact duplicate images; compare indices instead).
    again = load_dataset(DatasetSpec(name="digits"), seed=3)
    assert torch.equal(again.val.x, ds.val.x)
    other = load_dataset(DatasetSpec(name="digits"), seed=4)
    assert not torch.equal(other.val.x, ds.val.x)
    # The test split does not depend on the job's seed.
    assert other.test is not None and torch.equal(other.test.x, ds.test.x)


def test_synthetic_is_deterministic_and_disjoint() -> None:
    spec = DatasetSpec(name="synthetic", synthetic_samples=300, validation_fraction=0.25)
    a, b = load_dataset(spec, 0), load_dataset(spec, 0)
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.val.y, b.val.y)
    assert a.test is not None
    assert not _rows(a.train.x) & _rows(a.val.x)
    assert not _rows(a.train.x) & _rows(a.test.x)


def test_max_train_samples_subsets_before_the_validation_split() -> None:
    ds = load_dataset(DatasetSpec(name="digits", max_train_samples=100), seed=0)
    assert len(ds.train) + len(ds.val) == 100


def _npz(path: Path, **arrays: np.ndarray) -> str:
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return str(path)


@pytest.mark.parametrize("layout", ["nchw", "nhwc", "flat"])
def test_npz_layouts(tmp_path: Path, layout: str) -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(50, 2, 4, 5), dtype=np.uint8)
    stored = {"nchw": x, "nhwc": x.transpose(0, 2, 3, 1), "flat": x.reshape(50, -1)}[layout]
    y = rng.integers(0, 3, size=50)
    uri = _npz(tmp_path / "d.npz", x_train=stored, y_train=y, x_test=stored[:10], y_test=y[:10])
    spec = DatasetSpec(name="npz", uri=uri, input_shape=(2, 4, 5), num_classes=3)
    ds = load_dataset(spec, 0)
    assert ds.test is not None and len(ds.test) == 10
    assert torch.allclose(ds.test.x, torch.from_numpy(x[:10]).float() / 255)


def test_npz_without_test_split(tmp_path: Path) -> None:
    uri = _npz(tmp_path / "d.npz", x_train=np.zeros((20, 1, 2, 2)), y_train=np.arange(20) % 2)
    ds = load_dataset(DatasetSpec(name="npz", uri=uri, input_shape=(1, 2, 2), num_classes=2), 0)
    assert ds.test is None


def test_npz_errors(tmp_path: Path) -> None:
    spec = DatasetSpec(
        name="npz", uri=str(tmp_path / "missing.npz"), input_shape=(1, 2, 2), num_classes=2
    )
    with pytest.raises(DataError, match="could not read"):
        load_dataset(spec, 0)
    uri = _npz(tmp_path / "bad.npz", x_train=np.zeros((20, 3, 3)), y_train=np.zeros(20))
    with pytest.raises(InvalidDataError, match="expected"):
        load_dataset(spec.model_copy(update={"uri": uri}), 0)
    uri = _npz(tmp_path / "labels.npz", x_train=np.zeros((20, 2, 2)), y_train=np.full(20, 5))
    with pytest.raises(InvalidDataError, match="labels from 5 to 5"):
        load_dataset(spec.model_copy(update={"uri": uri}), 0)


def test_npz_from_s3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    boto3 = pytest.importorskip("boto3")
    moto = pytest.importorskip("moto")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("GRADPILOT_AWS_ENDPOINT_URL", raising=False)
    buffer = io.BytesIO()
    np.savez(buffer, x_train=np.ones((20, 1, 2, 2), dtype=np.float32), y_train=np.arange(20) % 2)
    with moto.mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="data")
        s3.put_object(Bucket="data", Key="sets/d.npz", Body=buffer.getvalue())
        spec = DatasetSpec(
            name="npz", uri="s3://data/sets/d.npz", input_shape=(1, 2, 2), num_classes=2
        )
        ds = load_dataset(spec, 0)
    assert len(ds.train) + len(ds.val) == 20


def test_cifar10_from_torchvision_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from torchvision import datasets

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, _ in datasets.CIFAR10.train_list + datasets.CIFAR10.test_list:
        batch = {
            "data": rng.integers(0, 256, (20, 3072), dtype=np.uint8),
            "labels": list(rng.integers(0, 10, 20)),
        }
        with (folder / name).open("wb") as f:
            pickle.dump(batch, f)
    with (folder / "batches.meta").open("wb") as f:
        pickle.dump({"label_names": [str(i) for i in range(10)]}, f)
    # Hand-made files cannot match the real md5 sums.
    monkeypatch.setattr(
        datasets.CIFAR10, "train_list", [[n, None] for n, _ in datasets.CIFAR10.train_list]
    )
    monkeypatch.setattr(
        datasets.CIFAR10, "test_list", [[n, None] for n, _ in datasets.CIFAR10.test_list]
    )
    monkeypatch.setattr(datasets.CIFAR10, "meta", {**datasets.CIFAR10.meta, "md5": None})
    ds = load_dataset(DatasetSpec(name="cifar10", data_dir=str(tmp_path)), 0)
    assert ds.augment and ds.train.x.dtype == torch.uint8
    assert len(ds.train) + len(ds.val) == 100 and ds.test is not None and len(ds.test) == 20
    batches = Batches(ds.train, ds, 16, torch.device("cpu"), train=True, seed=1)
    x, y = next(iter(batches))
    assert x.shape == (16, 3, 32, 32) and x.dtype == torch.float32


def test_cifar_missing_files_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cifar-10-batches-py"):
        load_dataset(DatasetSpec(name="cifar10", data_dir=str(tmp_path)), 0)


def test_batches_resume_mid_epoch_exactly() -> None:
    ds = load_dataset(DatasetSpec(name="synthetic", synthetic_samples=240), 0)
    ds.augment = True  # exercise the seeded augmentation too
    a = Batches(ds.train, ds, 32, torch.device("cpu"), train=True, seed=5)
    b = Batches(ds.train, ds, 32, torch.device("cpu"), train=True, seed=5)
    a.set_epoch(2)
    b.set_epoch(2)
    full = list(a)
    resumed = list(b.iterate(3))
    assert len(full) == len(a) == len(ds.train) // 32
    for (xa, ya), (xb, yb) in zip(full[3:], resumed, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    b.set_epoch(3)
    assert not torch.equal(next(iter(b))[1], full[0][1])


def test_distributed_shards_cover_the_split_once() -> None:
    ds = load_dataset(DatasetSpec(name="synthetic", synthetic_samples=240), 0)
    seen = []
    for rank in range(2):
        for _, y in Batches(ds.val, ds, 7, torch.device("cpu"), train=False, rank=rank, world=2):
            seen.append(len(y))
    assert sum(seen) == len(ds.val)


def test_random_crop_flip_keeps_shape_and_content() -> None:
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).view(2, 1, 4, 4)
    g = torch.Generator().manual_seed(0)
    out = random_crop_flip(x, 1, g)
    assert out.shape == x.shape
    # Every output pixel is either padding (0) or a pixel of its own image.
    for i in range(2):
        assert set(out[i].flatten().tolist()) <= set(x[i].flatten().tolist()) | {0.0}
