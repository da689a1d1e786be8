"""Provider pages (admin key): service overview, tenants and keys, the policy editor, the
quarantine queue.

Every change calls the admin API's own handler (api.admin.router) with the signed-in admin's
name: the same validation (a policy is refused exactly as `PUT /admin/v1/policy` refuses it),
the same audit record in the same transaction, the same error codes, shown next to the field.
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError

from api.admin import router as admin_api
from api.console.auth import FormDocument, FormText, ProviderDep, check_csrf
from api.console.views import PREFIX, PageNotFound, render
from api.dependencies import SessionDep, SettingsDep
from api.errors import AppError
from api.health import broker_ready, database_ready
from db.job_status import JobStatus
from db.policy_schema import stored_policy
from db.repositories.jobs import JobRepository
from db.repositories.pagination import InvalidCursorError
from db.repositories.policy import PolicyRepository
from db.repositories.safety_reports import SafetyReportRepository
from db.repositories.tenants import ApiKeyRepository, TenantRepository
from db.settings import KeelSettings

router = APIRouter(prefix=f"{PREFIX}/admin", include_in_schema=False)
TENANTS_PER_PAGE = 100


# ---------------------------------------------------------------------------------- overview
def _readiness(settings: KeelSettings) -> dict[str, bool]:
    return {"database": database_ready(), "broker": broker_ready(settings.broker_url)}


@router.get("")
def overview(
    request: Request, session: SessionDep, settings: SettingsDep, user: ProviderDep
) -> Response:
    counts = JobRepository(session).count_by_status()
    return render(
        request,
        "admin_overview.html",
        {
            "user": user,
            "counts": [(status.value, counts.get(status.value, 0)) for status in JobStatus],
            # Jobs waiting for a worker: created and validated, not yet claimed.
            "queue_depth": counts.get(JobStatus.QUEUED.value, 0),
            "leased": JobRepository(session).leased(),
            "checks": _readiness(settings),
            "awaiting_release": len(SafetyReportRepository(session).awaiting_release()),
        },
    )


# ----------------------------------------------------------------------------------- tenants
def _tenants_page(
    request: Request,
    session: SessionDep,
    user: ProviderDep,
    error: str | None = None,
    status_code: int = 200,
    after: str | None = None,
) -> Response:
    try:
        page = TenantRepository(session).list(after, TENANTS_PER_PAGE)
    except InvalidCursorError:
        raise PageNotFound() from None
    return render(
        request,
        "admin_tenants.html",
        {"user": user, "tenants": page.items, "has_more": page.has_more, "error": error},
        status_code,
    )


@router.get("/tenants")
def tenants(
    request: Request, session: SessionDep, user: ProviderDep, after: str | None = None
) -> Response:
    return _tenants_page(request, session, user, after=after)


@router.post("/tenants")
def create_tenant(
    request: Request,
    session: SessionDep,
    user: ProviderDep,
    csrf_token: FormText = "",
    name: FormText = "",
) -> Response:
    check_csrf(user, csrf_token)
    try:
        body = admin_api.TenantCreate.model_validate({"name": name})
        tenant = admin_api.create_tenant(body, session, user.admin)
    except ValidationError as exc:
        message = str(exc.errors()[0].get("msg", "invalid value"))
        return _tenants_page(request, session, user, f"name: {message}", 400)
    except AppError as exc:
        return _tenants_page(request, session, user, exc.message, exc.status_code)
    return RedirectResponse(f"{PREFIX}/admin/tenants/{tenant['id']}", status_code=303)


def _tenant_page(
    request: Request,
    session: SessionDep,
    user: ProviderDep,
    tenant_id: str,
    new_key: str | None = None,
) -> Response:
    tenant = TenantRepository(session).get(tenant_id)
    if tenant is None:
        raise PageNotFound()
    return render(
        request,
        "admin_tenant.html",
        {
            "user": user,
            "tenant": tenant,
            "keys": ApiKeyRepository(session).list(tenant_id),
            "new_key": new_key,
        },
    )


@router.get("/tenants/{tenant_id}")
def tenant(request: Request, tenant_id: str, session: SessionDep, user: ProviderDep) -> Response:
    return _tenant_page(request, session, user, tenant_id)


@router.post("/tenants/{tenant_id}/keys")
def create_key(
    request: Request,
    tenant_id: str,
    session: SessionDep,
    user: ProviderDep,
    csrf_token: FormText = "",
) -> Response:
    check_csrf(user, csrf_token)
    try:
        created = admin_api.create_api_key(tenant_id, session, user.admin)
    except AppError:
        raise PageNotFound() from None
    # Shown once, in this response only (as the JSON API does); never in a URL.
    return _tenant_page(request, session, user, tenant_id, new_key=created["key"])


@router.post("/tenants/{tenant_id}/keys/{key_id}/revoke")
def revoke_key(
    tenant_id: str, key_id: str, session: SessionDep, user: ProviderDep, csrf_token: FormText = ""
) -> Response:
    check_csrf(user, csrf_token)
    try:
        admin_api.revoke_api_key(tenant_id, key_id, session, user.admin)
    except AppError:
        raise PageNotFound() from None
    return RedirectResponse(f"{PREFIX}/admin/tenants/{tenant_id}", status_code=303)


@router.post("/tenants/{tenant_id}/{action}")
def set_tenant_enabled(
    tenant_id: str, action: str, session: SessionDep, user: ProviderDep, csrf_token: FormText = ""
) -> Response:
    check_csrf(user, csrf_token)
    handler = {"disable": admin_api.disable_tenant, "enable": admin_api.enable_tenant}.get(action)
    if handler is None:
        raise PageNotFound()
    try:
        handler(tenant_id, session, user.admin)
    except AppError:
        raise PageNotFound() from None
    return RedirectResponse(f"{PREFIX}/admin/tenants/{tenant_id}", status_code=303)


# ------------------------------------------------------------------------------------ policy
def _line_of(document: str, param: str | None) -> int | None:
    """The line of `param` (a dotted path, e.g. gate.thresholds.max_harmful_score) in a YAML
    document written with nested mappings, so the error can be shown beside it."""
    if not param:
        return None
    lines = document.splitlines()
    start, indent = 0, -1
    found: int | None = None
    for part in param.split("."):
        pattern = re.compile(rf"^(\s*)(?:-\s+)?['\"]?{re.escape(part)}['\"]?\s*:")
        for number in range(start, len(lines)):
            match = pattern.match(lines[number])
            if match and len(match.group(1)) > indent:
                found, start, indent = number, number + 1, len(match.group(1))
                break
        else:
            return None if found is None else found + 1
    return None if found is None else found + 1


def _policy_page(
    request: Request,
    session: SessionDep,
    user: ProviderDep,
    document: str | None = None,
    error: dict[str, Any] | None = None,
    saved: int | None = None,
    status_code: int = 200,
) -> Response:
    version, policy = PolicyRepository(session).current_versioned()
    if document is None:
        document = yaml.safe_dump(stored_policy(policy), sort_keys=False)
    return render(
        request,
        "admin_policy.html",
        {
            "user": user,
            "version": version,
            "document": document,
            "lines": document.splitlines(),
            "error": error,
            "saved": saved,
        },
        status_code,
    )


@router.get("/policy")
def policy(
    request: Request, session: SessionDep, user: ProviderDep, saved: int | None = None
) -> Response:
    return _policy_page(request, session, user, saved=saved)


@router.post("/policy")
def put_policy(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    user: ProviderDep,
    csrf_token: FormText = "",
    policy: FormDocument = "",
) -> Response:
    check_csrf(user, csrf_token)
    document = policy
    try:
        parsed = yaml.safe_load(document)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        error = {
            "param": "policy",
            "message": f"Not valid YAML: {getattr(exc, 'problem', None) or exc}",
            "line": mark.line + 1 if mark is not None else None,
        }
        return _policy_page(request, session, user, document, error, status_code=400)
    if not isinstance(parsed, dict):
        error = {"param": "policy", "message": "The policy must be a mapping.", "line": None}
        return _policy_page(request, session, user, document, error, status_code=400)
    try:
        stored = admin_api.put_policy(session, settings, user.admin, parsed)
    except AppError as exc:
        error = {
            "param": exc.param,
            "message": exc.message,
            "code": exc.code,
            "line": _line_of(document, exc.param),
        }
        return _policy_page(request, session, user, document, error, status_code=exc.status_code)
    return RedirectResponse(f"{PREFIX}/admin/policy?saved={stored['version']}", status_code=303)


# -------------------------------------------------------------------------------- quarantine
@router.get("/quarantine")
def quarantine(request: Request, session: SessionDep, user: ProviderDep) -> Response:
    reports = SafetyReportRepository(session).awaiting_release()
    jobs = JobRepository(session)
    rows = [(report, jobs.get_unscoped(report.job_id)) for report in reports]
    return render(request, "admin_quarantine.html", {"user": user, "rows": rows})


@router.post("/quarantine/{job_id}/release")
def release(
    job_id: str, session: SessionDep, user: ProviderDep, csrf_token: FormText = ""
) -> Response:
    check_csrf(user, csrf_token)
    try:
        admin_api.release_quarantined(job_id, session, user.admin)
    except AppError:
        raise PageNotFound() from None
    return RedirectResponse(f"{PREFIX}/admin/quarantine?released={job_id}", status_code=303)
