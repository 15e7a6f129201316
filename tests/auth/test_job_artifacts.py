"""Job-scoped artifacts: a job registers checkpoints only inside its own folder, and reaches
the store only through the URLs the API hands it for exactly its own objects."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from service.schemas.artifacts import ArtifactUrls
from tests.support.factories import add_job, run_body
from tests.support.users import bearer
from worker import checkpoint

NAME = "e000001-s0000000.pt"


def _job(client: TestClient, **run: object) -> tuple[str, str, str, dict[str, object]]:
    run_id = client.post("/v1/runs", json=run_body(**run)).json()["id"]
    job_id, token = add_job(client, run_id, epochs=3)
    spec = client.get(f"/v1/jobs/{job_id}/spec", headers=bearer(token)).json()
    return run_id, job_id, token, spec


def _register(client: TestClient, job_id: str, token: str, uri: str) -> httpx.Response:
    return client.post(
        f"/v1/jobs/{job_id}/checkpoints", headers=bearer(token), json={"uri": uri, "epoch": 0}
    )


def test_a_checkpoint_uri_must_lie_in_the_jobs_own_folder(client: TestClient) -> None:
    run_id, job_id, token, spec = _job(client)
    prefix = spec["artifact_prefix"]
    own = f"{prefix}/checkpoints/{job_id}/"
    other_run, other_job, _, other_spec = _job(client)
    bad = [
        f"{own}../../../../{other_run}/jobs/g0/checkpoints/{other_job}/{NAME}",
        f"{own}%2e%2e/{other_job}/{NAME}",
        f"{own}./{NAME}",
        f"{own}/{NAME}",
        f"{other_spec['artifact_prefix']}/checkpoints/{other_job}/{NAME}",  # another run's
        f"{prefix}/checkpoints/{other_job}/{NAME}",  # another job's folder, same prefix
        f"{prefix}/checkpoints/{job_id}x/{NAME}",  # a sibling whose name starts the same
        f"{prefix}/{NAME}",
        own,
        f"{own}{NAME}?x=../../y",
        f"s3://bucket/runs/{run_id}/jobs/g0/checkpoints/{job_id}/{NAME}",
        "file:///etc/passwd",
    ]
    for uri in bad:
        r = _register(client, job_id, token, uri)
        assert r.status_code == 422, uri
        assert "outside this job's own checkpoint folder" in r.json()["detail"]
    assert _register(client, job_id, token, own + NAME).status_code == 200


def test_artifact_urls_on_the_file_store_drive_the_worker_store(client: TestClient) -> None:
    """The file:// equivalent: the same calls, with the objects' own file URLs."""
    _, job_id, token, spec = _job(client)

    def urls(put: list[str]) -> ArtifactUrls:
        r = client.get(
            f"/v1/jobs/{job_id}/artifact-urls", params={"put": put}, headers=bearer(token)
        )
        assert r.status_code == 200, r.text
        return ArtifactUrls.model_validate(r.json())

    store = checkpoint.PresignedStore(str(spec["artifact_prefix"]), job_id, urls)
    payload = {"next_epoch": 1, "step": 0, "model": {"w": torch.ones(2)}}
    url = checkpoint.save(store, job_id, payload)
    assert url.startswith("file://") and url.endswith(f"/checkpoints/{job_id}/{NAME}")
    assert _register(client, job_id, token, url).status_code == 200
    found = checkpoint.latest(store, job_id)
    assert (
        found is not None
        and found.url == url
        and torch.equal(found.payload["model"]["w"], torch.ones(2))
    )
    for epoch in (2, 3):
        checkpoint.save(store, job_id, {**payload, "next_epoch": epoch})
    checkpoint.prune(store, job_id, keep=2)
    assert [o.name for o in urls([]).checkpoints] == ["e000002-s0000000.pt", "e000003-s0000000.pt"]
    with pytest.raises(Exception, match="only its own checkpoints"):
        store.put("checkpoints/another-job/" + NAME, b"x")
    r = client.get(
        f"/v1/jobs/{job_id}/artifact-urls", params={"put": "../../x.pt"}, headers=bearer(token)
    )
    assert r.status_code == 422 and "only checkpoints named" in r.json()["detail"]


# ----------------------------------------------------------------------------- S3 (moto)


