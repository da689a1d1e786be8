"""Customer pages: jobs (list, create, the live job page, report, adapter), files (upload).

Every read and write goes through the services and repositories the JSON routers use
(api.jobs.service, api.files.service, db.repositories), tenant-scoped: another tenant's job id
answers the console's 404 page, exactly like an id that does not exist.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from pydantic import ValidationError
from sse_starlette.sse import EventSourceResponse

from api.console.auth import CustomerDep, FormText, check_csrf
from api.console.charts import loss_chart_svg, loss_points
from api.console.views import PREFIX, PageNotFound, render
from api.dependencies import SessionDep, SettingsDep
from api.errors import AppError, NotFound
from api.files import service as files_service
from api.files.disposition import content_disposition
from api.jobs import service as jobs_service
from api.jobs.event_stream import open_event_stream, session_key_check
from api.jobs.schemas import JobCreate
from api.reports.html import render_report_html
from api.uploads import receive_upload
from db.blobs import BlobStore
from db.ids import FILE_PREFIX, new_id
from db.job_status import is_terminal
from db.models import FilePurpose, FineTuningJob, Verdict
from db.repositories.checkpoints import CheckpointRepository
from db.repositories.events import EventRepository
from db.repositories.files import FileRepository
from db.repositories.jobs import JobRepository
from db.repositories.pagination import InvalidCursorError
from db.repositories.policy import PolicyRepository
from db.repositories.safety_reports import SafetyReportRepository
from safety_report import read_report

router = APIRouter(prefix=PREFIX, include_in_schema=False)
JOBS_PER_PAGE = 50
EVENTS_SHOWN = 100
# Lines of a refused upload kept to show beside their errors (each cut to PREVIEW_CHARS).
PREVIEW_LINES = 2000
PREVIEW_CHARS = 300


def _job_or_404(session: SessionDep, tenant_id: str, job_id: str) -> FineTuningJob:
    try:
        return jobs_service.get_job(session, tenant_id, job_id)
    except NotFound:
        raise PageNotFound() from None


# Tags pydantic adds to an error's location for union members ("auto" or a number).
_UNION_TAGS = frozenset({"int", "float", "str", "bool"})


def _param(loc: tuple[Any, ...]) -> str:
    return ".".join(
        str(part)
        for part in loc
        if "[" not in str(part)
        and str(part) not in _UNION_TAGS
        and not str(part).startswith("constrained-")
    )


# ------------------------------------------------------------------------------------- jobs
def _jobs_page(
    request: Request,
    session: SessionDep,
    user: CustomerDep,
    after: str | None = None,
    errors: dict[str, str] | None = None,
    form: dict[str, str] | None = None,
    status_code: int = 200,
) -> Response:
    try:
        page = JobRepository(session).list(user.tenant_id, after, JOBS_PER_PAGE)
    except InvalidCursorError:
        raise PageNotFound() from None
    verdicts = SafetyReportRepository(session).verdicts(
        user.tenant_id, [job.id for job in page.items]
    )
    files = FileRepository(session).list(
        user.tenant_id, purpose=FilePurpose.FINE_TUNE.value, after=None, limit=100, descending=True
    )
    return render(
        request,
        "jobs.html",
        {
            "user": user,
            "jobs": page.items,
            "has_more": page.has_more,
            "verdicts": verdicts,
            "files": files.items,
            "models": PolicyRepository(session).current().allowed_models,
            "errors": errors or {},
            "form": form or {},
        },
        status_code,
    )


@router.get("/jobs")
def jobs(
    request: Request,
    session: SessionDep,
    user: CustomerDep,
    after: str | None = Query(None, max_length=64),
) -> Response:
    return _jobs_page(request, session, user, after)


def _job_body(form: dict[str, str]) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": form.get("model", ""),
        "training_file": form.get("training_file", ""),
    }
    hyperparameters = {
        name: form[name].strip()
        for name in ("n_epochs", "batch_size")
        if form.get(name, "").strip()
    }
    if hyperparameters:
        body["hyperparameters"] = {
            k: int(v) if v.isdigit() else v for k, v in hyperparameters.items()
        }
    if form.get("mixer_ratio", "").strip():
        try:
            body["safety"] = {"mixer_ratio": float(form["mixer_ratio"])}
        except ValueError:
            body["safety"] = {"mixer_ratio": form["mixer_ratio"]}
    if form.get("suffix", "").strip():
        body["suffix"] = form["suffix"].strip()
    return body


@router.post("/jobs")
def create_job(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    user: CustomerDep,
    csrf_token: FormText = "",
    model: FormText = "",
    training_file: FormText = "",
    n_epochs: FormText = "",
    batch_size: FormText = "",
    mixer_ratio: FormText = "",
    suffix: FormText = "",
) -> Response:
    check_csrf(user, csrf_token)
    form = {
        "model": model,
        "training_file": training_file,
        "n_epochs": n_epochs,
        "batch_size": batch_size,
        "mixer_ratio": mixer_ratio,
        "suffix": suffix,
    }
    try:
        body = JobCreate.model_validate(_job_body(form))
        job = jobs_service.create_job(session, settings.blob_store(), user.tenant_id, body)
    except ValidationError as exc:
        # For "auto" or a number, the literal branch's error is the least helpful one.
        informative = [e for e in exc.errors() if e.get("type") != "literal_error"]
        first = (informative or exc.errors())[0]
        field = _param(tuple(first.get("loc", ())))
        errors = {field.split(".")[-1] or "form": str(first.get("msg", "invalid value"))}
        return _jobs_page(request, session, user, None, errors, form, 400)
    except AppError as exc:
        field = (exc.param or "form").split(".")[-1]
        return _jobs_page(request, session, user, None, {field: exc.message}, form, exc.status_code)
    return RedirectResponse(f"{PREFIX}/jobs/{job.id}", status_code=303)


@router.get("/jobs/{job_id}")
def job_page(request: Request, job_id: str, session: SessionDep, user: CustomerDep) -> Response:
    job = _job_or_404(session, user.tenant_id, job_id)
    events = EventRepository(session).page(user.tenant_id, job.id, None, EVENTS_SHOWN).items
    metrics = EventRepository(session).of_type(user.tenant_id, job.id, "metrics")
    checkpoints = CheckpointRepository(session).page(user.tenant_id, job.id, None, 50).items
    report = SafetyReportRepository(session).get(user.tenant_id, job.id)
    released = report is not None and (
        report.verdict == Verdict.PASSED.value
        or (report.verdict == Verdict.QUARANTINED.value and report.released_at is not None)
    )
    return render(
        request,
        "job.html",
        {
            "user": user,
            "job": job,
            "terminal": is_terminal(job.status),
            "events": events,
            "loss_chart": loss_chart_svg(loss_points([e.data for e in metrics])),
            "checkpoints": checkpoints,
            "report": report,
            "adapter_available": released
            and job.status == "succeeded"
            and bool(job.result_files)
            and job.model_deleted_at is None,
        },
    )


@router.get("/jobs/{job_id}/stream", response_model=None)
def job_stream(
    job_id: str, request: Request, session: SessionDep, settings: SettingsDep, user: CustomerDep
) -> EventSourceResponse:
    """The job's events, live (the JSON API's `events?stream=true`, with the console session:
    the same per-tenant cap, and the session's key re-checked at every poll)."""
    _job_or_404(session, user.tenant_id, job_id)
    return open_event_stream(
        request, settings, session_key_check(user.key_id), user.tenant_id, job_id
    )


