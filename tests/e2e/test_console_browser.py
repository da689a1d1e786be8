"""The web console in real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright)
against a live Keel: uvicorn, a Celery worker, the reaper, Postgres and Redis.

A customer signs in with an API key, sees an upload's line errors, creates a job on the smallest
registry model, watches its page update live to a final state, opens its safety report and
downloads the adapter; another tenant's job URL is the 404 page; an admin releases a quarantined
job. The main pages are screenshotted at 1280 px and at phone width (390 px) and checked for
their key elements and for no sideways scrolling.
"""

from __future__ import annotations

import io
import os
import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from db.job_status import JobStatus
from db.models import File
from db.repositories.events import EventRepository
from db.repositories.safety_reports import SafetyReportRepository
from tests.e2e.service import E2E_POLICY, ROOT, TEST_MODEL, LiveService
from tests.fixtures.factories import make_job

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
# The job is plumbing for the page, kept as small as the policy allows: one SAP step, two
# harmful prompts and one benign prompt of six tokens, asked bare only. On a 2-core machine
# shared with other work (at nice 19) it still took minutes; this bounds the wait, it is not
# the expected time.
JOB_TIMEOUT_MS = 900_000
CONSOLE_POLICY: dict[str, object] = {
    **E2E_POLICY,
    "evaluation": {
        **E2E_POLICY["evaluation"],  # type: ignore[dict-item]
        "num_harmful": 2,
        "num_benign": 1,
        "max_new_tokens": 6,
        "task_format": False,
    },
    # Two prompts move a rate by 0.5 each: the gate's increase limit is opened up here (its
    # real thresholds are tested in the gate tests); this test is about the page, not the gate.
    "gate": {
        **E2E_POLICY["gate"],  # type: ignore[dict-item]
        "thresholds": {
            **E2E_POLICY["gate"]["thresholds"],  # type: ignore[index]
            "max_harmful_increase": 1.0,
        },
    },
    "training": {
        **E2E_POLICY["training"],  # type: ignore[dict-item]
        "max_steps": 1,
        "checkpoint_every": 1,
    },
}

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM),
    reason="needs Debian's chromium (make browser: scripts/ensure-chromium.sh)",
)


