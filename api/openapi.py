"""The OpenAPI document, made to say what the API really does.

FastAPI's generated document knows only the route signatures: it listed 200 and 422 for every
operation, while Keel answers 400 for every validation error (api/errors.py, never 422) and
400/401/403/404/409/413/429/503 from its own checks. Schemathesis against the live server found
29 undocumented status codes, no security scheme and no upload body (issue 22). This module
rewrites the generated document once, at first request of /openapi.json:

- security schemes: ``ApiKey`` (tenant key) on /v1, ``AdminKey`` on /admin, ``MetricsToken`` on
  /metrics; all HTTP bearer;
- the one error envelope (``Error``) for every status an operation can return, with
  ``Retry-After`` on 503 (always sent) and 429, ``WWW-Authenticate`` on 401; 422 removed;
- the multipart body of ``POST /v1/files`` (the route reads the stream itself, so FastAPI
  cannot see it), ``text/plain`` for /metrics, ``text/event-stream`` for the event stream;
- the control-character rule of api/input_guard as a ``pattern`` on every path and query string,
  and the ``metadata[k]=v`` filter of the job list.

Which statuses an operation returns is derived from its path, method and a short table of the
service-level refusals below; tests/contract holds the table to the running server.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from api.body_limit import BODY_METHODS
from api.input_guard import NO_CONTROL_CHARS_PATTERN
from api.jobs.schemas import MAX_METADATA_KEY, MAX_METADATA_PAIRS, MAX_METADATA_VALUE

ERROR_SCHEMA = "Error"

_DESCRIPTIONS = {
    400: "Invalid request: a parameter or the body is malformed or refused (`error.param` "
    "names it).",
    401: "Missing or invalid credentials.",
    403: "Not permitted (quota, withheld content, a base model, metrics disabled).",
    404: "No such object for this caller (another tenant's objects answer the same).",
    409: "The object's state does not allow this.",
    413: "The request body is larger than the configured cap.",
    429: "Rate limit, quota or stream cap reached; `Retry-After` says when to retry when known.",
    503: "The database is unavailable; retry after `Retry-After` seconds.",
}

# Refusals that depend on the operation, beyond the rules in `_statuses`.
_EXTRA_STATUSES: dict[tuple[str, str], set[int]] = {
    ("post", "/v1/files"): {403},
    ("post", "/v1/fine_tuning/jobs"): {404},
    ("get", "/v1/files/{file_id}/content"): {403, 409},
    ("post", "/v1/fine_tuning/jobs/{job_id}/cancel"): {409},
    ("post", "/v1/fine_tuning/jobs/{job_id}/pause"): {409},
    ("post", "/v1/fine_tuning/jobs/{job_id}/resume"): {409},
    ("delete", "/v1/models/{model_id}"): {403},
    ("post", "/admin/v1/tenants"): {409},
    ("post", "/admin/v1/fine_tuning/jobs/{job_id}/release"): {409},
    ("post", "/admin/v1/admin_keys/{key_id}/rotate"): {409},
    ("get", "/metrics"): {401, 403, 503},
    ("get", "/readyz"): {503},
}

SECURITY_SCHEMES = {
    "ApiKey": {
        "type": "http",
        "scheme": "bearer",
        "description": "A tenant API key (`sk-keel-…`), created by an admin.",
    },
    "AdminKey": {
        "type": "http",
        "scheme": "bearer",
        "description": "KEEL_ADMIN_KEY or a named admin key (`sk-keel-admin-…`).",
    },
    "MetricsToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "KEEL_METRICS_TOKEN (when unset, /metrics is open outside production).",
    },
}

ERROR_COMPONENT = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": "string"},
                "details": {"type": "array", "items": {"type": "object"}},
            },
        }
    },
}

UPLOAD_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file", "purpose"],
                "properties": {
                    "file": {
                        "type": "string",
                        "format": "binary",
                        "description": "JSONL, one chat example per line "
                        '(`{"messages": [...]}`); checked line by line (400 '
                        "`invalid_file_format` with `details[].line`).",
                    },
                    "purpose": {"type": "string", "enum": ["fine-tune"]},
                },
            },
            "encoding": {"file": {"contentType": "application/jsonl"}},
        }
    },
}


def _security(path: str) -> list[dict[str, list[str]]] | None:
    if path.startswith("/v1/"):
        return [{"ApiKey": []}]
    if path.startswith("/admin/"):
        return [{"AdminKey": []}]
    if path == "/metrics":
        return [{"MetricsToken": []}]
    return None


def _statuses(method: str, path: str) -> set[int]:
    # Every operation: a control byte in any query key or value is a 400 (api.input_guard).
    statuses = {400}
    guarded = path.startswith(("/v1/", "/admin/"))
    if guarded:
        statuses |= {401, 503}
    if path.startswith("/v1/"):
        statuses.add(429)  # per-tenant rate limits (api.rate_limit)
    if "{" in path:
        statuses.add(404)
    if guarded and method.upper() in BODY_METHODS:
        statuses.add(413)  # api.body_limit / the upload cap
    return statuses | _EXTRA_STATUSES.get((method, path), set())


def _error_response(status: int) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": _DESCRIPTIONS[status],
        "content": {
            "application/json": {"schema": {"$ref": f"#/components/schemas/{ERROR_SCHEMA}"}}
        },
    }
    if status == 503:
        response["headers"] = {
            "Retry-After": {"required": True, "schema": {"type": "string", "pattern": "^[0-9]+$"}}
        }
    elif status == 429:
        response["headers"] = {"Retry-After": {"schema": {"type": "string", "pattern": "^[0-9]+$"}}}
    elif status == 401:
        response["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}}}
    return response


def _tighten_parameters(operation: dict[str, Any]) -> None:
    for parameter in operation.get("parameters", []):
        schema = parameter.get("schema", {})
        # Optional parameters are `anyOf: [{type: string}, {type: null}]`: a query string is
        # never null on the wire, so the string branch is the parameter.
        branches = [b for b in schema.get("anyOf", []) if b.get("type") != "null"]
        if len(branches) == 1:
            parameter["schema"] = schema = {
                **branches[0],
                **{k: v for k, v in schema.items() if k != "anyOf"},
            }
        if schema.get("type") == "string" and "enum" not in schema:
            schema.setdefault("pattern", NO_CONTROL_CHARS_PATTERN)
            if parameter["in"] == "path":
                # An empty id makes another URL (`/v1/files/` redirects to the list).
                schema.setdefault("minLength", 1)


METADATA_FILTER = {
    "name": "metadata",
    "in": "query",
    "required": False,
    "style": "deepObject",
    "explode": True,
    "description": "Only jobs whose metadata has these pairs: `metadata[k]=v`.",
    "schema": {
        "type": "object",
        "maxProperties": MAX_METADATA_PAIRS,
        "additionalProperties": {
            "type": "string",
            "maxLength": MAX_METADATA_VALUE,
            "pattern": NO_CONTROL_CHARS_PATTERN,
        },
        "propertyNames": {"maxLength": MAX_METADATA_KEY, "pattern": NO_CONTROL_CHARS_PATTERN},
    },
}


# With `stream=true`, each server-sent event (OpenAPI before 3.2: `schema` describes one event).
STREAM_EVENT = {
    "type": "object",
    "description": "`fine_tuning.job.event` (data: the event object as JSON), then `done` "
    "(data `[DONE]`) when the job is terminal or paused, or `error` (data: the error envelope) "
    "when the API key was revoked or its organization disabled.",
    "required": ["event", "data"],
    "properties": {
        "event": {"type": "string", "enum": ["fine_tuning.job.event", "done", "error"]},
        "data": {"type": "string"},
        "id": {"type": "string"},
        "retry": {"type": "integer"},
    },
}


def build_openapi(app: FastAPI) -> dict[str, Any]:
    """The document served at /openapi.json (built once, then cached on the app)."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    document = get_openapi(
        title=app.title,
        version=app.version,
        summary=app.summary,
        description=app.description,
        routes=app.routes,
    )
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    schemas[ERROR_SCHEMA] = ERROR_COMPONENT
    components["securitySchemes"] = SECURITY_SCHEMES
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            for status in sorted(_statuses(method, path)):
                responses[str(status)] = _error_response(status)
            security = _security(path)
            if security is not None:
                operation["security"] = security
            _tighten_parameters(operation)
    paths = document["paths"]
    paths["/v1/files"]["post"]["requestBody"] = UPLOAD_BODY
    paths["/metrics"]["get"]["responses"]["200"] = {
        "description": "Prometheus text exposition format.",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    }
    paths["/v1/fine_tuning/jobs"]["get"].setdefault("parameters", []).append(METADATA_FILTER)
    events = paths["/v1/fine_tuning/jobs/{job_id}/events"]["get"]["responses"]["200"]
    events.setdefault("content", {})["text/event-stream"] = {"schema": STREAM_EVENT}
    paths["/v1/files/{file_id}/content"]["get"]["responses"]["200"] = {
        "description": "The file's bytes (`Content-Disposition: attachment`, RFC 6266).",
        "content": {
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "application/zip": {"schema": {"type": "string", "format": "binary"}},
        },
    }
    app.openapi_schema = document
    return document


def install_openapi(app: FastAPI) -> None:
    app.openapi = lambda: build_openapi(app)  # type: ignore[method-assign]
