"""Hostile text never reaches Postgres: control bytes in any field are a 400 naming the field.

Issue 22 found 24 NUL cases answering 500 on Postgres (SQLite stored them silently). Every class
of field is probed here on the real test database: path ids, `after` cursors, query filters, body
ids and names, metadata, free-form JSON, tenant names, the policy document and upload filenames.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.models import FineTuningJob, Tenant
from tests.api.conftest import Customer
from tests.fixtures.db import TEST_MODEL
from tests.fixtures.factories import chat_jsonl

# NUL is what broke Postgres; ESC and DEL/C1 stand for the other control bytes.
CONTROL = ["\x00", "\x1b", "\x7f", "\x85"]
PCT = {"\x00": "%00", "\x1b": "%1B", "\x7f": "%7F", "\x85": "%C2%85"}


def _assert_invalid(response: Any, param: str) -> None:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("invalid_characters", param), error
    assert "Traceback" not in response.text


@pytest.mark.parametrize("char", CONTROL)
@pytest.mark.parametrize(
    ("method", "path", "param"),
    [
        ("GET", "/v1/files/file-{c}x", "file_id"),
        ("GET", "/v1/files/file-{c}x/content", "file_id"),
        ("DELETE", "/v1/files/file-{c}x", "file_id"),
        ("POST", "/v1/files/file-{c}x/screen", "file_id"),
        ("GET", "/v1/fine_tuning/jobs/ftjob-{c}x", "job_id"),
        ("POST", "/v1/fine_tuning/jobs/ftjob-{c}x/cancel", "job_id"),
        ("GET", "/v1/fine_tuning/jobs/ftjob-{c}x/events", "job_id"),
        ("GET", "/v1/fine_tuning/jobs/ftjob-{c}x/checkpoints", "job_id"),
        ("GET", "/v1/fine_tuning/jobs/ftjob-{c}x/safety_report", "job_id"),
        ("GET", "/v1/models/ft:{c}x", "model_id"),
        ("DELETE", "/v1/models/ft:{c}x", "model_id"),
    ],
)
def test_control_bytes_in_path_ids(
    client: TestClient, alice: Customer, char: str, method: str, path: str, param: str
) -> None:
    response = client.request(method, path.format(c=PCT[char]), headers=alice.headers)
    _assert_invalid(response, param)


@pytest.mark.parametrize(
    ("path", "param"),
    [
        ("/admin/v1/tenants/org-{c}x/api_keys", "tenant_id"),
        ("/admin/v1/tenants/org-x/api_keys/key-{c}x", "key_id"),
        ("/admin/v1/fine_tuning/jobs/ftjob-{c}x/release", "job_id"),
    ],
)
def test_control_bytes_in_admin_path_ids(
    client: TestClient, admin_headers: dict[str, str], path: str, param: str
) -> None:
    method = "DELETE" if "api_keys/" in path else ("POST" if "release" in path else "GET")
    response = client.request(method, path.format(c="%00"), headers=admin_headers)
    _assert_invalid(response, param)


@pytest.mark.parametrize("char", CONTROL)
@pytest.mark.parametrize(
    ("path", "params", "param"),
    [
        ("/v1/files", {"after": "file-{c}"}, "after"),
        ("/v1/files", {"purpose": "fine-tune{c}"}, "purpose"),
        ("/v1/fine_tuning/jobs", {"after": "{c}"}, "after"),
        ("/v1/fine_tuning/jobs", {"metadata[team]": "a{c}b"}, "metadata[team]"),
        ("/v1/fine_tuning/jobs", {"metadata[te{c}am]": "a"}, "metadata"),
        ("/v1/fine_tuning/jobs", {"limit": "1{c}"}, "limit"),
    ],
)
def test_control_bytes_in_query_strings(
    client: TestClient,
    alice: Customer,
    char: str,
    path: str,
    params: dict[str, str],
    param: str,
) -> None:
    query = {k.format(c=char): v.format(c=char) for k, v in params.items()}
    _assert_invalid(client.get(path, headers=alice.headers, params=query), param)


def test_control_bytes_in_admin_after_cursor(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    response = client.get("/admin/v1/tenants", headers=admin_headers, params={"after": "\x00"})
    _assert_invalid(response, "after")


def _job_body(training_file: str) -> dict[str, Any]:
    return {"model": TEST_MODEL, "training_file": training_file}


@pytest.mark.parametrize("char", CONTROL)
@pytest.mark.parametrize(
    ("patch", "param"),
    [
        ({"training_file": "file-{c}x"}, "training_file"),
        ({"validation_file": "file-{c}x"}, "validation_file"),
        ({"model": "smollm{c}"}, "model"),
        ({"suffix": "my{c}suffix"}, "suffix"),
        ({"metadata": {"team": "a{c}"}}, "metadata.team"),
        ({"metadata": {"te{c}am": "a"}}, "metadata"),
        ({"integrations": [{"type": "wandb", "wandb": {"project": "p{c}"}}]}, "integrations.0"),
        ({"method": {"type": "dpo", "dpo": {"beta{c}": 1}}}, "method.dpo"),
    ],
)
def test_control_bytes_in_job_create_body(
    client: TestClient,
    alice: Customer,
    session: Session,
    char: str,
    patch: dict[str, Any],
    param: str,
) -> None:
    def fill(value: Any) -> Any:
        if isinstance(value, str):
            return value.format(c=char)
        if isinstance(value, dict):
            return {fill(k): fill(v) for k, v in value.items()}
        if isinstance(value, list):
            return [fill(v) for v in value]
        return value

    file_id = client.post(
        "/v1/files",
        headers=alice.headers,
        data={"purpose": "fine-tune"},
        files={"file": ("t.jsonl", chat_jsonl())},
    ).json()["id"]
    body = {**_job_body(file_id), **fill(patch)}
    response = client.post("/v1/fine_tuning/jobs", headers=alice.headers, json=body)
    _assert_invalid(response, param)
    assert session.scalar(select(func.count()).select_from(FineTuningJob)) == 0


@pytest.mark.parametrize(
    ("patch", "param"),
    [
        ({"training_file": "file-\ud800"}, "training_file"),
        ({"metadata": {"team": "\udfff"}}, "metadata.team"),
        ({"integrations": [{"type": "\ud83d"}]}, "integrations.0"),
    ],
)
def test_lone_surrogates_in_job_create_body(
    client: TestClient, alice: Customer, patch: dict[str, Any], param: str
) -> None:
    """JSON escapes can smuggle unpaired surrogates, which are not UTF-8 and broke the driver."""
    body = json.dumps({**_job_body("file-x"), **patch})  # ensure_ascii: sent as \udXXX escapes
    assert "\\ud" in body
    response = client.post(
        "/v1/fine_tuning/jobs",
        headers={**alice.headers, "Content-Type": "application/json"},
        content=body.encode(),
    )
    _assert_invalid(response, param)


def test_lone_surrogate_in_a_tenant_name(client: TestClient, admin_headers: dict[str, str]) -> None:
    response = client.post(
        "/admin/v1/tenants",
        headers={**admin_headers, "Content-Type": "application/json"},
        content=json.dumps({"name": "acme\ud800"}).encode(),
    )
    _assert_invalid(response, "name")


def test_free_form_json_keeps_newlines_but_not_nul(client: TestClient, alice: Customer) -> None:
    """Prose inside free-form JSON may hold tab/newline; only identifiers refuse them."""
    file_id = client.post(
        "/v1/files",
        headers=alice.headers,
        data={"purpose": "fine-tune"},
        files={"file": ("t.jsonl", chat_jsonl())},
    ).json()["id"]
    ok = client.post(
        "/v1/fine_tuning/jobs",
        headers=alice.headers,
        json={**_job_body(file_id), "integrations": [{"type": "x", "note": "line 1\nline\t2"}]},
    )
    assert ok.status_code == 200, ok.text
    assert ok.json()["integrations"] == [{"type": "x", "note": "line 1\nline\t2"}]
    newline_in_id = client.post(
        "/v1/fine_tuning/jobs", headers=alice.headers, json=_job_body(file_id + "\n")
    )
    _assert_invalid(newline_in_id, "training_file")


@pytest.mark.parametrize("char", CONTROL)
def test_control_bytes_in_tenant_names(
    client: TestClient, admin_headers: dict[str, str], session: Session, char: str
) -> None:
    response = client.post(
        "/admin/v1/tenants", headers=admin_headers, json={"name": f"acme{char}corp"}
    )
    _assert_invalid(response, "name")
    assert session.scalar(select(func.count()).select_from(Tenant)) == 0


@pytest.mark.parametrize(
    ("policy", "param"),
    [
        ({"allowed_models": ["smollm2\x00"]}, "allowed_models[0]"),
        ({"gate\x00": {}}, "body"),
    ],
)
def test_control_bytes_in_the_policy_document(
    client: TestClient, admin_headers: dict[str, str], policy: dict[str, Any], param: str
) -> None:
    before = client.get("/admin/v1/policy", headers=admin_headers).json()["version"]
    response = client.put("/admin/v1/policy", headers=admin_headers, json=policy)
    _assert_invalid(response, param)
    assert client.get("/admin/v1/policy", headers=admin_headers).json()["version"] == before


@pytest.mark.parametrize("char", CONTROL)
def test_control_bytes_in_upload_filenames(
    client: TestClient, alice: Customer, data_dir: Any, char: str
) -> None:
    # Built by hand: HTTP clients percent-escape control bytes in a multipart filename.
    boundary = "keelboundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="train{char}.jsonl"\r\n\r\n'
        ).encode()
        + chat_jsonl()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    response = client.post(
        "/v1/files",
        headers={**alice.headers, "Content-Type": f"multipart/form-data; boundary={boundary}"},
        content=body,
    )
    _assert_invalid(response, "filename")
    # The refused upload left no bytes behind.
    assert not [p for p in (data_dir / "files").rglob("*") if p.is_file()]


def test_purpose_form_field_with_nul_is_refused(client: TestClient, alice: Customer) -> None:
    response = client.post(
        "/v1/files",
        headers=alice.headers,
        data={"purpose": "fine-tune\x00"},
        files={"file": ("t.jsonl", chat_jsonl())},
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "purpose"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("[" * 100_000 + "]" * 100_000, "nests deeper than 32 levels"),
        ('{"prompt": "x", "completion": ' + "7" * 5_000 + "}", "has an integer of 5000 digits"),
    ],
)
def test_hostile_upload_lines_are_line_level_400s(
    client: TestClient, alice: Customer, line: str, message: str
) -> None:
    content = chat_jsonl(2) + line.encode() + b"\n"
    response = client.post(
        "/v1/files",
        headers=alice.headers,
        data={"purpose": "fine-tune"},
        files={"file": ("t.jsonl", content)},
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("invalid_file_format", "file")
    [detail] = error["details"]
    assert detail["line"] == 3
    assert message in detail["message"]
