"""A whole approval-gated run through the agent graph with Claude on a stubbed Bedrock.

The real API (in process), controller, LangGraph graph with its SQLite checkpointer, sandbox,
LLM advisor and ``ChatBedrockConverse`` run; Bedrock's replies are scripted with a botocore
Stubber, and the worker's side is played through the worker REST endpoints (epoch summaries
and the job's finish, with the job's own token) instead of training, so that the test takes
seconds: a vanishing-gradient segment, then a healthy one, then one that reaches the target.

assess -> redesign (the first proposal fails the sandbox, the fixer's passes) -> tune ->
awaiting approval -> rejected with feedback (the feedback is in the next Bedrock request) ->
redesign again -> approved -> train -> assess -> tune -> train -> target reached -> report.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from service.advisors.llm import LLMAdvisor
from service.advisors.rules import RulesAdvisor
from service.agent.checkpointer import open_checkpointer
from service.agent.deps import AgentDeps
from service.agent.graph import build_graph
from service.controller.reconcile import Controller
from service.db.models import Decision, Job, Run
from service.sandbox import Sandbox, SandboxLimits
from service.settings import Settings
from tests.support.bedrock import (
    ASSESSMENT,
    BROKEN_DESIGN,
    FIXED_DESIGN,
    SPEC,
    ScriptedBedrock,
    text_reply,
    tool_reply,
)
from tests.support.fake_executor import FakeExecutor
from tests.support.paths import EXAMPLES

pytestmark = [
    pytest.mark.slow,  # four sandbox validations and a dozen graph steps
    pytest.mark.usefixtures("aws_env"),  # fake credentials, no AWS config
]

GROUPNORM_DESIGN = FIXED_DESIGN.replace("nn.BatchNorm2d(32)", "nn.GroupNorm(8, 32)").replace(
    "nn.BatchNorm2d(64)", "nn.GroupNorm(8, 64)"
)
FEEDBACK = "Use GroupNorm instead of BatchNorm: we fine-tune with batch size 2 later."


def summaries(
    spec: dict[str, Any], accuracies: list[float], first_to_last: float
) -> list[dict[str, Any]]:
    """What a worker would post for one segment: losses, accuracies, gradient norms."""
    out = []
    for i, acc in enumerate(accuracies):
        last = 0.02
        first = last * first_to_last
        loss = 2.303 if acc < 0.15 else max(0.05, 1.6 * (1 - acc))
        out.append(
            {
                "epoch": spec["epoch_start"] + i,
                "train_loss": loss,
                "val_loss": loss * 1.05,
                "train_accuracy": min(1.0, acc + 0.01),
                "val_accuracy": acc,
                "learning_rate": spec["hyperparameters"]["learning_rate"],
                "grad_total": {"mean": last * 1.2, "max": last * 2, "min": last * 0.5},
                "grad_layers": {
                    "0.weight": {"mean": first, "max": first * 2, "min": first / 2},
                    "4.weight": {"mean": (first * last) ** 0.5, "max": last, "min": first},
                    "9.weight": {"mean": last, "max": last * 2, "min": last / 2},
                },
                "weight_norms": {"0.weight": 4.0, "4.weight": 5.0, "9.weight": 1.5},
                "steps": 23,
                "seconds": 1.0,
                "samples_per_second": 1400.0,
            }
        )
    return out


@dataclass
class Harness:
    api: TestClient
    controller: Controller
    executor: FakeExecutor
    bedrock: ScriptedBedrock
    sessions: Any
    run_id: str

    def cycle_until(self, done: Callable[[Run], bool], cycles: int = 12) -> Run:
        for _ in range(cycles):
            stats = self.controller.cycle()
            assert stats.errors == [], stats.errors
            run = self.run()
            if done(run):
                return run
        snapshot = self.controller.graph.get_state({"configurable": {"thread_id": self.run_id}})
        with self.sessions() as session:
            jobs = [
                (j.generation, j.status)
                for j in session.execute(select(Job).where(Job.run_id == self.run_id)).scalars()
            ]
        raise AssertionError(
            f"the run did not get there: {self.run().status}; next {snapshot.next}; jobs {jobs}; "
            f"{len(self.bedrock.requests)} Bedrock requests; interrupts {snapshot.interrupts}"
        )

    def run(self) -> Run:
        with self.sessions() as session:
            run = session.get(Run, self.run_id)
            assert run is not None
            session.expunge(run)
            return run

    def play_job(self, accuracies: list[float], first_to_last: float) -> None:
        """The worker's side of the latest submitted job, through the worker endpoints."""
        job = self.executor.submitted[-1]
        headers = {"Authorization": f"Bearer {job.environment['GRADPILOT_JOB_TOKEN']}"}
        spec = self.api.get(f"/v1/jobs/{job.job_id}/spec", headers=headers)
        assert spec.status_code == 200, spec.text
        body = {"summaries": summaries(spec.json(), accuracies, first_to_last)}
        posted = self.api.post(f"/v1/jobs/{job.job_id}/summaries", json=body, headers=headers)
        assert posted.status_code == 200, posted.text
        finished = self.api.post(
            f"/v1/jobs/{job.job_id}/finish",
            json={"status": "succeeded", "exit_code": 0, "test_accuracy": accuracies[-1]},
            headers=headers,
        )
        assert finished.status_code == 200, finished.text


