"""Self-describing checkpoints in the artifact store.

A checkpoint carries everything needed to resume and to know what it is: the model's source
and its sha256, the hyperparameters, the data set and seed, the run-wide epoch, the states of
the model, optimizer, learning-rate schedule, gradient scaler and random generators, and the
job's epoch summaries so far (so that a worker resumed on another machine can re-send them; the
API ignores duplicates). One taken on SIGTERM in the middle of an epoch also carries the
position in the epoch and the epoch's partial metrics, and resuming it continues that epoch.

Keys sort by position: ``checkpoints/<job_id>/e<next epoch>-s<step>.pt``. Loading uses
``torch.load(weights_only=True)``: a checkpoint is data, never code to run.

Where the artifact store is S3, the worker holds no S3 permission: ``PresignedStore`` reaches
its own checkpoint folder, its resume checkpoint and its data set through URLs the API signs
for exactly those objects (``GET /v1/jobs/{id}/artifact-urls``). On a ``file://`` store the
local worker reads and writes the folder directly.
"""

from __future__ import annotations

import io
import logging
import os
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import torch

from service.artifacts import ArtifactStore, open_store, read_url
from service.artifacts.filesystem import file_url_to_path
from service.errors import ArtifactError, InvalidInput, NotFound
from service.schemas import worker_env
from service.schemas.artifacts import CHECKPOINT_NAME, ArtifactUrls, ObjectUrls
from service.schemas.jobs import JobSpec

log = logging.getLogger(__name__)

FORMAT = "gradpilot-checkpoint/1"
_KEY = CHECKPOINT_NAME


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
    keys = [k for k in store.list(f"checkpoints/{job_id}/") if _KEY.search(_name(k))]
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
    keys = sorted(k for k in store.list(f"checkpoints/{job_id}/") if _KEY.search(_name(k)))
    for key in keys[:-keep] if keep else keys:
        try:
            store.delete(key)
        except Exception as e:  # pruning is housekeeping; a failure must not stop training
            log.warning("could not delete old checkpoint %s: %s", key, e)


def _name(key: str) -> str:
    return key.rpartition("/")[2]


# ---------------------------------------------------------------------- job-scoped access

#: Asks the API for this job's URLs, with PUT URLs for the given checkpoint names.
UrlSource = Callable[[list[str]], ArtifactUrls]


def download(url: str, http: httpx.Client) -> bytes:
    """Read one object through a pre-signed (or ``file://``) URL."""
    if url.startswith("file://"):
        try:
            return file_url_to_path(url).read_bytes()
        except FileNotFoundError as e:
            raise NotFound(f"artifact not found: {url}") from e
    response = _send(http, "GET", url)
    if response.status_code == 404:
        raise NotFound(f"artifact not found: {_safe(url)}")
    return response.content


def upload(url: str, data: bytes, http: httpx.Client) -> None:
    """Write one object through a pre-signed (or ``file://``) URL; a file is replaced
    atomically."""
    if url.startswith("file://"):
        path = file_url_to_path(url)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return
    _send(http, "PUT", url, data)


def remove(url: str, http: httpx.Client) -> None:
    if url.startswith("file://"):
        file_url_to_path(url).unlink(missing_ok=True)
        return
    _send(http, "DELETE", url)


def _safe(url: str) -> str:
    """A pre-signed URL without its signature, for messages and logs."""
    return url.partition("?")[0]


def _send(
    http: httpx.Client, method: str, url: str, data: bytes | None = None, attempts: int = 4
) -> httpx.Response:
    """One request to the store, retrying only what may pass (network, 429, 5xx)."""
    for attempt in range(1, attempts + 1):
        try:
            response = http.request(method, url, content=data)
        except httpx.TransportError as e:
            problem = f"{type(e).__name__}: {e}"
        else:
            if response.status_code < 400 or response.status_code == 404:
                return response
            problem = f"HTTP {response.status_code}: {response.text[:300]}"
            if response.status_code != 429 and response.status_code < 500:
                break  # refused (an expired or forged signature): another try cannot help
        if attempt < attempts:
            time.sleep(random.uniform(0, 0.5 * 2**attempt))
    raise ArtifactError(f"{method} {_safe(url)} failed: {problem}")


