"""The agent graph's nodes. Each is a verb; each is idempotent, because LangGraph runs a node
again from its start when it was interrupted (``train``, ``await_approval``) or when the
control plane died before the node's checkpoint was written.

Database writes are get-or-create by natural keys (job: run/generation/attempt; decision:
run/sequence; architecture: run/version), so a node that runs twice writes once.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from langgraph.types import interrupt
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service import auth
from service.advisors._protocol import Advisor, AdvisorContext, Assessment, HistoryEntry, Usage
from service.agent.deps import AgentDeps
from service.agent.routers import budget_verdict, improved, needs_approval
from service.agent.state import AgentState, JobOutcome
from service.db.models import Architecture, Decision, EpochSummary, Job, Run, utcnow
from service.db.session import session_scope
from service.errors import ExecutorError, GradpilotError
from service.executors import JobSubmission, job_name
from service.jobs import best_val_accuracy
from service.runs import sha256, unified_diff
from service.schemas.datasets import DatasetSpec
from service.schemas.hyperparameters import Hyperparameters, clamp_changes
from service.schemas.summaries import EpochSummaryIn

log = logging.getLogger(__name__)

MAX_REJECTIONS = 5


class AgentNodes:
    """Node implementations bound to their dependencies."""

    def __init__(self, deps: AgentDeps) -> None:
        self.deps = deps

    # ------------------------------------------------------------------ helpers

    def _session(self) -> Any:
        return session_scope(self.deps.sessions)

    @staticmethod
    def _run(session: Session, run_id: str) -> Run:
        run = session.get(Run, run_id)
        assert run is not None, f"run {run_id} vanished"
        return run

    @staticmethod
    def _source(session: Session, run_id: str, version: int) -> str:
        return session.execute(
            select(Architecture.source).where(
                Architecture.run_id == run_id, Architecture.version == version
            )
        ).scalar_one()

    def _advisor(self, run: Run) -> Advisor:
        return self.deps.advisor_for(run.advisor)

    def _rules(self) -> Advisor:
        return self.deps.advisor_for("rules")

    def _context(
        self, session: Session, run: Run, state: AgentState, **extra: Any
    ) -> AdvisorContext:
        spec = DatasetSpec.model_validate(run.dataset)
        shape, classes = spec.shape()
        budget = run.budget
        epochs_left = None
        if budget.get("max_total_epochs"):
            epochs_left = budget["max_total_epochs"] - state.get("epochs_done", 0)
        version = extra.pop("architecture_version", state.get("architecture_version", 0))
        return AdvisorContext(
            run_id=run.id,
            input_shape=shape,
            num_classes=classes,
            dataset=spec.name,
            source=extra.pop("source", None) or self._source(session, run.id, version),
            hyperparameters=state.get("hyperparameters") or run.hyperparameters,
            diagnostics=state.get("diagnostics") or {},
            history=self._history(session, run.id),
            feedback=state.get("feedback"),
            epochs_left=epochs_left,
            jobs_left=budget["max_jobs"] - state.get("jobs_done", 0),
            architecture_version=version,
            assessment=Assessment.model_validate(state["assessment"])
            if state.get("assessment")
            else None,
            **extra,
        )

    @staticmethod
    def _history(session: Session, run_id: str) -> list[HistoryEntry]:
        """One line per job: what changed before it and how it went (compact, for advisors)."""
        decisions = {
            d.generation: d
            for d in session.execute(
                select(Decision).where(Decision.run_id == run_id).order_by(Decision.sequence)
            ).scalars()
        }
        entries = []
        for job in session.execute(
            select(Job).where(Job.run_id == run_id).order_by(Job.generation, Job.attempt)
        ).scalars():
            before = decisions.get(job.generation - 1)
            last_loss = session.execute(
                select(EpochSummary.val_loss)
                .where(EpochSummary.job_id == job.id)
                .order_by(EpochSummary.epoch.desc())
                .limit(1)
            ).scalar_one_or_none()
            entries.append(
                HistoryEntry(
                    generation=job.generation,
                    action=before.action if before else "start",
                    architecture_version=job.architecture_version,
                    changes=before.changes if before else {},
                    best_val_accuracy=job.best_val_accuracy,
                    final_val_loss=last_loss,
                    summary=f"{job.status}" + (f" ({job.error_kind})" if job.error_kind else ""),
                )
            )
        return entries[-12:]

    def _record(
        self,
        session: Session,
        state: AgentState,
        action: str,
        rationale: str,
        *,
        changes: dict[str, Any] | None = None,
        advisor: str | None = None,
        usage: Usage | None = None,
        architecture_version: int | None = None,
    ) -> int:
        """Store one decision (get-or-create by sequence); returns the next sequence number."""
        run = self._run(session, state["run_id"])
        seq = state.get("decisions", 0)
        existing = session.execute(
            select(Decision).where(Decision.run_id == run.id, Decision.sequence == seq)
        ).scalar_one_or_none()
        if existing is None:
            usage = (usage or Usage()).add(Usage(**state.get("pending_usage") or {}))
            session.add(
                Decision(
                    run_id=run.id,
                    sequence=seq,
                    generation=state.get("generation", 0),
                    action=action,
                    advisor=advisor or (usage.model if usage.model else run.advisor),
                    fallback=usage.fallback,
                    rationale=rationale,
                    diagnostics=state.get("diagnostics") or {},
                    assessment=state.get("assessment") or {},
                    changes=changes or {},
                    architecture_version=architecture_version,
                    latency_ms=usage.latency_ms,
                    input_tokens=usage.input_tokens,
                    output_tokens=usage.output_tokens,
                )
            )
            run.input_tokens += usage.input_tokens
            run.output_tokens += usage.output_tokens
        return seq + 1

    def _save_architecture(
        self,
        session: Session,
        run_id: str,
        version: int,
        source: str,
        rationale: str,
        author: str,
        parent: int,
        parameters: int | None,
    ) -> None:
        existing = session.execute(
            select(Architecture).where(
                Architecture.run_id == run_id, Architecture.version == version
            )
        ).scalar_one_or_none()
        if existing is None:
            session.add(
                Architecture(
                    run_id=run_id,
                    version=version,
                    parent_version=parent,
                    source=source,
                    sha256=sha256(source),
                    rationale=rationale,
                    author=author,
                    parameters=parameters,
                )
            )

    def _validate(self, run: Run, source: str) -> Any:
        shape, classes = DatasetSpec.model_validate(run.dataset).shape()
        return self.deps.validate(source, shape, classes)

    def _next_segment(self, run: Run, state: AgentState, epoch_start: int) -> dict[str, Any]:
        budget = run.budget
        epochs = budget["epochs_per_job"]
        if budget.get("max_total_epochs"):
            epochs = max(1, min(epochs, budget["max_total_epochs"] - state.get("epochs_done", 0)))
        return {"epoch_start": epoch_start, "epochs": epochs}

    def _plan_length(self, run: Run, state: AgentState) -> int:
        """Planned length of a new schedule: the rest of the run's budget."""
        budget = run.budget
        jobs_left = max(1, budget["max_jobs"] - state.get("jobs_done", 0))
        planned = budget["epochs_per_job"] * jobs_left
        if budget.get("max_total_epochs"):
            planned = min(planned, max(1, budget["max_total_epochs"] - state.get("epochs_done", 0)))
        return planned

    # ------------------------------------------------------------------ nodes

    def prepare(self, state: AgentState) -> dict[str, Any]:
        """Set up the first job; validate the submitted model in the sandbox first."""
        with self._session() as session:
            run = self._run(session, state["run_id"])
            run.status = "running"
            source = self._source(session, run.id, 0)
            hp = run.hyperparameters
            total = run.budget["epochs_per_job"] * run.budget["max_jobs"]
            if run.budget.get("max_total_epochs"):
                total = min(total, run.budget["max_total_epochs"])
            update: dict[str, Any] = {
                "generation": 0,
                "attempt": 1,
                "architecture_version": 0,
                "hyperparameters": hp,
                "schedule_epoch": 0,
                "schedule_total_epochs": total,
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
                **self._next_segment(run, state, 0),
            }
            report = self._validate(run, source)
            arch = session.execute(
                select(Architecture).where(Architecture.run_id == run.id, Architecture.version == 0)
            ).scalar_one()
            arch.parameters = getattr(report, "parameters", None)
            if not report.ok:
                update["outcome"] = JobOutcome(
                    job_id="",
                    status="failed",
                    error_kind="code",
                    message=f"the submitted model failed validation: {report.reason}",
                    traceback=report.reason,
                )
        return update

    def train(self, state: AgentState) -> dict[str, Any]:
        """Create and submit the job (once), then wait for its outcome."""
        run_id = state["run_id"]
        with self._session() as session:
            run = self._run(session, run_id)
            job = session.execute(
                select(Job).where(
                    Job.run_id == run_id,
                    Job.generation == state["generation"],
                    Job.attempt == state["attempt"],
                )
            ).scalar_one_or_none()
            if job is None:
                job = Job(
                    run_id=run_id,
                    generation=state["generation"],
                    attempt=state["attempt"],
                    architecture_version=state["architecture_version"],
                    hyperparameters=state["hyperparameters"],
                    epoch_start=state["epoch_start"],
                    epochs=state["epochs"],
                    schedule_epoch=state["schedule_epoch"],
                    schedule_total_epochs=state["schedule_total_epochs"],
                    resume_checkpoint=state.get("resume_checkpoint"),
                    resume_weights_only=state.get("resume_weights_only", False),
                    status="pending",
                )
                session.add(job)
                session.flush()
            if job.status == "pending":
                self._submit(session, run, job)
            run.status = "running"
            job_id = job.id
        outcome: JobOutcome = interrupt({"kind": "job", "job_id": job_id})
        last_epoch = outcome.get("last_epoch")
        epochs = 0 if last_epoch is None else max(0, last_epoch - state["epoch_start"] + 1)
        return {
            "outcome": outcome,
            "jobs_done": state.get("jobs_done", 0) + 1,
            "epochs_done": state.get("epochs_done", 0) + epochs,
        }

    def _submit(self, session: Session, run: Run, job: Job) -> None:
        settings = self.deps.settings
        token = auth.mint_job_token(session, job.id)
        resources = run.resources
        submission = JobSubmission(
            job_id=job.id,
            run_id=run.id,
            generation=job.generation,
            attempt=job.attempt,
            name=job_name(run.id, job.generation, job.attempt),
            environment={
                "GRADPILOT_API_URL": settings.resolved_public_url,
                "GRADPILOT_JOB_ID": job.id,
                "GRADPILOT_JOB_TOKEN": token,
                **(
                    {"GRADPILOT_AWS_ENDPOINT_URL": settings.aws_endpoint_url}
                    if settings.aws_endpoint_url
                    else {}
                ),
                **(
                    {"GRADPILOT_ALLOW_WEAK_ISOLATION": "true"}
                    if settings.allow_weak_isolation
                    else {}
                ),
            },
            gpus=resources.get("gpus", 1),
            vcpus=resources.get("vcpus", 4),
            memory_mib=resources.get("memory_mib", 15000),
        )
        # The token row must exist before the worker can call back.
        session.commit()
        try:
            job.external_id = self.deps.executor.submit(submission)
            job.status = "submitted"
            job.submitted_at = utcnow()
            job.log_location = self.deps.executor.log_location(job.external_id)
        except ExecutorError as e:
            log.error("submitting job %s failed: %s", job.id, e.message)
            job.status = "failed"
            job.error_kind = "infrastructure"
            job.error_message = f"the executor refused the job: {e.message}"
            job.finished_at = utcnow()

    def assess(self, state: AgentState) -> dict[str, Any]:
        """Diagnose the finished segment, apply the budget guards, ask the advisor."""
        from service.diagnostics import compact_state, compute_diagnostics

        outcome = state.get("outcome") or {}
        with self._session() as session:
            run = self._run(session, state["run_id"])
            job_id = outcome.get("job_id")
            rows = session.execute(
                select(EpochSummary)
                .where(
                    EpochSummary.run_id == run.id,
                    EpochSummary.epoch < state["epoch_start"] + state["epochs"],
                )
                .order_by(EpochSummary.epoch.desc())
                .limit(state["epochs"] + 30)
            ).scalars()
            summaries: list[EpochSummaryIn] = []
            earlier: list[EpochSummaryIn] = []
            for r in reversed(list(rows)):
                s = EpochSummaryIn.model_validate(
                    {c: getattr(r, c) for c in EpochSummaryIn.model_fields}
                )
                (summaries if r.job_id == job_id else earlier).append(s)
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
            update: dict[str, Any] = {
                "diagnostics": diagnostics,
                "best_val_accuracy": best_or_none,
                "stale_assessments": stale,
                "retries": 0,
                "feedback": None,
                "rejections": 0,
            }
            verdict = budget_verdict({**state, **update}, run.budget)  # type: ignore[typeddict-item]
            if verdict:
                update.update(recommendation="finish", finish_reason=verdict, assessment={})
                return update
            ctx = self._context(session, run, {**state, **update})  # type: ignore[typeddict-item]
            assessment, usage = self._advisor(run).assess(ctx)
            update["assessment"] = assessment.model_dump(mode="json")
            update["recommendation"] = assessment.recommendation
            update["pending_usage"] = Usage(**state.get("pending_usage") or {}).add(usage).__dict__
            if assessment.recommendation == "finish":
                update["finish_reason"] = (
                    assessment.explanation or "the advisor judged the run done"
                )
            return update

    def continue_training(self, state: AgentState) -> dict[str, Any]:
        """Train the same model for another segment, resuming every piece of state."""
        with self._session() as session:
            run = self._run(session, state["run_id"])
            rationale = (state.get("assessment") or {}).get("explanation") or "training is healthy"
            return self._continue(session, run, state, rationale)

    def tune(self, state: AgentState) -> dict[str, Any]:
        """Propose new hyperparameters (validated and clamped); weights carry over."""
        with self._session() as session:
            run = self._run(session, state["run_id"])
            ctx = self._context(session, run, state)
            change, usage = self._advisor(run).tune(ctx)
            current = Hyperparameters.model_validate(state["hyperparameters"])
            new_hp, applied = clamp_changes(current, change.changes)
            rationale = change.rationale or "; ".join(
                f"{k}: {v}" for k, v in change.reasons.items()
            )
            if not applied:
                rationale = (
                    f"the advisor proposed no effective change ({rationale or 'none'}); training on"
                )
            proposal = {
                "action": "tune",
                "rationale": rationale,
                "changes": {
                    k: {"value": v, "reason": change.reasons.get(k, "")} for k, v in applied.items()
                },
                "hyperparameters": new_hp.model_dump(mode="json"),
                "needs_approval": bool(applied) and needs_approval(run.approval, "tune"),
                "usage": usage.__dict__,
                "approved": None,
            }
            st: AgentState = {**state, "proposal": proposal}  # type: ignore[typeddict-item]
            return {
                "proposal": proposal,
                **self._apply_if_auto(session, run, st, "tune", bool(applied)),
            }

    def redesign(self, state: AgentState) -> dict[str, Any]:
        """Writer -> sandbox -> fixer, bounded; then hyperparameters for the new model."""
        with self._session() as session:
            run = self._run(session, state["run_id"])
            ctx = self._context(session, run, state)
            written = self._write_validated(run, ctx)
            if written is None:
                return {
                    "finish_reason": "no proposed architecture passed the sandbox; the run stops"
                }
            source, rationale, parameters, usage, author = written
            ctx_new = self._context(
                session,
                run,
                state,
                source=source,
                architecture_version=self._next_version(session, run.id),
            )
            hp_proposal, hp_usage = self._advisor(run).tune(ctx_new)
            new_hp, applied = clamp_changes(
                Hyperparameters.model_validate(state["hyperparameters"]), hp_proposal.changes
            )
            proposal = self._architecture_proposal(
                session,
                run,
                state,
                "redesign",
                source,
                rationale,
                author=author,
                parameters=parameters,
                old_source=ctx.source,
                usage=usage.add(hp_usage),
                hyperparameters=new_hp.model_dump(mode="json"),
                changes={
                    k: {"value": v, "reason": hp_proposal.reasons.get(k, "")}
                    for k, v in applied.items()
                },
            )
            st: AgentState = {**state, "proposal": proposal}
            return {"proposal": proposal, **self._apply_if_auto(session, run, st, "redesign", True)}

    def repair(self, state: AgentState) -> dict[str, Any]:
        """Repair model code that raised (in the sandbox or in a job); redesign if it cannot."""
        outcome = state.get("outcome") or {}
        repairs = state.get("repairs", 0) + 1
        with self._session() as session:
            run = self._run(session, state["run_id"])
            if repairs > run.budget.get("max_repairs", 3):
                return {
                    "repairs": repairs,
                    "finish_reason": f"the model's code still fails after {repairs - 1} repairs: "
                    f"{outcome.get('message')}",
                }
            ctx = self._context(session, run, state)
            error = outcome.get("traceback") or outcome.get("message") or "unknown error"
            advisor = self._advisor(run)
            usage = Usage()
            source = ctx.source
            fixed: tuple[str, str, int | None] | None = None
            for _ in range(self.deps.fixer_rounds):
                repair, u = advisor.repair(ctx, error)
                usage = usage.add(u)
                if repair is None:
                    break
                report = self._validate(run, repair.source)
                if report.ok:
                    fixed = (repair.source, repair.explanation, report.parameters)
                    break
                error = report.reason
                ctx = self._context(session, run, state, source=repair.source)
            action = "repair"
            author = usage.model or run.advisor
            if fixed is None:
                written = self._write_validated(run, self._context(session, run, state))
                if written is None:
                    return {
                        "repairs": repairs,
                        "finish_reason": "the model's code fails and no redesign passed "
                        "the sandbox",
                    }
                src, why, params, u, author = written
                usage = usage.add(u)
                fixed = (
                    src,
                    f"could not repair the code ({error.splitlines()[-1] if error else ''}); "
                    f"redesigned instead: {why}",
                    params,
                )
                action = "redesign"
            source, explanation, parameters = fixed
            last_epoch = outcome.get("last_epoch")
            proposal = self._architecture_proposal(
                session,
                run,
                state,
                action,
                source,
                explanation,
                author=author,
                parameters=parameters,
                old_source=ctx.source,
                usage=usage,
                hyperparameters=state["hyperparameters"],
                changes={},
                epoch_start=state["epoch_start"] if last_epoch is None else last_epoch + 1,
            )
            st: AgentState = {**state, "proposal": proposal, "repairs": repairs}
            return {
                "proposal": proposal,
                "repairs": repairs,
                **self._apply_if_auto(session, run, st, action, True),
            }

    def retry(self, state: AgentState) -> dict[str, Any]:
        """Resubmit after an infrastructure failure, from the failed attempt's checkpoint."""
        outcome = state.get("outcome") or {}
        retries = state.get("retries", 0) + 1
        with self._session() as session:
            run = self._run(session, state["run_id"])
            if retries > run.budget.get("max_retries", 3):
                return {
                    "retries": retries,
                    "finish_reason": f"job failed {retries} times for infrastructure reasons: "
                    f"{outcome.get('message')}",
                }
            job = session.get(Job, outcome.get("job_id"))
            seq = self._record(
                session,
                state,
                "retry",
                f"infrastructure failure ({outcome.get('message') or 'no message'}); "
                f"attempt {state['attempt'] + 1}",
                advisor="controller",
            )
            resume = state.get("resume_checkpoint")
            weights_only = state.get("resume_weights_only", False)
            if job is not None and job.checkpoint_uri:
                resume, weights_only = job.checkpoint_uri, False
            return {
                "decisions": seq,
                "pending_usage": {},
                "retries": retries,
                "attempt": state["attempt"] + 1,
                "resume_checkpoint": resume,
                "resume_weights_only": weights_only,
                "proposal": None,
                "jobs_done": state.get("jobs_done", 1) - 1,  # a retried attempt is the same job
            }

    def await_approval(self, state: AgentState) -> dict[str, Any]:
        """Pause until the user approves or rejects the proposal (survives restarts)."""
        proposal = dict(state.get("proposal") or {})
        with self._session() as session:
            run = self._run(session, state["run_id"])
            if run.approval_response is None:
                run.status = "awaiting_approval"
                run.pending_approval = {
                    "action": proposal.get("action"),
                    "rationale": proposal.get("rationale", ""),
                    "changes": proposal.get("changes", {}),
                    "diff": proposal.get("diff"),
                }
        answer = interrupt({"kind": "approval", "action": proposal.get("action")})
        with self._session() as session:
            run = self._run(session, state["run_id"])
            run.pending_approval = None
            run.approval_response = None
            if run.status == "awaiting_approval":
                run.status = "running"
            if answer.get("approved"):
                proposal["approved"] = True
                st: AgentState = {**state, "proposal": proposal}  # type: ignore[typeddict-item]
                return {"proposal": proposal, **self._apply(session, run, st)}
            rejections = state.get("rejections", 0) + 1
            proposal["approved"] = False
            spent = Usage(**state.get("pending_usage") or {}).add(
                Usage(**proposal.get("usage") or {})
            )
            update: dict[str, Any] = {
                "proposal": proposal,
                "feedback": answer.get("feedback") or "rejected without feedback",
                "rejections": rejections,
                "pending_usage": spent.__dict__,
            }
            if rejections >= MAX_REJECTIONS:
                update["finish_reason"] = f"the user rejected {rejections} proposals"
            return update

    def report(self, state: AgentState) -> dict[str, Any]:
        """Write the report, record the final decision, end the run."""
        from service.reports.report import build_report

        with self._session() as session:
            run = self._run(session, state["run_id"])
            if run.status == "cancelled":
                return {}
            reason = state.get("finish_reason") or "the run ended"
            seq = state.get("decisions", 0)
            if not session.execute(
                select(func.count(Decision.id)).where(
                    Decision.run_id == run.id, Decision.action == "finish"
                )
            ).scalar_one():
                seq = self._record(session, state, "finish", reason)
            session.flush()
            succeeded = (
                session.execute(
                    select(Job)
                    .where(Job.run_id == run.id, Job.status == "succeeded")
                    .order_by(Job.generation.desc())
                )
                .scalars()
                .first()
            )
            failed_reasons = ("still fails", "failed", "no proposed", "no redesign")
            run.status = (
                "failed"
                if succeeded is None or any(r in reason for r in failed_reasons)
                else "succeeded"
            )
            if run.status == "failed":
                run.error = reason
            if succeeded is not None:
                run.final_test_accuracy = succeeded.test_accuracy
                run.best_val_accuracy = max(
                    x
                    for x in (run.best_val_accuracy, best_val_accuracy(session, succeeded.id), -1.0)
                    if x is not None
                )
            ctx = self._context(session, run, state)
            markdown = build_report(session, run, self.deps.artifacts)
            try:
                narrative, usage = self._advisor(run).summarize(ctx, markdown)
            except GradpilotError as e:
                narrative, usage = f"(the advisor could not summarise: {e.message})", Usage()
            run.input_tokens += usage.input_tokens
            run.output_tokens += usage.output_tokens
            markdown = markdown.replace("<!-- summary -->", narrative.strip(), 1)
            run.report_uri = self.deps.artifacts.put(
                f"runs/{run.id}/report.md", markdown.encode(), "text/markdown"
            )
            return {"decisions": seq, "pending_usage": {}}

    # ------------------------------------------------------------------ proposal plumbing

    @staticmethod
    def _next_version(session: Session, run_id: str) -> int:
        latest = session.execute(
            select(func.max(Architecture.version)).where(Architecture.run_id == run_id)
        ).scalar_one()
        return int(latest or 0) + 1

    def _architecture_proposal(
        self,
        session: Session,
        run: Run,
        state: AgentState,
        action: str,
        source: str,
        rationale: str,
        *,
        author: str,
        parameters: int | None,
        old_source: str,
        usage: Usage,
        hyperparameters: dict[str, Any],
        changes: dict[str, Any],
        **extra: Any,
    ) -> dict[str, Any]:
        """A validated new architecture, waiting to be applied (now, or once approved)."""
        version = self._next_version(session, run.id)
        return {
            "action": action,
            "rationale": rationale,
            "source": source,
            "author": author,
            "parameters": parameters,
            "version": version,
            "diff": unified_diff(
                old_source,
                source,
                f"v{state['architecture_version']}/model.py",
                f"v{version}/model.py",
            ),
            "changes": {"architecture_version": version, **changes},
            "hyperparameters": hyperparameters,
            "needs_approval": needs_approval(run.approval, action),
            "usage": usage.__dict__,
            "approved": None,
            **extra,
        }

    def _write_validated(
        self, run: Run, ctx: AdvisorContext
    ) -> tuple[str, str, int | None, Usage, str] | None:
        """The writer/tester/fixer loop: only validated code comes out. Falls back to the rules
        advisor's templates when the run's advisor cannot produce a valid module."""
        advisors = [self._advisor(run)]
        if advisors[0].name != "rules":
            advisors.append(self._rules())
        usage = Usage()
        for advisor in advisors:
            error: str | None = None
            previous: str | None = None
            for _ in range(self.deps.fixer_rounds):
                t0 = time.monotonic()
                proposal, u = advisor.write_architecture(
                    ctx, previous_error=error, previous_source=previous
                )
                usage = usage.add(u)
                report = self._validate(run, proposal.source)
                if report.ok:
                    if advisor is not advisors[0]:
                        usage.fallback = True
                    why = proposal.rationale
                    if proposal.expected_effect:
                        why += f" Expected effect: {proposal.expected_effect}"
                    log.info("architecture validated in %.1fs", time.monotonic() - t0)
                    return proposal.source, why, report.parameters, usage, u.model or advisor.name
                error, previous = report.reason, proposal.source
                log.warning("proposed architecture failed validation: %s", error)
        return None

    def _apply_if_auto(
        self, session: Session, run: Run, state: AgentState, action: str, changed: bool
    ) -> dict[str, Any]:
        proposal = state.get("proposal") or {}
        if not changed:
            # Nothing to change: record it as continuing rather than as a no-op tune.
            st: AgentState = {**state, "proposal": None}  # type: ignore[typeddict-item]
            session.flush()
            return {
                "proposal": None,
                **self._continue(session, run, st, proposal.get("rationale", "")),
            }
        if proposal.get("needs_approval"):
            return {}
        return self._apply(session, run, state)

    def _continue(
        self, session: Session, run: Run, state: AgentState, rationale: str
    ) -> dict[str, Any]:
        """Record ``continue`` and plan the next segment of the same model and schedule."""
        job = session.get(Job, (state.get("outcome") or {}).get("job_id"))
        seq = self._record(session, state, "continue", rationale)
        return {
            "decisions": seq,
            "pending_usage": {},
            "generation": state["generation"] + 1,
            "attempt": 1,
            "resume_checkpoint": job.checkpoint_uri if job else None,
            "resume_weights_only": False,
            "schedule_epoch": state["schedule_epoch"] + state["epochs"],
            **self._next_segment(run, state, state["epoch_start"] + state["epochs"]),
        }

    def _apply(self, session: Session, run: Run, state: AgentState) -> dict[str, Any]:
        """Make a proposal effective: store the architecture and the decision, plan the job."""
        proposal = state.get("proposal") or {}
        action = proposal["action"]
        usage = Usage(**proposal.get("usage", {}))
        outcome = state.get("outcome") or {}
        job = session.get(Job, outcome.get("job_id")) if outcome.get("job_id") else None
        update: dict[str, Any] = {
            "generation": state["generation"] + (1 if job is not None else 0),
            "attempt": 1,
            "hyperparameters": proposal["hyperparameters"],
            "schedule_epoch": 0,
            "schedule_total_epochs": self._plan_length(run, state),
            "feedback": None,
        }
        if job is not None and job.status != "succeeded":
            update["generation"] = state["generation"] + 1
        architecture_version = None
        if "source" in proposal:
            version = proposal["version"]
            self._save_architecture(
                session,
                run.id,
                version,
                proposal["source"],
                proposal["rationale"],
                proposal.get("author", run.advisor),
                state["architecture_version"],
                proposal.get("parameters"),
            )
            architecture_version = version
            update.update(
                architecture_version=version, resume_checkpoint=None, resume_weights_only=False
            )
            start = proposal.get(
                "epoch_start",
                state["epoch_start"]
                + (state["epochs"] if job is not None and job.status == "succeeded" else 0),
            )
        else:  # tune: same model, weights carried over, a fresh optimizer and schedule
            update.update(
                resume_checkpoint=job.checkpoint_uri if job else None, resume_weights_only=True
            )
            start = state["epoch_start"] + state["epochs"]
        update.update(self._next_segment(run, state, start))
        update["decisions"] = self._record(
            session,
            state,
            action,
            proposal.get("rationale", ""),
            changes=proposal.get("changes", {}),
            usage=usage,
            architecture_version=architecture_version,
        )
        update["pending_usage"] = {}
        return update