@router.get("/jobs/{job_id}/report")
def job_report(job_id: str, session: SessionDep, user: CustomerDep) -> Response:
    """The HTML safety report the JSON API serves at `safety_report?format=html`."""
    _job_or_404(session, user.tenant_id, job_id)
    try:
        stored = jobs_service.get_safety_report(session, user.tenant_id, job_id)
    except NotFound:
        raise PageNotFound() from None
    response = HTMLResponse(render_report_html(read_report(stored.report)))
    response.headers["Cache-Control"] = "no-store"
    return response


@router.get("/jobs/{job_id}/adapter")
def job_adapter(
    request: Request, job_id: str, session: SessionDep, settings: SettingsDep, user: CustomerDep
) -> Response:
    """The released adapter, through the same gate as `GET /v1/files/{id}/content`."""
    job = _job_or_404(session, user.tenant_id, job_id)
    if not job.result_files:
        raise PageNotFound()
    try:
        file = files_service.get_file(session, user.tenant_id, job.result_files[0])
        handle = files_service.open_gated_content(session, settings.blob_store(), file)
    except NotFound:
        raise PageNotFound() from None
    except AppError as exc:
        return render(
            request, "withheld.html", {"user": user, "job": job, "message": exc.message}, 403
        )
    return StreamingResponse(
        files_service.iter_and_close(handle),
        media_type="application/zip",
        headers={"Content-Disposition": content_disposition(file.filename)},
    )


