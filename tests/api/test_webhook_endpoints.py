"""/v1/webhook_endpoints: the secret shown once, tenant isolation, bounded and guarded input,
destinations refused by the policy, and outbox rows written in the job's own transaction."""

from __future__ import annotations

import base64
import ipaddress
from typing import Any

import pytest
from fastapi.testclient import TestClient
from openai.types.webhooks import FineTuningJobCancelledWebhookEvent
from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import WebhookDelivery
from db.settings import KeelSettings
from db.webhook_events import EVENT_TYPES
from db.webhook_targets import TargetRefused, address_refusal, check_url, parse_ranges
from tests.api.conftest import Customer
from tests.fixtures.db import TEST_POLICY
from tests.fixtures.factories import make_file, make_job

BASE = "/v1/webhook_endpoints"
LOCAL_URL = "http://127.0.0.1:9/hook"


def _allow_loopback(client: TestClient, admin_headers: dict[str, str], **webhooks: Any) -> None:
    policy = {**TEST_POLICY, "webhooks": {"allowed_private_ranges": ["127.0.0.1/32"], **webhooks}}
    response = client.put("/admin/v1/policy", json=policy, headers=admin_headers)
    assert response.status_code == 200, response.text


def _create(client: TestClient, who: Customer, **body: Any) -> dict[str, Any]:
    response = client.post(BASE, json={"url": LOCAL_URL, **body}, headers=who.headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_endpoint_lifecycle_shows_the_secret_only_on_create_and_rotate(
    client: TestClient, alice: Customer, admin_headers: dict[str, str]
) -> None:
    _allow_loopback(client, admin_headers)
    created = _create(client, alice, events=["fine_tuning.job.succeeded"], description="ci")
    assert created["object"] == "webhook_endpoint"
    assert created["events"] == ["fine_tuning.job.succeeded"]
    assert created["enabled"] is True
    secret = created["secret"]
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret[6:])) == 32

    everything = _create(client, alice)
    assert everything["events"] == list(EVENT_TYPES)

    endpoint_id = created["id"]
    fetched = client.get(f"{BASE}/{endpoint_id}", headers=alice.headers).json()
    assert "secret" not in fetched
    assert fetched["url"] == LOCAL_URL
    listed = client.get(BASE, headers=alice.headers).json()
    assert [e["id"] for e in listed["data"]] == [everything["id"], endpoint_id]
    assert all("secret" not in e for e in listed["data"])

    updated = client.post(
        f"{BASE}/{endpoint_id}",
        json={"enabled": False, "events": ["fine_tuning.job.failed", "fine_tuning.job.failed"]},
        headers=alice.headers,
    ).json()
    assert updated["enabled"] is False
    assert updated["events"] == ["fine_tuning.job.failed"]
    assert "secret" not in updated

    rotated = client.post(f"{BASE}/{endpoint_id}/rotate_secret", headers=alice.headers).json()
    assert rotated["secret"].startswith("whsec_")
    assert rotated["secret"] != secret
    assert rotated["secret_rotated_at"] is not None

    deliveries = client.get(f"{BASE}/{endpoint_id}/deliveries", headers=alice.headers).json()
    assert deliveries == {
        "object": "list",
        "data": [],
        "has_more": False,
        "first_id": None,
        "last_id": None,
    }
    deleted = client.delete(f"{BASE}/{endpoint_id}", headers=alice.headers)
    assert deleted.json() == {"id": endpoint_id, "object": "webhook_endpoint", "deleted": True}
    assert client.get(f"{BASE}/{endpoint_id}", headers=alice.headers).status_code == 404


def test_another_tenants_endpoint_answers_like_a_missing_one(
    client: TestClient, alice: Customer, bob: Customer, admin_headers: dict[str, str]
) -> None:
    _allow_loopback(client, admin_headers)
    endpoint_id = _create(client, alice)["id"]
    missing = "we_" + "0" * 24
    for target in (endpoint_id, missing):
        for method, path, body in (
            ("GET", "", None),
            ("POST", "", {"enabled": False}),
            ("POST", "/rotate_secret", None),
            ("GET", "/deliveries", None),
            ("DELETE", "", None),
        ):
            response = client.request(
                method, f"{BASE}/{target}{path}", json=body, headers=bob.headers
            )
            assert response.status_code == 404, (method, path, response.text)
            error = response.json()["error"]
            assert error["code"] == "not_found"
            assert error["param"] == "id"
            assert error["message"] == f"No such webhook endpoint: {target}"
    assert client.get(BASE, headers=bob.headers).json()["data"] == []
    # Still there, untouched, for its owner.
    assert client.get(f"{BASE}/{endpoint_id}", headers=alice.headers).json()["enabled"] is True


