"""A byte cap on request bodies, enforced on the received stream before anything parses them.

FastAPI reads and decodes a JSON body before it solves a route's dependencies, so without this an
unauthenticated multi-GB body to `POST /v1/fine_tuning/jobs` or `PUT /admin/v1/policy` was
buffered in full. Here, ahead of routing:

1. a body-carrying request without a bearer token to /v1 or /admin is a 401, and one to /admin
   with the wrong admin key is a 401 too (the admin key is checked without the database), all
   before a byte of the body is read; a tenant key needs the database and is still checked by
   the route, after at most the cap has been read;
2. a declared Content-Length over the cap is a 413 ``request_too_large`` before reading;
3. otherwise the body is read chunk by chunk, counted, and refused with 413 the moment it
   passes the cap, whatever Content-Length claimed; the bytes read are replayed to the app.

Multipart uploads are left to ``api.uploads``, which streams them to disk under their own cap.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.dependencies import admin_token_ok, bearer_token
from api.errors import error_body
from db.repositories.admin import ADMIN_KEY_SCHEME

BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
TENANT_PREFIX = "/v1/"
ADMIN_PREFIX = "/admin/"


def _too_large(max_bytes: int) -> JSONResponse:
    return JSONResponse(
        error_body(
            f"The request body exceeds the maximum size of {max_bytes} bytes.",
            type="invalid_request_error",
            code="request_too_large",
            param="body",
        ),
        status_code=413,
        headers={"Connection": "close"},
    )


def _unauthorized(code: str, message: str) -> JSONResponse:
    return JSONResponse(
        error_body(message, type="authentication_error", code=code),
        status_code=401,
        headers={"WWW-Authenticate": "Bearer"},
    )


def _has_body(headers: Headers) -> bool:
    length = headers.get("content-length")
    if length is not None:
        return length.strip() not in ("", "0")
    return "transfer-encoding" in headers


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int, admin_key_hash: str) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.admin_key_hash = admin_key_hash

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if not _has_body(headers) or headers.get("content-type", "").lower().startswith(
            "multipart/form-data"
        ):
            await self.app(scope, receive, send)
            return
        refusal = self._refuse_before_reading(scope["path"], headers)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        chunks: list[bytes] = []
        received = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > self.max_bytes:
                await _too_large(self.max_bytes)(scope, receive, send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _refuse_before_reading(self, path: str, headers: Headers) -> JSONResponse | None:
        token = bearer_token(headers.get("authorization"))
        # The deployment's key is checked here; a named admin key (db.repositories.admin) needs
        # the database, so only its shape is checked before the body is read (capped anyway).
        named = token is not None and token.startswith(ADMIN_KEY_SCHEME)
        if path.startswith(ADMIN_PREFIX) and not (
            named or admin_token_ok(token, self.admin_key_hash)
        ):
            return _unauthorized("invalid_admin_key", "Invalid or missing admin key.")
        if path.startswith(TENANT_PREFIX) and token is None:
            return _unauthorized("invalid_api_key", "Invalid or missing API key.")
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            return _too_large(self.max_bytes)
        return None