@pytest.fixture
def harness(client: TestClient, migrated: Settings) -> Iterator[Harness]:
    settings = migrated
    advisor = LLMAdvisor.from_spec(SPEC, settings)
    bedrock = ScriptedBedrock(advisor.chat_model().client)  # type: ignore[attr-defined]
    state = client.app.state.gradpilot  # type: ignore[attr-defined]
    executor = FakeExecutor()
    rules = RulesAdvisor()
    created = client.post(
        "/v1/runs",
        json={
            "name": "flawed digits, Claude",
            "model_source": (EXAMPLES / "flawed_digits.py").read_text(),
            "dataset": {"name": "digits"},
            "hyperparameters": {"optimizer": "sgd", "learning_rate": 0.1, "batch_size": 64},
            "budget": {"epochs_per_job": 3, "max_jobs": 5, "target_accuracy": 0.95, "patience": 3},
            "advisor": SPEC,
            "approval": "architecture",
        },
    )
    assert created.status_code in (200, 201), created.text
    with (
        Sandbox(SandboxLimits.from_settings(settings)) as sandbox,
        open_checkpointer(settings) as checkpointer,
    ):
        deps = AgentDeps(
            settings=settings,
            sessions=state.sessions,
            executor=executor,
            artifacts=state.artifacts,
            advisor_for=lambda spec: advisor if spec == SPEC else rules,
            validate=sandbox.validate,
        )
        controller = Controller(settings, state.sessions, executor, build_graph(deps, checkpointer))
        yield Harness(client, controller, executor, bedrock, state.sessions, created.json()["id"])
    bedrock.stubber.deactivate()


class Tally:
    """Scripts replies and adds up the tokens Bedrock reports for them."""

    def __init__(self, bedrock: ScriptedBedrock) -> None:
        self.bedrock = bedrock
        self.input_tokens = 0
        self.output_tokens = 0

    def reply(self, response: dict[str, Any]) -> None:
        self.input_tokens += response["usage"]["inputTokens"]
        self.output_tokens += response["usage"]["outputTokens"]
        self.bedrock.reply(response)

    def user_text(self, index: int) -> str:
        return self.bedrock.user_text(index)

    def done(self) -> None:
        self.bedrock.done()


def hp(rationale: str, **changes: Any) -> dict[str, Any]:
    return {
        "rationale": rationale,
        **{k: {"value": v, "reason": rationale} for k, v in changes.items()},
    }


def design(source: str, why: str) -> dict[str, Any]:
    return {
        "rationale": why,
        "expected_gradient_effect": "first/last ratio near 1",
        "source": source,
    }


