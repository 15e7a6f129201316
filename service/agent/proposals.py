"""Proposals: what a tune, redesign or repair wants to change, and how it takes effect.

Model code an advisor writes passes the sandbox before anyone sees it (the writer -> sandbox
-> fixer loop, ``write_validated``; code repairs, ``try_repairs``). A proposal is then applied
at once, or waits for the user where the run's approval policy asks for it (``settle``);
applying it stores the new architecture and the decision and plans the next job.
"""

from __future__ import annotations

import logging
import time
from typing import Any, NamedTuple

from sqlalchemy.orm import Session

from service.advisors._protocol import AdvisorContext, HyperparameterChange, Usage
from service.agent import records, segments
from service.agent.context import advisor_context
from service.agent.deps import AgentDeps
from service.agent.routers import needs_approval
from service.agent.state import AgentState, Proposal, ProposalAction, usage_of, usage_record
from service.db.models import Run
from service.runs import unified_diff
from service.sandbox.report import ValidationReport
from service.schemas.datasets import DatasetSpec
from service.schemas.hyperparameters import Hyperparameters, clamp_changes

log = logging.getLogger(__name__)


class Written(NamedTuple):
    """Model code that passed the sandbox, and who wrote it at what cost."""

    source: str
    rationale: str
    parameters: int | None
    usage: Usage
    author: str


class RepairTries(NamedTuple):
    """The outcome of repairing: the repair (None if none passed), what the tries cost, the
    last error and the context of the last try."""

    repaired: Written | None
    usage: Usage
    error: str
    ctx: AdvisorContext


def validate(deps: AgentDeps, run: Run, source: str) -> ValidationReport:
    """Build and step ``source`` in the sandbox for the run's dataset."""
    shape, classes = DatasetSpec.model_validate(run.dataset).shape()
    return deps.validate(source, shape, classes)


def write_validated(deps: AgentDeps, run: Run, ctx: AdvisorContext) -> Written | None:
    """The writer/tester/fixer loop: only validated code comes out. Falls back to the rules
    advisor's templates when the run's advisor cannot produce a valid module."""
    advisors = [deps.advisor_for(run.advisor)]
    if advisors[0].name != "rules":
        advisors.append(deps.advisor_for("rules"))
    usage = Usage()
    for advisor in advisors:
        error: str | None = None
        previous: str | None = None
        for _ in range(deps.fixer_rounds):
            t0 = time.monotonic()
            proposal, u = advisor.write_architecture(
                ctx, previous_error=error, previous_source=previous
            )
            usage = usage.add(u)
            report = validate(deps, run, proposal.source)
            if report.ok:
                if advisor is not advisors[0]:
                    usage.fallback = True
                why = proposal.rationale
                if proposal.expected_effect:
                    why += f" Expected effect: {proposal.expected_effect}"
                log.info("architecture validated in %.1fs", time.monotonic() - t0)
                author = u.model or advisor.name
                return Written(proposal.source, why, report.parameters, usage, author)
            error, previous = report.reason, proposal.source
            log.warning("proposed architecture failed validation: %s", error)
    return None


def try_repairs(
    deps: AgentDeps, session: Session, run: Run, state: AgentState, error: str
) -> RepairTries:
    """The run's advisor repairs the current model's code; each try that fails the sandbox
    is shown to the next one with its error, up to ``fixer_rounds`` tries."""
    ctx = advisor_context(session, run, state)
    advisor = deps.advisor_for(run.advisor)
    usage = Usage()
    for _ in range(deps.fixer_rounds):
        repair, u = advisor.repair(ctx, error)
        usage = usage.add(u)
        if repair is None:
            break
        report = validate(deps, run, repair.source)
        if report.ok:
            written = Written(
                repair.source,
                repair.explanation,
                report.parameters,
                usage,
                usage.model or run.advisor,
            )
            return RepairTries(written, usage, error, ctx)
        error = report.reason or "the repaired model failed validation"
        ctx = advisor_context(session, run, state, source=repair.source)
    return RepairTries(None, usage, error, ctx)


