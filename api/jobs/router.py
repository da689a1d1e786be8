"""/v1/fine_tuning/jobs: create, list, retrieve, cancel/pause/resume, events, checkpoints,
safety report."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response
from sse_starlette.sse import EventSourceResponse

from api.dependencies import PageDep, SessionDep, SettingsDep, TenantDep
from api.files.router import invalid_cursor
from api.jobs import service
from api.jobs.schemas import JobCreate, SafetyReportObject
from api.reports.html import render_report_html
from api.serializers import checkpoint_object, event_object, job_object, list_object, unix
from db.repositories.checkpoints import CheckpointRepository
from db.repositories.events import EventRepository
from db.repositories.jobs import JobRepository
from db.repositories.pagination import InvalidCursorError
from db.session import session_scope
from safety_report import read_report

router = APIRouter(prefix="/v1/fine_tuning/jobs", tags=["fine_tuning"])
SSE_POLL_SECONDS = 0.5


@router.post("")
def create_job(
    body: JobCreate, session: SessionDep, settings: SettingsDep, tenant_id: TenantDep
) -> dict[str, Any]:
    """Create a fine-tuning job."""
    job = service.create_job(session, settings.blob_store(), tenant_id, body)
    return job_object(job)


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
    session: SessionDep,
    tenant_id: TenantDep,
    page: PageDep,
    stream: bool = False,
) -> dict[str, Any] | EventSourceResponse:
    """List a job's events, newest first; `stream=true` for server-sent events."""
    service.get_job(session, tenant_id, job_id)
    if stream:
        return EventSourceResponse(_event_stream(tenant_id, job_id))
    try:
        result = EventRepository(session).page(tenant_id, job_id, page.after, page.limit)
    except InvalidCursorError as exc:
        raise invalid_cursor(str(exc)) from exc
    return list_object(result.items, event_object, result.has_more, ids=False)


def _poll_events(tenant_id: str, job_id: str, after_seq: int) -> tuple[list[Any], int, bool]:
    with session_scope() as session:
        job = JobRepository(session).get(tenant_id, job_id)
        terminal = job is None or service.is_terminal_status(job.status)
        events = EventRepository(session).since(job_id, after_seq)
        rendered = [event_object(e) for e in events]
        last = events[-1].seq if events else after_seq
    return rendered, last, terminal


async def _event_stream(tenant_id: str, job_id: str) -> AsyncIterator[dict[str, str]]:
    after_seq = 0
    while True:
        # Read the status before the events: once terminal, this read drains everything.
        events, after_seq, terminal = await run_in_threadpool(
            _poll_events, tenant_id, job_id, after_seq
        )
        for event in events:
            yield {"event": "fine_tuning.job.event", "id": event["id"], "data": json.dumps(event)}
        if terminal:
            yield {"event": "done", "data": "[DONE]"}
            return
        await asyncio.sleep(SSE_POLL_SECONDS)


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