@router.post("/jobs/{job_id}/cancel")
def cancel_job(
    job_id: str, session: SessionDep, user: CustomerDep, csrf_token: FormText = ""
) -> Response:
    check_csrf(user, csrf_token)
    _job_or_404(session, user.tenant_id, job_id)
    try:
        jobs_service.cancel_job(session, user.tenant_id, job_id)
    except AppError:
        pass  # already finished: the page shows the final state
    return RedirectResponse(f"{PREFIX}/jobs/{job_id}", status_code=303)


# ------------------------------------------------------------------------------------ files
def _files_page(
    request: Request,
    session: SessionDep,
    user: CustomerDep,
    upload_error: dict[str, Any] | None = None,
    status_code: int = 200,
) -> Response:
    files = FileRepository(session).list(
        user.tenant_id, purpose=FilePurpose.FINE_TUNE.value, after=None, limit=100, descending=True
    )
    return render(
        request,
        "files.html",
        {"user": user, "files": files.items, "upload_error": upload_error},
        status_code,
    )


@router.get("/files")
def files(request: Request, session: SessionDep, user: CustomerDep) -> Response:
    return _files_page(request, session, user)


def _preview(store: BlobStore, storage_path: str) -> dict[int, str]:
    """The first PREVIEW_LINES lines of an upload, cut short, to show beside their errors."""
    lines: dict[int, str] = {}
    with store.open(storage_path) as handle:
        for number, raw in enumerate(handle, start=1):
            if number > PREVIEW_LINES:
                break
            lines[number] = raw[:PREVIEW_CHARS].decode("utf-8", errors="replace").rstrip("\r\n")
    return lines


@router.post("/files")
async def upload(
    request: Request, session: SessionDep, settings: SettingsDep, user: CustomerDep
) -> Response:
    """Upload a JSONL file (multipart, as `POST /v1/files`); a refused file's errors are shown
    line by line, each beside the line it names."""
    store = settings.blob_store()
    file_id = new_id(FILE_PREFIX)
    try:
        received = await receive_upload(
            request, store, user.tenant_id, file_id, settings.max_upload_bytes
        )
    except AppError as exc:
        return _files_page(request, session, user, {"message": exc.message, "lines": []}, 400)
    try:
        check_csrf(user, received.fields.get("csrf_token"))
        if received.storage_path is None:
            return _files_page(
                request, session, user, {"message": "Choose a file to upload.", "lines": []}, 400
            )
        preview = await run_in_threadpool(_preview, store, received.storage_path)
        try:
            await run_in_threadpool(
                files_service.register_upload,
                session,
                store,
                tenant_id=user.tenant_id,
                file_id=file_id,
                filename=received.filename or "upload.jsonl",
                purpose=FilePurpose.FINE_TUNE.value,
                storage_path=received.storage_path,
                size=received.bytes,
                sha256=received.sha256 or "",
            )
        except AppError as exc:
            store.delete(received.storage_path)
            lines = [
                {
                    "line": detail.get("line"),
                    "field": detail.get("field"),
                    "message": detail.get("message"),
                    "text": preview.get(detail.get("line") or 0),
                }
                for detail in (exc.details or [])
            ]
            return _files_page(
                request, session, user, {"message": exc.message, "lines": lines}, exc.status_code
            )
    except BaseException:
        if received.storage_path is not None:
            store.delete(received.storage_path)
        raise
    return RedirectResponse(f"{PREFIX}/files?uploaded={file_id}", status_code=303)
