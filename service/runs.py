"""Run operations shared by the API and the agent: create, read, cancel, approve, reject.

Functions take a session and leave committing to the caller, who owns the transaction.
"""

from __future__ import annotations

import ast
import difflib
import hashlib
import importlib.util
import zipfile
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.db.models import BUILTIN_ADMIN_ID, Architecture, Decision, EpochSummary, Job, Run
from service.errors import Conflict, InvalidInput, NotFound, SandboxRejected
from service.schemas.advisors import BEDROCK_PROVIDERS
from service.schemas.datasets import DatasetSpec
from service.schemas.decisions import ArchitectureDiff, ArchitecturePublic, DecisionPublic
from service.schemas.hyperparameters import Hyperparameters
from service.schemas.runs import (
    ApprovalRequest,
    Budget,
    Resources,
    RunCreate,
    RunPublic,
    RunSummary,
)
from service.schemas.statuses import TERMINAL_RUN_STATUSES, RunStatus


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def check_advisor_spec(spec: str) -> str:
    spec = spec.strip()
    if spec == "rules":
        return spec
    provider, sep, model = spec.partition(":")
    if not sep or not provider or not model:
        raise InvalidInput(
            f"unknown advisor {spec!r}: use 'rules', 'bedrock:<model or inference profile id>' "
            "or '<provider>:<model>'"
        )
    return spec


# ------------------------------------------------------------ what can never become a run

#: the model contract's entry points (``service.sandbox.model_contract``)
_ENTRY_POINTS = frozenset({"build_model", "CNN"})
#: LangChain providers whose integration package is not ``langchain_<provider>``
_PROVIDER_PACKAGES = {
    "azure_openai": "langchain_openai",
    "google_anthropic_vertex": "langchain_google_vertexai",
    "nvidia": "langchain_nvidia_ai_endpoints",
}


def refuse_impossible_run(body: RunCreate, advisor: str) -> None:
    """Refuse (``InvalidInput``, a 422 that says what to fix) a run that cannot train, before
    any job is spent on it: a model source with neither entry point of the model contract,
    an advisor this server cannot build, or a local ``.npz`` that cannot be read."""
    _require_entry_point(body.model_source)
    _require_advisor(advisor)
    _require_readable_dataset(body.dataset)


def _top_level_names(statements: list[ast.stmt]) -> set[str]:
    """Names a module binds when it runs (inside if/try/with blocks too, not inside defs)."""
    names: set[str] = set()
    for node in statements:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
        for field in ("body", "orelse", "finalbody", "handlers"):
            block = getattr(node, field, None)
            if isinstance(block, list) and not isinstance(
                node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef
            ):
                for item in block:
                    if isinstance(item, ast.ExceptHandler):
                        names |= _top_level_names(item.body)
                names |= _top_level_names([s for s in block if isinstance(s, ast.stmt)])
    return names


def _require_entry_point(source: str) -> None:
    try:
        names = _top_level_names(ast.parse(source).body)
    except SyntaxError:
        return  # the static check reports it, with its line
    if not names & _ENTRY_POINTS:
        raise InvalidInput(
            "model_source defines neither build_model(input_shape, num_classes) nor a class "
            "CNN: define one of them (examples/flawed_digits.py shows the contract)"
        )


def _require_advisor(spec: str) -> None:
    if spec == "rules":
        return
    provider = spec.partition(":")[0].strip().lower()
    if provider in BEDROCK_PROVIDERS:
        return
    package = _PROVIDER_PACKAGES.get(provider, f"langchain_{provider}")
    missing = [
        name
        for name in ("langchain", package)
        if not name.isidentifier() or importlib.util.find_spec(name) is None
    ]
    if missing:
        raise InvalidInput(
            f"unknown advisor {spec!r}: this server has no LangChain integration for "
            f"{provider!r} (missing {', '.join(missing)}); use 'rules' or "
            "'bedrock:<model or inference profile id>', or install the provider's package"
        )


def _require_readable_dataset(dataset: DatasetSpec) -> None:
    if dataset.name != "npz" or dataset.uri is None or dataset.uri.startswith("s3://"):
        return  # built-in sets, and objects in S3 (read with the worker's credentials)
    uri = dataset.uri
    path = Path(uri.removeprefix("file://"))
    try:
        with zipfile.ZipFile(path) as archive:
            members = {name.removesuffix(".npy") for name in archive.namelist()}
    except (OSError, zipfile.BadZipFile, ValueError) as e:
        reason = getattr(e, "strerror", None) or str(e)
        raise InvalidInput(
            f"dataset.uri {uri!r} cannot be read as an .npz file ({reason}): give the path of "
            "a file written by numpy.savez with x_train and y_train, or an s3:// URL"
        ) from None
    missing = sorted({"x_train", "y_train"} - members)
    if missing:
        raise InvalidInput(
            f"dataset.uri {uri!r} lacks {' and '.join(missing)}: save the arrays with "
            "numpy.savez(path, x_train=..., y_train=...)"
        )


