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
from typing import Any, TypeVar

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
from service.advisors.llm_errors import fatal_message
from service.advisors.llm_models import Role, describe, role_models
from service.advisors.llm_schemas import (
    ArchitectureDesign,
    HealthAssessment,
    HyperparameterProposal,
    ModelRepair,
)
from service.errors import AdvisorError
from service.settings import Settings

log = logging.getLogger(__name__)

S = TypeVar("S", bound=BaseModel)
T = TypeVar("T")


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
        specs: Mapping[Role, str] | None = None,
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
            spec = specs.get(role) or (name if chat is model else describe(chat))
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
        models = role_models(spec, settings)
        return cls(
            spec,
            models.chats["advisor"],
            writer=models.chats["writer"],
            fixer=models.chats["fixer"],
            report=models.chats["report"],
            specs=models.specs,
            region=models.region,
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
            if error is None and isinstance(parsed, schema):
                usage.latency_ms = _ms(t0)
                return parsed, usage
            if error is None:
                error = f"the reply did not call the `{schema.__name__}` tool"
            if _stop_reason(raw) == "max_tokens":
                error = f"{error}\n(the reply was cut off at the output limit: be more concise)"
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
