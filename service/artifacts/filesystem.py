"""``file://`` artifact store: a folder on this machine (the embedded default)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlparse

from service.errors import InvalidInput, NotFound


def file_url_to_path(url: str) -> Path:
    parsed = urlparse(url)
    if parsed.scheme != "file":
        raise InvalidInput(f"not a file:// URL: {url}")
    return Path(unquote(parsed.path))


class FileArtifactStore:
    """Objects as files under a root folder; writes go to a temporary file and are renamed."""

    def __init__(self, root_url: str) -> None:
        self.root = file_url_to_path(root_url).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.root_url = self.root.as_uri()

    def _path(self, key: str) -> Path:
        path = (self.root / key.lstrip("/")).resolve()
        if path != self.root and self.root not in path.parents:
            raise InvalidInput(f"artifact key escapes the store: {key!r}")
        return path

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path.as_uri()

    def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except FileNotFoundError as e:
            raise NotFound(f"artifact not found: {self.url(key)}") from e

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str) -> list[str]:
        base = self._path(prefix) if prefix else self.root
        if base.is_file():
            return [prefix]
        search = base if base.is_dir() else base.parent
        if not search.is_dir():
            return []
        keys = []
        for p in search.rglob("*"):
            if p.is_file() and not p.name.startswith(".tmp-"):
                key = p.relative_to(self.root).as_posix()
                if key.startswith(prefix.lstrip("/")):
                    keys.append(key)
        return sorted(keys)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def url(self, key: str) -> str:
        return self._path(key).as_uri()

    def presigned_url(self, key: str, method: str, expires_in_s: int) -> str:
        """The object's own ``file://`` URL: on one machine the filesystem's permissions are
        the access control, and the local worker reads and writes the folder directly."""
        return self.url(key)