class PresignedStore:
    """One job's checkpoint folder, reached only through URLs the API signs for it.

    It answers the ``ArtifactStore`` calls that checkpointing makes (``list``, ``get``,
    ``put``, ``delete``, ``url``) for keys under ``checkpoints/<job id>/``, and refuses any
    other key: the worker never holds a credential for the bucket."""

    def __init__(
        self, root_url: str, job_id: str, urls: UrlSource, http: httpx.Client | None = None
    ) -> None:
        #: the spec's artifact prefix: the URLs the API hands back lie under it
        self.root_url = root_url.rstrip("/")
        self.job_id = job_id
        self.folder = f"checkpoints/{job_id}/"
        self._urls = urls
        self.http = http or httpx.Client(timeout=httpx.Timeout(300.0, connect=10.0))
        self._latest: ArtifactUrls | None = None

    def _fetch(self, put: list[str] | None = None) -> ArtifactUrls:
        answer = self._urls(put or [])
        self._latest = answer
        return answer

    def _current(self) -> ArtifactUrls:
        return self._latest if self._latest is not None else self._fetch()

    def _checkpoint_name(self, key: str) -> str:
        name = key.removeprefix(self.folder)
        if not key.startswith(self.folder) or not _KEY.match(name):
            raise InvalidInput(f"this job reaches only its own checkpoints, not {key!r}")
        return name

    def _known(self, key: str, *, refresh: bool = False) -> ObjectUrls | None:
        name = self._checkpoint_name(key)
        urls = self._fetch() if refresh else self._current()
        found = next((o for o in urls.checkpoints if o.name == name), None)
        if found is None and not refresh:
            return self._known(key, refresh=True)
        return found

    def list(self, prefix: str) -> list[str]:
        keys = [self.folder + o.name for o in self._fetch().checkpoints]
        return sorted(k for k in keys if k.startswith(prefix.lstrip("/")))

    def get(self, key: str) -> bytes:
        found = self._known(key)
        if found is None or found.get is None:
            raise NotFound(f"artifact not found: {self.url(key)}")
        return download(found.get, self.http)

    def exists(self, key: str) -> bool:
        return self._known(key) is not None

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        name = self._checkpoint_name(key)
        target = self._fetch([name]).uploads[0]
        if target.put is None:
            raise ArtifactError(f"the API gave no upload URL for {name}")
        upload(target.put, data, self.http)
        return target.url

    def delete(self, key: str) -> None:
        found = self._known(key)
        if found is not None and found.delete is not None:
            remove(found.delete, self.http)

    def url(self, key: str) -> str:
        return f"{self.root_url}/{self.folder}{self._checkpoint_name(key)}"

    def presigned_url(self, key: str, method: str, expires_in_s: int) -> str:
        """The URL the API gave for ``method`` on this key (the API decides the expiry)."""
        if method == "put":
            url = self._fetch([self._checkpoint_name(key)]).uploads[0].put
        else:
            found = self._known(key)
            url = getattr(found, method, None) if found is not None else None
        if url is None:
            raise NotFound(f"no {method} URL for {self.url(key)}")
        return str(url)

    def resume_payload(self, url: str, map_location: torch.device | str = "cpu") -> dict[str, Any]:
        """The spec's resume checkpoint (``url``), read through its GET URL."""
        resume = self._fetch().resume
        if resume is None or resume.url != url or resume.get is None:
            raise NotFound(f"the API gave no URL to read the resume checkpoint {url}")
        return loads(download(resume.get, self.http), map_location)

    def dataset_url(self) -> str | None:
        """A URL to read the data set file with, when the API stores it."""
        dataset = self._current().dataset
        return dataset.get if dataset is not None else None


def job_store(spec: JobSpec, urls: UrlSource | None) -> ArtifactStore:
    """The store a job checkpoints to: on S3 (with the API's URLs at hand) only through
    pre-signed URLs; otherwise the store at the spec's prefix, directly."""
    if urls is not None and spec.artifact_prefix.startswith("s3://"):
        return PresignedStore(spec.artifact_prefix, spec.job_id, urls)
    return open_job_store(spec.artifact_prefix)


def load_resume(
    store: ArtifactStore, url: str, map_location: torch.device | str = "cpu"
) -> dict[str, Any]:
    """The spec's resume checkpoint, through the job's URLs where it has them."""
    if isinstance(store, PresignedStore):
        return store.resume_payload(url, map_location)
    return load_url(url, map_location)


_: type[ArtifactStore] = PresignedStore
