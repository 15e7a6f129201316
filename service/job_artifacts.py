"""What one job may reach in the artifact store, and the URLs that reach exactly that.

A job writes only its own checkpoint folder, ``<artifact prefix>/checkpoints/<job id>/``; it
reads that folder, the checkpoint its spec resumes from and its data set file. On S3 the
control plane signs a URL per object and method, so the job's IAM role needs no S3 access; a
checkpoint URI the worker registers must lie inside its own folder.
"""

from __future__ import annotations

from urllib.parse import unquote, urlparse

from service.artifacts import ArtifactStore, open_store
from service.artifacts.filesystem import file_url_to_path
from service.db.models import Job, Run
from service.errors import InvalidInput
from service.schemas.artifacts import CHECKPOINT_NAME, ArtifactUrls, ObjectUrls
from service.settings import Settings

#: How long a pre-signed URL stays valid. The worker asks for fresh ones for each checkpoint,
#: so this only needs to cover one upload's start.
URL_TTL_S = 900


def artifact_prefix(artifact_root: str, run_id: str, generation: int) -> str:
    """Where a generation's jobs keep their artifacts (the spec's ``artifact_prefix``)."""
    return f"{artifact_root.rstrip('/')}/runs/{run_id}/jobs/g{generation}"


def checkpoint_folder(artifact_root: str, job: Job) -> str:
    """The job's own checkpoint folder, with a trailing slash."""
    return f"{artifact_prefix(artifact_root, job.run_id, job.generation)}/checkpoints/{job.id}/"


def _segments_are_plain(path: str) -> bool:
    """No ``.``/``..``/empty segments, however encoded: the URL means what its text says."""
    return all(seg not in ("", ".", "..") for seg in unquote(path).split("/")[1:])


def check_checkpoint_uri(artifact_root: str, job: Job, uri: str) -> None:
    """Refuse (422) a checkpoint URI outside the job's own checkpoint folder."""
    folder = checkpoint_folder(artifact_root, job)
    parsed = urlparse(uri)
    plain = (
        not parsed.query
        and not parsed.fragment
        and "\\" not in uri
        and _segments_are_plain(parsed.path)
        and (parsed.scheme != "file" or not parsed.netloc)
    )
    if not plain or not uri.startswith(folder) or uri == folder:
        raise InvalidInput(
            f"checkpoint uri {uri!r} is outside this job's own checkpoint folder {folder}; "
            "a job registers only checkpoints it wrote under its artifact prefix"
        )


def _object(store: ArtifactStore, key: str, name: str, *methods: str) -> ObjectUrls:
    urls = {m: store.presigned_url(key, m, URL_TTL_S) for m in methods}  # type: ignore[arg-type]
    return ObjectUrls(name=name, url=store.url(key), **urls)


def _outside_object(settings: Settings, root: ArtifactStore, url: str) -> ObjectUrls | None:
    """GET access to one object named by its absolute URL (a resume checkpoint, a data set)."""
    name = url.rpartition("/")[2]
    if url.startswith(root.root_url + "/"):
        return _object(root, url.removeprefix(root.root_url + "/"), name, "get")
    if url.startswith("s3://"):
        parent, _, key = url.rpartition("/")
        store = open_store(
            parent, endpoint_url=settings.aws_endpoint_url, region=settings.aws_region
        )
        return _object(store, key, name, "get")
    if url.startswith("file://"):
        return ObjectUrls(name=file_url_to_path(url).name, url=url, get=url)
    return None  # a plain path: the worker reads it where it runs


def job_artifact_urls(
    settings: Settings, root: ArtifactStore, job: Job, run: Run, put: list[str]
) -> ArtifactUrls:
    """The URLs for ``job`` in the store ``root`` (the settings' artifact store): its
    checkpoints (get, delete), uploads for the names in ``put``, its resume checkpoint and
    its data set file (get)."""
    for name in put:
        if not CHECKPOINT_NAME.match(name):
            raise InvalidInput(
                f"cannot upload {name!r}: a job uploads only checkpoints named "
                "e<6+ digit epoch>-s<7+ digit step>.pt"
            )
    folder = f"runs/{run.id}/jobs/g{job.generation}/checkpoints/{job.id}/"
    existing = [k for k in root.list(folder) if CHECKPOINT_NAME.match(k.removeprefix(folder))]
    dataset_uri = run.dataset.get("uri")
    return ArtifactUrls(
        checkpoint_prefix=f"{root.root_url}/{folder}",
        expires_in_s=URL_TTL_S,
        checkpoints=[
            _object(root, k, k.removeprefix(folder), "get", "delete") for k in sorted(existing)
        ],
        uploads=[_object(root, folder + name, name, "put") for name in put],
        resume=(
            _outside_object(settings, root, job.resume_checkpoint)
            if job.resume_checkpoint
            else None
        ),
        dataset=(
            _outside_object(settings, root, dataset_uri) if isinstance(dataset_uri, str) else None
        ),
    )
