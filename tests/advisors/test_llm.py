"""The LLM advisor against the real ``ChatBedrockConverse``, with no network.

Most tests put a ``botocore.stub.Stubber`` on the advisor's own ``bedrock-runtime`` client and
script Converse replies (tool-use blocks, usage, stop reasons): langchain-aws's request
building, structured output and usage parsing all run for real. A Stubber answers before
botocore's retry handler runs, so the retry tests answer one layer lower instead, with a
``before-send`` hook that returns raw HTTP responses: botocore's adaptive retries then run
exactly as against AWS.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import botocore.session
import pytest
from botocore.awsrequest import AWSResponse
from botocore.credentials import CredentialResolver
from botocore.stub import Stubber

from service.advisors import llm_models as llm_module
from service.advisors._protocol import Advisor, AdvisorContext, Assessment, HistoryEntry, Usage
from service.advisors.llm import LLMAdvisor
from service.advisors.llm_models import bedrock_chat_model
from service.advisors.registry import advisor_factory
from service.errors import AdvisorError, ConfigurationError
from service.schemas.hyperparameters import Hyperparameters, clamp_changes
from service.settings import Settings
from tests.support.bedrock import (
    ASSESSMENT,
    BROKEN_DESIGN,
    FIXED_DESIGN,
    MODEL,
    SPEC,
    ScriptedBedrock,
    converse_reply,
    text_reply,
    tool_reply,
)
from tests.support.paths import EXAMPLES

pytestmark = pytest.mark.usefixtures("aws_env")  # tests/advisors/conftest.py

# --------------------------------------------------------------------------- model sources

FAILING_IN_JOB = """\
import torch
from torch import nn


class CNN(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, kernel_size=15, padding=1)
        self.fc = nn.Linear(16384, num_classes)

    def forward(self, x):
        x = torch.sigmoid(self.conv(x))
        return self.fc(torch.flatten(x, 1))
"""

REPAIRED = FAILING_IN_JOB.replace(
    "nn.Linear(16384, num_classes)", "nn.Linear(16 * 20 * 20, num_classes)"
)

JOB_TRACEBACK = """\
Traceback (most recent call last):
  File "/app/worker/training.py", line 212, in train_epoch
    outputs = model(inputs)
  File "model.py", line 13, in forward
    return self.fc(torch.flatten(x, 1))
