"""/v1/files: upload (streamed, validated), list, retrieve, content (gated), delete, screen."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from api.dependencies import PageDep, SessionDep, SettingsDep, TenantDep
from api.errors import InvalidRequest
from api.files import service
from api.files.disposition import content_disposition
from api.serializers import file_object, list_object
from api.uploads import receive_upload
from db.ids import FILE_PREFIX, new_id
from db.repositories.files import FileRepository
from db.repositories.pagination import InvalidCursorError

router = APIRouter(prefix="/v1/files", tags=["files"])


def invalid_cursor(after: str) -> InvalidRequest:
    return InvalidRequest(f"Unknown cursor: {after}", param="after", code="invalid_cursor")


@router.post("")
async def upload_file(
    request: Request, session: SessionDep, settings: SettingsDep, tenant_id: TenantDep
) -> dict[str, Any]:
    """Upload a JSONL training file (multipart: file, purpose)."""
    store = settings.blob_store()
    file_id = new_id(FILE_PREFIX)
    received = await receive_upload(request, store, tenant_id, file_id, settings.max_upload_bytes)
    if received.storage_path is None:
        raise InvalidRequest(
            "Missing required parameter: 'file'.", param="file", code="missing_required_parameter"
        )
    try:
        purpose = service.check_purpose(received.fields.get("purpose"))
        file = await run_in_threadpool(
            service.register_upload,
            session,
            store,
            tenant_id=tenant_id,
            file_id=file_id,
            filename=received.filename or "upload.jsonl",
            purpose=purpose,
            storage_path=received.storage_path,
            size=received.bytes,
            sha256=received.sha256 or "",
        )
    except BaseException:
        store.delete(received.storage_path)
        raise
    return file_object(file)


@router.get("")
def list_files(
    session: SessionDep,
    tenant_id: TenantDep,
    page: PageDep,
    purpose: Annotated[str | None, Query(max_length=32)] = None,
    order: Literal["asc", "desc"] = "desc",
) -> dict[str, Any]:
    """List the caller's files."""
    try:
        result = FileRepository(session).list(
            tenant_id,
            purpose=purpose,
            after=page.after,
            limit=page.limit,
            descending=order == "desc",
        )
    except InvalidCursorError as exc:
        raise invalid_cursor(str(exc)) from exc
    return list_object(result.items, file_object, result.has_more)


@router.get("/{file_id}")
def retrieve_file(file_id: str, session: SessionDep, tenant_id: TenantDep) -> dict[str, Any]:
    """Retrieve a file object."""
    return file_object(service.get_file(session, tenant_id, file_id))


@router.get("/{file_id}/content")
def file_content(
    file_id: str, session: SessionDep, settings: SettingsDep, tenant_id: TenantDep
) -> StreamingResponse:
    """Download a file's bytes (a job's adapter only through the safety gate)."""
    file = service.get_file(session, tenant_id, file_id)
    handle = service.open_gated_content(session, settings.blob_store(), file)
    media = "application/zip" if file.filename.endswith(".zip") else "application/octet-stream"
    return StreamingResponse(
        service.iter_and_close(handle),
        media_type=media,
        headers={"Content-Disposition": content_disposition(file.filename)},
    )


@router.delete("/{file_id}")
def delete_file(
    file_id: str, session: SessionDep, settings: SettingsDep, tenant_id: TenantDep
) -> dict[str, Any]:
    """Delete a file."""
    file = service.delete_file(session, settings.blob_store(), tenant_id, file_id)
    return {"id": file.id, "object": "file", "deleted": True}


SCREENING_PENDING_EXAMPLE = {"object": "file.screening", "file_id": "file-abc", "status": "pending"}


@router.post(
    "/{file_id}/screen",
    responses={
        200: {"description": "The finished screening: `status` `completed`, `summary`, `results`."},
        202: {
            "description": "Not screened yet under the current screening policy: the screen was "
            "queued; call again (the same request) until it answers 200.",
            "content": {"application/json": {"example": SCREENING_PENDING_EXAMPLE}},
        },
        503: {"description": "The task queue is unavailable (`broker_unavailable`); retry."},
    },
)
def screen_file(
    file_id: str, response: Response, session: SessionDep, tenant_id: TenantDep
) -> dict[str, Any]:
    """Screen a training file per example for harmful requests.

    Screening runs on the validation worker, never in the API, and its result is cached by the
    file's sha256 and the screening configuration. 200 with `status: "completed"`, `summary`
    and per-row `results` (line numbers and scores, never text) when a result is cached; else
    202 with `{"object": "file.screening", "file_id": …, "status": "pending"}` after queueing the
    screen: repeat the request until it answers 200.
    """
    file = service.get_file(session, tenant_id, file_id)
    cached = service.screening_status(session, file)
    if cached is None:
        service.request_screening(tenant_id, file.id)
        response.status_code = 202
        return {"object": "file.screening", "file_id": file.id, "status": "pending"}
    return {"object": "file.screening", "file_id": file.id, "status": "completed", **cached}