@pytest.mark.parametrize(
    ("url", "code"),
    [
        (LOCAL_URL, "webhook_url_not_allowed"),  # loopback, not allowed by this policy
        ("http://10.1.2.3/hook", "webhook_url_not_allowed"),
        ("http://169.254.169.254/latest/meta-data", "webhook_url_not_allowed"),
        ("http://[::1]:8080/hook", "webhook_url_not_allowed"),
        ("http://[::ffff:127.0.0.1]/hook", "webhook_url_not_allowed"),
        ("http://0.0.0.0/hook", "webhook_url_not_allowed"),
        ("http://localhost/hook", "webhook_url_not_allowed"),
        ("ftp://example.com/hook", "invalid_webhook_url"),
        ("http://user:pw@example.com/hook", "invalid_webhook_url"),
        ("http:///hook", "invalid_webhook_url"),
        ("http://example.com:99999/hook", "invalid_webhook_url"),
        ("not a url", "invalid_webhook_url"),
        ("https://bücher.example/hook", "invalid_webhook_url"),
    ],
)
def test_refused_destinations_name_the_url(
    client: TestClient, alice: Customer, url: str, code: str
) -> None:
    response = client.post(BASE, json={"url": url}, headers=alice.headers)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == (code, "url")


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ({"url": "http://example.com/\x00"}, "invalid_characters", "url"),
        # Over a length bound: the project's one code for it (api.errors).
        ({"url": "https://example.com/" + "a" * 2100}, "too_many_items", "url"),
        ({"url": LOCAL_URL, "events": []}, "invalid_value", "events"),
        ({"url": LOCAL_URL, "events": ["fine_tuning.job.exploded"]}, "invalid_value", "events.0"),
        ({"url": LOCAL_URL, "events": ["fine_tuning.job.failed"] * 7}, "too_many_items", "events"),
        ({"url": LOCAL_URL, "description": "x" * 201}, "too_many_items", "description"),
        ({"url": LOCAL_URL, "secret": "whsec_mine"}, "unknown_field", "secret"),
        ({}, "missing_required_parameter", "url"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(
    client: TestClient,
    alice: Customer,
    admin_headers: dict[str, str],
    body: dict[str, Any],
    code: str,
    param: str,
) -> None:
    _allow_loopback(client, admin_headers)
    response = client.post(BASE, json=body, headers=alice.headers)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["param"], error["code"]) == (param, code), error


def test_endpoint_count_is_bounded_by_the_policy(
    client: TestClient, alice: Customer, admin_headers: dict[str, str]
) -> None:
    _allow_loopback(client, admin_headers, max_endpoints_per_tenant=2)
    _create(client, alice)
    _create(client, alice)
    third = client.post(BASE, json={"url": LOCAL_URL}, headers=alice.headers)
    assert third.status_code == 403
    assert third.json()["error"]["code"] == "quota_webhook_endpoints_exceeded"