RuntimeError: mat1 and mat2 shapes cannot be multiplied (64x6400 and 16384x10)
"""


# --------------------------------------------------------------------------- validation


def validate(source: str, input_shape: tuple[int, int, int], num_classes: int) -> Any:
    """The real sandbox, with the settings' default limits (what the graph's deps use)."""
    from service.sandbox import validate_model

    defaults = Settings.model_fields
    return validate_model(
        source,
        input_shape,
        num_classes,
        timeout_s=defaults["sandbox_timeout_s"].default,
        memory_mb=defaults["sandbox_memory_mb"].default,
        max_parameters=defaults["sandbox_max_parameters"].default,
    )


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", aws_region="us-east-1", llm_max_retries=2)


@pytest.fixture
def rules() -> Advisor:
    module = pytest.importorskip(
        "service.advisors.rules", reason="the rules advisor is not built yet"
    )
    return module.RulesAdvisor()  # type: ignore[no-any-return]


@pytest.fixture
def advisor(settings: Settings) -> LLMAdvisor:
    return LLMAdvisor.from_spec(SPEC, settings)


@pytest.fixture
def bedrock(advisor: LLMAdvisor) -> Iterator[ScriptedBedrock]:
    scripted = ScriptedBedrock(advisor.chat_model().client)  # type: ignore[attr-defined]
    yield scripted
    scripted.stubber.deactivate()


def diagnostics() -> dict[str, Any]:
    from service.diagnostics import Diagnostics, LayerStat

    return Diagnostics(
        epochs_seen=6,
        first_epoch=0,
        last_epoch=5,
        num_classes=10,
        chance_accuracy=0.1,
        optimizer="sgd",
        learning_rate_peak=0.1,
        train_loss_first=2.31,
        train_loss_last=2.302,
        val_loss_first=2.31,
        val_loss_last=2.303,
        val_accuracy_last=0.104,
        best_val_accuracy=0.11,
        grad_total_last=0.012,
        weight_tensors=9,
        first_layer=LayerStat(name="0.weight", grad_norm=1.3e-9, weight_norm=4.1),
        last_layer=LayerStat(name="18.weight", grad_norm=0.011, weight_norm=1.2),
        first_to_last_ratio=1.2e-7,
        vanishing=True,
        near_chance=True,
        plateau=True,
        issues=["vanishing_gradients", "near_chance", "plateau"],
        notes=["first/last gradient ratio 1.2e-07 < 1e-03"],
        layers=[LayerStat(name=f"per_tensor_table_{i}.weight", grad_norm=1e-3) for i in range(9)],
    ).model_dump(mode="json")


def context(**overrides: Any) -> AdvisorContext:
    values: dict[str, Any] = {
        "run_id": "run-1",
        "input_shape": (3, 32, 32),
        "num_classes": 10,
        "dataset": "digits",
        "source": (EXAMPLES / "flawed_digits.py").read_text(),
        "hyperparameters": Hyperparameters().model_dump(mode="json"),
        "diagnostics": diagnostics(),
        "history": [
            HistoryEntry(0, "start", 0, {}, 0.11, 2.303, "succeeded"),
        ],
        "jobs_left": 5,
        "epochs_left": 30,
    }
    values.update(overrides)
    return AdvisorContext(**values)


# --------------------------------------------------------------------------- assess, tune


def test_assess_returns_the_structured_assessment_and_its_usage(
    advisor: LLMAdvisor, bedrock: ScriptedBedrock
) -> None:
    bedrock.reply(tool_reply("HealthAssessment", ASSESSMENT, tokens=(2100, 240)))

    assessment, usage = advisor.assess(context())

    assert assessment == Assessment(
        gradient_issues=["vanishing gradients"],
        affected_layers=["0.weight"],
        severity=5,
        is_stable=False,
        stability_score=2,
        recommendation="redesign",
        explanation="Validation accuracy is at chance after 6 epochs. The first layer's gradient "
        "is 1.2e-7 of the last layer's. Remaining issues: near chance accuracy.",
    )
    assert (usage.input_tokens, usage.output_tokens, usage.model) == (2100, 240, SPEC)
    assert usage.fallback is False and usage.latency_ms >= 0

    request = bedrock.requests[0]
    assert request["modelId"] == MODEL
    assert request["toolConfig"]["toolChoice"] == {"tool": {"name": "HealthAssessment"}}
    system, user = bedrock.system_text(), bedrock.user_text()
    assert "build_model(input_shape, num_classes)" in system
    assert "torch.nn.functional" in system and "dataclasses" in system
    # compact diagnostics, not the per-tensor table; history; current source
    assert '"first_to_last_ratio": 1.2e-07' in user
    assert "per_tensor_table" not in user
    assert "0 | start | v0 |" in user
    assert "nn.Sigmoid()" in user
    bedrock.done()


def test_tune_returns_raw_changes_that_the_caller_clamps(
    advisor: LLMAdvisor, bedrock: ScriptedBedrock
) -> None:
    bedrock.reply(
        tool_reply(
            "HyperparameterProposal",
            {
                "rationale": "update ratio 1e-6 on the first layer: the step is far too small",
                "optimizer": {"value": "sgd", "reason": "keep"},
                "learning_rate": {"value": 5.0, "reason": "much larger steps"},
                "momentum": {"value": 0.9, "reason": "accumulate the tiny gradients"},
                "batch_size": {"value": 4096, "reason": "smoother gradients"},
            },
        )
    )

    change, usage = advisor.tune(context())

    assert change.changes == {
        "optimizer": "sgd",
        "learning_rate": 5.0,
        "momentum": 0.9,
        "batch_size": 4096,
    }
    assert change.reasons["momentum"] == "accumulate the tiny gradients"
    assert change.rationale.startswith("update ratio")
    assert usage.input_tokens == 1500
    # the graph clamps what the advisor proposed into the allowed ranges
    new, applied = clamp_changes(Hyperparameters(), change.changes)
    assert applied == {"learning_rate": 1.0, "momentum": 0.9, "batch_size": 1024}
    assert new.learning_rate == 1.0 and new.batch_size == 1024
    # the ranges were in the request
    user = bedrock.user_text()
    assert "learning_rate = 0.1   (allowed: 1e-06 .. 1)" in user
    assert "batch_size = 64   (allowed: 8 .. 1024)" in user
    bedrock.done()


def test_an_unknown_key_is_refused_and_asked_again_with_the_error(
    advisor: LLMAdvisor, bedrock: ScriptedBedrock
) -> None:
    bedrock.reply(
        tool_reply(
            "HyperparameterProposal",
            {"rationale": "regularise", "dropout": {"value": 0.5, "reason": "overfitting"}},
            tokens=(1500, 80),
        )
    ).reply(
        tool_reply(
            "HyperparameterProposal",
            {"rationale": "regularise", "weight_decay": {"value": 0.0005, "reason": "overfitting"}},
            tokens=(1700, 90),
        )
    )

    change, usage = advisor.tune(context())

    assert change.changes == {"weight_decay": 0.0005}
    assert (usage.input_tokens, usage.output_tokens, usage.fallback) == (3200, 170, False)
    assert "dropout" not in bedrock.user_text(0)
    retry = bedrock.user_text(1)
    assert "Your previous reply could not be used" in retry
    assert "dropout" in retry and "Extra inputs are not permitted" in retry
    bedrock.done()


# --------------------------------------------------------------------------- writer / fixer


@pytest.mark.slow  # two sandbox validations, a few seconds each
def test_writer_then_fixer_through_the_graphs_validation_loop(
    advisor: LLMAdvisor, bedrock: ScriptedBedrock
) -> None:
    """The lead's writer -> sandbox -> fixer loop (``AgentNodes._write_validated``) with this
    advisor: the first proposal fails validation, the fixer sees the error and fixes it."""
    from service.agent.deps import AgentDeps
    from service.agent.nodes import AgentNodes

    bedrock.reply(
        tool_reply(
            "ArchitectureDesign",
            {
                "rationale": "ReLU and BatchNorm instead of eight sigmoids",
                "expected_gradient_effect": "first/last ratio within 1e-2..1e2",
                "source": "```python\n" + BROKEN_DESIGN + "```",
            },
            tokens=(2600, 700),
        )
    ).reply(
        tool_reply(
            "ArchitectureDesign",
            {
                "rationale": "same design; sizes derived from the input shape",
                "expected_gradient_effect": "first/last ratio within 1e-2..1e2",
                "source": FIXED_DESIGN,
            },
            tokens=(3400, 650),
        )
    )
    deps = AgentDeps(
        settings=None,
        sessions=None,
        executor=None,
        artifacts=None,  # type: ignore[arg-type]
        advisor_for=lambda spec: advisor,
        validate=validate,
        fixer_rounds=3,
    )
    run = SimpleNamespace(advisor=SPEC, dataset={"name": "digits"})

    written = AgentNodes(deps)._write_validated(run, context())  # type: ignore[arg-type]

    assert written is not None
    source, rationale, parameters, usage, author = written
    assert source == FIXED_DESIGN
    assert "derived from the input shape" in rationale and "Expected effect" in rationale
    assert parameters and parameters > 0
    assert (usage.input_tokens, usage.output_tokens, usage.fallback) == (6000, 1350, False)
    assert author == SPEC
    # the fixer saw its previous (unfenced) source and the validation error
    fixer_request = bedrock.user_text(1)
    assert "It failed validation in the sandbox" in fixer_request
    assert "mat1 and mat2 shapes cannot be multiplied" in fixer_request
    assert "nn.Linear(64 * 16 * 16, num_classes)" in fixer_request
    assert "```python\n```" not in fixer_request
    assert bedrock.requests[0]["inferenceConfig"]["maxTokens"] == llm_module.MAX_TOKENS["writer"]
    bedrock.done()


@pytest.mark.slow  # a sandbox validation
def test_repair_of_a_model_whose_job_failed(advisor: LLMAdvisor, bedrock: ScriptedBedrock) -> None:
    bedrock.reply(
        tool_reply(
            "ModelRepair",
            {
                "explanation": "kernel 15, padding 1: 20x20 maps, 6400 features, not 16384",
                "source": REPAIRED,
            },
        )
    )

    repair, usage = advisor.repair(context(source=FAILING_IN_JOB), JOB_TRACEBACK)

    assert repair is not None and repair.source == REPAIRED
    assert "6400" in repair.explanation
    assert validate(repair.source, (3, 32, 32), 10).ok
    assert usage.model == SPEC and usage.output_tokens == 300
    user = bedrock.user_text()
    assert "The current model failed with this error" in user
    assert "(64x6400 and 16384x10)" in user
    assert "nn.Linear(16384, num_classes)" in user
    assert bedrock.requests[0]["toolConfig"]["toolChoice"] == {"tool": {"name": "ModelRepair"}}
    bedrock.done()


def test_rejection_feedback_is_in_the_next_request(
    advisor: LLMAdvisor, bedrock: ScriptedBedrock
) -> None:
    bedrock.reply(
        tool_reply(
            "ArchitectureDesign",
            {"rationale": "smaller", "expected_gradient_effect": "same", "source": FIXED_DESIGN},
        )
    )
    feedback = "Keep it under 50k parameters and do not use max pooling."

    advisor.write_architecture(context(feedback=feedback))

    user = bedrock.user_text()
    assert "The user's feedback on your previous proposal" in user
    assert feedback in user
    bedrock.done()


def test_summarize_uses_plain_text(advisor: LLMAdvisor, bedrock: ScriptedBedrock) -> None:
    bedrock.reply(
        text_reply("The sigmoid stack starved its first layers of gradient.", (3000, 120))
    )

    text, usage = advisor.summarize(context(), "# Report\n<!-- summary -->\n| job | acc |")

    assert text == "The sigmoid stack starved its first layers of gradient."
    assert (usage.input_tokens, usage.output_tokens) == (3000, 120)
    assert "toolConfig" not in bedrock.requests[0]
    assert "| job | acc |" in bedrock.user_text()
    bedrock.done()


def test_token_accounting_sums_over_calls(advisor: LLMAdvisor, bedrock: ScriptedBedrock) -> None:
    bedrock.reply(tool_reply("HealthAssessment", ASSESSMENT, tokens=(2000, 200)))
    bedrock.reply(
        tool_reply(
            "HyperparameterProposal",
            {"rationale": "r", "learning_rate": {"value": 0.01, "reason": "r"}},
            tokens=(2200, 150),
        )
    )
    _, first = advisor.assess(context())
    _, second = advisor.tune(context())
    total = first.add(second)
    assert (total.input_tokens, total.output_tokens) == (4200, 350)
    assert total.latency_ms == first.latency_ms + second.latency_ms
    bedrock.done()


# --------------------------------------------------------------------------- malformed replies


def test_malformed_replies_are_retried_then_the_rules_advisor_answers(
    advisor: LLMAdvisor, bedrock: ScriptedBedrock, rules: Advisor
) -> None:
    cut_off = {
        "toolUse": {
            "toolUseId": "t2",
            "name": "HealthAssessment",
            "input": {"gradient_analysis": {}},
        }
    }
    bad_severity = copy.deepcopy(ASSESSMENT)
    bad_severity["gradient_analysis"]["severity"] = 9
    bedrock.reply(text_reply("I think the model is fine.", (1800, 20)))
    bedrock.reply(converse_reply([cut_off], "max_tokens", (1900, 2048)))
    bedrock.reply(tool_reply("HealthAssessment", bad_severity, tokens=(2000, 200)))

    assessment, usage = advisor.assess(context())

    expected, _ = rules.assess(context())
    assert assessment == expected
    assert usage.fallback is True
    # the failed tries' tokens are counted
    assert (usage.input_tokens, usage.output_tokens) == (5700, 2268)
    assert len(bedrock.requests) == 3
    assert "did not call the `HealthAssessment` tool" in bedrock.user_text(1)
    assert "I think the model is fine." in bedrock.user_text(1)
    assert "Field required" in bedrock.user_text(2)
    assert "cut off at the output limit" in bedrock.user_text(2)
    bedrock.done()


def test_an_out_of_range_field_is_shown_to_the_model(
    advisor: LLMAdvisor, bedrock: ScriptedBedrock
) -> None:
    bad_severity = copy.deepcopy(ASSESSMENT)
    bad_severity["gradient_analysis"]["severity"] = 9
    bedrock.reply(tool_reply("HealthAssessment", bad_severity, tokens=(2000, 200)))
    bedrock.reply(tool_reply("HealthAssessment", ASSESSMENT, tokens=(2300, 210)))

    assessment, usage = advisor.assess(context())

    assert assessment.severity == 5 and usage.fallback is False
    assert (usage.input_tokens, usage.output_tokens) == (4300, 410)
    retry = bedrock.user_text(1)
    assert "less than or equal to 5" in retry and '"severity": 9' in retry
    bedrock.done()


def test_a_prompt_too_long_for_the_model_falls_back(
    advisor: LLMAdvisor, bedrock: ScriptedBedrock, rules: Advisor
) -> None:
    bedrock.error("ValidationException", "Input is too long for requested model.", 400)
    change, usage = advisor.tune(context())
    assert usage.fallback is True
    assert change == rules.tune(context())[0]
    bedrock.done()


# --------------------------------------------------------------------------- fail fast


@pytest.mark.parametrize(
    ("code", "status", "message", "hints"),
    [
        (
            "AccessDeniedException",
            403,
            "You don't have access to the model with the specified model ID.",
            ["Model access", "us-east-1", "bedrock:InvokeModel", "inference-profile/" + MODEL],
        ),
        (
            "ValidationException",
            400,
            "The provided model identifier is invalid.",
            ["list-foundation-models", "GRADPILOT_AWS_REGION"],
        ),
        (
            "ValidationException",
            400,
            "Invocation of model ID anthropic.claude-sonnet-4-5-20250929-v1:0 with on-demand "
            "throughput isn't supported. Retry your request with the ID or ARN of an inference "
            "profile that contains this model.",
            ["cross-region inference profile", "bedrock:us."],
        ),
        ("ResourceNotFoundException", 404, "Model not found.", ["GRADPILOT_AWS_REGION"]),
        (
            "UnrecognizedClientException",
            403,
            "The security token included in the request is invalid.",
            ["AWS_PROFILE", "credentials"],
        ),
    ],
)
def test_configuration_errors_fail_fast_with_what_to_fix(
    advisor: LLMAdvisor,
    bedrock: ScriptedBedrock,
    code: str,
    status: int,
    message: str,
    hints: list[str],
) -> None:
    bedrock.error(code, message, status)
    with pytest.raises(AdvisorError) as raised:
        advisor.assess(context())
    for hint in hints:
        assert hint in raised.value.message
    assert len(bedrock.requests) == 1  # no retry, no fallback
    bedrock.done()


def test_missing_credentials_fail_fast() -> None:
    """A client whose credential chain finds nothing: signing fails before any request."""
    core = botocore.session.Session()
    core.register_component("credential_provider", CredentialResolver(providers=[]))
    session = boto3.session.Session(botocore_session=core, region_name="us-east-1")
    runtime, control = session.client("bedrock-runtime"), session.client("bedrock")
    chat = bedrock_chat_model(MODEL, "us-east-1", runtime, control, max_tokens=256)
    advisor = LLMAdvisor(SPEC, chat)

    with pytest.raises(AdvisorError, match="no usable AWS credentials"):
        advisor.assess(context())


# --------------------------------------------------------------------------- retries


class HttpBedrock:
    """Raw HTTP answers under botocore (after signing, before the socket): its retry handler
    sees them exactly as it would see AWS's."""

    def __init__(
        self, client: Any, answers: list[tuple[int, dict[str, Any], dict[str, str]]]
    ) -> None:
        self.answers = list(answers)
        self.sent: list[dict[str, Any]] = []
        client.meta.events.register("before-send.bedrock-runtime.Converse", self.send)

    def send(self, request: Any, **_: Any) -> AWSResponse:
        self.sent.append(json.loads(request.body))
        if not self.answers:
            raise AssertionError("more requests than scripted answers")
        status, body, headers = self.answers.pop(0)
        raw = SimpleNamespace(stream=lambda **_: iter([json.dumps(body).encode()]))
        return AWSResponse(
            request.url, status, {"content-type": "application/json", **headers}, raw
        )


