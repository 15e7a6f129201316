"""The artifact store protocol: model sources, checkpoints, reports and figures by URL."""

from __future__ import annotations

from typing import Literal, Protocol, runtime_checkable

#: what a pre-signed URL lets its holder do to one object
Method = Literal["get", "put", "delete"]


@runtime_checkable
class ArtifactStore(Protocol):
    """Objects addressed by a key relative to the store's root URL.

    ``url(key)`` gives the absolute URL (``file:///…`` or ``s3://…``) that is handed to workers
    and stored in the database; ``open_store(url)`` on any process reaches the same object.
    """

    root_url: str

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        """Store ``data`` under ``key`` (replacing it atomically) and return its URL."""
        ...

    def get(self, key: str) -> bytes:
        """Read the object; raises ``NotFound`` if it does not exist."""
        ...

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str) -> list[str]:
        """Keys under ``prefix``, sorted."""
        ...

    def delete(self, key: str) -> None: ...

    def url(self, key: str) -> str: ...

    def presigned_url(self, key: str, method: Method, expires_in_s: int) -> str:
        """A URL that lets its holder do ``method`` to this one object, and nothing else, for
        ``expires_in_s`` seconds, without credentials of its own (a job's worker)."""
        ...
