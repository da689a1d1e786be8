"""Streaming multipart upload: the file part goes straight to the blob store, byte-capped.

Starlette's `request.form()` spools the whole body before a route runs, so the cap would only
apply after the bytes were already read. Here every received chunk is counted: the upload stops at
KEEL_MAX_UPLOAD_BYTES whatever Content-Length claims. The parser and the blob writer run on a
worker thread: with an object store a full part is sent to the bucket from inside `write`, a
network call that must not stall the event loop.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from python_multipart.multipart import MultipartParser, parse_options_header

from api.errors import AppError, InvalidRequest, PayloadTooLarge
from api.input_guard import INVALID_CHARACTERS, control_char_at
from db.blobs import BlobStore, BlobTooLargeError, BlobWriter

# Room for the multipart framing and the small text fields around the file part.
FORM_OVERHEAD_BYTES = 64 * 1024
MAX_FIELD_BYTES = 1024
MAX_FIELDS = 8
FILE_FIELD = "file"


@dataclass
class ReceivedUpload:
    fields: dict[str, str] = field(default_factory=dict)
    filename: str | None = None
    storage_path: str | None = None
    bytes: int = 0
    sha256: str | None = None


def sanitize_filename(raw: str) -> str:
    """Keep a display name only: no directories, no format characters, ≤255 characters.

    A control byte (NUL, ESC, …) is refused rather than dropped: it is never part of a real
    file name, and refusing it keeps one rule for every text the API stores. Invisible format
    characters (bidi overrides) are dropped so the stored name displays as what it is.
    """
    if control_char_at(raw) is not None:
        raise InvalidRequest(
            "Invalid parameter 'filename': must not contain control characters.",
            param="filename",
            code=INVALID_CHARACTERS,
        )
    name = re.split(r"[\\/]", raw)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C").strip()
    name = name.lstrip(".") or "upload.jsonl"
    return name[:255]


def _too_large(max_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"The upload exceeds the maximum size of {max_bytes} bytes.", param="file"
    )


class _PartCollector:
    def __init__(self, store: BlobStore, tenant_id: str, file_id: str, max_bytes: int) -> None:
        self.store = store
        self.tenant_id = tenant_id
        self.file_id = file_id
        self.max_bytes = max_bytes
        self.result = ReceivedUpload()
        self.writer: BlobWriter | None = None
        self._header_field = b""
        self._header_value = b""
        self._headers: dict[str, bytes] = {}
        self._field_name: str | None = None
        self._field_value = b""
        self._in_file = False

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field_data,
            "on_header_value": self._header_value_data,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }

    def _part_begin(self) -> None:
        self._headers = {}
        self._field_name = None
        self._field_value = b""
        self._in_file = False

    def _header_field_data(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def _header_value_data(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._header_field.decode("latin-1").lower()] = self._header_value
        self._header_field = b""
        self._header_value = b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get("content-disposition", b""))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        filename = options.get(b"filename")
        if name == FILE_FIELD and filename is not None:
            if self.writer is not None:
                raise InvalidRequest(
                    "Only one file may be uploaded.", param="file", code="too_many_files"
                )
            self.result.filename = sanitize_filename(filename.decode("utf-8", "replace"))
            self.writer = self.store.open_writer(self.tenant_id, self.file_id, self.max_bytes)
            self._in_file = True
            return
        if len(self.result.fields) >= MAX_FIELDS:
            raise InvalidRequest("Too many form fields.", code="too_many_fields")
        self._field_name = name

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file:
            assert self.writer is not None
            try:
                self.writer.write(data[start:end])
            except BlobTooLargeError as exc:
                raise _too_large(self.max_bytes) from exc
            return
        self._field_value += data[start:end]
        if len(self._field_value) > MAX_FIELD_BYTES:
            raise InvalidRequest(
                f"Form field '{self._field_name}' is too long.",
                param=self._field_name,
                code="field_too_long",
            )

    def _part_end(self) -> None:
        if self._in_file:
            self._in_file = False
            return
        if self._field_name:
            self.result.fields[self._field_name] = self._field_value.decode("utf-8", "replace")

    def finish(self) -> ReceivedUpload:
        if self.writer is not None:
            path, size, digest = self.writer.commit()
            self.result.storage_path, self.result.bytes, self.result.sha256 = path, size, digest
        return self.result

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.abort()


async def receive_upload(
    request: Request, store: BlobStore, tenant_id: str, file_id: str, max_bytes: int
) -> ReceivedUpload:
    """Parse a multipart body chunk by chunk; the `file` part lands in the blob store."""
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise InvalidRequest(
            "The request must be multipart/form-data with a 'file' and a 'purpose'.",
            code="invalid_content_type",
        )
    body_cap = max_bytes + FORM_OVERHEAD_BYTES
    declared = request.headers.get("content-length")
    # A declared length over the cap is refused before reading; a small one is never trusted.
    if declared is not None and declared.isdigit() and int(declared) > body_cap:
        raise _too_large(max_bytes)
    collector = _PartCollector(store, tenant_id, file_id, max_bytes)
    parser = MultipartParser(boundary, collector.callbacks())  # type: ignore[arg-type]
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > body_cap:
                raise _too_large(max_bytes)
            await run_in_threadpool(parser.write, chunk)
        await run_in_threadpool(parser.finalize)
    except AppError:
        await run_in_threadpool(collector.abort)
        raise
    except Exception as exc:
        await run_in_threadpool(collector.abort)
        raise InvalidRequest("Malformed multipart body.", code="invalid_multipart") from exc
    except BaseException:
        # Cancelled (client gone): no await is possible any more; abort here, blocking.
        collector.abort()
        raise
    # A failing commit (storage down) aborts its own upload and is a 5xx, not a client error.
    return await run_in_threadpool(collector.finish)
