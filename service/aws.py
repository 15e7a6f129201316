"""Where boto3 enters gradpilot: client construction and the one translation of AWS errors.

Every AWS call of the service (AWS Batch in ``service.executors.batch``, S3 in
``service.artifacts.s3``, CloudFormation in ``service.infra``) goes through a client made by
:func:`make_client` and turns a failure into one of our exceptions with
:func:`translate_aws_error` (``raise translate_aws_error(e, ...) from e``), so that no caller
needs to know about botocore.

Retries
    Clients use botocore's ``adaptive`` mode: throttling (429 and the ``Throttling*`` codes),
    5xx, timeouts and dropped connections are retried with jittered exponential backoff and a
    client-side rate limiter; nothing else is (an access denied, a missing queue or a validation
    error surfaces at once). What still fails after the retries is classified here as
    :attr:`AwsFault.THROTTLED` or :attr:`AwsFault.UNREACHABLE` and becomes the caller's
    *transient* exception, so that its own caller (the controller) may try again later.

Classification
    :func:`classify_aws_error` reads an exception as an :class:`AwsFailure`: which
    :class:`AwsFault` it is, the AWS error code, the message and the HTTP status. Each caller
    names the exception class each fault becomes (an :class:`ErrorFamily`) and may add a
    remedy per failure (which setting to fix, which IAM permission is missing).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    CredentialRetrievalError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError
from botocore.parsers import ResponseParserError

from service.errors import GradpilotError

#: What a boto3 call raises. A reply botocore cannot parse (a proxy's HTML error page, moto's
#: JSON answer to an XML protocol) is a ``ResponseParserError``, which is not a BotoCoreError.
SDK_ERRORS: tuple[type[Exception], ...] = (BotoCoreError, ClientError, ResponseParserError)

#: Error codes that mean "slow down" or "the service failed", whatever the HTTP status says.
THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "SlowDown",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "ServerException",
        "InternalFailure",
        "InternalError",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)
#: Credentials that AWS does not accept (as opposed to a valid identity lacking a permission).
BAD_CREDENTIAL_CODES = frozenset(
    {
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "SignatureDoesNotMatch",
        "InvalidAccessKeyId",
        "InvalidClientTokenId",
        "ExpiredToken",
        "ExpiredTokenException",
        "AuthFailure",
    }
)
ACCESS_DENIED_CODES = frozenset(
    {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "AuthorizationError"}
)
NOT_FOUND_CODES = frozenset({"404", "NotFound", "ResourceNotFoundException"})
_NOT_FOUND_WORDS = ("does not exist", "not found")

_NO_CREDENTIALS = (
    "no AWS credentials found for {service}: set AWS_PROFILE or AWS_ACCESS_KEY_ID and "
    "AWS_SECRET_ACCESS_KEY, or run where an IAM role provides them (for moto any values do)"
)


class AwsFault(StrEnum):
    """What kind of failure an AWS call had; decides the exception and whether to retry."""

    #: Throttled, or a 5xx, after botocore's retries: transient.
    THROTTLED = "throttled"
    #: No connection, a timeout, a dropped connection, after botocore's retries: transient.
    UNREACHABLE = "unreachable"
    #: No credentials anywhere botocore looks (environment, profile, instance role).
    NO_CREDENTIALS = "no_credentials"
    #: Credentials that AWS rejects (unknown key, bad signature, expired token).
    BAD_CREDENTIALS = "bad_credentials"
    #: A valid identity without the permission for this call.
    ACCESS_DENIED = "access_denied"
    #: The named resource (queue, bucket, key, stack) does not exist.
    NOT_FOUND = "not_found"
    #: Anything else: a validation error, a conflict, an unparseable reply.
    OTHER = "other"


TRANSIENT_FAULTS = frozenset({AwsFault.THROTTLED, AwsFault.UNREACHABLE})


@dataclass(frozen=True)
class AwsFailure:
    """An AWS failure read out of a botocore exception."""

    fault: AwsFault
    #: AWS's error code (``ThrottlingException``, ``NoSuchKey``), or "" when there was no reply.
    code: str
    #: AWS's message, or the exception's text when there was no reply.
    message: str
    #: The reply's HTTP status, 0 when there was none.
    http_status: int = 0

    @property
    def transient(self) -> bool:
        return self.fault in TRANSIENT_FAULTS

    @property
    def label(self) -> str:
        """The code (or HTTP status) for a message: ``ThrottlingException``, ``HTTP 503``; ""
        when AWS did not answer."""
        return self.code or (f"HTTP {self.http_status}" if self.http_status else "")


def classify_aws_error(error: BaseException) -> AwsFailure:
    """Read a botocore (or boto3) exception as an :class:`AwsFailure`."""
    if isinstance(error, NoCredentialsError | PartialCredentialsError | CredentialRetrievalError):
        return AwsFailure(AwsFault.NO_CREDENTIALS, "", str(error))
    if isinstance(error, BotoConnectionError | HTTPClientError):
        return AwsFailure(AwsFault.UNREACHABLE, "", str(error))
    if not isinstance(error, ClientError):
        return AwsFailure(AwsFault.OTHER, "", str(error))
    info = error.response.get("Error", {})
    code = str(info.get("Code", ""))
    message = str(info.get("Message", "")) or str(error)
    http = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    if code in THROTTLING_CODES or http == 429 or http >= 500:
        fault = AwsFault.THROTTLED
    elif code in BAD_CREDENTIAL_CODES:
        fault = AwsFault.BAD_CREDENTIALS
    elif code in ACCESS_DENIED_CODES or http == 403:
        fault = AwsFault.ACCESS_DENIED
    elif (
        code in NOT_FOUND_CODES
        or code.startswith("NoSuch")
        or http == 404
        or any(word in message.lower() for word in _NOT_FOUND_WORDS)
    ):
        fault = AwsFault.NOT_FOUND
    else:
        fault = AwsFault.OTHER
    return AwsFailure(fault, code, message, http)


@dataclass(frozen=True)
class ErrorFamily:
    """The exception class each :class:`AwsFault` becomes for one caller.

    ``error`` takes every fault not named otherwise; ``transient`` the throttled and unreachable
    ones (a subclass of ``error`` whose ``transient`` attribute is true, so that a caller that
    catches ``error`` catches both).
    """

    error: type[GradpilotError]
    transient: type[GradpilotError] | None = None
    credentials: type[GradpilotError] | None = None
    not_found: type[GradpilotError] | None = None

    def for_fault(self, fault: AwsFault) -> type[GradpilotError]:
        if fault in TRANSIENT_FAULTS and self.transient is not None:
            return self.transient
        if fault in (AwsFault.NO_CREDENTIALS, AwsFault.BAD_CREDENTIALS) and self.credentials:
            return self.credentials
        if fault is AwsFault.NOT_FOUND and self.not_found is not None:
            return self.not_found
        return self.error


#: A remedy for a failure (what to set, which permission to grant), or None for the default.
Hint = Callable[[AwsFailure], str | None]


def translate_aws_error(
    error: BaseException,
    *,
    service: str,
    operation: str,
    family: ErrorFamily,
    hint: Hint | None = None,
    where: str | None = None,
) -> GradpilotError:
    """One of our exceptions for a failed AWS call, with a one-line message for people.

    ``service`` names the AWS service as people know it (``AWS Batch``, ``S3``); ``operation``
    what was being done (``submit_job``, ``get_object s3://bucket/key``); ``where`` the endpoint
    or region for an unreachable service. ``hint`` adds a remedy to the message.
    """
    failure = classify_aws_error(error)
    remedy = hint(failure) if hint is not None else None
    message = _message(failure, service=service, operation=operation, where=where, remedy=remedy)
    return family.for_fault(failure.fault)(message)


def _message(
    failure: AwsFailure, *, service: str, operation: str, where: str | None, remedy: str | None
) -> str:
    fault, text = failure.fault, failure.message
    label = f"{failure.label}: {text}" if failure.label else text
    if fault is AwsFault.THROTTLED:
        return (
            f"{service} {operation} is throttled or unavailable after retries ({label}); "
            f"this is transient: {remedy or 'try again in a minute'}"
        )
    if fault is AwsFault.UNREACHABLE:
        return (
            f"could not reach {where or service} for {operation} ({text}); "
            f"this is transient: {remedy or 'try again in a minute'}"
        )
    if fault is AwsFault.NO_CREDENTIALS:
        return _NO_CREDENTIALS.format(service=service)
    if fault is AwsFault.BAD_CREDENTIALS:
        return (
            f"AWS rejected the credentials for {service} ({label}); "
            f"{remedy or 'check AWS_PROFILE or the access keys, and that they have not expired'}"
        )
    if fault is AwsFault.ACCESS_DENIED:
        return (
            f"{service} refused {operation}: {text}. "
            f"{remedy or 'The IAM identity in use needs the permission for it.'}"
        )
    detail = f"{service} {operation} failed ({label})"
    return f"{detail}: {remedy}" if remedy else detail


def make_client(
    service_name: str,
    *,
    region: str | None,
    endpoint_url: str | None = None,
    max_attempts: int = 8,
    read_timeout_s: int = 60,
) -> Any:
    """A boto3 client with adaptive retries, pointed at ``endpoint_url`` (moto) when given.

    ``max_attempts`` counts every request of one call, the first included.
    """
    config = Config(
        retries={"mode": "adaptive", "total_max_attempts": max_attempts},
        connect_timeout=10,
        read_timeout=read_timeout_s,
        user_agent_extra="gradpilot",
    )
    # A session of its own: boto3's default session caches credentials and is not safe to
    # create clients from in several threads at once.
    return boto3.session.Session().client(
        service_name,
        region_name=region,
        endpoint_url=endpoint_url,
        config=config,
    )
