"""Accountable admins (issue 23): named admin keys (create, revoke, rotate), every admin action in
the audit trail with who and when, tenant disable that stops keys and queued jobs at once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.orm import Session

from db.base import utcnow
from db.job_status import JobStatus
from db.repositories.jobs import JobRepository
from db.session import session_scope
from tests.api.conftest import Customer
from tests.fixtures.factories import make_file, make_job


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _new_admin(client: TestClient, headers: dict[str, str], name: str) -> dict[str, Any]:
    response = client.post("/admin/v1/admin_keys", headers=headers, json={"name": name})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _trail(client: TestClient, headers: dict[str, str], **query: str) -> list[dict[str, Any]]:
    response = client.get("/admin/v1/audit_events", headers=headers, params=query)
    assert response.status_code == 200, response.text
    data: list[dict[str, Any]] = response.json()["data"]
    return data


def test_named_admin_keys_are_shown_once_stored_hashed_and_name_the_actor(
    client: TestClient, session: Session, admin_headers: dict[str, str]
) -> None:
    ada = _new_admin(client, admin_headers, "ada")
    assert ada["key"].startswith("sk-keel-admin-")
    assert (ada["name"], ada["created_by"]) == ("ada", "bootstrap")
    as_ada = _bearer(ada["key"])
    tenant = client.post("/admin/v1/tenants", headers=as_ada, json={"name": "acme"}).json()
    listed = client.get("/admin/v1/admin_keys", headers=as_ada).json()["data"]
    assert [k["name"] for k in listed] == ["ada"]
    assert "key" not in listed[0]
    stored = session.execute(text("SELECT key_hash, key_prefix FROM admin_key")).all()
    assert all(ada["key"] not in (h, p) for h, p in stored)
    trail = _trail(client, as_ada)
    assert [(e["actor"], e["action"], e["target_id"]) for e in trail] == [
        ("bootstrap", "admin_key.create", ada["id"]),
        ("ada", "tenant.create", tenant["id"]),
    ]
    assert all(isinstance(e["created_at"], int) for e in trail)
    reserved = client.post("/admin/v1/admin_keys", headers=as_ada, json={"name": "bootstrap"})
    assert reserved.status_code == 400
    bad = client.post("/admin/v1/admin_keys", headers=as_ada, json={"name": "a b"})
    assert (bad.status_code, bad.json()["error"]["param"]) == (400, "name")


def test_revoked_and_rotated_admin_keys_stop_at_once(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    ada = _new_admin(client, admin_headers, "ada")
    rotated = client.post(f"/admin/v1/admin_keys/{ada['id']}/rotate", headers=_bearer(ada["key"]))
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()
    assert (new["name"], new["replaces"], new["created_by"]) == ("ada", ada["id"], "ada")
    old_refused = client.get("/admin/v1/tenants", headers=_bearer(ada["key"]))
    assert (old_refused.status_code, old_refused.json()["error"]["code"]) == (
        401,
        "invalid_admin_key",
    )
    assert client.get("/admin/v1/tenants", headers=_bearer(new["key"])).status_code == 200
    again = client.post(f"/admin/v1/admin_keys/{ada['id']}/rotate", headers=admin_headers)
    assert (again.status_code, again.json()["error"]["code"]) == (409, "admin_key_revoked")
    revoked = client.delete(f"/admin/v1/admin_keys/{new['id']}", headers=admin_headers)
    assert revoked.json()["revoked"] is True
    assert client.get("/admin/v1/tenants", headers=_bearer(new["key"])).status_code == 401
    missing = client.delete("/admin/v1/admin_keys/adk_nope", headers=admin_headers)
    assert missing.status_code == 404
    actions = [(e["actor"], e["action"]) for e in _trail(client, admin_headers)]
    assert actions == [
        ("bootstrap", "admin_key.create"),
        ("ada", "admin_key.rotate"),
        ("bootstrap", "admin_key.revoke"),
    ]


def test_policy_changes_key_changes_and_releases_are_recorded_with_who(
    client: TestClient, admin_headers: dict[str, str], alice: Customer
) -> None:
    bea = _bearer(_new_admin(client, admin_headers, "bea")["key"])
    current = client.get("/admin/v1/policy", headers=bea).json()["policy"]
    changed = {**current, "allowed_models": ["qwen2.5-coder-0.5b-instruct"]}
    assert client.put("/admin/v1/policy", headers=bea, json=changed).status_code == 200
    refused = client.put("/admin/v1/policy", headers=bea, json={"allowed_models": "x"})
    assert refused.status_code == 400  # a refused change is not a change: no record
    key = client.post(f"/admin/v1/tenants/{alice.tenant_id}/api_keys", headers=bea).json()
    client.delete(f"/admin/v1/tenants/{alice.tenant_id}/api_keys/{key['id']}", headers=bea)
    trail = _trail(client, admin_headers)[1:]  # after bea's key creation
    assert [(e["actor"], e["action"], e["target_type"]) for e in trail] == [
        ("bea", "policy.update", "policy"),
        ("bea", "api_key.create", "api_key"),
        ("bea", "api_key.revoke", "api_key"),
    ]
    assert trail[0]["target_id"] == "1"
    assert trail[0]["data"]["policy"]["allowed_models"] == ["qwen2.5-coder-0.5b-instruct"]
    assert trail[1]["data"] == {"tenant_id": alice.tenant_id}
    # Filter by object; page with `after`.
    assert [e["action"] for e in _trail(client, admin_headers, target_id=key["id"])] == [
        "api_key.create",
        "api_key.revoke",
    ]
    first = client.get("/admin/v1/audit_events", headers=bea, params={"limit": 1}).json()
    assert first["has_more"] is True
    rest = _trail(client, bea, after=first["last_id"])
    assert [e["action"] for e in rest] == ["policy.update", "api_key.create", "api_key.revoke"]


def test_disabling_a_tenant_stops_its_keys_and_queued_jobs_at_once(
    client: TestClient,
    session: Session,
    admin_headers: dict[str, str],
    alice: Customer,
    bob: Customer,
    data_dir: Path,
) -> None:
    file = make_file(session, alice.tenant_id, data_dir)
    queued = make_job(session, alice.tenant_id, file.id, status=JobStatus.QUEUED)
    bob_file = make_file(session, bob.tenant_id, data_dir)
    bob_job = make_job(session, bob.tenant_id, bob_file.id, status=JobStatus.QUEUED)
    session.commit()
    assert client.get("/v1/files", headers=alice.headers).status_code == 200

    disabled = client.post(f"/admin/v1/tenants/{alice.tenant_id}/disable", headers=admin_headers)
    assert disabled.status_code == 200
    assert isinstance(disabled.json()["disabled_at"], int)
    refused = client.get("/v1/files", headers=alice.headers)
    assert (refused.status_code, refused.json()["error"]["code"]) == (401, "invalid_api_key")
    assert client.get("/v1/files", headers=bob.headers).status_code == 200
    with session_scope() as s:
        jobs = JobRepository(s)
        # Neither claimed by a worker nor re-enqueued by the reaper; bob's job is unaffected.
        assert jobs.claim(queued.id, "w1", 60) is None
        assert jobs.find_unenqueued(utcnow()) == [bob_job.id]
        assert jobs.claim(bob_job.id, "w1", 60) is not None

    enabled = client.post(f"/admin/v1/tenants/{alice.tenant_id}/enable", headers=admin_headers)
    assert enabled.json()["disabled_at"] is None
    assert client.get("/v1/files", headers=alice.headers).status_code == 200
    with session_scope() as s:
        jobs = JobRepository(s)
        assert jobs.find_unenqueued(utcnow()) == [queued.id]  # the reaper picks it up again
        assert jobs.claim(queued.id, "w1", 60) is not None
    actions = [(e["action"], e["target_id"]) for e in _trail(client, admin_headers)]
    assert actions == [
        ("tenant.disable", alice.tenant_id),
        ("tenant.enable", alice.tenant_id),
    ]
    missing = client.post("/admin/v1/tenants/org-nope/disable", headers=admin_headers)
    assert missing.status_code == 404


def test_keel_admin_commands_are_recorded_with_the_os_user(
    client: TestClient, admin_headers: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from cli import admin_commands

    monkeypatch.setattr(admin_commands, "migrate_database", lambda: None)  # the test DB is at head
    monkeypatch.setattr(admin_commands.getpass, "getuser", lambda: "ops")
    admin_commands.create_tenant("cli-made")
    admin_commands.create_key("cli-made")
    trail = [(e["actor"], e["action"]) for e in _trail(client, admin_headers)]
    assert trail == [
        ("cli:ops", "tenant.create"),
        ("cli:ops", "api_key.create"),
        ("cli:ops", "api_key.create"),
    ]
