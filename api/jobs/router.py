"""/v1/fine_tuning/jobs: create, list, retrieve, cancel/pause/resume, events, checkpoints,
safety report."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response
from sse_starlette.sse import EventSourceResponse

from api.dependencies import PageDep, SessionDep, SettingsDep, TenantDep, bearer_token
from api.errors import InvalidRequest
from api.files.router import invalid_cursor
from api.jobs import service
from api.jobs.event_stream import bearer_key_check, open_event_stream
from api.jobs.schemas import (
    MAX_METADATA_KEY,
    MAX_METADATA_PAIRS,
    MAX_METADATA_VALUE,
    JobCreate,
    SafetyReportObject,
)
from api.reports.html import render_report_html
from api.serializers import checkpoint_object, event_object, job_object, list_object, unix
from db.repositories.checkpoints import CheckpointRepository
from db.repositories.events import EventRepository
from db.repositories.jobs import JobRepository
from db.repositories.pagination import InvalidCursorError
from safety_report import read_report

router = APIRouter(prefix="/v1/fine_tuning/jobs", tags=["fine_tuning"])


@router.post("")
def create_job(
    body: JobCreate, session: SessionDep, settings: SettingsDep, tenant_id: TenantDep
) -> dict[str, Any]:
    """Create a fine-tuning job.

    Only cheap checks run in this request (model, hyperparameter limits, the safety block, the
    files exist for the caller with purpose `fine-tune`, quotas: 429 `quota_active_jobs_exceeded`
    or `quota_trained_tokens_exceeded`). The job is answered in `validating_files`; the
    validation worker then screens the training file and moves the job to `queued`, or to
    `failed` with `error` = {code, message, param}: `training_file_flagged` (too many rows
    flagged by screening), `quota_trained_tokens_exceeded` (one epoch of the file cannot fit the
    tenant's remaining daily trained tokens) or `invalid_file_format`, each with param
    `training_file`. The job's events say which (`Files validated, moving job to queued state`
    or `Training file rejected: …`). A job in `validating_files` can be cancelled.
    """
    job = service.create_job(session, settings.blob_store(), tenant_id, body)
    return job_object(job)


def _check_metadata_filter(metadata: dict[str, str]) -> None:
    # The bounds of stored metadata (and of the OpenAPI document's `metadata` filter).
    if len(metadata) > MAX_METADATA_PAIRS:
        raise InvalidRequest(
            f"At most {MAX_METADATA_PAIRS} metadata[k]=v filters.",
            param="metadata",
            code="too_many_items",
        )
    for key, value in metadata.items():
        if len(key) > MAX_METADATA_KEY or len(value) > MAX_METADATA_VALUE:
            raise InvalidRequest(
                f"metadata keys are at most {MAX_METADATA_KEY} characters and values at most "
                f"{MAX_METADATA_VALUE}.",
                param="metadata",
                code="invalid_value",
            )


@router.get("")
def list_jobs(
    request: Request, session: SessionDep, tenant_id: TenantDep, page: PageDep
) -> dict[str, Any]:
    """List the caller's jobs, newest first (filter with metadata[k]=v)."""
    metadata = {
        key[len("metadata[") : -1]: value
        for key, value in request.query_params.items()
        if key.startswith("metadata[") and key.endswith("]")
    }
    _check_metadata_filter(metadata)
    try:
        result = JobRepository(session).list(tenant_id, page.after, page.limit, metadata or None)
    except InvalidCursorError as exc:
        raise invalid_cursor(str(exc)) from exc
    return list_object(result.items, job_object, result.has_more, ids=False)


@router.get("/{job_id}")
def retrieve_job(job_id: str, session: SessionDep, tenant_id: TenantDep) -> dict[str, Any]:
    """Retrieve a job."""
    return job_object(service.get_job(session, tenant_id, job_id))


@router.post("/{job_id}/cancel")
def cancel_job(job_id: str, session: SessionDep, tenant_id: TenantDep) -> dict[str, Any]:
    """Cancel a job (cooperatively if it is running)."""
    return job_object(service.cancel_job(session, tenant_id, job_id))


@router.post("/{job_id}/pause")
def pause_job(job_id: str, session: SessionDep, tenant_id: TenantDep) -> dict[str, Any]:
    """Pause a job at its next checkpoint."""
    return job_object(service.pause_job(session, tenant_id, job_id))


@router.post("/{job_id}/resume")
def resume_job(job_id: str, session: SessionDep, tenant_id: TenantDep) -> dict[str, Any]:
    """Resume a paused job from its last checkpoint."""
    return job_object(service.resume_job(session, tenant_id, job_id))


@router.get("/{job_id}/events", response_model=None)
def list_events(
    job_id: str,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    tenant_id: TenantDep,
    page: PageDep,
    stream: bool = False,
) -> dict[str, Any] | EventSourceResponse:
    """List a job's events, newest first; `stream=true` for server-sent events (ends when the
    job is terminal or paused, or the key is revoked; at most a few open per tenant)."""
    service.get_job(session, tenant_id, job_id)
    if stream:
        token = bearer_token(request.headers.get("authorization")) or ""
        return open_event_stream(request, settings, bearer_key_check(token), tenant_id, job_id)
    try:
        result = EventRepository(session).page(tenant_id, job_id, page.after, page.limit)
    except InvalidCursorError as exc:
        raise invalid_cursor(str(exc)) from exc
    return list_object(result.items, event_object, result.has_more, ids=False)


@router.get("/{job_id}/checkpoints")
def list_checkpoints(
    job_id: str,
    session: SessionDep,
    tenant_id: TenantDep,
    after: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
) -> dict[str, Any]:
    """List a job's checkpoints, newest first."""
    service.get_job(session, tenant_id, job_id)
    try:
        result = CheckpointRepository(session).page(tenant_id, job_id, after, limit)
    except InvalidCursorError as exc:
        raise invalid_cursor(str(exc)) from exc
    return list_object(result.items, checkpoint_object, result.has_more)


@router.get(
    "/{job_id}/safety_report",
    response_model=SafetyReportObject,
    response_model_exclude_unset=True,
    responses={200: {"content": {"text/html": {}}}},
)
def safety_report(
    job_id: str,
    session: SessionDep,
    tenant_id: TenantDep,
    format: Literal["json", "html"] = "json",
) -> SafetyReportObject | Response:
    """The job's safety evaluation report (404 until it exists); `format=html` for a page."""
    stored = service.get_safety_report(session, tenant_id, job_id)
    report = read_report(stored.report)
    if format == "html":
        return HTMLResponse(render_report_html(report))
    return SafetyReportObject(
        object="fine_tuning.job.safety_report",
        id=stored.id,
        job_id=stored.job_id,
        verdict=stored.verdict,
        reasons=list(stored.reasons or []),
        evaluated_sha256=stored.evaluated_sha256,
        created_at=unix(stored.created_at),
        released_at=unix(stored.released_at),
        report=report,
    )
