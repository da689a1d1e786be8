"""/admin/v1 (provider admin keys): tenants, API keys, admin keys, policy, quarantine release,
the audit trail.

Every action that changes something is recorded in the audit trail with the acting admin's name
(`AdminDep`: a named admin key's name, or "bootstrap" for KEEL_ADMIN_KEY), in the same
transaction as the change: no change without its record, no record of a change rolled back.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import IntegrityError

from api.dependencies import BOOTSTRAP_ADMIN, AdminDep, PageDep, SessionDep, SettingsDep
from api.errors import Conflict, InvalidRequest, NotFound
from api.files.router import invalid_cursor
from api.input_guard import JsonShapeError, SafeStr, check_json_value
from api.serializers import list_object, unix
from db.base_model_scores import BaseModelScores
from db.blobs import BlobStore
from db.models import AdminKey, ApiKey, AuditEvent, Tenant
from db.policy_schema import PolicyDocument, PolicyError, parse_policy, stored_policy
from db.repositories.admin import AdminKeyRepository, AuditRepository
from db.repositories.events import EventRepository
from db.repositories.jobs import JobRepository
from db.repositories.pagination import InvalidCursorError
from db.repositories.policy import PolicyRepository
from db.repositories.safety_reports import SafetyReportRepository
from db.repositories.tenants import ApiKeyRepository, TenantRepository
from db.webhook_events import JobWebhookEvent
from worker import queue as job_queue

router = APIRouter(prefix="/admin/v1", tags=["admin"])


class TenantCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Annotated[SafeStr, Field(min_length=1, max_length=200)]


def tenant_object(tenant: Tenant) -> dict[str, Any]:
    return {
        "id": tenant.id,
        "object": "organization",
        "name": tenant.name,
        "created_at": unix(tenant.created_at),
        "disabled_at": unix(tenant.disabled_at),
    }


def api_key_object(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "object": "api_key",
        "tenant_id": key.tenant_id,
        "key_prefix": key.key_prefix,
        "created_at": unix(key.created_at),
        "revoked_at": unix(key.revoked_at),
        "last_used_at": unix(key.last_used_at),
    }


def _tenant(session: SessionDep, tenant_id: str) -> Tenant:
    tenant = TenantRepository(session).get(tenant_id)
    if tenant is None:
        raise NotFound(f"No such tenant: {tenant_id}", param="tenant_id")
    return tenant


@router.post("/tenants")
def create_tenant(body: TenantCreate, session: SessionDep, admin: AdminDep) -> dict[str, Any]:
    """Create a tenant."""
    repo = TenantRepository(session)
    if repo.get_by_name(body.name) is not None:
        raise Conflict(f"A tenant named '{body.name}' exists.", param="name", code="tenant_exists")
    try:
        tenant = repo.add(body.name)
    except IntegrityError as exc:
        raise Conflict(
            f"A tenant named '{body.name}' exists.", param="name", code="tenant_exists"
        ) from exc
    AuditRepository(session).record(
        admin, "tenant.create", "tenant", tenant.id, {"name": body.name}
    )
    return tenant_object(tenant)


@router.post("/tenants/{tenant_id}/disable")
def disable_tenant(tenant_id: str, session: SessionDep, admin: AdminDep) -> dict[str, Any]:
    """Disable a tenant: its API keys are refused from the next request, its queued jobs do not
    start (a job already running finishes). Idempotent."""
    tenant = TenantRepository(session).set_disabled(_tenant(session, tenant_id).id, True)
    assert tenant is not None
    AuditRepository(session).record(admin, "tenant.disable", "tenant", tenant_id)
    return tenant_object(tenant)


@router.post("/tenants/{tenant_id}/enable")
def enable_tenant(tenant_id: str, session: SessionDep, admin: AdminDep) -> dict[str, Any]:
    """Enable a disabled tenant: its keys work again; the reaper re-enqueues its queued jobs."""
    tenant = TenantRepository(session).set_disabled(_tenant(session, tenant_id).id, False)
    assert tenant is not None
    AuditRepository(session).record(admin, "tenant.enable", "tenant", tenant_id)
    return tenant_object(tenant)


@router.get("/tenants")
def list_tenants(session: SessionDep, _: AdminDep, page: PageDep) -> dict[str, Any]:
    """List tenants (oldest first)."""
    try:
        result = TenantRepository(session).list(page.after, page.limit)
    except InvalidCursorError as exc:
        raise invalid_cursor(str(exc)) from exc
    return list_object(result.items, tenant_object, result.has_more)


@router.post("/tenants/{tenant_id}/api_keys")
def create_api_key(tenant_id: str, session: SessionDep, admin: AdminDep) -> dict[str, Any]:
    """Create an API key; the key is shown once, in this response only."""
    _tenant(session, tenant_id)
    key, plaintext = ApiKeyRepository(session).create(tenant_id)
    AuditRepository(session).record(
        admin, "api_key.create", "api_key", key.id, {"tenant_id": tenant_id}
    )
    return {**api_key_object(key), "key": plaintext}


@router.get("/tenants/{tenant_id}/api_keys")
def list_api_keys(tenant_id: str, session: SessionDep, _: AdminDep) -> dict[str, Any]:
    """List a tenant's API keys (never the keys themselves)."""
    _tenant(session, tenant_id)
    keys = ApiKeyRepository(session).list(tenant_id)
    return list_object(keys, api_key_object, False)


