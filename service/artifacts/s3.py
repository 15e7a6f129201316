"""``s3://bucket/prefix`` artifact store through boto3 (moto in tests)."""

from __future__ import annotations

from typing import Any, cast
from urllib.parse import urlparse

from service.aws import (
    SDK_ERRORS,
    AwsFailure,
    AwsFault,
    ErrorFamily,
    classify_aws_error,
    make_client,
    translate_aws_error,
)
from service.errors import (
    ArtifactError,
    GradpilotError,
    InvalidInput,
    NotFound,
    TransientArtifactError,
)

_FAMILY = ErrorFamily(error=ArtifactError, transient=TransientArtifactError)
#: What S3 answers for a missing key: ``NoSuchKey``, or a bare 404 to a HEAD (no body, no code).
_MISSING_KEY = frozenset({"NoSuchKey", "404", "NotFound"})


def parse_s3_url(url: str) -> tuple[str, str]:
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise InvalidInput(f"not an s3://bucket/key URL: {url}")
    return parsed.netloc, parsed.path.lstrip("/")


def _hint(failure: AwsFailure) -> str | None:
    if failure.fault is AwsFault.ACCESS_DENIED:
        return (
            "The IAM identity needs s3:GetObject, s3:PutObject and s3:DeleteObject on the "
            "artifact prefix and s3:ListBucket on the bucket (see infra/README.md)."
        )
    if failure.code == "NoSuchBucket":
        return "check the bucket of GRADPILOT_ARTIFACT_URL (`gradpilot infra deploy` prints it)"
    return None


def _missing_key(error: Exception) -> bool:
    return classify_aws_error(error).code in _MISSING_KEY


class S3ArtifactStore:
    """Objects under a key prefix of one bucket.

    botocore's adaptive mode retries throttling, 5xx and lost connections; what still fails
    becomes ``TransientArtifactError``, any other failure ``ArtifactError``, a missing key
    ``NotFound`` (``service.aws`` translates).
    """

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
        self.client = client or make_client("s3", region=region, endpoint_url=endpoint_url)

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
        except SDK_ERRORS as e:
            raise self._error(e, "put_object", key) from e
        return self.url(key)

    def get(self, key: str) -> bytes:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
            return cast(bytes, body.read())
        except SDK_ERRORS as e:
            if _missing_key(e):
                raise NotFound(f"artifact not found: {self.url(key)}") from e
            raise self._error(e, "get_object", key) from e

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except SDK_ERRORS as e:
            if _missing_key(e):
                return False
            raise self._error(e, "head_object", key) from e

    def list(self, prefix: str) -> list[str]:
        full = self._key(prefix)
        strip = len(self.prefix) + 1 if self.prefix else 0
        keys: list[str] = []
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=full
            ):
                keys.extend(obj["Key"][strip:] for obj in page.get("Contents", []))
        except SDK_ERRORS as e:
            raise self._error(e, "list_objects_v2", prefix) from e
        return sorted(keys)

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except SDK_ERRORS as e:
            raise self._error(e, "delete_object", key) from e

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def _error(self, error: Exception, operation: str, key: str) -> GradpilotError:
        return translate_aws_error(
            error,
            service="S3",
            operation=f"{operation} {self.url(key)}",
            family=_FAMILY,
            hint=_hint,
        )

    def presigned_url(self, key: str, method: str, expires_in_s: int) -> str:
        """A SigV4 pre-signed URL for one method on one key: the signature covers the method
        and the key, so the URL cannot be turned to another object. Signing is local (no
        request to S3), so it cannot fail for a missing object."""
        operation = {"get": "get_object", "put": "put_object", "delete": "delete_object"}[method]
        signer = getattr(self, "_signer", None)
        if signer is None:
            # SigV4 (botocore presigns S3 with SigV2 by default, which newer regions refuse),
            # same endpoint, region and credentials as the store's client.
            import boto3
            from botocore.config import Config

            signer = self._signer = boto3.session.Session().client(
                "s3",
                endpoint_url=self.client.meta.endpoint_url,
                region_name=self.client.meta.region_name,
                config=Config(signature_version="s3v4"),
            )
        try:
            return str(
                signer.generate_presigned_url(
                    ClientMethod=operation,
                    Params={"Bucket": self.bucket, "Key": self._key(key)},
                    ExpiresIn=expires_in_s,
                )
            )
        except SDK_ERRORS as e:
            raise self._error(e, "generate_presigned_url", key) from e
