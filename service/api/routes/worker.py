"""Worker routes (job token) and the user's view of one job."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from service import auth
from service import jobs as job_ops
from service.api.deps import ApiState, DbSession, JobCaller, LiveJobCaller, State, User
from service.errors import Conflict
from service.ingest import summary_rows
from service.job_artifacts import check_checkpoint_uri, job_artifact_urls
from service.schemas.artifacts import ArtifactUrls
from service.schemas.jobs import CheckpointIn, HeartbeatIn, JobFinish, JobPublic, JobSpec
from service.schemas.summaries import EpochSummaryAck, EpochSummaryBatch

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


@router.get("/{job_id}", summary="Show a job (of one of your runs)")
def get_job(job_id: str, session: DbSession, _: User, __: JobCaller) -> JobPublic:
    return JobPublic.model_validate(job_ops.get_job(session, job_id))


@router.get("/{job_id}/spec", summary="The job's spec (worker)")
def get_spec(job_id: str, state: State, session: DbSession, _: LiveJobCaller) -> JobSpec:
    job = job_ops.get_job(session, job_id)
    # The store's own root URL (resolved), the one the URLs it hands out start with.
    return job_ops.job_spec(session, job, state.artifacts.root_url)


@router.get(
    "/{job_id}/artifact-urls",
    summary="URLs for exactly this job's artifacts (worker)",
    response_model_exclude_none=True,
)
def get_artifact_urls(
    job_id: str,
    state: State,
    session: DbSession,
    _: LiveJobCaller,
    put: Annotated[
        list[str] | None,
        Query(max_length=16, description="Checkpoint names to upload (e000003-s0000000.pt)."),
    ] = None,
) -> ArtifactUrls:
    """The job's checkpoints (get, delete), PUT URLs for the checkpoint names asked for, and
    GET URLs for its resume checkpoint and data set file. On S3 each is pre-signed for one
    method on one key, so the worker needs no S3 permission; on a ``file://`` store they are
    the objects' own URLs."""
    job = job_ops.get_job(session, job_id)
    return job_artifact_urls(state.settings, state.artifacts, job, job.run, put or [])


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
    job_id: str, request: Request, state: State, _: LiveJobCaller
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
    job_id: str, body: CheckpointIn, state: State, session: DbSession, _: LiveJobCaller
) -> dict[str, str]:
    """The URI must lie in the job's own checkpoint folder (422 otherwise)."""
    job = job_ops.get_job(session, job_id)
    check_checkpoint_uri(state.artifacts.root_url, job, body.uri)
    job_ops.register_checkpoint(session, job, body)
    session.commit()
    return {"status": "ok"}


@router.post("/{job_id}/heartbeat", summary="The worker is alive (worker)")
def post_heartbeat(
    job_id: str, body: HeartbeatIn, state: State, session: DbSession, _: LiveJobCaller
) -> dict[str, bool]:
    job = job_ops.get_job(session, job_id)
    # Checked here too (the dependency may have answered from its cache, and users pass it).
    reason = auth.job_end_reason(session, job)
    if reason is not None:
        state.job_ended(job_id, reason)
        raise Conflict(auth.ended_job_message(reason))
    cancel = job_ops.heartbeat(session, job)
    session.commit()
    return {"cancel_requested": cancel}


@router.post("/{job_id}/finish", summary="Report how the job ended (worker)")
def post_finish(
    job_id: str, body: JobFinish, state: State, session: DbSession, _: JobCaller
) -> JobPublic:
    """Open to a job that has ended, so that a retried report of the same outcome is answered
    as the first was (a different outcome is a 409); the job's token dies with it."""
    job = job_ops.get_job(session, job_id)
    job_ops.finish_job(session, job, body)
    session.commit()
    state.job_ended(job_id, f"job {job_id} has ended ({job.status})")
    return JobPublic.model_validate(job)
