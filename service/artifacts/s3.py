"""``s3://bucket/prefix`` artifact store through boto3 (moto in tests)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from service.errors import ArtifactError, InvalidInput, NotFound

_RETRIES = Config(
    retries={"mode": "adaptive", "max_attempts": 8}, connect_timeout=10, read_timeout=60
)


def parse_s3_url(url: str) -> tuple[str, str]:
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise InvalidInput(f"not an s3://bucket/key URL: {url}")
    return parsed.netloc, parsed.path.lstrip("/")


class S3ArtifactStore:
    """Objects under a key prefix of one bucket. botocore's adaptive mode retries throttling."""

    def __init__(
        self,
        root_url: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        client: Any = None,
    ) -> None:
        self.bucket, prefix = parse_s3_url(root_url)
        self.prefix = prefix.strip("/")
        self.root_url = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        self.client = client or boto3.client(
            "s3", endpoint_url=endpoint_url, region_name=region, config=_RETRIES
        )

    def _key(self, key: str) -> str:
        key = key.lstrip("/")
        if ".." in key.split("/"):
            raise InvalidInput(f"artifact key escapes the store: {key!r}")
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        try:
            self.client.put_object(
                Bucket=self.bucket, Key=self._key(key), Body=data, ContentType=content_type
            )
        except (BotoCoreError, ClientError) as e:
            raise ArtifactError(f"could not write {self.url(key)}: {e}") from e
        return self.url(key)

    def get(self, key: str) -> bytes:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise NotFound(f"artifact not found: {self.url(key)}") from e
            raise ArtifactError(f"could not read {self.url(key)}: {e}") from e
        except BotoCoreError as e:
            raise ArtifactError(f"could not read {self.url(key)}: {e}") from e

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                return False
            raise ArtifactError(f"could not reach {self.url(key)}: {e}") from e

    def list(self, prefix: str) -> list[str]:
        full = self._key(prefix)
        strip = len(self.prefix) + 1 if self.prefix else 0
        keys: list[str] = []
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=full
            ):
                keys.extend(obj["Key"][strip:] for obj in page.get("Contents", []))
        except (BotoCoreError, ClientError) as e:
            raise ArtifactError(f"could not list {self.url(prefix)}: {e}") from e
        return sorted(keys)

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except (BotoCoreError, ClientError) as e:
            raise ArtifactError(f"could not delete {self.url(key)}: {e}") from e

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"