@router.delete("/tenants/{tenant_id}/api_keys/{key_id}")
def revoke_api_key(
    tenant_id: str, key_id: str, session: SessionDep, admin: AdminDep
) -> dict[str, Any]:
    """Revoke an API key (effective on the next request)."""
    key = ApiKeyRepository(session).revoke(tenant_id, key_id)
    if key is None:
        raise NotFound(f"No such API key: {key_id}", param="key_id")
    AuditRepository(session).record(
        admin, "api_key.revoke", "api_key", key.id, {"tenant_id": tenant_id}
    )
    return {**api_key_object(key), "revoked": True}


def policy_object(version: int, policy: PolicyDocument, store: BlobStore) -> dict[str, Any]:
    """The policy as served, with the allowed models whose base already fails it."""
    failing = BaseModelScores(store).failing(policy)
    return {
        "object": "policy",
        "version": version,
        "policy": stored_policy(policy),
        # Jobs on these are refused at creation unless gate.allow_failing_base_models is set.
        "base_models_failing": [
            {"model": m, "harmful_score": s.harmful_score, "n": s.n, "judge": s.judge}
            for m, s in sorted(failing.items())
        ],
    }


@router.get("/policy")
def get_policy(session: SessionDep, settings: SettingsDep, _: AdminDep) -> dict[str, Any]:
    """The current provider policy (version 0: the policy file's defaults)."""
    version, policy = PolicyRepository(session).current_versioned()
    return policy_object(version, policy, settings.blob_store())


@router.put("/policy")
def put_policy(
    session: SessionDep,
    settings: SettingsDep,
    admin: AdminDep,
    policy: Annotated[dict[str, Any], Body()],
) -> dict[str, Any]:
    """Store a new policy version; it applies to jobs created from now on.

    The whole document is validated (db.policy_schema): an unknown or out-of-range field is a
    400 ``invalid_policy`` naming it by its dotted path, and the current version stays in force.
    """
    try:
        # Before the schema: a NUL anywhere would reach the jsonb column, a deep one the parser.
        check_json_value(policy)
    except JsonShapeError as exc:
        raise InvalidRequest(
            f"Invalid policy field '{exc.path}': {exc.message}.", param=exc.path, code=exc.code
        ) from None
    try:
        parsed = parse_policy(policy)
    except PolicyError as exc:
        raise InvalidRequest(
            f"Invalid policy field '{exc.param}': {exc.message}.",
            param=exc.param,
            code="invalid_policy",
        ) from None
    version = PolicyRepository(session).set(parsed)
    # The document as stored: the trail shows what each version said, not only that it changed.
    AuditRepository(session).record(
        admin, "policy.update", "policy", str(version), {"policy": stored_policy(parsed)}
    )
    return policy_object(version, parsed, settings.blob_store())


@router.post("/fine_tuning/jobs/{job_id}/release")
def release_quarantined(job_id: str, session: SessionDep, admin: AdminDep) -> dict[str, Any]:
    """Release a quarantined job's adapter after provider review."""
    jobs = JobRepository(session)
    job = jobs.get_unscoped(job_id)
    if job is None:
        raise NotFound(f"No such fine-tuning job: {job_id}", param="job_id")
    report = SafetyReportRepository(session).release(job_id, admin)
    if report is None:
        raise Conflict(
            f"Job {job_id} has no quarantined adapter to release.",
            param="job_id",
            code="not_quarantined",
        )
    fine_tuned = f"ft:{job.model}:{job.tenant_id}:{job.suffix or 'keel'}:{job.id}"
    jobs.release_quarantined(job_id, fine_tuned)
    # The job is now succeeded: OpenAI-shaped receivers get that, Keel-aware ones the release.
    job_queue.record_job_webhooks(
        session, job.tenant_id, job_id, JobWebhookEvent.RELEASED, JobWebhookEvent.SUCCEEDED
    )
    AuditRepository(session).record(
        admin, "job.release", "fine_tuning.job", job_id, {"tenant_id": job.tenant_id}
    )
    EventRepository(session).append(
        job_id,
        job.tenant_id,
        "Adapter released by the provider after safety review",
        level="warn",
        type="safety_verdict",
        data={"verdict": "quarantined", "released": True},
    )
    return {
        "object": "fine_tuning.job.release",
        "job_id": job_id,
        "released": True,
        "released_by": report.released_by,
        "released_at": unix(report.released_at),
    }


