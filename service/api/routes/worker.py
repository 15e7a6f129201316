"""Worker routes (job token) and the user's view of one job."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from service import jobs as job_ops
from service.api.deps import ApiState, DbSession, JobCaller, State, User
from service.errors import Conflict
from service.ingest import summary_rows
from service.schemas.jobs import CheckpointIn, HeartbeatIn, JobFinish, JobPublic, JobSpec
from service.schemas.summaries import EpochSummaryAck, EpochSummaryBatch

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


@router.get("/{job_id}", summary="Show a job")
def get_job(job_id: str, session: DbSession, _: User) -> JobPublic:
    return JobPublic.model_validate(job_ops.get_job(session, job_id))


@router.get("/{job_id}/spec", summary="The job's spec (worker)")
def get_spec(job_id: str, state: State, session: DbSession, _: JobCaller) -> JobSpec:
    job = job_ops.get_job(session, job_id)
    return job_ops.job_spec(session, job, state.settings.resolved_artifact_url)


def _inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema with its ``$defs`` inlined (for ``openapi_extra``)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return inline(defs[ref.removeprefix("#/$defs/")])
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    return inline(schema)  # type: ignore[no-any-return]


def parse_summary_batch(raw: bytes) -> EpochSummaryBatch:
    """Validate a posted batch straight from its JSON bytes.

    Summary ingest is the API's hot path. FastAPI would parse the body with ``json.loads`` and
    then validate the Python objects; pydantic's own JSON validation does both in one pass at
    well under half the cost. Errors become the same 422 as FastAPI's (``loc`` under ``body``).
    """
    try:
        return EpochSummaryBatch.model_validate_json(raw)
    except ValidationError as e:
        errors = [{**err, "loc": ("body", *err["loc"])} for err in e.errors()]
        raise RequestValidationError(errors) from None


@router.post(
    "/{job_id}/summaries",
    summary="Post epoch summaries (worker; idempotent)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _inline_schema(EpochSummaryBatch)}},
        }
    },
)
async def post_summaries(
    job_id: str, request: Request, state: State, _: JobCaller
) -> EpochSummaryAck:
    """Store a batch; epochs already stored are counted as duplicates, not stored twice.

    The body is an ``EpochSummaryBatch``: ``{"summaries": [EpochSummaryIn, ...]}``."""
    body = parse_summary_batch(await request.body())
    bounds = state.job_bounds.get(job_id)
    if bounds is None:
        bounds = await run_in_threadpool(_bounds, state, job_id)
    rows = summary_rows(job_id, bounds, body.summaries)
    accepted, duplicates = await state.summary_writer.write(rows, len(body.summaries))
    return EpochSummaryAck(accepted=accepted, duplicates=duplicates)


def _bounds(state: ApiState, job_id: str) -> job_ops.JobBounds:
    with state.sessions() as session:
        return state.job_bounds.setdefault(job_id, job_ops.job_bounds(session, job_id))


@router.post("/{job_id}/checkpoints", summary="Register a checkpoint (worker)")
def post_checkpoint(
    job_id: str, body: CheckpointIn, session: DbSession, _: JobCaller
) -> dict[str, str]:
    job = job_ops.get_job(session, job_id)
    job_ops.register_checkpoint(session, job, body)
    session.commit()
    return {"status": "ok"}


@router.post("/{job_id}/heartbeat", summary="The worker is alive (worker)")
def post_heartbeat(
    job_id: str, body: HeartbeatIn, session: DbSession, _: JobCaller
) -> dict[str, bool]:
    job = job_ops.get_job(session, job_id)
    if job.status in ("succeeded", "failed"):
        raise Conflict(f"job {job_id} has already ended ({job.status})")
    cancel = job_ops.heartbeat(session, job)
    session.commit()
    return {"cancel_requested": cancel}


@router.post("/{job_id}/finish", summary="Report how the job ended (worker)")
def post_finish(job_id: str, body: JobFinish, session: DbSession, _: JobCaller) -> JobPublic:
    job = job_ops.get_job(session, job_id)
    job_ops.finish_job(session, job, body)
    session.commit()
    return JobPublic.model_validate(job)
