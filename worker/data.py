"""Data sets as in-memory tensors, seeded splits, and a batch iterator that can resume mid-epoch.

Every data set is small enough to hold in memory (CIFAR-10's training set is 150 MB as uint8),
so batches are gathered by index from one tensor on the training device instead of through a
``DataLoader``: no worker processes, no per-sample Python, and augmentation (random crop with
4-pixel padding and horizontal flip, per sample) runs batch-wise on the device.

Splits: the test split is fixed per data set (not per job) and is only scored at the end of a
job for the report; decisions use the validation split, carved from the training set with the
job's seed. The order of an epoch's batches is a function of (seed, epoch) through
``DistributedSampler``, and augmentation of (seed, epoch, step, rank), so a job resumed in the
middle of an epoch sees exactly the batches it would have seen.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httpx
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DistributedSampler

from service.schemas.datasets import DatasetSpec
from worker.errors import DataError, InvalidDataError

#: Seed of the fixed test split of data sets that ship without one (digits, synthetic).
TEST_SPLIT_SEED = 20_250_101
#: Seed of the synthetic data set itself: the same data for every job.
SYNTHETIC_SEED = 7
CIFAR_STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
#: Data sets up to this size are moved to the GPU once; larger ones are copied per batch.
DEVICE_RESIDENT_BYTES = 4 << 30


@dataclass
class Split:
    """Samples (N, C, H, W), uint8 or float32, and int64 labels."""

    x: Tensor
    y: Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, index: Tensor) -> Split:
        return Split(self.x[index], self.y[index])


@dataclass
class Dataset:
    """Training, validation and (optional) test splits with how to normalise them."""

    name: str
    input_shape: tuple[int, int, int]
    num_classes: int
    train: Split
    val: Split
    test: Split | None
    mean: tuple[float, ...]
    std: tuple[float, ...]
    #: Multiplier turning stored values into [0, 1] before normalisation (1/255 for uint8).
    scale: float
    augment: bool


# ----------------------------------------------------------------------------- sources


def _seeded_permutation(n: int, seed: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=g)


def _split_off(pool: Split, fraction: float, seed: int) -> tuple[Split, Split]:
    """(rest, held-out) with ``fraction`` of the pool held out, chosen by ``seed``."""
    n = len(pool)
    held = max(1, int(round(n * fraction)))
    if held >= n:
        raise InvalidDataError(f"{n} samples are too few to hold out {fraction:.0%} of them")
    perm = _seeded_permutation(n, seed)
    return pool.subset(perm[held:].sort().values), pool.subset(perm[:held].sort().values)


def _digits() -> tuple[Split, Split]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy(np.asarray(bunch.images, dtype=np.float32)) / 16.0
    # 8x8 grey → 3x32x32, as the built-in shape promises.
    x = F.interpolate(images.unsqueeze(1), size=(32, 32), mode="bilinear", align_corners=False)
    x = x.clamp_(0, 1).expand(-1, 3, -1, -1).contiguous()
    y = torch.from_numpy(np.asarray(bunch.target, dtype=np.int64))
    return _split_off(Split(x, y), 0.2, TEST_SPLIT_SEED)


def _synthetic(samples: int) -> tuple[Split, Split]:
    """Ten classes, each a smooth random pattern plus noise: learnable in a few epochs."""
    g = torch.Generator().manual_seed(SYNTHETIC_SEED)
    prototypes = F.interpolate(
        torch.randn(10, 3, 4, 4, generator=g), size=(32, 32), mode="bilinear", align_corners=False
    )
    y = torch.randint(0, 10, (samples,), generator=g)
    noise = torch.randn(samples, 3, 32, 32, generator=g)
    x = prototypes[y] + noise
    return _split_off(Split(x, y), 1 / 6, TEST_SPLIT_SEED)


def _default_data_dir() -> Path:
    return Path(os.environ.get("GRADPILOT_DATA_DIR", Path.home() / ".gradpilot" / "data"))


def _cifar(name: str, data_dir: str | None) -> tuple[Split, Split]:
    from torchvision import datasets

    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    root = Path(data_dir) if data_dir else _default_data_dir()
    try:
        train = cls(root=str(root), train=True, download=False)
        test = cls(root=str(root), train=False, download=False)
    except (RuntimeError, OSError) as e:
        raise DataError(
            f"{name} is not readable under {root} ({e}); put torchvision's "
            f"{cls.base_folder} folder there or set the data set's data_dir"
        ) from e

    def split(ds: datasets.CIFAR10) -> Split:
        x = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()
        return Split(x, torch.as_tensor(ds.targets, dtype=torch.int64))

    return split(train), split(test)


def _read_npz(uri: str) -> bytes:
    try:
        if uri.startswith("s3://"):
            from service.artifacts import read_url

            return read_url(
                uri,
                endpoint_url=os.environ.get("GRADPILOT_AWS_ENDPOINT_URL"),
                region=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"),
            )
        if uri.startswith(("https://", "http://")):  # a URL the API signed for this job
            from worker.checkpoint import download

            with httpx.Client(timeout=httpx.Timeout(300.0, connect=10.0)) as http:
                return download(uri, http)
        path = Path(uri[len("file://") :] if uri.startswith("file://") else uri)
        return path.read_bytes()
    except Exception as e:  # any failure to read is the platform's, not the model's
        raise DataError(f"could not read the data set {uri}: {e}") from e


def _as_images(name: str, x: np.ndarray, shape: tuple[int, int, int]) -> Tensor:
    c, h, w = shape
    n = x.shape[0]
    if x.shape[1:] == (c, h, w):
        arr = x
    elif x.shape[1:] == (h, w, c):
        arr = x.transpose(0, 3, 1, 2)
    elif c == 1 and x.shape[1:] == (h, w):
        arr = x[:, None]
    elif x.ndim == 2 and x.shape[1] == c * h * w:
        arr = x.reshape(n, c, h, w)
    else:
        raise InvalidDataError(
            f"{name} has shape {x.shape}; expected (N, {c}, {h}, {w}), (N, {h}, {w}, {c}) "
            f"or (N, {c * h * w}) for input_shape {shape}"
        )
    if arr.dtype == np.uint8:
        return torch.from_numpy(np.ascontiguousarray(arr)).float().div_(255.0)
    if not np.issubdtype(arr.dtype, np.number):
        raise InvalidDataError(f"{name} has dtype {arr.dtype}; expected numbers")
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))


def _labels(name: str, y: np.ndarray, n: int, num_classes: int) -> Tensor:
    if y.ndim != 1 or y.shape[0] != n:
        raise InvalidDataError(f"{name} must be a 1-D array of {n} labels, has shape {y.shape}")
    integral = np.issubdtype(y.dtype, np.integer) or bool(np.all(np.equal(np.mod(y, 1), 0)))
    if not integral:
        raise InvalidDataError(f"{name} must hold integer class indices")
    labels = torch.from_numpy(y.astype(np.int64))
    if n and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise InvalidDataError(
            f"{name} has labels from {int(labels.min())} to {int(labels.max())}; "
            f"expected 0..{num_classes - 1}"
        )
    return labels


def _npz(spec: DatasetSpec) -> tuple[Split, Split | None]:
    assert spec.uri is not None
    shape, num_classes = spec.shape()
    raw = _read_npz(spec.uri)
    try:
        archive = np.load(io.BytesIO(raw), allow_pickle=False)
    except Exception as e:
        raise InvalidDataError(f"{spec.uri} is not a readable .npz file: {e}") from e
    with archive:
        missing = {"x_train", "y_train"} - set(archive.files)
        if missing:
            raise InvalidDataError(f"{spec.uri} lacks {', '.join(sorted(missing))}")
        x = _as_images("x_train", archive["x_train"], shape)
        train = Split(x, _labels("y_train", archive["y_train"], len(x), num_classes))
        test = None
        if "x_test" in archive.files and "y_test" in archive.files:
            xt = _as_images("x_test", archive["x_test"], shape)
            test = Split(xt, _labels("y_test", archive["y_test"], len(xt), num_classes))
    return train, test


def _channel_stats(x: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-6)
    return tuple(mean.tolist()), tuple(std.tolist())


def load_dataset(spec: DatasetSpec, seed: int) -> Dataset:
    """Build the data set of a job spec; the validation split is carved with ``seed``."""
    shape, num_classes = spec.shape()
    test: Split | None
    augment = False
    scale = 1.0
    if spec.name == "digits":
        pool, test = _digits()
    elif spec.name == "synthetic":
        pool, test = _synthetic(spec.synthetic_samples)
    elif spec.name in CIFAR_STATS:
        pool, test = _cifar(spec.name, spec.data_dir)
        augment, scale = True, 1 / 255
    elif spec.name == "npz":
        pool, test = _npz(spec)
    else:  # pragma: no cover - the schema admits no other name
        raise InvalidDataError(f"unknown data set {spec.name!r}")

    if spec.max_train_samples is not None and len(pool) > spec.max_train_samples:
        keep = _seeded_permutation(len(pool), seed + 1)[: spec.max_train_samples]
        pool = pool.subset(keep.sort().values)
    train, val = _split_off(pool, spec.validation_fraction, seed)

    mean: tuple[float, ...]
    std: tuple[float, ...]
    if spec.name in CIFAR_STATS:
        mean, std = CIFAR_STATS[spec.name]
    else:
        mean, std = _channel_stats(train.x)
    return Dataset(
        name=spec.name,
        input_shape=shape,
        num_classes=num_classes,
        train=train,
        val=val,
        test=test,
        mean=mean,
        std=std,
        scale=scale,
        augment=augment,
    )


# ----------------------------------------------------------------------------- batches


def random_crop_flip(x: Tensor, pad: int, generator: torch.Generator) -> Tensor:
    """Per-sample random crop after zero padding and random horizontal flip, batch-wise."""
    b, c, h, w = x.shape
    dev = x.device
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (b, 1), generator=generator, device=dev)
    dx = torch.randint(0, 2 * pad + 1, (b, 1), generator=generator, device=dev)
    rows = (dy + torch.arange(h, device=dev)).view(b, 1, h, 1)
    cols = (dx + torch.arange(w, device=dev)).view(b, 1, 1, w)
    batch = torch.arange(b, device=dev).view(b, 1, 1, 1)
    chans = torch.arange(c, device=dev).view(1, c, 1, 1)
    out = padded[batch, chans, rows, cols]
    flip = torch.rand(b, generator=generator, device=dev) < 0.5
    return torch.where(flip.view(b, 1, 1, 1), out.flip(3), out)


class Batches:
    """Mini-batches of one split on one device, for one rank of ``world`` ranks.

    Training batches are shuffled by ``DistributedSampler`` (seed + epoch), full-sized (the
    last partial batch is dropped, as a batch of one breaks batch norm), and optionally
    augmented. Evaluation batches cover each rank's share of the split exactly once.
    """

    def __init__(
        self,
        split: Split,
        dataset: Dataset,
        batch_size: int,
        device: torch.device,
        *,
        train: bool,
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        self.dataset = dataset
        self.batch_size = batch_size
        self.device = device
        self.train = train
        self.seed = seed
        self.rank = rank
        self.world = world
        self.epoch = 0
        nbytes = split.x.element_size() * split.x.nelement()
        resident = device.type != "cuda" or nbytes <= DEVICE_RESIDENT_BYTES
        self.x = split.x.to(device) if resident else split.x.pin_memory()
        self.y = split.y.to(device) if resident else split.y.pin_memory()
        self.n = len(split)
        opts: dict[str, Any] = {"device": device, "dtype": torch.float32}
        self.mean = torch.tensor(dataset.mean, **opts).view(1, -1, 1, 1)
        self.std = torch.tensor(dataset.std, **opts).view(1, -1, 1, 1)
        # DistributedSampler only needs the length: a range stands in for a torch Dataset.
        self.sampler: DistributedSampler[int] | None = (
            DistributedSampler(
                cast(Any, range(self.n)), num_replicas=world, rank=rank, shuffle=True, seed=seed
            )
            if train
            else None
        )
        self.generator = torch.Generator(device=device)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)

    def _indices(self) -> list[int]:
        if self.sampler is not None:
            return list(self.sampler)
        return list(range(self.rank, self.n, self.world))

    def __len__(self) -> int:
        if self.sampler is None:
            return -(-len(range(self.rank, self.n, self.world)) // self.batch_size)
        per_rank = len(self.sampler)
        return max(1, per_rank // self.batch_size) if per_rank else 0

    def samples(self) -> int:
        """Samples this rank sees in one pass."""
        if self.sampler is None:
            return len(range(self.rank, self.n, self.world))
        per_rank = len(self.sampler)
        return min(per_rank, len(self) * self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        return self.iterate(0)

    def iterate(self, start_step: int) -> Iterator[tuple[Tensor, Tensor]]:
        """The epoch's batches from ``start_step`` on (a resumed epoch skips the ones done)."""
        indices = self._indices()
        steps = len(self)
        bs = (
            self.batch_size
            if self.sampler is None or len(indices) >= self.batch_size
            else len(indices)
        )
        # The index lives with the data: on the GPU when the data set is resident there.
        order = torch.tensor(indices, dtype=torch.long).to(self.x.device)
        for step in range(start_step, steps):
            idx = order[step * bs : (step + 1) * bs]
            x = self.x.index_select(0, idx).to(self.device, non_blocking=True)
            y = self.y.index_select(0, idx).to(self.device, non_blocking=True)
            yield self._prepare(x, step), y

    def _prepare(self, x: Tensor, step: int) -> Tensor:
        if self.train and self.dataset.augment:
            # Seeded per (seed, epoch, step, rank): a resumed epoch augments identically.
            self.generator.manual_seed(
                hash((self.seed, self.epoch, step, self.rank)) & 0x7FFF_FFFF_FFFF_FFFF
            )
            x = random_crop_flip(x, 4, self.generator)
        x = x.to(torch.float32)
        if self.dataset.scale != 1.0:
            x = x * self.dataset.scale
        return (x - self.mean) / self.std