@pytest.fixture
def s3_client(moto_server: str, home, monkeypatch: pytest.MonkeyPatch, tmp_path):  # type: ignore[no-untyped-def]
    """The API with its artifact store in a moto server's bucket (only the API holds keys)."""
    import boto3

    from service.api.app import build_state
    from service.app import create_app
    from service.db.migrate import upgrade
    from service.settings import Settings
    from tests.support.factories import USER_TOKEN
    from tests.support.moto import fake_aws_environment

    for key, value in fake_aws_environment(tmp_path).items():
        monkeypatch.setenv(key, value)
    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    s3.create_bucket(Bucket="gp-art")
    settings = Settings(
        home=home,
        api_tokens=[USER_TOKEN],
        artifact_url="s3://gp-art/gradpilot",
        aws_endpoint_url=moto_server,
        aws_region="us-east-1",
    )
    settings.ensure_home()
    upgrade(settings.resolved_database_url)
    app = create_app(settings, state=build_state(settings))
    with TestClient(app, headers={"Authorization": f"Bearer {USER_TOKEN}"}) as c:
        yield c, s3


def test_presigned_upload_and_download_on_s3(s3_client) -> None:  # type: ignore[no-untyped-def]
    client, s3 = s3_client
    data = io.BytesIO()
    np.savez(data, x_train=np.zeros((4, 3, 8, 8), np.float32), y_train=np.zeros(4, np.int64))
    s3.put_object(Bucket="gp-art", Key="datasets/tiny.npz", Body=data.getvalue())
    run_id, job_id, token, spec = _job(
        client,
        dataset={
            "name": "npz",
            "uri": "s3://gp-art/datasets/tiny.npz",
            "input_shape": [3, 8, 8],
            "num_classes": 2,
        },
    )
    assert spec["artifact_prefix"] == f"s3://gp-art/gradpilot/runs/{run_id}/jobs/g0"

    def urls(put: list[str]) -> ArtifactUrls:
        r = client.get(
            f"/v1/jobs/{job_id}/artifact-urls", params={"put": put}, headers=bearer(token)
        )
        assert r.status_code == 200, r.text
        return ArtifactUrls.model_validate(r.json())

    # The worker's side: plain HTTP, no AWS credentials, no boto3.
    http = httpx.Client()
    store = checkpoint.PresignedStore(str(spec["artifact_prefix"]), job_id, urls, http=http)
    url = checkpoint.save(
        store, job_id, {"next_epoch": 1, "step": 0, "model": {"w": torch.ones(3)}}
    )
    key = f"gradpilot/runs/{run_id}/jobs/g0/checkpoints/{job_id}/{NAME}"
    assert url == f"s3://gp-art/{key}"
    listed = [
        o["Key"] for o in s3.list_objects_v2(Bucket="gp-art", Prefix="gradpilot/")["Contents"]
    ]
    assert listed == [key]  # it landed in exactly the job's key
    assert _register(client, job_id, token, url).status_code == 200
    found = checkpoint.latest(store, job_id)
    assert found is not None and torch.equal(found.payload["model"]["w"], torch.ones(3))
    dataset_get = store.dataset_url()
    assert dataset_get is not None and dataset_get.startswith("http")
    assert checkpoint.download(dataset_get, http) == data.getvalue()

    # Each URL is signed for its own method and key: pointed at another key it no longer
    # verifies. (moto does not check query-string signatures, so this checks the signature as
    # S3 does, with the moto credentials the API signed with.)
    put_url = urls(["e000002-s0000000.pt"]).uploads[0].put
    assert put_url is not None and "X-Amz-Signature=" in put_url
    assert sigv4_query_signature_valid(put_url, "PUT", "testing")
    other = put_url.replace(f"/runs/{run_id}/", "/runs/someone-elses-run/")
    assert other != put_url and not sigv4_query_signature_valid(other, "PUT", "testing")
    assert not sigv4_query_signature_valid(put_url, "GET", "testing")  # PUT only
    assert not sigv4_query_signature_valid(put_url, "PUT", "another-secret")


def sigv4_query_signature_valid(url: str, method: str, secret: str) -> bool:
    """Verify a SigV4 pre-signed S3 URL the way S3 does (UNSIGNED-PAYLOAD, signed headers
    ``host``)."""
    import hashlib
    import hmac
    from urllib.parse import parse_qsl, quote, urlsplit

    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    given = dict(query)
    signature = given.pop("X-Amz-Signature")
    canonical_query = "&".join(
        f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}"
        for k, v in sorted((k, v) for k, v in query if k != "X-Amz-Signature")
    )
    assert given["X-Amz-SignedHeaders"] == "host"
    canonical = "\n".join(
        [method, parts.path, canonical_query, f"host:{parts.netloc}\n", "host", "UNSIGNED-PAYLOAD"]
    )
    _, date, region, service, _ = given["X-Amz-Credential"].split("/")
    scope = f"{date}/{region}/{service}/aws4_request"
    to_sign = "\n".join(
        [
            "AWS4-HMAC-SHA256",
            given["X-Amz-Date"],
            scope,
            hashlib.sha256(canonical.encode()).hexdigest(),
        ]
    )
    key = f"AWS4{secret}".encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature)