def create_run(
    session: Session, body: RunCreate, default_advisor: str, owner_id: str = BUILTIN_ADMIN_ID
) -> Run:
    """Store a new run of ``owner_id`` and its first architecture (after the static check of
    its source and ``refuse_impossible_run``)."""
    from service.sandbox.static_check import check_source

    try:
        check_source(body.model_source)
    except SandboxRejected as e:
        raise InvalidInput(f"model_source was refused by the static check: {e.message}") from e
    refuse_impossible_run(body, check_advisor_spec(body.advisor or default_advisor))
    run = Run(
        name=body.name,
        status=RunStatus.PENDING,
        dataset=body.dataset.model_dump(mode="json"),
        hyperparameters=body.hyperparameters.model_dump(mode="json"),
        budget=body.budget.model_dump(mode="json"),
        resources=body.resources.model_dump(mode="json"),
        advisor=check_advisor_spec(body.advisor or default_advisor),
        approval=body.approval,
        seed=body.seed,
        owner_id=owner_id,
    )
    session.add(run)
    session.flush()
    session.add(
        Architecture(
            run_id=run.id,
            version=0,
            parent_version=None,
            source=body.model_source,
            sha256=sha256(body.model_source),
            rationale="The model as submitted.",
            author="user",
        )
    )
    session.flush()
    return run


def get_run(
    session: Session, run_id: str, *, for_update: bool = False, owner_id: str | None = None
) -> Run:
    """The run; with ``owner_id``, only if that user owns it: another user's run is "not
    found", exactly like a missing one, so that ids do not leak."""
    stmt = select(Run).where(Run.id == run_id)
    if owner_id is not None:
        stmt = stmt.where(Run.owner_id == owner_id)
    if for_update:
        stmt = stmt.with_for_update()
    run = session.execute(stmt).scalar_one_or_none()
    if run is None:
        raise NotFound(f"no run with id {run_id!r}")
    return run


def _job_counts(session: Session, run_ids: list[str]) -> dict[str, tuple[int, int]]:
    """Jobs and distinct epochs trained, per run (retried attempts repeat epochs)."""
    if not run_ids:
        return {}
    jobs = dict(
        session.execute(
            select(Job.run_id, func.count(Job.id))
            .where(Job.run_id.in_(run_ids))
            .group_by(Job.run_id)
        ).all()
    )
    epochs = dict(
        session.execute(
            select(EpochSummary.run_id, func.count(EpochSummary.epoch.distinct()))
            .where(EpochSummary.run_id.in_(run_ids))
            .group_by(EpochSummary.run_id)
        ).all()
    )
    return {r: (int(jobs.get(r, 0)), int(epochs.get(r, 0))) for r in run_ids}


def _summary(run: Run, counts: tuple[int, int]) -> dict[str, Any]:
    return {
        "id": run.id,
        "name": run.name,
        "status": run.status,
        "dataset": run.dataset.get("name", "?"),
        "advisor": run.advisor,
        "approval": run.approval,
        "jobs": counts[0],
        "epochs": counts[1],
        "best_val_accuracy": run.best_val_accuracy,
        "baseline_val_accuracy": run.baseline_val_accuracy,
        "created_at": run.created_at,
        "updated_at": run.updated_at,
        "error": run.error,
    }


def list_runs(
    session: Session, *, status: str | None, limit: int, offset: int, owner_id: str | None = None
) -> tuple[list[RunSummary], int]:
    """Runs newest first; with ``owner_id``, only that user's."""
    stmt = select(Run)
    count_stmt = select(func.count(Run.id))
    if owner_id is not None:
        stmt = stmt.where(Run.owner_id == owner_id)
        count_stmt = count_stmt.where(Run.owner_id == owner_id)
    if status:
        stmt = stmt.where(Run.status == status)
        count_stmt = count_stmt.where(Run.status == status)
    runs = list(
        session.execute(stmt.order_by(Run.created_at.desc()).limit(limit).offset(offset)).scalars()
    )
    counts = _job_counts(session, [r.id for r in runs])
    data = [RunSummary.model_validate(_summary(r, counts.get(r.id, (0, 0)))) for r in runs]
    return data, int(session.execute(count_stmt).scalar_one())


