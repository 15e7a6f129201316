"""The agent graph's nodes. Each is a verb; each is idempotent, because LangGraph runs a node
again from its start when it was interrupted (``train``, ``await_approval``) or when the
control plane died before the node's checkpoint was written.

A node reads the state, asks an advisor or the executor, and returns the part of the state
that changed. What it writes goes through ``records`` (get-or-create by natural keys, so a
node that runs twice writes once); the next job is planned by ``segments``, proposals are
built and applied by ``proposals``, and jobs are handed to the executor by ``submission``.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

from langgraph.types import interrupt
from sqlalchemy.orm import Session

from service.advisors._protocol import Advisor, AdvisorContext, Usage
from service.agent import proposals, records, segments
from service.agent.context import advisor_context
from service.agent.deps import AgentDeps
from service.agent.routers import budget_verdict, improved
from service.agent.state import (
    AgentState,
    ApprovalAnswer,
    ApprovalPause,
    JobOutcome,
    JobPause,
    Proposal,
    ProposalAction,
    assessment_record,
    usage_of,
    usage_record,
)
from service.agent.submission import submit
from service.db.models import Run
from service.db.session import session_scope
from service.diagnostics import compact_state, compute_diagnostics
from service.errors import GradpilotError
from service.jobs import best_val_accuracy
from service.schemas.datasets import DatasetSpec
from service.schemas.hyperparameters import Hyperparameters, clamp_changes
from service.schemas.statuses import ErrorKind, JobStatus, RunStatus

MAX_REJECTIONS = 5
#: a finish reason with one of these ends the run ``failed`` rather than ``succeeded``
FAILED_REASONS = ("still fails", "failed", "no proposed", "no redesign")


class AgentNodes:
    """Node implementations bound to their dependencies."""

    def __init__(self, deps: AgentDeps) -> None:
        self.deps = deps

    def _session(self) -> AbstractContextManager[Session]:
        return session_scope(self.deps.sessions)

    def _advisor(self, run: Run) -> Advisor:
        return self.deps.advisor_for(run.advisor)

    def _write_validated(self, run: Run, ctx: AdvisorContext) -> proposals.Written | None:
        """The writer -> sandbox -> fixer loop with this graph's advisors and sandbox."""
        return proposals.write_validated(self.deps, run, ctx)

    def prepare(self, state: AgentState) -> AgentState:
        """Set up the first job; validate the submitted model in the sandbox first."""
        with self._session() as session:
            run = records.run_of(session, state["run_id"])
            run.status = RunStatus.RUNNING
            update: AgentState = {
                "generation": 0,
                "attempt": 1,
                "architecture_version": 0,
                "hyperparameters": run.hyperparameters,
                "schedule_epoch": 0,
                "schedule_total_epochs": segments.first_schedule_length(run.budget),
                "resume_checkpoint": None,
                "resume_weights_only": False,
                "jobs_done": 0,
                "epochs_done": 0,
                "retries": 0,
                "repairs": 0,
                "best_val_accuracy": None,
                "stale_assessments": 0,
                "decisions": 0,
                "proposal": None,
                "feedback": None,
                "rejections": 0,
                "finish_reason": "",
                "outcome": {},
                **segments.next_segment(run.budget, state, 0),
            }
            source = records.architecture_source(session, run.id, 0)
            report = proposals.validate(self.deps, run, source)
            records.architecture(session, run.id, 0).parameters = report.parameters
            if not report.ok:
                update["outcome"] = JobOutcome(
                    job_id="",
                    status=JobStatus.FAILED.value,
                    error_kind=ErrorKind.CODE.value,
                    message=f"the submitted model failed validation: {report.reason}",
                    traceback=report.reason,
                )
        return update

    def train(self, state: AgentState) -> AgentState:
        """Create and submit the job (once), then wait for its outcome."""
        with self._session() as session:
            run = records.run_of(session, state["run_id"])
            job = records.job_of_state(session, state)
            if job.status == JobStatus.PENDING:
                submit(session, self.deps.settings, self.deps.executor, run, job)
            run.status = RunStatus.RUNNING
            job_id = job.id
        outcome: JobOutcome = interrupt(JobPause(kind="job", job_id=job_id))
        last_epoch = outcome.get("last_epoch")
        epochs = 0 if last_epoch is None else max(0, last_epoch - state["epoch_start"] + 1)
        return {
            "outcome": outcome,
            "jobs_done": state.get("jobs_done", 0) + 1,
            "epochs_done": state.get("epochs_done", 0) + epochs,
        }

    def assess(self, state: AgentState) -> AgentState:
        """Diagnose the finished segment, apply the budget guards, ask the advisor."""
        outcome = state.get("outcome") or {}
        with self._session() as session:
            run = records.run_of(session, state["run_id"])
            summaries, earlier = records.segment_summaries(
                session,
                run.id,
                outcome.get("job_id"),
                epoch_end=state["epoch_start"] + state["epochs"],
                limit=state["epochs"] + 30,
            )
            _, classes = DatasetSpec.model_validate(run.dataset).shape()
            diagnostics = compact_state(
                compute_diagnostics(
                    summaries,
                    classes,
                    earlier=earlier,
                    hyperparameters=state["hyperparameters"],
                    target_accuracy=run.budget.get("target_accuracy"),
                )
            )
            job_best = outcome.get("best_val_accuracy")
            previous = state.get("best_val_accuracy")
            stale = 0 if improved(previous, job_best) else state.get("stale_assessments", 0) + 1
            best = max(x for x in (previous, job_best, -1.0) if x is not None)
            best_or_none = best if best >= 0 else None
            run.best_val_accuracy = best_or_none
            if run.baseline_val_accuracy is None and state.get("generation", 0) == 0:
                run.baseline_val_accuracy = job_best
            update: AgentState = {
                "diagnostics": diagnostics,
                "best_val_accuracy": best_or_none,
                "stale_assessments": stale,
                "retries": 0,
                "feedback": None,
                "rejections": 0,
            }
            verdict = budget_verdict({**state, **update}, run.budget)
            if verdict:
                update["recommendation"] = "finish"
                update["finish_reason"] = verdict
                update["assessment"] = None
                return update
            ctx = advisor_context(session, run, {**state, **update})
            assessment, usage = self._advisor(run).assess(ctx)
            update["assessment"] = assessment_record(assessment)
            update["recommendation"] = assessment.recommendation
            update["pending_usage"] = usage_record(usage_of(state.get("pending_usage")).add(usage))
            if assessment.recommendation == "finish":
                update["finish_reason"] = (
                    assessment.explanation or "the advisor judged the run done"
                )
            return update

    def continue_training(self, state: AgentState) -> AgentState:
        """Train the same model for another segment, resuming every piece of state."""
        with self._session() as session:
            run = records.run_of(session, state["run_id"])
            assessment = state.get("assessment")
            rationale = (assessment["explanation"] if assessment else "") or "training is healthy"
            return proposals.apply_continue(session, run, state, rationale)

    def tune(self, state: AgentState) -> AgentState:
        """Propose new hyperparameters (validated and clamped); weights carry over."""
        with self._session() as session:
            run = records.run_of(session, state["run_id"])
            change, usage = self._advisor(run).tune(advisor_context(session, run, state))
            proposal, changed = proposals.tune_proposal(run, state, change, usage)
            return proposals.settle(session, run, state, proposal, changed=changed)

    def redesign(self, state: AgentState) -> AgentState:
        """Writer -> sandbox -> fixer, bounded; then hyperparameters for the new model."""
        with self._session() as session:
            run = records.run_of(session, state["run_id"])
            ctx = advisor_context(session, run, state)
            written = self._write_validated(run, ctx)
            if written is None:
                return {
                    "finish_reason": "no proposed architecture passed the sandbox; the run stops"
                }
            ctx_new = advisor_context(
                session,
                run,
                state,
                source=written.source,
                architecture_version=records.next_architecture_version(session, run.id),
            )
            hp_proposal, hp_usage = self._advisor(run).tune(ctx_new)
            new_hp, applied = clamp_changes(
                Hyperparameters.model_validate(state["hyperparameters"]), hp_proposal.changes
            )
            proposal = proposals.architecture_proposal(
                session,
                run,
                state,
                "redesign",
                written._replace(usage=written.usage.add(hp_usage)),
                old_source=ctx.source,
                hyperparameters=new_hp.model_dump(mode="json"),
                changes={
                    k: {"value": v, "reason": hp_proposal.reasons.get(k, "")}
                    for k, v in applied.items()
                },
            )
            return proposals.settle(session, run, state, proposal)

    def repair(self, state: AgentState) -> AgentState:
        """Repair model code that raised (in the sandbox or in a job); redesign if it cannot."""
        outcome = state.get("outcome") or {}
        repairs = state.get("repairs", 0) + 1
        with self._session() as session:
            run = records.run_of(session, state["run_id"])
            if repairs > run.budget.get("max_repairs", 3):
                return {
                    "repairs": repairs,
                    "finish_reason": f"the model's code still fails after {repairs - 1} repairs: "
                    f"{outcome.get('message')}",
                }
            error = outcome.get("traceback") or outcome.get("message") or "unknown error"
            tries = proposals.try_repairs(self.deps, session, run, state, error)
            written = tries.repaired
            action: ProposalAction = "repair"
            if written is None:
                redesigned = self._write_validated(run, advisor_context(session, run, state))
                if redesigned is None:
                    return {
                        "repairs": repairs,
                        "finish_reason": "the model's code fails and no redesign passed "
                        "the sandbox",
                    }
                last_line = tries.error.splitlines()[-1] if tries.error else ""
                written = redesigned._replace(
                    rationale=f"could not repair the code ({last_line}); "
                    f"redesigned instead: {redesigned.rationale}",
                    usage=tries.usage.add(redesigned.usage),
                )
                action = "redesign"
            last_epoch = outcome.get("last_epoch")
            proposal = proposals.architecture_proposal(
                session,
                run,
                state,
                action,
                written,
                old_source=tries.ctx.source,
                hyperparameters=state["hyperparameters"],
                changes={},
                epoch_start=state["epoch_start"] if last_epoch is None else last_epoch + 1,
            )
            settled = proposals.settle(session, run, {**state, "repairs": repairs}, proposal)
            return {"repairs": repairs, **settled}

    def retry(self, state: AgentState) -> AgentState:
        """Resubmit after an infrastructure failure, from the failed attempt's checkpoint."""
        outcome = state.get("outcome") or {}
        retries = state.get("retries", 0) + 1
        with self._session() as session:
            run = records.run_of(session, state["run_id"])
            if retries > run.budget.get("max_retries", 3):
                return {
                    "retries": retries,
                    "finish_reason": f"job failed {retries} times for infrastructure reasons: "
                    f"{outcome.get('message')}",
                }
            job = records.ended_job(session, outcome)
            seq = records.record_decision(
                session,
                state,
                "retry",
                f"infrastructure failure ({outcome.get('message') or 'no message'}); "
                f"attempt {state['attempt'] + 1}",
                advisor="controller",
            )
            return {
                "decisions": seq,
                "pending_usage": {},
                "retries": retries,
                "proposal": None,
                **segments.retried(state, job),
            }

    def await_approval(self, state: AgentState) -> AgentState:
        """Pause until the user approves or rejects the proposal (survives restarts)."""
        pending = state.get("proposal")
        assert pending is not None, "await_approval without a proposal"
        with self._session() as session:
            run = records.run_of(session, state["run_id"])
            if run.approval_response is None:
                run.status = RunStatus.AWAITING_APPROVAL
                run.pending_approval = {
                    "action": pending["action"],
                    "rationale": pending.get("rationale", ""),
                    "changes": pending.get("changes", {}),
                    "diff": pending.get("diff"),
                }
        answer: ApprovalAnswer = interrupt(ApprovalPause(kind="approval", action=pending["action"]))
        with self._session() as session:
            run = records.run_of(session, state["run_id"])
            run.pending_approval = None
            run.approval_response = None
            if run.status == RunStatus.AWAITING_APPROVAL:
                run.status = RunStatus.RUNNING
            if answer.get("approved"):
                approved: Proposal = {**pending, "approved": True}
                applied = proposals.apply_proposal(session, run, {**state, "proposal": approved})
                return {"proposal": approved, **applied}
            rejections = state.get("rejections", 0) + 1
            spent = usage_of(state.get("pending_usage")).add(usage_of(pending.get("usage")))
            update: AgentState = {
                "proposal": {**pending, "approved": False},
                "feedback": answer.get("feedback") or "rejected without feedback",
                "rejections": rejections,
                "pending_usage": usage_record(spent),
            }
            if rejections >= MAX_REJECTIONS:
                update["finish_reason"] = f"the user rejected {rejections} proposals"
            return update

    def report(self, state: AgentState) -> AgentState:
        """Write the report, record the final decision, end the run."""
        from service.reports.report import build_report

        with self._session() as session:
            run = records.run_of(session, state["run_id"])
            if run.status == RunStatus.CANCELLED:
                return {}
            reason = state.get("finish_reason") or "the run ended"
            seq = state.get("decisions", 0)
            if not records.has_finish_decision(session, run.id):
                seq = records.record_decision(session, state, "finish", reason)
            session.flush()
            succeeded = records.latest_succeeded_job(session, run.id)
            failed = succeeded is None or any(r in reason for r in FAILED_REASONS)
            run.status = RunStatus.FAILED if failed else RunStatus.SUCCEEDED
            if failed:
                run.error = reason
            if succeeded is not None:
                run.final_test_accuracy = succeeded.test_accuracy
                run.best_val_accuracy = max(
                    x
                    for x in (run.best_val_accuracy, best_val_accuracy(session, succeeded.id), -1.0)
                    if x is not None
                )
            ctx = advisor_context(session, run, state)
            markdown = build_report(session, run, self.deps.artifacts)
            try:
                narrative, usage = self._advisor(run).summarize(ctx, markdown)
            except GradpilotError as e:
                narrative, usage = f"(the advisor could not summarise: {e.message})", Usage()
            records.add_tokens(run, usage)
            markdown = markdown.replace("<!-- summary -->", narrative.strip(), 1)
            run.report_uri = self.deps.artifacts.put(
                f"runs/{run.id}/report.md", markdown.encode(), "text/markdown"
            )
            return {"decisions": seq, "pending_usage": {}}
