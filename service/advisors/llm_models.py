"""The chat models of the LLM advisor: one per role, built from advisor specs.

An advisor spec is ``provider:model``; ``bedrock:`` models (a model id, an inference profile id
or an ARN) get boto3 clients with adaptive retries and timeouts, shared per region, and one
``ChatBedrockConverse`` per model; other providers go through LangChain's ``init_chat_model``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from langchain_core.language_models import BaseChatModel

from service.advisors.llm_errors import fatal_message
from service.errors import AdvisorError, ConfigurationError
from service.schemas.advisors import BEDROCK_PROVIDERS
from service.settings import Settings

Role = Literal["advisor", "writer", "fixer", "report"]
ROLES: tuple[Role, ...] = ("advisor", "writer", "fixer", "report")

#: output budget per role: a whole model module needs room; an assessment does not
MAX_TOKENS: dict[Role, int] = {"advisor": 2048, "writer": 8192, "fixer": 8192, "report": 1024}
CONNECT_TIMEOUT_S = 10
#: application inference profile ARNs do not name the model's provider; gradpilot targets Claude
DEFAULT_ARN_PROVIDER = "anthropic"


def parse_spec(spec: str) -> tuple[str, str]:
    """``provider:model`` -> (provider, model); ``bedrock:`` aliases normalised."""
    provider, sep, model = spec.strip().partition(":")
    if not sep or not provider.strip() or not model.strip():
        raise ConfigurationError(
            f"advisor spec {spec!r} is not 'provider:model': use e.g. "
            "'bedrock:us.anthropic.claude-sonnet-4-5-20250929-v1:0'"
        )
    provider = provider.strip().lower()
    return ("bedrock" if provider in BEDROCK_PROVIDERS else provider), model.strip()


def _arn_region(model_id: str) -> str | None:
    # arn:aws:bedrock:<region>:<account>:<resource>; a client in another region cannot use it
    parts = model_id.split(":")
    return parts[3] if model_id.startswith("arn:") and len(parts) > 5 and parts[3] else None


def _arn_provider(model_id: str) -> str:
    """The provider ChatBedrockConverse needs for an ARN (it cannot parse one itself)."""
    resource = model_id.split(":", 5)[-1]
    kind, _, name = resource.partition("/")
    if kind in ("foundation-model", "inference-profile") and "." in name:
        from langchain_aws.utils import parse_model_provider

        return parse_model_provider(name)
    return DEFAULT_ARN_PROVIDER


def bedrock_clients(settings: Settings, region: str) -> tuple[Any, Any]:
    """(bedrock-runtime, bedrock) boto3 clients with adaptive retries and timeouts."""
    import boto3
    from botocore.config import Config

    config = Config(
        region_name=region,
        connect_timeout=CONNECT_TIMEOUT_S,
        read_timeout=settings.llm_timeout_s,
        # total_max_attempts counts the first call; botocore's max_attempts would not
        retries={"mode": "adaptive", "total_max_attempts": settings.llm_max_retries + 1},
        user_agent_extra="gradpilot",
        tcp_keepalive=True,
    )
    session = boto3.session.Session(region_name=region)
    return session.client("bedrock-runtime", config=config), session.client(
        "bedrock", config=config
    )


def bedrock_chat_model(
    model_id: str, region: str, runtime_client: Any, control_client: Any, *, max_tokens: int
) -> BaseChatModel:
    """``ChatBedrockConverse`` over the given clients (they carry retries and timeouts)."""
    from langchain_aws import ChatBedrockConverse

    kwargs: dict[str, Any] = {}
    if model_id.startswith("arn:"):
        kwargs["provider"] = _arn_provider(model_id)
    try:
        return ChatBedrockConverse(  # type: ignore[call-arg]  # ``model`` is model_id's alias
            model=model_id,
            region_name=region,
            client=runtime_client,
            bedrock_client=control_client,
            max_tokens=max_tokens,
            # One whole reply per call: Converse, not ConverseStream, even when a caller's
            # callbacks would ask for streaming; structured output needs the whole tool call.
            disable_streaming=True,
            **kwargs,
        )
    except Exception as e:
        # Only application inference profiles call AWS here (GetInferenceProfile).
        hint = fatal_message(e, model_id, region)
        raise AdvisorError(
            hint or f"could not set up the Bedrock model {model_id!r} in {region}: {e}"
        ) from e


def other_chat_model(provider: str, model: str, *, max_tokens: int) -> BaseChatModel:
    """A non-Bedrock chat model through LangChain's ``init_chat_model``."""
    try:
        from langchain.chat_models import init_chat_model
    except ImportError as e:
        raise ConfigurationError(
            f"advisor '{provider}:{model}' needs LangChain's init_chat_model and the provider's "
            f"integration: pip install langchain langchain-{provider.replace('_', '-')} "
            "(or use 'bedrock:<model id>', which needs nothing more)"
        ) from e
    try:
        chat = init_chat_model(model, model_provider=provider, max_tokens=max_tokens)
    except ImportError as e:
        raise ConfigurationError(
            f"advisor '{provider}:{model}' needs the provider's LangChain package: {e}"
        ) from e
    except ValueError as e:
        raise ConfigurationError(f"advisor '{provider}:{model}': {e}") from e
    return chat  # type: ignore[no-any-return]


@dataclass(frozen=True)
class RoleModels:
    """The chat model and the spec of each role, and the region the advisor's model runs in."""

    chats: dict[Role, BaseChatModel]
    specs: dict[Role, str]
    region: str


def role_models(spec: str, settings: Settings) -> RoleModels:
    """The models for ``spec``; the writer, fixer and report models come from the
    ``llm_*_model`` settings. Clients are shared per region, Bedrock models built once per id."""
    specs: dict[Role, str] = {
        "advisor": spec,
        "writer": settings.llm_writer_model or spec,
        "fixer": settings.llm_fixer_model or settings.llm_writer_model or spec,
        "report": settings.llm_report_model or spec,
    }
    clients: dict[str, tuple[Any, Any]] = {}  # per region, shared by the roles
    bedrock: dict[str, BaseChatModel] = {}  # per model id
    built: dict[tuple[str, int], BaseChatModel] = {}
    chats: dict[Role, BaseChatModel] = {}
    for role in ROLES:
        provider, model = parse_spec(specs[role])
        key = (f"{provider}:{model}", MAX_TOKENS[role])
        if key not in built:
            if provider == "bedrock":
                if model not in bedrock:
                    region = _arn_region(model) or settings.aws_region
                    if region not in clients:
                        clients[region] = bedrock_clients(settings, region)
                    bedrock[model] = bedrock_chat_model(
                        model, region, *clients[region], max_tokens=MAX_TOKENS[role]
                    )
                # A copy skips the validators: an application inference profile is
                # resolved (GetInferenceProfile) once per model, not once per role.
                built[key] = bedrock[model].model_copy(update={"max_tokens": MAX_TOKENS[role]})
            else:
                built[key] = other_chat_model(provider, model, max_tokens=MAX_TOKENS[role])
        chats[role] = built[key]
    region = _arn_region(parse_spec(spec)[1]) or settings.aws_region
    return RoleModels(chats, specs, region)


def describe(chat: BaseChatModel) -> str:
    """The model a chat model serves, as decisions record it."""
    for attr in ("model_id", "model_name", "model"):
        value = getattr(chat, attr, None)
        if isinstance(value, str) and value:
            return value
    return type(chat).__name__