# ------------------------------------------------------------------------------ admin keys

ADMIN_NAME = r"^[A-Za-z0-9_.@-]{1,100}$"


class AdminKeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # Who holds the key: what the audit trail shows for every action taken with it.
    name: Annotated[
        str, Field(pattern=ADMIN_NAME, json_schema_extra={"not": {"const": BOOTSTRAP_ADMIN}})
    ]


def admin_key_object(key: AdminKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "object": "admin_key",
        "name": key.name,
        "key_prefix": key.key_prefix,
        "created_by": key.created_by,
        "created_at": unix(key.created_at),
        "revoked_at": unix(key.revoked_at),
        "last_used_at": unix(key.last_used_at),
    }


def audit_event_object(event: AuditEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "object": "audit_event",
        "created_at": unix(event.created_at),
        "actor": event.actor,
        "action": event.action,
        "target_type": event.target_type,
        "target_id": event.target_id,
        "data": event.data,
    }


def _admin_key(session: SessionDep, key_id: str) -> AdminKey:
    key = AdminKeyRepository(session).get(key_id)
    if key is None:
        raise NotFound(f"No such admin key: {key_id}", param="key_id")
    return key


@router.post("/admin_keys")
def create_admin_key(body: AdminKeyCreate, session: SessionDep, admin: AdminDep) -> dict[str, Any]:
    """Create a named admin key; the key is shown once, in this response only."""
    if body.name == BOOTSTRAP_ADMIN:
        raise InvalidRequest(
            f"'{BOOTSTRAP_ADMIN}' names KEEL_ADMIN_KEY in the audit trail; choose another name.",
            param="name",
            code="invalid_value",
        )
    key, plaintext = AdminKeyRepository(session).create(body.name, created_by=admin)
    AuditRepository(session).record(
        admin, "admin_key.create", "admin_key", key.id, {"name": key.name}
    )
    return {**admin_key_object(key), "key": plaintext}


@router.get("/admin_keys")
def list_admin_keys(session: SessionDep, _: AdminDep) -> dict[str, Any]:
    """List admin keys (never the keys themselves)."""
    return list_object(AdminKeyRepository(session).list(), admin_key_object, False)


@router.delete("/admin_keys/{key_id}")
def revoke_admin_key(key_id: str, session: SessionDep, admin: AdminDep) -> dict[str, Any]:
    """Revoke an admin key (effective on the next request)."""
    key = AdminKeyRepository(session).revoke(_admin_key(session, key_id).id)
    assert key is not None
    AuditRepository(session).record(
        admin, "admin_key.revoke", "admin_key", key.id, {"name": key.name}
    )
    return {**admin_key_object(key), "revoked": True}


@router.post("/admin_keys/{key_id}/rotate")
def rotate_admin_key(key_id: str, session: SessionDep, admin: AdminDep) -> dict[str, Any]:
    """Revoke a live admin key and issue its holder a new one (shown once, in this response)."""
    old = _admin_key(session, key_id)
    if old.revoked_at is not None:
        raise Conflict(f"Admin key {key_id} is revoked.", param="key_id", code="admin_key_revoked")
    keys = AdminKeyRepository(session)
    keys.revoke(old.id)
    new, plaintext = keys.create(old.name, created_by=admin)
    AuditRepository(session).record(
        admin, "admin_key.rotate", "admin_key", new.id, {"name": old.name, "replaces": old.id}
    )
    return {**admin_key_object(new), "key": plaintext, "replaces": old.id}


@router.get("/audit_events")
def list_audit_events(
    session: SessionDep,
    _: AdminDep,
    page: PageDep,
    target_id: Annotated[str | None, Query(max_length=64)] = None,
) -> dict[str, Any]:
    """The audit trail, oldest first: who did what, when, to which object."""
    try:
        events, has_more = AuditRepository(session).list(page.after, page.limit, target_id)
    except InvalidCursorError as exc:
        raise invalid_cursor(str(exc)) from exc
    return list_object(events, audit_event_object, has_more)