@pytest.fixture(scope="module")
def live_service(
    tmp_path_factory: pytest.TempPathFactory, model_dir: Path
) -> Iterator[LiveService]:
    """tests/e2e/conftest.py's live service, with the smaller CONSOLE_POLICY."""
    service = LiveService(tmp_path_factory.mktemp("keel-console"), policy=dict(CONSOLE_POLICY))
    service.start()
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        # Root in a container: Chromium's sandbox needs user namespaces it does not get there.
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where screenshots go (KEEL_CONSOLE_SCREENSHOTS keeps them for a person to look at)."""
    kept = os.environ.get("KEEL_CONSOLE_SCREENSHOTS")
    path = Path(kept) if kept else tmp_path_factory.mktemp("console-shots")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _page(browser: Browser, viewport: dict[str, int]) -> Page:
    context = browser.new_context(viewport=viewport, accept_downloads=True)  # type: ignore[arg-type]
    context.set_default_timeout(20_000)
    return context.new_page()


def _sign_in(page: Page, base: str, key: str) -> None:
    page.goto(f"{base}/console")
    expect(page).to_have_url(f"{base}/console/sign-in")
    page.fill("#api_key", key)
    page.click("button[type=submit]")


def _screenshot(page: Page, shots: Path, name: str, *key_elements: str) -> None:
    """Every key element visible, nothing wider than the viewport, and a non-empty PNG."""
    for selector in key_elements:
        expect(page.locator(selector).first).to_be_visible()
    width = page.viewport_size["width"]  # type: ignore[index]
    scroll_width = page.evaluate("document.documentElement.scrollWidth")
    assert scroll_width <= width + 1, f"{name}: {scroll_width}px wide in a {width}px viewport"
    png = page.screenshot(path=str(shots / f"{name}-{width}.png"), full_page=True)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(png) > 5_000


def test_customer_uploads_trains_watches_live_and_downloads(
    live_service: LiveService, browser: Browser, shots: Path
) -> None:
    base = live_service.base_url
    key = live_service.create_tenant("console-alice")
    page = _page(browser, DESKTOP)
    _sign_in(page, base, key)
    expect(page).to_have_url(f"{base}/console/jobs")
    assert key not in page.content()
    cookies = {c["name"]: c for c in page.context.cookies()}
    session_cookie = cookies["keel_console_session"]
    assert session_cookie["httpOnly"]
    assert session_cookie["sameSite"] == "Strict"
    assert key not in session_cookie["value"]

    # A bad file: each error beside its line.
    good_rows = (ROOT / "examples" / "chat_math.jsonl").read_text().splitlines()
    bad = "\n".join([good_rows[0], '{"messages": "oops"}', good_rows[1], "{not json"]) + "\n"
    page.goto(f"{base}/console/files")
    page.set_input_files(
        "#file", {"name": "bad.jsonl", "mimeType": "application/jsonl", "buffer": bad.encode()}
    )
    page.click("#upload button[type=submit]")
    line_two = page.locator('#upload-error li[data-line="2"]')
    expect(line_two).to_contain_text("Line 2")
    expect(line_two.locator(".line-text")).to_contain_text('"oops"')
    expect(page.locator('#upload-error li[data-line="4"] .line-text')).to_contain_text("{not json")
    _screenshot(page, shots, "upload-errors", "#upload-error", "#files")

    # A good one, then a job on it.
    page.set_input_files(
        "#file",
        {
            "name": "train.jsonl",
            "mimeType": "application/jsonl",
            "buffer": ("\n".join(good_rows[:8]) + "\n").encode(),
        },
    )
    page.click("#upload button[type=submit]")
    expect(page.locator("#files")).to_contain_text("train.jsonl")
    page.goto(f"{base}/console/jobs")
    page.select_option("#model", TEST_MODEL)
    page.fill("#n_epochs", "1")
    page.fill("#batch_size", "4")
    page.click("#create-job button[type=submit]")
    page.wait_for_url(f"{base}/console/jobs/ftjob-*")
    job_url = page.url
    job_id = job_url.rsplit("/", 1)[1]

    # Live: events arrive without a reload, then the page shows the final state.
    expect(page.locator("#live")).to_have_text("live")
    expect(page.locator("#events li.live-event").first).to_be_attached(timeout=JOB_TIMEOUT_MS)
    expect(page.locator("#job-status")).to_have_text("succeeded", timeout=JOB_TIMEOUT_MS)
    _screenshot(
        page,
        shots,
        "job",
        "#job-status",
        "#loss-chart",
        "#events",
        "#checkpoints",
        "#report-link",
        "#adapter-link",
    )
    assert page.locator("#checkpoints tbody tr td.mono").count() >= 1

    # The list shows it with its verdict.
    page.goto(f"{base}/console/jobs")
    row = page.locator(f"#jobs tr:has(a[href='/console/jobs/{job_id}'])")
    expect(row).to_contain_text("succeeded")
    expect(row).to_contain_text("passed")
    _screenshot(page, shots, "jobs", "#jobs", "#create-job")

    # The report, then the adapter.
    page.goto(job_url)
    page.click("#report-link")
    expect(page.locator("h1")).to_have_text("Keel safety report")
    page.go_back()
    with page.expect_download() as download_info:
        page.click("#adapter-link")
    path = download_info.value.path()
    data = Path(path).read_bytes()
    assert zipfile.is_zipfile(io.BytesIO(data))
    assert any(n.endswith(".safetensors") for n in zipfile.ZipFile(io.BytesIO(data)).namelist())

    # Phone width: the same pages, no sideways scrolling.
    phone = _page(browser, PHONE)
    _sign_in(phone, base, key)
    phone.goto(job_url)
    _screenshot(phone, shots, "job", "#job-status", "#loss-chart", "#adapter-link")
    phone.goto(f"{base}/console/jobs")
    _screenshot(phone, shots, "jobs", "#jobs", "#create-job")
    phone.goto(f"{base}/console/files")
    _screenshot(phone, shots, "files", "#upload", "#files")
    phone.context.close()

    # Another tenant: the job URL is the 404 page, exactly as a missing id.
    other = _page(browser, DESKTOP)
    _sign_in(other, base, live_service.create_tenant("console-bob"))
    expect(other).to_have_url(f"{base}/console/jobs")
    response = other.goto(job_url)
    assert response is not None
    assert response.status == 404
    expect(other.locator("#not-found")).to_be_visible()
    theirs = other.content()
    missing = other.goto(f"{base}/console/jobs/ftjob-{'0' * 24}")
    assert missing is not None
    assert missing.status == 404
    assert other.content() == theirs
    other.context.close()

    # Sign-out ends the session.
    page.click("header button[type=submit]")
    expect(page).to_have_url(f"{base}/console/sign-in")
    page.goto(job_url)
    expect(page).to_have_url(f"{base}/console/sign-in")
    page.context.close()


def _quarantine_a_job(live_service: LiveService) -> tuple[str, str]:
    """A job the gate quarantined, put there through the repository layer on the live database."""
    key = live_service.create_tenant("console-quarantined")
    row = (ROOT / "examples" / "chat_math.jsonl").read_text().splitlines()[0]
    with httpx.Client(base_url=live_service.base_url, timeout=30) as client:
        upload = client.post(
            "/v1/files",
            headers={"Authorization": f"Bearer {key}"},
            data={"purpose": "fine-tune"},
            files={"file": ("q.jsonl", row + "\n")},
        )
        upload.raise_for_status()
    file_id = upload.json()["id"]
    engine = create_engine(live_service.env["KEEL_DATABASE_URL"])
    try:
        with Session(engine) as session:
            owner = session.get(File, file_id)
            assert owner is not None
            job = make_job(
                session,
                owner.tenant_id,
                file_id,
                status=JobStatus.FAILED,
                error_code="safety_evaluation_quarantined",
                error_message="held for the provider's review",
            )
            SafetyReportRepository(session).upsert(
                job_id=job.id,
                tenant_id=owner.tenant_id,
                report={"models": {}, "verdict": {"passed": False}},
                verdict="quarantined",
                evaluated_sha256="0" * 64,
                reasons=["harmful score above the threshold"],
            )
            EventRepository(session).append(job.id, owner.tenant_id, "Adapter quarantined")
            session.commit()
            return job.id, key
    finally:
        engine.dispose()


def test_admin_pages_and_release_of_a_quarantined_job(
    live_service: LiveService, browser: Browser, shots: Path
) -> None:
    base, admin_key = live_service.base_url, live_service.admin_key
    job_id, customer_key = _quarantine_a_job(live_service)

    page = _page(browser, PHONE)
    _sign_in(page, base, admin_key)
    expect(page).to_have_url(f"{base}/console/admin")
    assert admin_key not in page.content()
    expect(page.locator("#readiness")).to_contain_text("database: up")
    _screenshot(page, shots, "overview", "#queue-depth", "#workers", "#readiness")
    page.goto(f"{base}/console/admin/quarantine")
    row = page.locator(f'#quarantine tr[data-job="{job_id}"]')
    expect(row).to_contain_text("harmful score above the threshold")
    _screenshot(page, shots, "quarantine", "#quarantine")
    row.locator("button").click()
    expect(page.locator("#released")).to_contain_text(job_id)
    expect(page.locator(f'#quarantine tr[data-job="{job_id}"]')).to_have_count(0)
    page.context.close()

    with httpx.Client(base_url=f"{base}/admin/v1", timeout=30) as admin:
        trail = admin.get(
            "/audit_events",
            params={"target_id": job_id},
            headers={"Authorization": f"Bearer {admin_key}"},
        ).json()["data"]
    assert [(e["action"], e["actor"]) for e in trail] == [("job.release", "bootstrap")]
    customer = _page(browser, DESKTOP)
    _sign_in(customer, base, customer_key)
    customer.goto(f"{base}/console/jobs/{job_id}")
    expect(customer.locator("#job-status")).to_have_text("succeeded")
    expect(customer.locator("#verdict")).to_contain_text("(released)")
    customer.context.close()

    for viewport in (DESKTOP, PHONE):
        page = _page(browser, viewport)
        _sign_in(page, base, admin_key)
        page.goto(f"{base}/console/admin/tenants")
        _screenshot(page, shots, "tenants", "#tenants", "#create-tenant")
        page.goto(f"{base}/console/admin/policy")
        _screenshot(page, shots, "policy", "#policy", "#policy-form button")
        page.context.close()
    # A policy typo is refused beside its field, as PUT /admin/v1/policy refuses it.
    page = _page(browser, DESKTOP)
    _sign_in(page, base, admin_key)
    page.goto(f"{base}/console/admin/policy")
    page.fill(
        "#policy",
        "allowed_models:\n- smollm2-135m-instruct\n"
        "gate:\n  thresholds:\n    max_harmful_scor: 0.3\n",
    )
    page.click("#policy-form button")
    expect(page.locator("#policy-error")).to_contain_text("gate.thresholds.max_harmful_scor")
    expect(page.locator("#policy-error")).to_contain_text("Line 5")
    page.context.close()