THROTTLED = (
    429,
    {"message": "Too many requests, please wait before trying again."},
    {"x-amzn-ErrorType": "ThrottlingException"},
)
UNAVAILABLE = (
    503,
    {"message": "Service unavailable"},
    {"x-amzn-ErrorType": "ServiceUnavailableException"},
)


@pytest.fixture
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    slept: list[float] = []
    monkeypatch.setattr("time.sleep", lambda seconds: slept.append(seconds))
    return slept


def test_throttling_and_5xx_are_retried_with_backoff(
    advisor: LLMAdvisor, no_sleep: list[float]
) -> None:
    http = HttpBedrock(
        advisor.chat_model().client,  # type: ignore[attr-defined]
        [
            THROTTLED,
            UNAVAILABLE,
            (200, tool_reply("HealthAssessment", ASSESSMENT, (2000, 200)), {}),
        ],
    )

    assessment, usage = advisor.assess(context())

    assert assessment.recommendation == "redesign" and usage.fallback is False
    assert (usage.input_tokens, usage.output_tokens) == (2000, 200)
    assert len(http.sent) == 3
    assert len(no_sleep) >= 2 and all(s >= 0 for s in no_sleep)  # jittered backoff, not slept here


def test_throttling_beyond_the_retries_falls_back_to_rules(
    advisor: LLMAdvisor, rules: Advisor, no_sleep: list[float], settings: Settings
) -> None:
    http = HttpBedrock(advisor.chat_model().client, [THROTTLED] * 10)  # type: ignore[attr-defined]

    change, usage = advisor.tune(context())

    assert len(http.sent) == settings.llm_max_retries + 1  # botocore's attempts, once
    assert usage.fallback is True
    assert change == rules.tune(context())[0]


