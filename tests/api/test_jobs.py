"""/v1/fine_tuning/jobs: create (commit, then validate off the request path, then enqueue), list,
lifecycle actions, events, reports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

import screening
from db.job_status import JobStatus
from db.repositories.jobs import JobRepository
from db.repositories.safety_reports import SafetyReportRepository
from db.session import session_scope
from tests.api.conftest import Customer
from tests.fixtures.factories import chat_jsonl, make_adapter_job, make_file, make_job
from worker.validation import validate_job

MODEL = "smollm2-135m-instruct"


def upload_training_file(client: TestClient, who: Customer, content: bytes) -> str:
    response = client.post(
        "/v1/files",
        headers=who.headers,
        data={"purpose": "fine-tune"},
        files={"file": ("t.jsonl", content)},
    )
    return str(response.json()["id"])


@pytest.fixture
def training_file(client: TestClient, alice: Customer) -> str:
    return upload_training_file(client, alice, chat_jsonl(5))


def _screening_policy(client: TestClient, **limits: float) -> None:
    response = client.put(
        "/admin/v1/policy",
        headers={"Authorization": "Bearer " + "test-admin-" + "k" * 32},
        json={"allowed_models": [MODEL], "screening": {"enabled": True, **limits}},
    )
    assert response.status_code == 200, response.text


def _create(client: TestClient, who: Customer, **body: Any) -> Any:
    return client.post("/v1/fine_tuning/jobs", headers=who.headers, json=body)


def _create_validated(client: TestClient, who: Customer, **body: Any) -> dict[str, Any]:
    """Create a job, then run its validation as the validation worker would; the job as GET
    answers it afterwards."""
    created = _create(client, who, **body)
    assert created.status_code == 200, created.text
    assert created.json()["status"] == "validating_files"
    validate_job(created.json()["id"])
    job: dict[str, Any] = client.get(
        f"/v1/fine_tuning/jobs/{created.json()['id']}", headers=who.headers
    ).json()
    return job


def test_create_commits_then_validates_then_enqueues(
    client: TestClient, alice: Customer, training_file: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[str, str]] = []

    def record(queue: str) -> Any:
        def send(job_id: str) -> None:
            with session_scope() as s:  # a separate connection: the job must be committed
                job = JobRepository(s).get_unscoped(job_id)
                assert job is not None
                seen.append((queue, job.status))

        return send

    monkeypatch.setattr("worker.queue.enqueue_validation", record("validation"))
    monkeypatch.setattr("worker.queue.enqueue_fine_tuning_job", record("gpu"))
    response = _create(
        client,
        alice,
        model=MODEL,
        training_file=training_file,
        seed=7,
        suffix="demo",
        metadata={"team": "a"},
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2}}},
        safety={"mixer_ratio": 0.3},
    )
    assert response.status_code == 200, response.text
    job = response.json()
    # The request only sends the job to the validation queue: no file is read in it.
    assert seen == [("validation", "validating_files")]
    assert job["id"].startswith("ftjob-")
    assert job["object"] == "fine_tuning.job"
    assert (job["status"], job["model"], job["seed"], job["training_file"]) == (
        "validating_files",
        MODEL,
        7,
        training_file,
    )
    assert job["hyperparameters"] == {
        "n_epochs": 2,
        "batch_size": "auto",
        "learning_rate_multiplier": "auto",
    }
    assert job["method"]["type"] == "supervised"
    assert job["safety"] == {"method": "sap", "mixer_ratio": 0.3, "sap": {}}
    assert job["metadata"] == {"team": "a"}
    assert job["error"] is None
    assert isinstance(job["created_at"], int)
    assert job["finished_at"] is None
    with session_scope() as s:
        stored = JobRepository(s).get_unscoped(job["id"])
        assert stored is not None
        assert stored.enqueued_at is not None  # the validation send is recorded

    assert validate_job(job["id"]) == "queued"
    assert seen == [("validation", "validating_files"), ("gpu", "queued")]
    after = client.get(f"/v1/fine_tuning/jobs/{job['id']}", headers=alice.headers).json()
    assert after["status"] == "queued"
    events = client.get(f"/v1/fine_tuning/jobs/{job['id']}/events", headers=alice.headers).json()
    assert [e["message"] for e in events["data"]][::-1] == [
        f"Created fine-tuning job: {job['id']}",
        f"Validating training file: {training_file}",
        "Files validated, moving job to queued state",
    ]
    with session_scope() as s:
        stored = JobRepository(s).get_unscoped(job["id"])
        assert stored is not None
        assert stored.enqueued_at is not None  # the training enqueue is recorded
    # A duplicate delivery of the validation task finds nothing to do.
    assert validate_job(job["id"]) is None
    assert seen == [("validation", "validating_files"), ("gpu", "queued")]


def test_lost_sends_leave_the_job_for_the_reaper(
    client: TestClient, alice: Customer, training_file: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(job_id: str) -> None:
        raise ConnectionError("broker down")

    monkeypatch.setattr("worker.queue.enqueue_validation", broken)
    monkeypatch.setattr("worker.queue.enqueue_fine_tuning_job", broken)
    response = _create(client, alice, model=MODEL, training_file=training_file)
    assert response.status_code == 200
    job_id = response.json()["id"]
    from db.base import utcnow

    with session_scope() as s:
        # Not sent: the reaper re-sends its validation (worker.reaper.revalidate_once).
        assert [j.id for j in JobRepository(s).find_unvalidated(utcnow())] == [job_id]
    assert validate_job(job_id) == "queued"
    with session_scope() as s:
        jobs = JobRepository(s)
        assert jobs.find_unvalidated(utcnow()) == []
        assert jobs.find_unenqueued(utcnow()) == [job_id]


@pytest.mark.parametrize(
    ("body", "status", "code", "param"),
    [
        ({"model": "gpt-4o"}, 400, "model_not_allowed", "model"),
        ({"status": "succeeded"}, 400, "unknown_field", "status"),
        ({"safety": {"method": "none"}}, 400, "safety_method_not_allowed", "safety.method"),
        ({"safety": {"sap": {"rho": 1.0}}}, 400, "safety_knobs_not_allowed", "safety.sap"),
        ({"safety": {"sap": {"rhoo": 1.0}}}, 400, "unknown_field", "safety.sap.rhoo"),
        ({"safety": {"sap": {"rho": -1.0}}}, 400, "invalid_value", "safety.sap.rho"),
        ({"safety": {"mixer_ratio": 0.01}}, 400, "invalid_mixer_ratio", "safety.mixer_ratio"),
        ({"hyperparameters": {"n_epochs": 0}}, 400, "invalid_value", "hyperparameters.n_epochs"),
        ({"method": {"type": "dpo"}}, 400, "unsupported_method", "method.type"),
        # policy.yaml's training limits: every value is a maximum or an allow-list.
        *[
            ({"hyperparameters": {name: value}}, 400, code, f"hyperparameters.{name}")
            for name, value, code in [
                ("lora_rank", 256, "hyperparameter_above_limit"),
                ("lora_alpha", 1024, "hyperparameter_above_limit"),
                ("max_length", 32_768, "hyperparameter_above_limit"),
                ("batch_size", 256, "hyperparameter_above_limit"),
                ("n_epochs", 50, "hyperparameter_above_limit"),
                ("max_steps", 100_000, "hyperparameter_above_limit"),
                # policy.yaml: training.max_processes 1 (data-parallel training off).
                ("n_processes", 2, "hyperparameter_above_limit"),
                ("n_processes", 0, "invalid_value"),
                (
                    "lora_target_modules",
                    ["q_proj", "embed_tokens"],
                    "lora_target_module_not_allowed",
                ),
                ("lora_target_modules", ["lm_head"], "lora_target_module_not_allowed"),
            ]
        ],
        (
            {"method": {"type": "supervised", "supervised": {"hyperparameters": {"lora_rank": 9}}}},
            400,
            "hyperparameter_above_limit",
            "hyperparameters.lora_rank",
        ),
        ({"metadata": {str(i): "v" for i in range(17)}}, 400, "invalid_value", "metadata"),
        ({"training_file": "file-" + "0" * 24}, 404, "not_found", "training_file"),
    ],
)
def test_create_rejections(
    client: TestClient,
    alice: Customer,
    training_file: str,
    enqueued: list[str],
    body: dict[str, Any],
    status: int,
    code: str,
    param: str,
) -> None:
    response = _create(client, alice, **{"model": MODEL, "training_file": training_file, **body})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"], error["type"]) == (code, param, "invalid_request_error")
    assert enqueued == []


def test_result_file_cannot_be_a_training_file(
    client: TestClient, session: Session, alice: Customer, data_dir: Path
) -> None:
    _, result = make_adapter_job(session, alice.tenant_id, data_dir)
    session.commit()
    response = _create(client, alice, model=MODEL, training_file=result.id)
    assert response.json()["error"]["code"] == "invalid_file_purpose"


def test_screening_flags_the_training_file(
    client: TestClient,
    session: Session,
    alice: Customer,
    training_file: str,
    enqueued: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _screening_policy(client, max_flagged_fraction=0.05)

    def flag_all(conversations: Any) -> list[screening.ScreenResult]:
        return [
            screening.ScreenResult(i, True, 1.0, "test_category", "stub")
            for i, _ in enumerate(conversations, start=1)
        ]

    monkeypatch.setattr(screening, "screen_conversations", flag_all)
    # Created (validating_files), then failed by the validation worker with the code and message
    # the create request used to answer with.
    job = _create_validated(client, alice, model=MODEL, training_file=training_file)
    assert job["status"] == "failed"
    assert job["error"]["code"] == "training_file_flagged"
    assert job["error"]["param"] == "training_file"
    assert "1, 2, 3, 4, 5" in job["error"]["message"]
    assert job["finished_at"] is not None
    assert enqueued == []
    events = client.get(f"/v1/fine_tuning/jobs/{job['id']}/events", headers=alice.headers).json()
    latest = events["data"][0]
    assert latest["level"] == "error"
    assert latest["message"].startswith("Training file rejected: ")


def test_screening_row_cap_rejects_a_large_file_under_the_fraction(
    client: TestClient, alice: Customer, monkeypatch: pytest.MonkeyPatch
) -> None:
    _screening_policy(client, max_flagged_fraction=0.05, max_flagged_rows=10)
    big = upload_training_file(client, alice, chat_jsonl(300))

    def flag_every_25th(conversations: Any) -> list[screening.ScreenResult]:
        # 12 of 300 rows = 4 %: under the fraction limit, over the row cap.
        return [
            screening.ScreenResult(i, i % 25 == 0, 1.0 if i % 25 == 0 else 0.0, "c", "stub")
            for i, _ in enumerate(conversations, start=1)
        ]

    monkeypatch.setattr(screening, "screen_conversations", flag_every_25th)
    job = _create_validated(client, alice, model=MODEL, training_file=big)
    assert job["status"] == "failed"
    assert job["error"]["code"] == "training_file_flagged"
    assert "12 of 300" in job["error"]["message"]
    assert "at most 10 flagged rows" in job["error"]["message"]


def test_list_pagination_and_metadata_filter(
    client: TestClient, alice: Customer, training_file: str
) -> None:
    ids = [
        _create(
            client, alice, model=MODEL, training_file=training_file, metadata={"k": str(i % 2)}
        ).json()["id"]
        for i in range(3)
    ]
    page = client.get("/v1/fine_tuning/jobs", headers=alice.headers, params={"limit": 2}).json()
    assert [j["id"] for j in page["data"]] == ids[::-1][:2]
    assert page["has_more"]
    rest = client.get(
        "/v1/fine_tuning/jobs", headers=alice.headers, params={"after": ids[1]}
    ).json()
    assert [j["id"] for j in rest["data"]] == [ids[0]]
    assert not rest["has_more"]
    even = client.get(
        "/v1/fine_tuning/jobs", headers=alice.headers, params={"metadata[k]": "0"}
    ).json()
    assert [j["id"] for j in even["data"]] == [ids[2], ids[0]]


def test_cancel_pause_resume(
    client: TestClient, alice: Customer, training_file: str, enqueued: list[str]
) -> None:
    job_id = _create_validated(client, alice, model=MODEL, training_file=training_file)["id"]
    base = f"/v1/fine_tuning/jobs/{job_id}"
    assert client.post(f"{base}/pause", headers=alice.headers).json()["status"] == "paused"
    assert client.post(f"{base}/resume", headers=alice.headers).json()["status"] == "queued"
    assert enqueued == [job_id, job_id]
    assert client.post(f"{base}/resume", headers=alice.headers).json()["error"]["code"] == (
        "job_not_resumable"
    )
    cancelled = client.post(f"{base}/cancel", headers=alice.headers).json()
    assert cancelled["status"] == "cancelled"
    assert cancelled["finished_at"] is not None
    again = client.post(f"{base}/cancel", headers=alice.headers)
    assert again.status_code == 200
    assert again.json()["status"] == "cancelled"
    paused = client.post(f"{base}/pause", headers=alice.headers)
    assert paused.status_code == 409
    assert paused.json()["error"]["code"] == "job_not_pausable"


def test_running_job_cancel_is_cooperative(
    client: TestClient, session: Session, alice: Customer, data_dir: Path
) -> None:
    file = make_file(session, alice.tenant_id, data_dir)
    job = make_job(session, alice.tenant_id, file.id)
    session.commit()
    with session_scope() as s:
        token = JobRepository(s).claim(job.id, "w", 60)
    body = client.post(f"/v1/fine_tuning/jobs/{job.id}/cancel", headers=alice.headers).json()
    assert body["status"] == "running"
    with session_scope() as s:
        state = JobRepository(s).heartbeat(job.id, token or 0, 60)
        assert state is not None
        assert state.cancel_requested


@pytest.mark.parametrize("status", [JobStatus.SUCCEEDED, JobStatus.FAILED])
def test_cancel_terminal_is_conflict(
    client: TestClient, session: Session, alice: Customer, data_dir: Path, status: JobStatus
) -> None:
    job, _ = make_adapter_job(session, alice.tenant_id, data_dir, status=status)
    session.commit()
    response = client.post(f"/v1/fine_tuning/jobs/{job.id}/cancel", headers=alice.headers)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "job_not_cancellable"


def test_events_checkpoints_and_stream(
    client: TestClient, session: Session, alice: Customer, data_dir: Path
) -> None:
    job, _ = make_adapter_job(session, alice.tenant_id, data_dir)
    from db.repositories.events import EventRepository

    for i in range(3):
        EventRepository(session).append(
            job.id, alice.tenant_id, f"Step {i}", type="metrics", data={"step": i}
        )
    session.commit()
    base = f"/v1/fine_tuning/jobs/{job.id}"
    events = client.get(f"{base}/events", headers=alice.headers, params={"limit": 2}).json()
    assert [e["message"] for e in events["data"]] == ["Step 2", "Step 1"]
    assert events["has_more"]
    event = events["data"][0]
    assert event["object"] == "fine_tuning.job.event"
    assert event["id"].startswith("ftevent-")
    # Every event says which attempt it belongs to (0: written before any worker claimed it).
    assert (event["level"], event["type"], event["data"]) == (
        "info",
        "metrics",
        {"step": 2, "attempt": 0},
    )
    older = client.get(
        f"{base}/events", headers=alice.headers, params={"after": events["data"][-1]["id"]}
    ).json()
    assert [e["message"] for e in older["data"]] == ["Step 0", "Job finished"]

    checkpoints = client.get(f"{base}/checkpoints", headers=alice.headers).json()
    [checkpoint] = checkpoints["data"]
    assert checkpoint["object"] == "fine_tuning.job.checkpoint"
    assert checkpoint["fine_tuning_job_id"] == job.id
    assert checkpoint["step_number"] == 2
    assert checkpoint["fine_tuned_model_checkpoint"].endswith(":ckpt-step-2")

    with client.stream(
        "GET", f"{base}/events", headers=alice.headers, params={"stream": "true"}
    ) as stream:
        text = "".join(stream.iter_text())
    data = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]
    assert [d["message"] for d in data] == ["Job finished", "Step 0", "Step 1", "Step 2"]
    assert "event: done" in text


def test_safety_report_json_html_and_404(
    client: TestClient, session: Session, alice: Customer, data_dir: Path, training_file: str
) -> None:
    job, _ = make_adapter_job(session, alice.tenant_id, data_dir)
    session.commit()
    report = client.get(
        f"/v1/fine_tuning/jobs/{job.id}/safety_report", headers=alice.headers
    ).json()
    assert report["verdict"] == "passed"
    assert report["job_id"] == job.id
    assert report["report"]["verdict"] == {"passed": True}
    page = client.get(
        f"/v1/fine_tuning/jobs/{job.id}/safety_report",
        headers=alice.headers,
        params={"format": "html"},
    )
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    fresh = _create(client, alice, model=MODEL, training_file=training_file).json()["id"]
    missing = client.get(f"/v1/fine_tuning/jobs/{fresh}/safety_report", headers=alice.headers)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"


def test_a_stored_report_is_served_typed_and_unchanged(
    client: TestClient, session: Session, alice: Customer, data_dir: Path
) -> None:
    stored = json.loads(
        (Path(__file__).parents[1] / "safety_report" / "stored_report_v1.json").read_text()
    )
    # Keys the API's models do not name (written by a newer worker) are served as stored.
    stored["sap_strength"] = {"rho": 2e-5}
    stored["models"]["fine_tuned"]["timing"]["decode_seconds"] = 0.25
    job, _ = make_adapter_job(session, alice.tenant_id, data_dir)
    row = SafetyReportRepository(session).get_unscoped(job.id)
    assert row is not None
    row.report = stored
    session.commit()
    body = client.get(f"/v1/fine_tuning/jobs/{job.id}/safety_report", headers=alice.headers)
    assert body.status_code == 200, body.text
    assert body.json()["report"] == stored
    assert body.json()["object"] == "fine_tuning.job.safety_report"
    page = client.get(
        f"/v1/fine_tuning/jobs/{job.id}/safety_report",
        headers=alice.headers,
        params={"format": "html"},
    )
    assert "0.0% [0.0%, 65.8%] (0/2)" in page.text  # the fine-tuned harmful score


def test_the_openapi_document_describes_the_safety_report(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    operation = spec["paths"]["/v1/fine_tuning/jobs/{job_id}/safety_report"]["get"]
    schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema["$ref"].endswith("/SafetyReportObject")
    report = spec["components"]["schemas"]["SafetyReport"]
    assert {"models", "verdict", "gate", "schema_version"} <= set(report["properties"])
    assert "Rate" in spec["components"]["schemas"]


def test_models_lists_policy_models_and_own_fine_tunes(
    client: TestClient, session: Session, alice: Customer, data_dir: Path
) -> None:
    job, _ = make_adapter_job(session, alice.tenant_id, data_dir)
    session.commit()
    models = client.get("/v1/models", headers=alice.headers).json()
    ids = [m["id"] for m in models["data"]]
    assert ids == [MODEL, "qwen2.5-coder-0.5b-instruct", job.fine_tuned_model]
