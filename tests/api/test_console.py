"""The web console over plain HTTP: session cookie flags, CSRF, the key never in a page,
tenant isolation, upload errors by line, and the provider pages' changes (real Postgres)."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from api.console.session import SESSION_COOKIE, SIGN_IN_CSRF_COOKIE
from db.job_status import JobStatus
from db.models import FineTuningJob, SafetyReport
from db.repositories.events import EventRepository
from db.settings import Environment
from tests.api.conftest import Customer
from tests.fixtures.db import TEST_ADMIN_KEY
from tests.fixtures.factories import chat_jsonl, make_adapter_job, make_file, make_job

CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


def _csrf(page: httpx.Response) -> str:
    match = CSRF_FIELD.search(page.text)
    assert match, page.text[:500]
    return match.group(1)


def sign_in(client: TestClient, key: str) -> httpx.Response:
    page = client.get("/console/sign-in")
    return client.post(
        "/console/sign-in",
        data={"api_key": key, "csrf_token": _csrf(page)},
        follow_redirects=False,
    )


def _set_cookie(response: httpx.Response, name: str) -> str:
    headers = [h for h in response.headers.get_list("set-cookie") if h.startswith(f"{name}=")]
    assert len(headers) == 1, response.headers.get_list("set-cookie")
    return headers[0]


def test_sign_in_sets_a_strict_httponly_cookie_that_holds_no_key(
    client: TestClient, alice: Customer
) -> None:
    response = sign_in(client, alice.key)
    assert response.status_code == 303
    assert response.headers["location"] == "/console/jobs"
    cookie = _set_cookie(response, SESSION_COOKIE)
    flags = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert "httponly" in flags
    assert "samesite=strict" in flags
    assert "path=/console" in flags
    assert "secure" not in flags  # KEEL_ENV=testing: plain http works
    assert alice.key not in cookie
    assert alice.key[8:] not in cookie
    page = client.get("/console/jobs")
    assert page.status_code == 200
    assert "Fine-tuning jobs" in page.text
    assert alice.key not in page.text
    assert page.headers["cache-control"] == "no-store"


def test_cookie_is_secure_in_production(client: TestClient, alice: Customer) -> None:
    app = client.app
    app.state.settings = app.state.settings.model_copy(update={"env": Environment.PRODUCTION})  # type: ignore[attr-defined]
    page = client.get("/console/sign-in")
    assert "secure" in _set_cookie(page, SIGN_IN_CSRF_COOKIE).lower()
    # The Secure cookie is not sent back over http: post the token as a browser on https would.
    client.cookies.set(SIGN_IN_CSRF_COOKIE, _csrf(page), path="/console")
    response = client.post(
        "/console/sign-in",
        data={"api_key": alice.key, "csrf_token": _csrf(page)},
        follow_redirects=False,
    )
    assert response.status_code == 303
    assert "; secure" in _set_cookie(response, SESSION_COOKIE).lower()


def test_sign_in_refuses_a_missing_csrf_token_and_a_wrong_key(
    client: TestClient, alice: Customer
) -> None:
    client.get("/console/sign-in")
    no_token = client.post("/console/sign-in", data={"api_key": alice.key}, follow_redirects=False)
    assert no_token.status_code == 403
    assert SESSION_COOKIE not in no_token.headers.get("set-cookie", "")
    wrong = sign_in(client, "sk-keel-not-a-real-key-but-a-long-one")
    assert wrong.status_code == 401
    assert "not a live API key" in wrong.text
    assert "sk-keel-not-a-real-key" not in wrong.text  # never echoed
    assert SESSION_COOKIE not in wrong.headers.get("set-cookie", "")


def test_pages_need_a_session_and_a_forged_cookie_is_no_session(client: TestClient) -> None:
    response = client.get("/console/jobs", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/console/sign-in"
    client.cookies.set(SESSION_COOKIE, "eyJrIjoidGVuYW50In0.forged", path="/console")
    assert client.get("/console/jobs", follow_redirects=False).status_code == 303


def test_forms_without_this_sessions_csrf_token_are_refused(
    client: TestClient, session: Session, alice: Customer, bob: Customer, data_dir: Path
) -> None:
    training = make_file(session, alice.tenant_id, data_dir)
    session.commit()
    sign_in(client, alice.key)
    body = {"model": "smollm2-135m-instruct", "training_file": training.id}
    assert client.post("/console/jobs", data=body).status_code == 403
    assert client.post("/console/jobs", data={**body, "csrf_token": "x" * 43}).status_code == 403
    # Another session's token is no good either.
    other = TestClient(client.app)
    sign_in(other, bob.key)
    bobs = _csrf(other.get("/console/jobs"))
    assert client.post("/console/jobs", data={**body, "csrf_token": bobs}).status_code == 403
    assert session.query(FineTuningJob).count() == 0
    # Sign-out is a form too.
    assert client.post("/console/sign-out", follow_redirects=False).status_code == 403


def test_create_job_through_the_form(
    client: TestClient,
    session: Session,
    alice: Customer,
    data_dir: Path,
    enqueued: list[str],
    validations: list[str],
) -> None:
    training = make_file(session, alice.tenant_id, data_dir)
    session.commit()
    sign_in(client, alice.key)
    token = _csrf(client.get("/console/jobs"))
    refused = client.post(
        "/console/jobs",
        data={"csrf_token": token, "model": "gpt-4o", "training_file": training.id},
    )
    assert refused.status_code == 400
    assert re.search(r'data-field="model">[^<]*not available', refused.text)
    typo = client.post(
        "/console/jobs",
        data={
            "csrf_token": token,
            "model": "smollm2-135m-instruct",
            "training_file": training.id,
            "n_epochs": "two",
        },
    )
    assert typo.status_code == 400
    assert re.search(r'data-field="n_epochs">[^<]*valid integer', typo.text), typo.text[-3000:]
    created = client.post(
        "/console/jobs",
        data={
            "csrf_token": token,
            "model": "smollm2-135m-instruct",
            "training_file": training.id,
            "n_epochs": "1",
            "mixer_ratio": "0.25",
        },
        follow_redirects=False,
    )
    assert created.status_code == 303, created.text
    job_id = created.headers["location"].rsplit("/", 1)[1]
    # Created like the JSON API's jobs: in validating_files, handed to the validation queue.
    assert validations == [job_id]
    assert enqueued == []
    job = session.get(FineTuningJob, job_id)
    assert job is not None
    assert job.tenant_id == alice.tenant_id
    assert job.hyperparameters["n_epochs"] == 1
    page = client.get(f"/console/jobs/{job_id}")
    assert "Created fine-tuning job" in page.text
    assert "EventSource" in page.text


def test_upload_errors_are_shown_beside_their_lines(
    client: TestClient, alice: Customer, data_dir: Path
) -> None:
    sign_in(client, alice.key)
    token = _csrf(client.get("/console/files"))
    bad = chat_jsonl(1) + b'{"messages": "not a list"}\n' + chat_jsonl(1) + b"{broken\n"
    page = client.post(
        "/console/files",
        data={"csrf_token": token},
        files={"file": ("bad.jsonl", bad, "application/jsonl")},
    )
    assert page.status_code == 400
    items = re.findall(r'<li data-line="(\d+)">(.*?)</li>', page.text, re.S)
    assert [line for line, _ in items] == ["2", "4"]
    assert "not a list" in items[0][1]  # the line's own text, next to its error
    assert "{broken" in items[1][1]
    assert not [p for p in data_dir.rglob("*") if p.is_file()]  # the refused bytes are gone
    good = client.post(
        "/console/files",
        data={"csrf_token": token},
        files={"file": ("good.jsonl", chat_jsonl(3), "application/jsonl")},
        follow_redirects=False,
    )
    assert good.status_code == 303
    assert "good.jsonl" in client.get("/console/files").text


def test_upload_without_csrf_token_stores_nothing(
    client: TestClient, session: Session, alice: Customer
) -> None:
    sign_in(client, alice.key)
    response = client.post(
        "/console/files", files={"file": ("x.jsonl", chat_jsonl(2), "application/jsonl")}
    )
    assert response.status_code == 403
    assert client.get("/console/files").text.count("x.jsonl") == 0


def test_job_page_shows_loss_checkpoints_report_and_adapter(
    client: TestClient, session: Session, alice: Customer, data_dir: Path
) -> None:
    job, _ = make_adapter_job(session, alice.tenant_id, data_dir, adapter=b"PK adapter")
    events = EventRepository(session)
    for step, loss in ((1, 2.5), (2, 1.75), (3, 1.25)):
        events.append(
            job.id,
            alice.tenant_id,
            f"Step {step}/3",
            type="metrics",
            data={"step": step, "total_steps": 3, "task_loss": loss},
        )
    session.commit()
    sign_in(client, alice.key)
    page = client.get(f"/console/jobs/{job.id}").text
    assert '<svg id="loss-chart"' in page
    assert page.count("<circle") == 3
    assert "ftckpt_" in page
    assert 'id="report-link"' in page
    assert 'id="adapter-link"' in page
    assert "EventSource" not in page  # a finished job is not streamed
    adapter = client.get(f"/console/jobs/{job.id}/adapter")
    assert adapter.status_code == 200
    assert adapter.content == b"PK adapter"
    report = client.get(f"/console/jobs/{job.id}/report")
    assert report.status_code == 200
    assert report.text.startswith("<!DOCTYPE html>")
    listing = client.get("/console/jobs").text
    assert job.id in listing
    assert "verdict-passed" in listing


def test_quarantined_adapter_is_withheld_until_released(
    client: TestClient, session: Session, alice: Customer, data_dir: Path
) -> None:
    job, _ = make_adapter_job(
        session, alice.tenant_id, data_dir, status=JobStatus.FAILED, verdict="quarantined"
    )
    session.commit()
    customer = TestClient(client.app)
    sign_in(customer, alice.key)
    page = customer.get(f"/console/jobs/{job.id}").text
    assert 'id="adapter-link"' not in page
    withheld = customer.get(f"/console/jobs/{job.id}/adapter")
    assert withheld.status_code == 403
    assert "withheld" in withheld.text

    sign_in(client, TEST_ADMIN_KEY)
    queue = client.get("/console/admin/quarantine")
    assert f'data-job="{job.id}"' in queue.text
    released = client.post(
        f"/console/admin/quarantine/{job.id}/release",
        data={"csrf_token": _csrf(queue)},
        follow_redirects=False,
    )
    assert released.status_code == 303
    assert f'data-job="{job.id}"' not in client.get("/console/admin/quarantine").text
    session.expire_all()
    report = session.query(SafetyReport).filter_by(job_id=job.id).one()
    assert report.released_by == "bootstrap"
    assert 'id="adapter-link"' in customer.get(f"/console/jobs/{job.id}").text
    assert customer.get(f"/console/jobs/{job.id}/adapter").status_code == 200


def test_another_tenants_job_answers_like_a_missing_page(
    client: TestClient, session: Session, alice: Customer, bob: Customer, data_dir: Path
) -> None:
    job, _ = make_adapter_job(session, bob.tenant_id, data_dir)
    session.commit()
    sign_in(client, alice.key)
    missing = client.get("/console/jobs/ftjob-000000000000000000000000")
    assert missing.status_code == 404
    for suffix in ("", "/report", "/adapter", "/stream"):
        theirs = client.get(f"/console/jobs/{job.id}{suffix}")
        assert theirs.status_code == 404, suffix
        assert theirs.text == missing.text
    token = _csrf(client.get("/console/jobs"))
    cancel = client.post(f"/console/jobs/{job.id}/cancel", data={"csrf_token": token})
    assert cancel.status_code == 404


def test_revoked_key_and_disabled_tenant_sign_the_session_out(
    client: TestClient, alice: Customer, admin_headers: dict[str, str]
) -> None:
    sign_in(client, alice.key)
    assert client.get("/console/jobs").status_code == 200
    client.post(f"/admin/v1/tenants/{alice.tenant_id}/disable", headers=admin_headers)
    assert client.get("/console/jobs", follow_redirects=False).status_code == 303
    client.post(f"/admin/v1/tenants/{alice.tenant_id}/enable", headers=admin_headers)
    assert client.get("/console/jobs").status_code == 200
    keys = client.get(f"/admin/v1/tenants/{alice.tenant_id}/api_keys", headers=admin_headers)
    key_id = keys.json()["data"][0]["id"]
    client.delete(f"/admin/v1/tenants/{alice.tenant_id}/api_keys/{key_id}", headers=admin_headers)
    gone = client.get("/console/jobs", follow_redirects=False)
    assert gone.status_code == 303
    assert "Max-Age=0" in gone.headers.get("set-cookie", "")


def test_customers_cannot_open_provider_pages_nor_admins_customer_pages(
    client: TestClient, alice: Customer
) -> None:
    sign_in(client, alice.key)
    assert client.get("/console/admin", follow_redirects=False).status_code == 303
    admin = TestClient(client.app)
    assert sign_in(admin, TEST_ADMIN_KEY).headers["location"] == "/console/admin"
    assert admin.get("/console/jobs", follow_redirects=False).status_code == 303


def test_admin_creates_a_tenant_and_a_key_and_revokes_it(client: TestClient) -> None:
    sign_in(client, TEST_ADMIN_KEY)
    page = client.get("/console/admin/tenants")
    assert TEST_ADMIN_KEY not in page.text
    created = client.post(
        "/console/admin/tenants", data={"csrf_token": _csrf(page), "name": "carol"}
    )
    assert created.status_code == 200
    assert "carol" in created.text
    tenant_id = re.search(r"(org-[0-9a-f]+)", created.text).group(1)  # type: ignore[union-attr]
    duplicate = client.post(
        "/console/admin/tenants", data={"csrf_token": _csrf(page), "name": "carol"}
    )
    assert duplicate.status_code == 409
    assert "exists" in duplicate.text
    with_key = client.post(
        f"/console/admin/tenants/{tenant_id}/keys", data={"csrf_token": _csrf(page)}
    )
    key = re.search(r"<code>(sk-keel-[^<]+)</code>", with_key.text).group(1)  # type: ignore[union-attr]
    assert client.get(f"/console/admin/tenants/{tenant_id}").text.count(key) == 0  # once only
    carol = TestClient(client.app)
    assert sign_in(carol, key).status_code == 303
    key_id = re.search(r'data-revoke="([^"]+)"', with_key.text).group(1)  # type: ignore[union-attr]
    client.post(
        f"/console/admin/tenants/{tenant_id}/keys/{key_id}/revoke",
        data={"csrf_token": _csrf(page)},
    )
    assert carol.get("/console/jobs", follow_redirects=False).status_code == 303
    trail = client.get(
        "/admin/v1/audit_events", headers={"Authorization": f"Bearer {TEST_ADMIN_KEY}"}
    )
    actions = [e["action"] for e in trail.json()["data"]]
    assert actions == ["tenant.create", "api_key.create", "api_key.revoke"]


def test_policy_editor_validates_like_the_admin_api(client: TestClient) -> None:
    sign_in(client, TEST_ADMIN_KEY)
    page = client.get("/console/admin/policy")
    assert page.status_code == 200
    assert "allowed_models" in page.text
    document = (
        "allowed_models:\n- smollm2-135m-instruct\ngate:\n  thresholds:\n"
        "    max_harmful_scor: 0.3\n"
    )
    refused = client.post(
        "/console/admin/policy", data={"csrf_token": _csrf(page), "policy": document}
    )
    assert refused.status_code == 400
    assert 'data-field="gate.thresholds.max_harmful_scor"' in refused.text
    assert "Line 5" in refused.text
    api = client.put(
        "/admin/v1/policy",
        json={
            "allowed_models": ["smollm2-135m-instruct"],
            "gate": {"thresholds": {"max_harmful_scor": 0.3}},
        },
        headers={"Authorization": f"Bearer {TEST_ADMIN_KEY}"},
    )
    assert api.json()["error"]["param"] == "gate.thresholds.max_harmful_scor"
    broken = client.post(
        "/console/admin/policy", data={"csrf_token": _csrf(page), "policy": "a: [1\n"}
    )
    assert broken.status_code == 400
    assert "Not valid YAML" in broken.text
    saved = client.post(
        "/console/admin/policy",
        data={"csrf_token": _csrf(page), "policy": document.replace("_scor:", "_score:")},
        follow_redirects=False,
    )
    assert saved.status_code == 303
    assert "version 1" in client.get(saved.headers["location"]).text


def test_overview_shows_queue_and_running_jobs(
    client: TestClient, session: Session, alice: Customer, data_dir: Path
) -> None:
    training = make_file(session, alice.tenant_id, data_dir)
    make_job(session, alice.tenant_id, training.id, status=JobStatus.QUEUED)
    make_job(
        session,
        alice.tenant_id,
        training.id,
        status=JobStatus.RUNNING,
        lease_owner="worker-abc@host",
        progress={"phase": "training", "step": 2, "total_steps": 5},
    )
    session.commit()
    sign_in(client, TEST_ADMIN_KEY)
    page = client.get("/console/admin").text
    assert re.search(r'id="queue-depth">1<', page)
    assert "worker-abc@host" in page
    assert "2/5" in page
    assert re.search(r'id="running-count">1<', page)
