"""Artifact stores, picked by URL scheme: ``file://`` or ``s3://``."""

from __future__ import annotations

from service.artifacts._protocol import ArtifactStore
from service.artifacts.filesystem import FileArtifactStore
from service.artifacts.s3 import S3ArtifactStore
from service.errors import InvalidInput

__all__ = ["ArtifactStore", "FileArtifactStore", "S3ArtifactStore", "open_store", "read_url"]


def open_store(
    url: str, *, endpoint_url: str | None = None, region: str | None = None
) -> ArtifactStore:
    """The store whose root is ``url``."""
    if url.startswith("file://"):
        return FileArtifactStore(url)
    if url.startswith("s3://"):
        return S3ArtifactStore(url, endpoint_url=endpoint_url, region=region)
    raise InvalidInput(f"unsupported artifact URL {url!r}: use file:///path or s3://bucket/prefix")


def split_url(url: str) -> tuple[str, str]:
    """Split an object URL into a root URL and a key (the last path component)."""
    root, _, key = url.rstrip("/").rpartition("/")
    return root, key


def read_url(url: str, *, endpoint_url: str | None = None, region: str | None = None) -> bytes:
    """Read one object by its absolute URL."""
    root, key = split_url(url)
    return open_store(root, endpoint_url=endpoint_url, region=region).get(key)


_: type[ArtifactStore] = FileArtifactStore
__: type[ArtifactStore] = S3ArtifactStore
