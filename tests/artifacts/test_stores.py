"""One contract suite for every artifact store: file:// on disk and s3:// under moto."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from service.artifacts import (
    ArtifactStore,
    FileArtifactStore,
    S3ArtifactStore,
    open_store,
    read_url,
)
from service.errors import InvalidInput, NotFound


@pytest.fixture(params=["file", "s3"])
def store(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ArtifactStore]:
    if request.param == "file":
        yield open_store((tmp_path / "artifacts").as_uri())
        return
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="gp-artifacts")
        yield open_store("s3://gp-artifacts/prefix", region="us-east-1")


def test_put_get_exists_list_delete(store: ArtifactStore) -> None:
    url = store.put("runs/r1/report.md", b"# report", "text/markdown")
    assert url == store.url("runs/r1/report.md")
    assert url.startswith(("file://", "s3://"))
    assert store.get("runs/r1/report.md") == b"# report"
    assert store.exists("runs/r1/report.md")
    assert not store.exists("runs/r1/missing")
    store.put("runs/r1/jobs/g0/ckpt.pt", b"\x00" * 10)
    store.put("runs/r2/report.md", b"other")
    assert store.list("runs/r1/") == ["runs/r1/jobs/g0/ckpt.pt", "runs/r1/report.md"]
    store.put("runs/r1/report.md", b"# new")  # replaced whole
    assert store.get("runs/r1/report.md") == b"# new"
    store.delete("runs/r1/report.md")
    assert not store.exists("runs/r1/report.md")
    with pytest.raises(NotFound):
        store.get("runs/r1/report.md")


def test_read_by_absolute_url(store: ArtifactStore) -> None:
    url = store.put("runs/r9/figure.png", b"png")
    assert read_url(url, region="us-east-1") == b"png"


def test_keys_cannot_escape(store: ArtifactStore) -> None:
    with pytest.raises(InvalidInput):
        store.put("../outside", b"x")


def test_protocol_and_bad_urls(store: ArtifactStore) -> None:
    assert isinstance(store, ArtifactStore)
    assert isinstance(store, FileArtifactStore | S3ArtifactStore)
    with pytest.raises(InvalidInput, match="file:///path or s3://"):
        open_store("ftp://host/x")
