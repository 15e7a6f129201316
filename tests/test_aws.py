"""AWS errors become ours in one place (``service.aws``): the classification of botocore's
exceptions, and what each caller (S3 store, CloudFormation deploy) raises for them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import (
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)
from botocore.parsers import ResponseParserError
from botocore.stub import Stubber

from service.artifacts.s3 import S3ArtifactStore
from service.aws import (
    AwsFault,
    ErrorFamily,
    classify_aws_error,
    make_client,
    translate_aws_error,
)
from service.errors import (
    ArtifactError,
    ConfigurationError,
    ExecutorError,
    NotFound,
    TransientArtifactError,
    TransientExecutorError,
)
from service.infra import DeployError, deploy_stack, read_outputs


def client_error(code: str, message: str = "m", status: int = 400) -> ClientError:
    return ClientError(
        {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        "Operation",
    )


# -- classification -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "fault"),
    [
        (client_error("ThrottlingException", "Rate exceeded"), AwsFault.THROTTLED),
        (client_error("TooManyRequestsException", status=429), AwsFault.THROTTLED),
        (client_error("SlowDown", status=503), AwsFault.THROTTLED),
        (client_error("", "Internal", status=500), AwsFault.THROTTLED),
        (EndpointConnectionError(endpoint_url="http://127.0.0.1:9"), AwsFault.UNREACHABLE),
        (ReadTimeoutError(endpoint_url="https://batch.aws"), AwsFault.UNREACHABLE),
        (NoCredentialsError(), AwsFault.NO_CREDENTIALS),
        (client_error("InvalidAccessKeyId", status=403), AwsFault.BAD_CREDENTIALS),
        (client_error("ExpiredToken", status=400), AwsFault.BAD_CREDENTIALS),
        (client_error("AccessDeniedException", "not authorized", 403), AwsFault.ACCESS_DENIED),
        (client_error("AccessDenied", status=403), AwsFault.ACCESS_DENIED),
        (client_error("NoSuchKey", status=404), AwsFault.NOT_FOUND),
        (client_error("NoSuchBucket", status=404), AwsFault.NOT_FOUND),
        (client_error("404", "Not Found", status=404), AwsFault.NOT_FOUND),
        (client_error("ValidationError", "Stack with id gp does not exist"), AwsFault.NOT_FOUND),
        (client_error("ClientException", "Job queue q does not exist"), AwsFault.NOT_FOUND),
        (client_error("ValidationError", "Template format error"), AwsFault.OTHER),
        (ResponseParserError("Unable to parse response"), AwsFault.OTHER),
    ],
)
def test_classification(error: Exception, fault: AwsFault) -> None:
    failure = classify_aws_error(error)
    assert failure.fault is fault
    assert failure.transient is (fault in (AwsFault.THROTTLED, AwsFault.UNREACHABLE))


def test_throttling_wins_over_the_words_of_the_message() -> None:
    """A 503 whose message says 'not found' is still worth retrying."""
    failure = classify_aws_error(client_error("ServiceUnavailable", "endpoint not found", 503))
    assert failure.fault is AwsFault.THROTTLED


# -- translation --------------------------------------------------------------------------------

FAMILY = ErrorFamily(error=ExecutorError, transient=TransientExecutorError)


def _translate(error: Exception, **kwargs: Any) -> Exception:
    return translate_aws_error(error, service="AWS Batch", operation="submit_job", **kwargs)


def test_throttling_becomes_the_transient_error() -> None:
    error = _translate(client_error("ThrottlingException", "Rate exceeded"), family=FAMILY)
    assert type(error) is TransientExecutorError
    assert error.transient  # type: ignore[attr-defined]
    assert "Rate exceeded" in str(error) and "transient" in str(error)


def test_access_denied_is_permanent_and_carries_the_remedy() -> None:
    error = _translate(
        client_error("AccessDeniedException", "User x is not authorized", 403),
        family=FAMILY,
        hint=lambda f: "grant batch:SubmitJob" if f.fault is AwsFault.ACCESS_DENIED else None,
    )
    assert type(error) is ExecutorError
    assert not error.transient  # type: ignore[attr-defined]
    assert (
        str(error)
        == "AWS Batch refused submit_job: User x is not authorized. grant batch:SubmitJob"
    )


def test_not_found_uses_the_family_class_when_it_names_one() -> None:
    family = ErrorFamily(error=ArtifactError, not_found=NotFound)
    error = _translate(client_error("NoSuchKey", "The key does not exist", 404), family=family)
    assert type(error) is NotFound
    assert "NoSuchKey" in str(error)
    assert type(_translate(client_error("NoSuchKey"), family=FAMILY)) is ExecutorError


def test_an_unreachable_endpoint_names_where() -> None:
    error = _translate(
        EndpointConnectionError(endpoint_url="http://127.0.0.1:9"),
        family=FAMILY,
        where="http://127.0.0.1:9",
    )
    assert type(error) is TransientExecutorError
    assert str(error).startswith("could not reach http://127.0.0.1:9 for submit_job")


def test_messages_are_one_line() -> None:
    for error in (client_error("ThrottlingException"), NoCredentialsError(), client_error("X")):
        assert "\n" not in str(_translate(error, family=FAMILY))


# -- the S3 artifact store ----------------------------------------------------------------------


def _store() -> tuple[S3ArtifactStore, Stubber]:
    client = boto3.client(
        "s3", region_name="us-east-1", aws_access_key_id="k", aws_secret_access_key="s"
    )
    return S3ArtifactStore("s3://gp-bucket/prefix", client=client), Stubber(client)


@pytest.mark.parametrize(
    ("code", "status", "raised", "words"),
    [
        ("NoSuchKey", 404, NotFound, "artifact not found: s3://gp-bucket/prefix/a.pt"),
        ("NoSuchBucket", 404, ArtifactError, "GRADPILOT_ARTIFACT_URL"),
        ("SlowDown", 503, TransientArtifactError, "transient"),
        ("AccessDenied", 403, ArtifactError, "s3:GetObject"),
    ],
)
def test_s3_store_errors(code: str, status: int, raised: type[Exception], words: str) -> None:
    store, stubber = _store()
    stubber.add_client_error("get_object", code, "message", status)
    with stubber, pytest.raises(raised) as info:
        store.get("a.pt")
    assert type(info.value) is raised
    assert words in str(info.value)
    assert isinstance(info.value.__cause__, ClientError)  # raised ... from e


def test_s3_exists_is_false_only_for_a_missing_key() -> None:
    store, stubber = _store()
    stubber.add_client_error("head_object", "404", "Not Found", 404)
    stubber.add_client_error("head_object", "403", "Forbidden", 403)
    with stubber:
        assert store.exists("a.pt") is False
        with pytest.raises(ArtifactError, match="refused head_object s3://gp-bucket/prefix/a.pt"):
            store.exists("a.pt")


# -- CloudFormation -----------------------------------------------------------------------------


def _cloudformation() -> tuple[Any, Stubber]:
    client = boto3.client(
        "cloudformation", region_name="us-east-1", aws_access_key_id="k", aws_secret_access_key="s"
    )
    return client, Stubber(client)


def test_deploy_access_denied_points_to_the_permissions() -> None:
    client, stubber = _cloudformation()
    stubber.add_client_error("describe_stacks", "AccessDenied", "not authorized", 403)
    with stubber, pytest.raises(DeployError, match="infra/README.md") as info:
        deploy_stack(client=client)
    assert isinstance(info.value.__cause__, ClientError)


def test_reading_a_missing_stack_says_to_deploy() -> None:
    client, stubber = _cloudformation()
    stubber.add_client_error(
        "describe_stacks", "ValidationError", "Stack with id gradpilot does not exist", 400
    )
    with stubber, pytest.raises(DeployError, match="run `gradpilot infra deploy` first"):
        read_outputs(client=client)


def test_deploy_throttled_is_a_deploy_error_that_says_it_is_transient() -> None:
    client, stubber = _cloudformation()
    stubber.add_client_error("describe_stacks", "Throttling", "Rate exceeded", 400)
    with stubber, pytest.raises(DeployError, match="transient: deploy again"):
        read_outputs(client=client)


def test_deploy_without_credentials_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", raising=False)
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", raising=False)
    monkeypatch.delenv("AWS_WEB_IDENTITY_TOKEN_FILE", raising=False)
    client = make_client("cloudformation", region="us-east-1", endpoint_url="http://127.0.0.1:9")
    with pytest.raises(ConfigurationError, match="no AWS credentials found for CloudFormation"):
        read_outputs(client=client)
