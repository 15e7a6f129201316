"""The LLM advisor: any LangChain chat model behind the ``Advisor`` protocol; Claude on Amazon
Bedrock (``ChatBedrockConverse``) by default.

Every decision is one structured call (``with_structured_output(schema, include_raw=True)``,
i.e. a forced tool call) into a Pydantic model of ``service.advisors.llm_schemas``, whose
reply is converted into the protocol's types. Failures are sorted into three kinds:

* **Transient** (throttling, 5xx, timeouts, dropped connections): retried inside botocore with
  its ``adaptive`` retry mode (jittered exponential backoff plus a client-side rate limiter),
  ``settings.llm_max_retries`` times. Nothing else retries them, so retries never multiply.
* **An unusable reply** (no tool call, a reply that fails the schema): asked again, up to
  ``invalid_reply_retries`` more times, with the validation error and the rejected reply shown
  to the model. After that — and after a transient error that outlived botocore's retries, or
  a prompt too long for the model — the decision falls back to the rules advisor and its
  ``Usage`` says so (``fallback=True``, tokens of the failed tries included), so a run never
  dies because the LLM misbehaved.
* **Configuration** (access denied, unknown model id, a model that needs an inference
  profile, missing or invalid credentials): no retry and no fallback. ``AdvisorError`` is
  raised with a message that says what to fix; the controller fails the run with it
  (``run.error``). Falling back silently would run a whole "LLM" run on rules while the
  user believes Claude is advising it.

Separate models may be named for the writer, the fixer and the report
(``GRADPILOT_LLM_WRITER_MODEL``, ``…_FIXER_MODEL``, ``…_REPORT_MODEL``); each is an advisor spec.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from pydantic import BaseModel

from service.advisors import prompts
from service.advisors._protocol import (
    Advisor,
    AdvisorContext,
    ArchitectureProposal,
    Assessment,
    CodeRepair,
    HyperparameterChange,
    Usage,
)
from service.advisors.llm_schemas import (
    ArchitectureDesign,
    HealthAssessment,
    HyperparameterProposal,
    ModelRepair,
)
from service.errors import AdvisorError, ConfigurationError
from service.settings import Settings

log = logging.getLogger(__name__)

Role = Literal["advisor", "writer", "fixer", "report"]
ROLES: tuple[Role, ...] = ("advisor", "writer", "fixer", "report")

#: output budget per role: a whole model module needs room; an assessment does not
MAX_TOKENS: dict[Role, int] = {"advisor": 2048, "writer": 8192, "fixer": 8192, "report": 1024}
CONNECT_TIMEOUT_S = 10
BEDROCK_PROVIDERS = frozenset({"bedrock", "bedrock_converse", "aws"})
#: application inference profile ARNs do not name the model's provider; gradpilot targets Claude
DEFAULT_ARN_PROVIDER = "anthropic"

S = TypeVar("S", bound=BaseModel)
T = TypeVar("T")


# --------------------------------------------------------------------------- specs and models


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


# --------------------------------------------------------------------------- error triage

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


# --------------------------------------------------------------------------- the advisor


@dataclass
class _Model:
    """One role's chat model, its spec (what decisions record) and where it runs."""

    chat: BaseChatModel
    spec: str
    region: str = ""
    _structured: dict[type[BaseModel], Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def model_id(self) -> str:
        return self.spec.partition(":")[2] or self.spec

    def structured(self, schema: type[BaseModel]) -> Any:
        with self._lock:
            if schema not in self._structured:
                self._structured[schema] = self.chat.with_structured_output(
                    schema, include_raw=True
                )
            return self._structured[schema]


def _tokens(message: Any) -> tuple[int, int]:
    meta = getattr(message, "usage_metadata", None) or {}
    return int(meta.get("input_tokens", 0) or 0), int(meta.get("output_tokens", 0) or 0)


def _reply_excerpt(message: Any) -> str:
    """What the model said, to quote back to it: its tool arguments, else its text."""
    if not isinstance(message, AIMessage):
        return ""
    if message.tool_calls:
        return json.dumps(message.tool_calls[0].get("args", {}), default=str)
    if isinstance(message.content, str):
        return message.content
    texts = [b.get("text", "") for b in message.content if isinstance(b, dict)]
    return "\n".join(t for t in texts if t)


def _stop_reason(message: Any) -> str:
    metadata = getattr(message, "response_metadata", None) or {}
    return str(metadata.get("stopReason") or metadata.get("stop_reason") or "")


def _text(message: Any) -> str:
    content = getattr(message, "content", "")
    if isinstance(content, str):
        return content
    return "".join(
        b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text"
    )


class LLMAdvisor:
    """An ``Advisor`` over LangChain chat models (one per role; they may all be the same).

    ``name`` is the run's advisor spec. ``fallback`` answers when the LLM cannot (default: the
    rules advisor, imported on first use).
    """

    def __init__(
        self,
        name: str,
        model: BaseChatModel,
        *,
        writer: BaseChatModel | None = None,
        fixer: BaseChatModel | None = None,
        report: BaseChatModel | None = None,
        specs: Mapping[str, str] | None = None,
        region: str = "",
        invalid_reply_retries: int = 2,
        fallback: Advisor | None = None,
    ) -> None:
        specs = dict(specs or {})
        chats: dict[Role, BaseChatModel] = {
            "advisor": model,
            "writer": writer or model,
            "fixer": fixer or writer or model,
            "report": report or model,
        }
        self.name = name
        self._models: dict[Role, _Model] = {}
        for role, chat in chats.items():
            spec = specs.get(role) or (name if chat is model else _describe(chat))
            where = getattr(chat, "region_name", None) or region
            self._models[role] = _Model(chat, spec, where if isinstance(where, str) else region)
        self.invalid_reply_retries = invalid_reply_retries
        self._fallback = fallback
        self._fallback_lock = threading.Lock()

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_spec(cls, spec: str, settings: Settings, **kwargs: Any) -> LLMAdvisor:
        """Build from ``bedrock:<model id | inference profile id | ARN>`` or ``provider:model``;
        the writer, fixer and report models come from the ``llm_*_model`` settings."""
        specs: dict[str, str] = {
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
        return cls(
            spec,
            chats["advisor"],
            writer=chats["writer"],
            fixer=chats["fixer"],
            report=chats["report"],
            specs=specs,
            region=region,
            **kwargs,
        )

    def chat_model(self, role: Role = "advisor") -> BaseChatModel:
        """The chat model that serves ``role`` (tests attach a botocore Stubber to its client)."""
        return self._models[role].chat

    def spec_of(self, role: Role) -> str:
        return self._models[role].spec

    # ------------------------------------------------------------------ the protocol

    def assess(self, ctx: AdvisorContext) -> tuple[Assessment, Usage]:
        reply, usage = self._ask("advisor", HealthAssessment, prompts.assess_prompt(ctx))
        if reply is None:
            return self._fall_back(usage, lambda rules: rules.assess(ctx))
        return reply.to_protocol(), usage

    def tune(self, ctx: AdvisorContext) -> tuple[HyperparameterChange, Usage]:
        """Raw proposed changes; the caller validates and clamps them (``clamp_changes``)."""
        reply, usage = self._ask("advisor", HyperparameterProposal, prompts.tune_prompt(ctx))
        if reply is None:
            return self._fall_back(usage, lambda rules: rules.tune(ctx))
        return reply.to_protocol(), usage

    def write_architecture(
        self,
        ctx: AdvisorContext,
        *,
        previous_error: str | None = None,
        previous_source: str | None = None,
    ) -> tuple[ArchitectureProposal, Usage]:
        if previous_error:
            role: Role = "fixer"
            prompt = prompts.fixer_prompt(ctx, previous_error, previous_source)
        else:
            role, prompt = "writer", prompts.writer_prompt(ctx)
        reply, usage = self._ask(role, ArchitectureDesign, prompt)
        if reply is None:
            return self._fall_back(
                usage,
                lambda rules: rules.write_architecture(
                    ctx, previous_error=previous_error, previous_source=previous_source
                ),
            )
        return reply.to_protocol(), usage

    def repair(self, ctx: AdvisorContext, error: str) -> tuple[CodeRepair | None, Usage]:
        reply, usage = self._ask("fixer", ModelRepair, prompts.repair_prompt(ctx, error))
        if reply is None:
            return self._fall_back(usage, lambda rules: rules.repair(ctx, error))
        return reply.to_protocol(), usage

    def summarize(self, ctx: AdvisorContext, report_markdown: str) -> tuple[str, Usage]:
        model = self._models["report"]
        usage = Usage(model=model.spec)
        t0 = time.monotonic()
        messages: list[BaseMessage] = [
            SystemMessage(prompts.SYSTEM_PROMPT),
            HumanMessage(prompts.report_prompt(ctx, report_markdown)),
        ]
        try:
            reply = model.chat.invoke(messages)
        except Exception as e:  # noqa: BLE001 - sorted by fatal_message
            self._raise_if_fatal(e, model)
            log.warning("the report model failed (%s); the rules advisor writes the summary", e)
            usage.latency_ms = _ms(t0)
            return self._fall_back(usage, lambda rules: rules.summarize(ctx, report_markdown))
        usage.input_tokens, usage.output_tokens = _tokens(reply)
        usage.latency_ms = _ms(t0)
        text = _text(reply).strip()
        if not text:
            return self._fall_back(usage, lambda rules: rules.summarize(ctx, report_markdown))
        return text, usage

    # ------------------------------------------------------------------ machinery

    def _ask(self, role: Role, schema: type[S], prompt: str) -> tuple[S | None, Usage]:
        """One structured decision: retried with the error shown when the reply is unusable;
        None (and the usage so far) when it stays unusable or the call fails transiently."""
        model = self._models[role]
        runnable = model.structured(schema)
        usage = Usage(model=model.spec)
        t0 = time.monotonic()
        note = ""
        for attempt in range(1 + self.invalid_reply_retries):
            messages: list[BaseMessage] = [
                SystemMessage(prompts.SYSTEM_PROMPT),
                # The correction goes into the one user turn, not as a reply to the rejected
                # tool call: Converse then needs no toolResult bookkeeping, and the model sees
                # the whole task again with the error.
                HumanMessage(prompt + note),
            ]
            try:
                out = runnable.invoke(messages)
            except Exception as e:  # noqa: BLE001 - sorted by fatal_message
                self._raise_if_fatal(e, model)
                log.warning(
                    "%s call to %s failed after the client's retries (%s: %s)",
                    role,
                    model.spec,
                    type(e).__name__,
                    e,
                )
                break
            raw = out.get("raw")
            tin, tout = _tokens(raw)
            usage.input_tokens += tin
            usage.output_tokens += tout
            parsed, error = out.get("parsed"), out.get("parsing_error")
            if error is None and not isinstance(parsed, schema):
                error = f"the reply did not call the `{schema.__name__}` tool"
            if error is not None and _stop_reason(raw) == "max_tokens":
                error = f"{error}\n(the reply was cut off at the output limit: be more concise)"
            if error is None:
                usage.latency_ms = _ms(t0)
                return parsed, usage  # type: ignore[return-value]
            log.warning(
                "unusable %s reply from %s (try %d of %d): %s",
                schema.__name__,
                model.spec,
                attempt + 1,
                1 + self.invalid_reply_retries,
                _first_line(str(error)),
            )
            note = prompts.correction_note(str(error), _reply_excerpt(raw), schema.__name__)
        usage.latency_ms = _ms(t0)
        return None, usage

    def _raise_if_fatal(self, error: BaseException, model: _Model) -> None:
        message = fatal_message(error, model.model_id, model.region or "the configured region")
        if message:
            raise AdvisorError(message) from error

    def _rules(self) -> Advisor:
        with self._fallback_lock:
            if self._fallback is None:
                from service.advisors.rules import RulesAdvisor

                self._fallback = RulesAdvisor()
            return self._fallback

    def _fall_back(
        self, spent: Usage, call: Callable[[Advisor], tuple[T, Usage]]
    ) -> tuple[T, Usage]:
        """The rules advisor answers; the usage keeps the failed tries' tokens and time."""
        rules = self._rules()
        t0 = time.monotonic()
        result, rules_usage = call(rules)
        log.warning("%s: the rules advisor answered instead of %s", self.name, spent.model)
        return result, Usage(
            input_tokens=spent.input_tokens + rules_usage.input_tokens,
            output_tokens=spent.output_tokens + rules_usage.output_tokens,
            latency_ms=spent.latency_ms + max(rules_usage.latency_ms, _ms(t0)),
            model=rules_usage.model or getattr(rules, "name", "rules"),
            fallback=True,
        )


def _ms(t0: float) -> int:
    return int(round((time.monotonic() - t0) * 1000))


def _first_line(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip())[:300]


def _describe(chat: BaseChatModel) -> str:
    for attr in ("model_id", "model_name", "model"):
        value = getattr(chat, attr, None)
        if isinstance(value, str) and value:
            return value
    return type(chat).__name__