def latest_job(session: Session, run_id: str) -> Job | None:
    return session.execute(
        select(Job)
        .where(Job.run_id == run_id)
        .order_by(Job.generation.desc(), Job.attempt.desc())
        .limit(1)
    ).scalar_one_or_none()


def current_architecture_version(session: Session, run_id: str) -> int:
    return int(
        session.execute(
            select(func.max(Architecture.version)).where(Architecture.run_id == run_id)
        ).scalar_one()
        or 0
    )


def _latest_isolation(session: Session, run_id: str) -> str | None:
    return session.execute(
        select(Job.isolation)
        .where(Job.run_id == run_id, Job.isolation.is_not(None))
        .order_by(Job.generation.desc(), Job.attempt.desc())
        .limit(1)
    ).scalar_one_or_none()


def run_public(session: Session, run: Run) -> RunPublic:
    counts = _job_counts(session, [run.id]).get(run.id, (0, 0))
    job = latest_job(session, run.id)
    hp = job.hyperparameters if job else run.hyperparameters
    decisions = [DecisionPublic.model_validate(d) for d in run.decisions]
    return RunPublic.model_validate(
        {
            **_summary(run, counts),
            "dataset_spec": DatasetSpec.model_validate(run.dataset),
            "hyperparameters": Hyperparameters.model_validate(hp),
            "budget": Budget.model_validate(run.budget),
            "resources": Resources.model_validate(run.resources),
            "seed": run.seed,
            "architecture_version": job.architecture_version if job else 0,
            "isolation": _latest_isolation(session, run.id),
            "final_test_accuracy": run.final_test_accuracy,
            "pending_approval": ApprovalRequest.model_validate(run.pending_approval)
            if run.pending_approval
            else None,
            "report_uri": run.report_uri,
            "input_tokens": run.input_tokens,
            "output_tokens": run.output_tokens,
            "decisions": decisions,
        }
    )


def cancel_run(session: Session, run: Run) -> None:
    if run.status in TERMINAL_RUN_STATUSES:
        raise Conflict(f"run {run.id} has already ended ({run.status}); nothing to cancel")
    run.cancel_requested = True
    run.status = RunStatus.CANCELLED
    run.pending_approval = None


def answer_approval(session: Session, run: Run, *, approved: bool, feedback: str = "") -> None:
    if run.status != RunStatus.AWAITING_APPROVAL or run.pending_approval is None:
        raise Conflict(
            f"run {run.id} is not waiting for approval (status {run.status}); "
            "only a run whose approval policy paused it can be approved or rejected"
        )
    if run.approval_response is not None:
        raise Conflict(f"run {run.id} has already been answered; the agent is picking it up")
    run.approval_response = {"approved": approved, "feedback": feedback}


def decisions(session: Session, run_id: str) -> list[DecisionPublic]:
    rows = session.execute(
        select(Decision).where(Decision.run_id == run_id).order_by(Decision.sequence)
    ).scalars()
    return [DecisionPublic.model_validate(d) for d in rows]


def architectures(session: Session, run_id: str) -> list[ArchitecturePublic]:
    rows = session.execute(
        select(Architecture).where(Architecture.run_id == run_id).order_by(Architecture.version)
    ).scalars()
    return [ArchitecturePublic.model_validate(a) for a in rows]


def get_architecture(session: Session, run_id: str, version: int) -> Architecture:
    row = session.execute(
        select(Architecture).where(Architecture.run_id == run_id, Architecture.version == version)
    ).scalar_one_or_none()
    if row is None:
        raise NotFound(f"run {run_id} has no architecture version {version}")
    return row


def unified_diff(a: str, b: str, a_name: str, b_name: str) -> str:
    return "".join(
        difflib.unified_diff(
            a.splitlines(keepends=True), b.splitlines(keepends=True), a_name, b_name
        )
    )


def architecture_diff(
    session: Session, run_id: str, a: int | None, b: int | None
) -> ArchitectureDiff:
    latest = current_architecture_version(session, run_id)
    to_v = latest if b is None else b
    from_v = (to_v - 1 if to_v > 0 else 0) if a is None else a
    new = get_architecture(session, run_id, to_v)
    old = get_architecture(session, run_id, from_v)
    return ArchitectureDiff(
        run_id=run_id,
        from_version=from_v,
        to_version=to_v,
        diff=unified_diff(old.source, new.source, f"v{from_v}/model.py", f"v{to_v}/model.py"),
        rationale=new.rationale,
    )