# --------------------------------------------------------------------------- construction


def test_from_spec_builds_bedrock_with_adaptive_retries_and_timeouts(settings: Settings) -> None:
    settings = settings.model_copy(
        update={
            "llm_writer_model": "bedrock:us.anthropic.claude-opus-4-1-20250805-v1:0",
            "llm_report_model": "bedrock:us.anthropic.claude-haiku-4-5-20251001-v1:0",
            "llm_timeout_s": 90.0,
        }
    )
    advisor = LLMAdvisor.from_spec(SPEC, settings)

    chat = advisor.chat_model()
    config = chat.client.meta.config  # type: ignore[attr-defined]
    assert config.retries == {
        "mode": "adaptive",
        "total_max_attempts": settings.llm_max_retries + 1,
    }
    assert (config.read_timeout, config.connect_timeout) == (90.0, llm_module.CONNECT_TIMEOUT_S)
    assert chat.client.meta.region_name == "us-east-1"  # type: ignore[attr-defined]
    assert advisor.name == SPEC and isinstance(advisor, Advisor)
    writer = advisor.chat_model("writer")
    assert writer.model_id == "us.anthropic.claude-opus-4-1-20250805-v1:0"  # type: ignore[attr-defined]
    assert advisor.chat_model("fixer") is writer  # the fixer defaults to the writer
    assert advisor.chat_model("report").model_id.startswith("us.anthropic.claude-haiku")  # type: ignore[attr-defined]
    assert advisor.spec_of("writer") == settings.llm_writer_model
    # one client per region, shared by every role
    assert writer.client is chat.client  # type: ignore[attr-defined]