def test_policy_refuses_a_bad_allowed_range(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    policy = {**TEST_POLICY, "webhooks": {"allowed_private_ranges": ["10.0.0.0/33"]}}
    response = client.put("/admin/v1/policy", json=policy, headers=admin_headers)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "webhooks.allowed_private_ranges.0"


def test_cancel_writes_the_outbox_row_in_its_own_commit(
    client: TestClient,
    alice: Customer,
    admin_headers: dict[str, str],
    session: Session,
    data_dir: Any,
) -> None:
    _allow_loopback(client, admin_headers)
    subscribed = _create(client, alice, events=["fine_tuning.job.cancelled"])
    _create(client, alice, events=["fine_tuning.job.succeeded"])  # not subscribed
    disabled = _create(client, alice, events=["fine_tuning.job.cancelled"])
    client.post(f"{BASE}/{disabled['id']}", json={"enabled": False}, headers=alice.headers)
    file = make_file(session, alice.tenant_id, data_dir)
    job = make_job(session, alice.tenant_id, file.id)
    session.commit()

    response = client.post(f"/v1/fine_tuning/jobs/{job.id}/cancel", headers=alice.headers)
    assert response.json()["status"] == "cancelled"

    rows = list(session.scalars(select(WebhookDelivery)))
    assert [(r.endpoint_id, r.event_type, r.job_id) for r in rows] == [
        (subscribed["id"], "fine_tuning.job.cancelled", job.id)
    ]
    event = FineTuningJobCancelledWebhookEvent.model_validate_json(rows[0].payload)
    assert event.data.id == job.id
    assert event.object == "event"
    listed = client.get(f"{BASE}/{subscribed['id']}/deliveries", headers=alice.headers).json()
    (delivery,) = listed["data"]
    assert delivery["id"] == rows[0].id
    assert delivery["id"].startswith("wh_")
    assert delivery["status"] in ("pending", "delivered", "failed")
    assert "payload" not in delivery
    assert "response" not in str(delivery)

    # A cancel that fails (already cancelled, nothing changes) records nothing more.
    client.post(f"/v1/fine_tuning/jobs/{job.id}/cancel", headers=alice.headers)
    assert len(list(session.scalars(select(WebhookDelivery)))) == 1


def test_https_is_required_in_production() -> None:
    with pytest.raises(TargetRefused, match="https"):
        check_url("http://example.com/hook", require_https=True)
    assert check_url("https://example.com/hook", require_https=True) == (
        "https",
        "example.com",
        443,
    )
    production = KeelSettings(env="production", admin_key="Zx8-kQ2vN_p0LrT7wYb3HsE9mCj4FgUa6DqRi1")
    assert production.webhook_retry_window_seconds >= 24 * 3600


@pytest.mark.parametrize(
    ("address", "allowed", "refused"),
    [
        ("8.8.8.8", [], False),
        ("2606:4700:4700::1111", [], False),
        ("127.0.0.1", [], True),
        ("127.0.0.1", ["127.0.0.1/32"], False),
        ("127.0.0.2", ["127.0.0.1/32"], True),
        ("::ffff:10.0.0.1", [], True),
        ("100.64.0.1", [], True),  # shared address space (CGNAT)
        ("169.254.169.254", [], True),
        ("100.100.100.200", [], True),  # a metadata service outside link-local
        ("fe80::1", [], True),
        ("fd00:ec2::254", [], True),
        ("224.0.0.1", [], True),
    ],
)
def test_address_rule(address: str, allowed: list[str], refused: bool) -> None:
    why = address_refusal(ipaddress.ip_address(address), parse_ranges(allowed))
    assert (why is not None) is refused, why


def test_endpoints_and_deliveries_page_by_cursor(
    client: TestClient,
    alice: Customer,
    bob: Customer,
    admin_headers: dict[str, str],
    session: Session,
    data_dir: Any,
) -> None:
    _allow_loopback(client, admin_headers)
    created = [_create(client, alice)["id"] for _ in range(3)]
    first = client.get(BASE, params={"limit": 2}, headers=alice.headers).json()
    assert [e["id"] for e in first["data"]] == created[::-1][:2]
    assert first["has_more"] is True
    rest = client.get(
        BASE, params={"limit": 2, "after": first["data"][-1]["id"]}, headers=alice.headers
    ).json()
    assert [e["id"] for e in rest["data"]] == [created[0]]
    assert rest["has_more"] is False
    # Another tenant's id is no cursor: the same 400 as an id that does not exist.
    bobs = client.get(BASE, params={"after": created[0]}, headers=bob.headers)
    assert bobs.status_code == 400
    assert bobs.json()["error"]["param"] == "after"

    # Deliveries page the same way, and a delivery of another endpoint is no cursor.
    for _ in range(2):
        job = make_job(session, alice.tenant_id, make_file(session, alice.tenant_id, data_dir).id)
        session.commit()
        client.post(f"/v1/fine_tuning/jobs/{job.id}/cancel", headers=alice.headers)
    one = client.get(
        f"{BASE}/{created[0]}/deliveries", params={"limit": 1}, headers=alice.headers
    ).json()
    assert one["has_more"] is True
    other = client.get(
        f"{BASE}/{created[1]}/deliveries",
        params={"after": one["data"][0]["id"]},
        headers=alice.headers,
    )
    assert other.status_code == 400
    nxt = client.get(
        f"{BASE}/{created[0]}/deliveries",
        params={"limit": 1, "after": one["data"][0]["id"]},
        headers=alice.headers,
    ).json()
    assert nxt["has_more"] is False
    assert nxt["data"][0]["id"] != one["data"][0]["id"]