def test_an_approval_gated_llm_run_from_flawed_to_target(harness: Harness) -> None:
    h = harness
    bedrock = Tally(harness.bedrock)
    tune_assessment = {
        "gradient_analysis": {
            **ASSESSMENT["gradient_analysis"],
            "gradient_issues": [],
            "severity": 2,
        },
        "stability_assessment": {
            **ASSESSMENT["stability_assessment"],
            "is_stable": True,
            "recommendation": "tune",
        },
    }
    bedrock.reply(tool_reply("HealthAssessment", ASSESSMENT, (2500, 250)))
    bedrock.reply(
        tool_reply("ArchitectureDesign", design(BROKEN_DESIGN, "BatchNorm + ReLU"), (2400, 700))
    )
    bedrock.reply(
        tool_reply("ArchitectureDesign", design(FIXED_DESIGN, "sizes from the shape"), (2900, 650))
    )
    bedrock.reply(
        tool_reply("HyperparameterProposal", hp("momentum for SGD", momentum=0.9), (3300, 120))
    )

    # job 0: the flawed model, vanishing gradients, chance accuracy
    h.cycle_until(lambda run: len(h.executor.submitted) == 1)
    h.play_job([0.1, 0.11, 0.1], first_to_last=1e-7)
    run = h.cycle_until(lambda run: run.status == "awaiting_approval")

    pending = run.pending_approval or {}
    assert pending["action"] == "redesign"
    assert "nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes)" in pending["diff"]
    assert "shapes cannot be multiplied" in bedrock.user_text(2)  # the fixer saw the sandbox error
    assert len(h.executor.submitted) == 1  # nothing trains before the user answers

    rejected = h.api.post(f"/v1/runs/{h.run_id}/reject", json={"feedback": FEEDBACK})
    assert rejected.status_code == 200, rejected.text
    bedrock.reply(
        tool_reply(
            "ArchitectureDesign", design(GROUPNORM_DESIGN, "GroupNorm as asked"), (3000, 640)
        )
    )
    bedrock.reply(
        tool_reply("HyperparameterProposal", hp("momentum for SGD", momentum=0.9), (3300, 120))
    )
    run = h.cycle_until(
        lambda run: run.status == "awaiting_approval" and run.approval_response is None
    )

    assert FEEDBACK in bedrock.user_text(4)  # the rejection reached the next Bedrock request
    assert "nn.GroupNorm(8, 32)" in (run.pending_approval or {})["diff"]

    approved = h.api.post(f"/v1/runs/{h.run_id}/approve", json={})
    assert approved.status_code == 200, approved.text
    h.cycle_until(lambda run: len(h.executor.submitted) == 2)

    # job 1: the new model learns but has not reached the target; Claude tunes it
    bedrock.reply(tool_reply("HealthAssessment", tune_assessment, (2600, 230)))
    bedrock.reply(
        tool_reply(
            "HyperparameterProposal",
            hp("anneal", lr_schedule="cosine", learning_rate=3.0),
            (2700, 140),
        )
    )
    h.play_job([0.6, 0.8, 0.9], first_to_last=0.5)
    h.cycle_until(lambda run: len(h.executor.submitted) == 3)
    assert h.executor.submitted[-1].generation == 2

    # job 2 reaches the target: the run finishes with a report written by the report model
    bedrock.reply(
        text_reply("Eight sigmoid layers starved the first convolution of gradient.", (4000, 150))
    )
    h.play_job([0.93, 0.95, 0.96], first_to_last=0.6)
    run = h.cycle_until(lambda run: run.status in ("succeeded", "failed"))

    assert run.status == "succeeded", run.error
    bedrock.done()
    assert "Eight sigmoid layers" in h.api.get(f"/v1/runs/{h.run_id}/report").text
    with h.sessions() as session:
        decisions = (
            session.execute(
                select(Decision).where(Decision.run_id == h.run_id).order_by(Decision.sequence)
            )
            .scalars()
            .all()
        )
        jobs = (
            session.execute(select(Job).where(Job.run_id == h.run_id).order_by(Job.generation))
            .scalars()
            .all()
        )
        actions = [d.action for d in decisions]
        assert actions == ["redesign", "tune", "finish"]
        redesign, tune = decisions[0], decisions[1]
        assert redesign.advisor == SPEC and not redesign.fallback
        assert redesign.architecture_version is not None
        assert tune.changes["learning_rate"]["value"] == 1.0  # 3.0 clamped into range
        assert tune.changes["lr_schedule"]["value"] == "cosine"
        assert jobs[1].hyperparameters["momentum"] == 0.9
        assert jobs[2].hyperparameters["lr_schedule"] == "cosine"
        # the approved architecture is the GroupNorm one
        assert "GroupNorm" in h.api.get(f"/v1/runs/{h.run_id}/architectures").text
        # every token Bedrock reported is in the run's total: failed and rejected tries too
        summary_in, summary_out = 4000, 150
        assert sum(d.input_tokens for d in decisions) + summary_in == run.input_tokens
        assert sum(d.output_tokens for d in decisions) + summary_out == run.output_tokens
    assert (run.input_tokens, run.output_tokens) == (bedrock.input_tokens, bedrock.output_tokens)


def test_access_denied_fails_the_run_with_what_to_fix(harness: Harness) -> None:
    h = harness
    h.bedrock.error(
        "AccessDeniedException",
        "You don't have access to the model with the specified model ID.",
        403,
    )
    h.cycle_until(lambda run: len(h.executor.submitted) == 1)
    h.play_job([0.1, 0.11, 0.1], first_to_last=1e-7)

    stats = h.controller.cycle()

    run = h.run()
    assert run.status == "failed"
    assert "Model access" in (run.error or "") and "bedrock:InvokeModel" in (run.error or "")
    assert len(stats.errors) == 1 and len(h.bedrock.requests) == 1  # no retries, no fallback
    h.bedrock.done()
