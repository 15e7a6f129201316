"""Sorting the LLM's failures: the ones no retry can cure, each with a message saying what to fix.

``fatal_message`` returns that message for access denied, an unknown model id, a model that needs
an inference profile, and missing or rejected credentials; None for everything else (transient
errors, a prompt too long this time), which the advisor retries or falls back on.
"""

from __future__ import annotations

_CREDENTIAL_CODES = frozenset(
    {
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "ExpiredTokenException",
        "ExpiredToken",
        "InvalidClientTokenId",
        "MissingAuthenticationTokenException",
        "IncompleteSignature",
    }
)
_FATAL_CLASS_NAMES = frozenset({"AuthenticationError", "PermissionDeniedError", "NotFoundError"})


def _iam_hint(model_id: str, region: str) -> str:
    return (
        f"allow bedrock:InvokeModel on arn:aws:bedrock:*::foundation-model/* (or the model's "
        f"ARN) and, for an inference profile, on arn:aws:bedrock:{region}:<account>:"
        f"inference-profile/{model_id if not model_id.startswith('arn:') else '<id>'}"
    )


def fatal_message(error: BaseException, model_id: str, region: str) -> str | None:
    """A message that says what to fix, for errors no retry can cure; None otherwise."""
    from botocore.exceptions import (
        ClientError,
        NoCredentialsError,
        NoRegionError,
        PartialCredentialsError,
    )
    from langchain_core.exceptions import ContextOverflowError

    credentials = (
        "set AWS credentials for the control plane (AWS_PROFILE, AWS_ACCESS_KEY_ID/"
        "AWS_SECRET_ACCESS_KEY, or an instance/task role), or run with --advisor rules"
    )
    if isinstance(error, ContextOverflowError):
        return None  # the prompt is too long this time: fall back, do not end the run
    if isinstance(error, NoCredentialsError | PartialCredentialsError):
        return f"Bedrock {model_id}: no usable AWS credentials ({error}); {credentials}"
    if isinstance(error, NoRegionError):
        return f"Bedrock {model_id}: no AWS region; set GRADPILOT_AWS_REGION"
    if isinstance(error, ClientError):
        info = error.response.get("Error", {})
        code = str(info.get("Code", ""))
        message = str(info.get("Message", "")) or str(error)
        where = f"Bedrock model {model_id} in {region}"
        if code == "AccessDeniedException":
            return (
                f"{where}: access denied ({message}). Enable access to this model in the Bedrock "
                f"console (Model access) in {region} and in the regions its inference profile "
                f"routes to; check GRADPILOT_AWS_REGION; and {_iam_hint(model_id, region)}."
            )
        if code in _CREDENTIAL_CODES:
            return f"{where}: AWS rejected the credentials ({code}: {message}); {credentials}"
        if code == "ResourceNotFoundException":
            return (
                f"{where}: not found ({message}). Check the model id and GRADPILOT_AWS_REGION "
                f"(`aws bedrock list-foundation-models --region {region}`; inference profiles: "
                f"`aws bedrock list-inference-profiles --region {region}`); the model may also "
                "be retired or need access in the Bedrock console."
            )
        if code == "ValidationException":
            lower = message.lower()
            if "on-demand throughput" in lower or "inference profile" in lower:
                return (
                    f"{where}: {message} Use a cross-region inference profile id instead, e.g. "
                    f"'bedrock:us.{model_id}' (or eu./apac./global.; "
                    f"`aws bedrock list-inference-profiles --region {region}`)."
                )
            if "model identifier" in lower or "model id" in lower:
                return (
                    f"{where}: {message} Check the model id and GRADPILOT_AWS_REGION "
                    f"(`aws bedrock list-foundation-models --region {region}`); models that "
                    "need an inference profile take an id with a us./eu./apac. prefix."
                )
            # Every other ValidationException is a request this model refuses every time
            # (e.g. no tool use): retrying or falling back per decision would hide it.
            return f"{where} refused the request: {message}"
        return None
    if type(error).__name__ in _FATAL_CLASS_NAMES:  # other providers' SDKs (openai, anthropic)
        return f"the LLM provider refused {model_id}: {error}"
    return None
