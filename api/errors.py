"""One error family and one body shape: {"error": {"message", "type", "param", "code"}}.

Every 4xx carries a stable `code`; anything unexpected becomes a 500 `internal_error` with no
stack trace in the body.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("keel.api")


class AppError(Exception):
    status_code = 400
    code = "invalid_request"
    type = "invalid_request_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status_code: int | None = None,
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code or self.code
        self.status_code = status_code or self.status_code
        self.details = details
        self.headers = headers


class InvalidRequest(AppError):
    pass


class NotFound(AppError):
    status_code = 404
    code = "not_found"


class Conflict(AppError):
    status_code = 409
    code = "conflict"


class Forbidden(AppError):
    status_code = 403
    code = "forbidden"
    type = "permission_error"


class Unauthorized(AppError):
    status_code = 401
    code = "invalid_api_key"
    type = "authentication_error"

    def __init__(self, message: str = "Invalid or missing API key.", **kwargs: Any) -> None:
        kwargs.setdefault("headers", {"WWW-Authenticate": "Bearer"})
        super().__init__(message, **kwargs)


class ServiceUnavailable(AppError):
    """A dependency (the broker) is down: retry later (answered with Retry-After)."""

    status_code = 503
    code = "service_unavailable"
    type = "server_error"

    def __init__(self, message: str, **kwargs: Any) -> None:
        kwargs.setdefault("headers", {"Retry-After": "5"})
        super().__init__(message, **kwargs)


class PayloadTooLarge(AppError):
    status_code = 413
    code = "file_too_large"


def error_body(
    message: str,
    *,
    type: str,
    code: str,
    param: str | None = None,
    details: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    error: dict[str, Any] = {"message": message, "type": type, "param": param, "code": code}
    if details is not None:
        error["details"] = details
    return {"error": error}


def _app_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    return JSONResponse(
        error_body(exc.message, type=exc.type, code=exc.code, param=exc.param, details=exc.details),
        status_code=exc.status_code,
        headers=exc.headers,
    )


_LOC_SOURCES = frozenset({"body", "query", "path", "header", "form"})
_UNION_MEMBER_TAGS = frozenset({"int", "float", "str", "bool", "dict", "list", "none"})


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def _param_name(loc: tuple[Any, ...]) -> str:
    # Union members add tags such as "literal['auto']" or "int" to the location: drop them.
    # So is a dict key holding control characters (the hostile key is never echoed as a name).
    parts = [
        str(p)
        for p in loc
        if p not in _LOC_SOURCES
        and "[" not in str(p)
        and str(p) not in _UNION_MEMBER_TAGS
        and not str(p).startswith("constrained-")
        and not _CONTROL.search(str(p))
    ]
    return ".".join(parts) or "body"


# pydantic error types that get their own stable code (the rest are "invalid_value").
_VALIDATION_CODES = {
    "extra_forbidden": "unknown_field",
    "missing": "missing_required_parameter",
    # api.input_guard: control characters, free-form JSON too deep or too large.
    "invalid_characters": "invalid_characters",
    "json_too_complex": "json_too_complex",
    # A list or dict over its max_length in a request schema.
    "too_long": "too_many_items",
}


def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    details = [
        {"param": _param_name(tuple(e.get("loc", ()))), "message": str(e.get("msg", ""))}
        for e in errors
    ]
    # For a union ("auto" or a number) the literal branch's error is the least helpful one.
    informative = [e for e in errors if e.get("type") != "literal_error"]
    first = (informative or errors or [{}])[0]
    param = _param_name(tuple(first.get("loc", ()))) if errors else None
    kind = str(first.get("type", ""))
    code = _VALIDATION_CODES.get(kind, "invalid_value")
    message = f"Invalid parameter '{param}': {first.get('msg', 'invalid value')}"
    if kind == "extra_forbidden":
        message = f"Unknown parameter: '{param}'."
    elif kind == "missing":
        message = f"Missing required parameter: '{param}'."
    return JSONResponse(
        error_body(message, type="invalid_request_error", code=code, param=param, details=details),
        status_code=400,
    )


def _template_regex(template: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[^}]+\})", template)
    return re.compile(
        "".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts if p) + "$"
    )


def allowed_methods(request: Request) -> list[str]:
    """Every method the API serves at this path, from the OpenAPI document.

    Starlette answers 405 with the `Allow` of the first route whose path matched, and FastAPI
    has one route per method: `OPTIONS /v1/files` said `Allow: POST` although GET is served too.
    The document lists every method of every path, so `Allow` and the contract agree.
    """
    methods: set[str] = set()
    for template, operations in request.app.openapi().get("paths", {}).items():
        if _template_regex(template).match(request.url.path):
            methods |= {method.upper() for method in operations}
    return sorted(methods)


def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    # 400 here is FastAPI's "There was an error parsing the body" (e.g. nesting too deep for
    # the JSON decoder).
    code = {400: "invalid_body", 404: "not_found", 405: "method_not_allowed"}.get(
        exc.status_code, "http_error"
    )
    message = {404: "Not found.", 405: "Method not allowed."}.get(exc.status_code, str(exc.detail))
    headers = dict(getattr(exc, "headers", None) or {})
    if exc.status_code == 405:
        headers["Allow"] = ", ".join(allowed_methods(request))
    return JSONResponse(
        error_body(message, type="invalid_request_error", code=code),
        status_code=exc.status_code,
        headers=headers or None,
    )


# The database is down, restarting, unreachable, or its pool had no connection free within
# pool_timeout: the request may succeed if retried, so 503 + Retry-After, not a 500.
DATABASE_UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.DisconnectionError,
    sa_exc.TimeoutError,
)
RETRY_AFTER_SECONDS = 5


def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    # The class names only: a driver message can carry the host and database name.
    cause = type(getattr(exc, "orig", None) or exc).__name__
    log.warning(
        "database unavailable on %s %s (%s: %s)",
        request.method,
        request.url.path,
        type(exc).__name__,
        cause,
    )
    return JSONResponse(
        error_body(
            "The database is unavailable; retry shortly.",
            type="server_error",
            code="database_unavailable",
        ),
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def _unhandled(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse(
        error_body("The server had an internal error.", type="server_error", code="internal_error"),
        status_code=500,
    )


def register_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AppError, _app_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    for error_cls in DATABASE_UNAVAILABLE_ERRORS:
        app.add_exception_handler(error_cls, _database_unavailable)
    app.add_exception_handler(Exception, _unhandled)
