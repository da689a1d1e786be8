"""/admin/v1: admin auth, tenants, API keys (shown once, stored hashed, revocable), policy."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.orm import Session

ADMIN_ROUTES = [
    ("GET", "/admin/v1/tenants"),
    ("POST", "/admin/v1/tenants"),
    ("GET", "/admin/v1/policy"),
    ("PUT", "/admin/v1/policy"),
    ("POST", "/admin/v1/tenants/org-x/api_keys"),
    ("POST", "/admin/v1/fine_tuning/jobs/ftjob-x/release"),
    ("POST", "/admin/v1/tenants/org-x/disable"),
    ("POST", "/admin/v1/tenants/org-x/enable"),
    ("POST", "/admin/v1/admin_keys"),
    ("GET", "/admin/v1/admin_keys"),
    ("DELETE", "/admin/v1/admin_keys/adk_x"),
    ("POST", "/admin/v1/admin_keys/adk_x/rotate"),
    ("GET", "/admin/v1/audit_events"),
]


@pytest.mark.parametrize(("method", "path"), ADMIN_ROUTES)
@pytest.mark.parametrize("header", [None, "Bearer wrong-key", "Basic abc", "Bearer "])
def test_admin_routes_need_the_admin_key(
    client: TestClient, method: str, path: str, header: str | None
) -> None:
    headers = {"Authorization": header} if header is not None else {}
    response = client.request(method, path, headers=headers, json={})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_admin_key"
    assert response.headers["www-authenticate"] == "Bearer"


def test_tenant_key_lifecycle(
    client: TestClient, session: Session, admin_headers: dict[str, str]
) -> None:
    tenant = client.post("/admin/v1/tenants", headers=admin_headers, json={"name": "acme"})
    assert tenant.status_code == 200
    tenant_id = tenant.json()["id"]
    assert tenant_id.startswith("org-")
    duplicate = client.post("/admin/v1/tenants", headers=admin_headers, json={"name": "acme"})
    assert duplicate.status_code == 409
    assert duplicate.json()["error"]["code"] == "tenant_exists"
    listed = client.get("/admin/v1/tenants", headers=admin_headers).json()
    assert [t["id"] for t in listed["data"]] == [tenant_id]

    created = client.post(f"/admin/v1/tenants/{tenant_id}/api_keys", headers=admin_headers).json()
    key = created["key"]
    assert len(key) > 40
    auth = {"Authorization": f"Bearer {key}"}
    assert client.get("/v1/files", headers=auth).status_code == 200
    keys = client.get(f"/admin/v1/tenants/{tenant_id}/api_keys", headers=admin_headers).json()
    assert [k["id"] for k in keys["data"]] == [created["id"]]
    assert "key" not in keys["data"][0]
    stored = session.execute(text("SELECT key_hash, key_prefix FROM api_key")).all()
    assert all(key not in (h, p) for h, p in stored)

    revoked = client.delete(
        f"/admin/v1/tenants/{tenant_id}/api_keys/{created['id']}", headers=admin_headers
    )
    assert revoked.json()["revoked"] is True
    after = client.get("/v1/files", headers=auth)
    assert after.status_code == 401
    assert after.json()["error"]["code"] == "invalid_api_key"
    missing = client.post("/admin/v1/tenants/org-nope/api_keys", headers=admin_headers)
    assert missing.status_code == 404


def test_policy_defaults_then_versions(client: TestClient, admin_headers: dict[str, str]) -> None:
    default = client.get("/admin/v1/policy", headers=admin_headers).json()
    assert default["version"] == 0
    assert "smollm2-135m-instruct" in default["policy"]["allowed_models"]
    new = {**default["policy"], "allowed_models": ["qwen2.5-coder-0.5b-instruct"]}
    stored = client.put("/admin/v1/policy", headers=admin_headers, json=new).json()
    assert stored["version"] == 1
    assert client.get("/admin/v1/policy", headers=admin_headers).json()["policy"] == new
    bad = client.put("/admin/v1/policy", headers=admin_headers, json={"allowed_models": "x"})
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "invalid_policy"
    assert bad.json()["error"]["param"] == "allowed_models"


@pytest.mark.parametrize(
    ("section", "param"),
    [
        # A misspelt threshold must not leave the real one unset (the gate would fail closed).
        ({"gate": {"thresholds": {"max_harmful_scor": 0.4}}}, "gate.thresholds"),
        ({"gate": {"on_failure": "release"}}, "gate.on_failure"),
        ({"mixer": {"min_ratio": 0.9, "default_ratio": 0.2}}, "mixer"),
        ({"sap": {"defaults": {"rho": "big"}}}, "sap.defaults.rho"),
        ({"evaluation": {"judge": "classifier"}}, "evaluation"),
    ],
)
def test_a_bad_policy_is_refused_and_the_current_one_stays(
    client: TestClient, admin_headers: dict[str, str], section: dict[str, object], param: str
) -> None:
    before = client.get("/admin/v1/policy", headers=admin_headers).json()
    bad = client.put(
        "/admin/v1/policy", headers=admin_headers, json={**before["policy"], **section}
    )
    assert bad.status_code == 400, bad.text
    error = bad.json()["error"]
    assert error["code"] == "invalid_policy"
    assert error["param"].startswith(param)
    assert error["param"] in error["message"]
    assert client.get("/admin/v1/policy", headers=admin_headers).json() == before
