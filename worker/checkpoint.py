"""Self-describing checkpoints in the artifact store.

A checkpoint carries everything needed to resume and to know what it is: the model's source
and its sha256, the hyperparameters, the data set and seed, the run-wide epoch, the states of
the model, optimizer, learning-rate schedule, gradient scaler and random generators, and the
job's epoch summaries so far (so that a worker resumed on another machine can re-send them; the
API ignores duplicates). One taken on SIGTERM in the middle of an epoch also carries the
position in the epoch and the epoch's partial metrics, and resuming it continues that epoch.

Keys sort by position: ``checkpoints/<job_id>/e<next epoch>-s<step>.pt``. Loading uses
``torch.load(weights_only=True)``: a checkpoint is data, never code to run.
"""

from __future__ import annotations

import io
import logging
import os
import random
import re
from dataclasses import dataclass
from typing import Any

import torch

from service.artifacts import ArtifactStore, open_store, read_url
from service.schemas import worker_env

log = logging.getLogger(__name__)

FORMAT = "gradpilot-checkpoint/1"
_KEY = re.compile(r"e(\d{6,})-s(\d{7,})\.pt$")


def open_job_store(url: str) -> ArtifactStore:
    """The artifact store at ``url``, reaching S3 (or moto) as the environment says."""
    return open_store(
        url,
        endpoint_url=os.environ.get(worker_env.AWS_ENDPOINT_URL),
        region=worker_env.aws_region(os.environ),
    )


def checkpoint_key(job_id: str, next_epoch: int, step: int) -> str:
    return f"checkpoints/{job_id}/e{next_epoch:06d}-s{step:07d}.pt"


def capture_rng() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    # Generator states are CPU byte tensors, whatever map_location the checkpoint was read with.
    torch.set_rng_state(state["torch"].cpu())
    python = state.get("python")
    if python is not None:
        random.setstate(_as_tuple(python))
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])


def _as_tuple(value: Any) -> Any:
    return tuple(_as_tuple(v) for v in value) if isinstance(value, list | tuple) else value


def dumps(payload: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def loads(data: bytes, map_location: torch.device | str = "cpu") -> dict[str, Any]:
    payload = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError("not a gradpilot checkpoint")
    return payload


@dataclass(frozen=True)
class Found:
    url: str
    payload: dict[str, Any]


def save(store: ArtifactStore, job_id: str, payload: dict[str, Any]) -> str:
    """Write a checkpoint; returns its URL."""
    payload = {**payload, "format": FORMAT}
    key = checkpoint_key(job_id, payload["next_epoch"], payload["step"])
    return store.put(key, dumps(payload))


def latest(
    store: ArtifactStore, job_id: str, map_location: torch.device | str = "cpu"
) -> Found | None:
    """This job's newest readable checkpoint; an unreadable one (a write cut short on a store
    without atomic writes, a format from elsewhere) is skipped for the one before it."""
    keys = [k for k in store.list(f"checkpoints/{job_id}/") if _KEY.search(k)]
    for key in sorted(keys, reverse=True):
        try:
            return Found(store.url(key), loads(store.get(key), map_location))
        except Exception as e:  # a damaged object must not stop the resume from older ones
            log.warning("skipping unreadable checkpoint %s: %s", store.url(key), e)
    return None


def load_url(url: str, map_location: torch.device | str = "cpu") -> dict[str, Any]:
    return loads(
        read_url(
            url,
            endpoint_url=os.environ.get(worker_env.AWS_ENDPOINT_URL),
            region=worker_env.aws_region(os.environ),
        ),
        map_location,
    )


def prune(store: ArtifactStore, job_id: str, keep: int = 2) -> None:
    """Delete all but this job's ``keep`` newest checkpoints (older ones are never resumed)."""
    keys = sorted(k for k in store.list(f"checkpoints/{job_id}/") if _KEY.search(k))
    for key in keys[:-keep] if keep else keys:
        try:
            store.delete(key)
        except Exception as e:  # pruning is housekeeping; a failure must not stop training
            log.warning("could not delete old checkpoint %s: %s", key, e)