def tune_proposal(
    run: Run, state: AgentState, change: HyperparameterChange, usage: Usage
) -> tuple[Proposal, bool]:
    """The advisor's hyperparameter changes, validated and clamped; and whether any remain."""
    current = Hyperparameters.model_validate(state["hyperparameters"])
    new_hp, applied = clamp_changes(current, change.changes)
    rationale = change.rationale or "; ".join(f"{k}: {v}" for k, v in change.reasons.items())
    if not applied:
        rationale = f"the advisor proposed no effective change ({rationale or 'none'}); training on"
    proposal = Proposal(
        action="tune",
        rationale=rationale,
        changes={k: {"value": v, "reason": change.reasons.get(k, "")} for k, v in applied.items()},
        hyperparameters=new_hp.model_dump(mode="json"),
        needs_approval=bool(applied) and needs_approval(run.approval, "tune"),
        usage=usage_record(usage),
        approved=None,
    )
    return proposal, bool(applied)


def architecture_proposal(
    session: Session,
    run: Run,
    state: AgentState,
    action: ProposalAction,
    written: Written,
    *,
    old_source: str,
    hyperparameters: dict[str, Any],
    changes: dict[str, Any],
    epoch_start: int | None = None,
) -> Proposal:
    """A validated new architecture, waiting to be applied (now, or once approved)."""
    version = records.next_architecture_version(session, run.id)
    proposal = Proposal(
        action=action,
        rationale=written.rationale,
        source=written.source,
        author=written.author,
        parameters=written.parameters,
        version=version,
        diff=unified_diff(
            old_source,
            written.source,
            f"v{state['architecture_version']}/model.py",
            f"v{version}/model.py",
        ),
        changes={"architecture_version": version, **changes},
        hyperparameters=hyperparameters,
        needs_approval=needs_approval(run.approval, action),
        usage=usage_record(written.usage),
        approved=None,
    )
    if epoch_start is not None:
        proposal["epoch_start"] = epoch_start
    return proposal


def settle(
    session: Session, run: Run, state: AgentState, proposal: Proposal, *, changed: bool = True
) -> AgentState:
    """The update after proposing: with nothing to change, training continues; a proposal
    that needs approval waits; any other is applied at once."""
    if not changed:
        # Nothing to change: record it as continuing rather than as a no-op tune.
        session.flush()
        unchanged: AgentState = {**state, "proposal": None}
        return {"proposal": None, **apply_continue(session, run, unchanged, proposal["rationale"])}
    if proposal["needs_approval"]:
        return {"proposal": proposal}
    return {"proposal": proposal, **apply_proposal(session, run, {**state, "proposal": proposal})}


def apply_continue(session: Session, run: Run, state: AgentState, rationale: str) -> AgentState:
    """Record ``continue`` and plan the next segment of the same model and schedule."""
    job = records.ended_job(session, state.get("outcome"))
    seq = records.record_decision(session, state, "continue", rationale)
    return {"decisions": seq, "pending_usage": {}, **segments.continued(run.budget, state, job)}


def apply_proposal(session: Session, run: Run, state: AgentState) -> AgentState:
    """Make the state's proposal effective: store the architecture and the decision, plan the
    job."""
    proposal = state.get("proposal")
    assert proposal is not None, "no proposal to apply"
    job = records.ended_job(session, state.get("outcome"))
    update = segments.after_proposal(run.budget, state, proposal, job)
    architecture_version = None
    if "source" in proposal:
        architecture_version = proposal["version"]
        records.save_architecture(
            session,
            run.id,
            architecture_version,
            proposal["source"],
            proposal["rationale"],
            proposal.get("author", run.advisor),
            state["architecture_version"],
            proposal.get("parameters"),
        )
    update["decisions"] = records.record_decision(
        session,
        state,
        proposal["action"],
        proposal.get("rationale", ""),
        changes=proposal.get("changes", {}),
        usage=usage_of(proposal.get("usage")),
        architecture_version=architecture_version,
    )
    update["pending_usage"] = {}
    return update