def test_the_registry_builds_llm_advisors_for_bedrock_specs(settings: Settings) -> None:
    get = advisor_factory(settings)
    advisor = get(SPEC)
    assert isinstance(advisor, LLMAdvisor) and get(SPEC) is advisor


def test_application_inference_profile_arn(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    arn = "arn:aws:bedrock:eu-west-1:123456789012:application-inference-profile/a1b2c3d4e5f6"
    base = "anthropic.claude-sonnet-4-5-20250929-v1:0"
    real_clients = llm_module.bedrock_clients
    stubbers: list[Stubber] = []

    def clients(settings: Settings, region: str) -> tuple[Any, Any]:
        runtime, control = real_clients(settings, region)
        stubber = Stubber(control)
        stubber.add_response(
            "get_inference_profile",
            {
                "inferenceProfileName": "gradpilot",
                "inferenceProfileArn": arn,
                "inferenceProfileId": "a1b2c3d4e5f6",
                "status": "ACTIVE",
                "type": "APPLICATION",
                "models": [{"modelArn": f"arn:aws:bedrock:eu-west-1::foundation-model/{base}"}],
            },
            {"inferenceProfileIdentifier": arn},
        )
        stubber.activate()
        stubbers.append(stubber)
        return runtime, control

    monkeypatch.setattr(llm_module, "bedrock_clients", clients)
    advisor = LLMAdvisor.from_spec(f"bedrock:{arn}", settings)

    chat = advisor.chat_model()
    assert chat.provider == "anthropic" and chat.base_model_id == base  # type: ignore[attr-defined]
    assert chat.client.meta.region_name == "eu-west-1"  # type: ignore[attr-defined]
    bedrock = ScriptedBedrock(chat.client)  # type: ignore[attr-defined]
    bedrock.reply(tool_reply("HealthAssessment", ASSESSMENT))
    assessment, _ = advisor.assess(context())
    assert assessment.severity == 5
    assert bedrock.requests[0]["modelId"] == arn
    bedrock.done()
    assert len(stubbers) == 1  # one region, one pair of clients


def test_arn_providers() -> None:
    assert (
        llm_module._arn_provider(
            "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.meta.llama3-3-70b-instruct-v1:0"
        )
        == "meta"
    )
    assert (
        llm_module._arn_provider(
            "arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-3-5-haiku-20241022-v1:0"
        )
        == "anthropic"
    )
    assert (
        llm_module._arn_region("arn:aws:bedrock:ap-southeast-2:1:application-inference-profile/x")
        == "ap-southeast-2"
    )
    assert llm_module._arn_region(MODEL) is None


def test_bad_specs_and_missing_providers_are_configuration_errors(settings: Settings) -> None:
    with pytest.raises(ConfigurationError, match="provider:model"):
        LLMAdvisor.from_spec("claude", settings)
    try:
        import langchain  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigurationError, match="pip install langchain langchain-openai"):
            LLMAdvisor.from_spec("openai:gpt-4o", settings)


def test_usage_add_keeps_the_fallback_flag() -> None:
    total = Usage(10, 2, 5, SPEC).add(Usage(3, 1, 7, "rules", fallback=True))
    assert (total.input_tokens, total.output_tokens, total.latency_ms, total.fallback) == (
        13,
        3,
        12,
        True,
    )
