"""Request-body cap before parsing, auth before reading, bounded schemas (issue 22)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.types import Message, Receive, Scope, Send

from api.body_limit import BodyLimitMiddleware
from db.admin_key import hash_admin_key
from tests.api.conftest import Customer
from tests.fixtures.db import TEST_ADMIN_KEY, TEST_MODEL

CAP = 1024 * 1024  # KEEL_MAX_JSON_BODY_BYTES default


def _scope(path: str, headers: dict[str, str], method: str = "POST") -> Scope:
    return {
        "type": "http",
        "method": method,
        "path": path,
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }


class Recorder:
    """A client side of one ASGI request: counts body chunks handed out, keeps the response."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.read = 0
        self.sent: list[Message] = []

    async def receive(self) -> Message:
        if self.read >= len(self.chunks):
            return {"type": "http.disconnect"}
        self.read += 1
        more = self.read < len(self.chunks)
        return {"type": "http.request", "body": self.chunks[self.read - 1], "more_body": more}

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int:
        return int(self.sent[0]["status"])

    @property
    def error(self) -> dict[str, Any]:
        body = b"".join(m.get("body", b"") for m in self.sent[1:])
        return dict(json.loads(body)["error"])


class InnerApp:
    def __init__(self) -> None:
        self.body: bytes | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        self.body = message["body"]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


def _run(scope: Scope, chunks: list[bytes]) -> tuple[Recorder, InnerApp]:
    import asyncio

    inner = InnerApp()
    middleware = BodyLimitMiddleware(inner, CAP, hash_admin_key(TEST_ADMIN_KEY))
    recorder = Recorder(chunks)
    asyncio.run(middleware(scope, recorder.receive, recorder.send))
    return recorder, inner


MIB_CHUNKS = [b"x" * 65536] * 64  # 4 MiB in 64 KiB chunks


@pytest.mark.parametrize(
    ("path", "headers", "code"),
    [
        ("/v1/fine_tuning/jobs", {}, "invalid_api_key"),
        ("/v1/fine_tuning/jobs", {"Authorization": "Basic abc"}, "invalid_api_key"),
        ("/admin/v1/policy", {}, "invalid_admin_key"),
        ("/admin/v1/policy", {"Authorization": "Bearer wrong"}, "invalid_admin_key"),
    ],
)
def test_unauthenticated_bodies_are_refused_before_a_byte_is_read(
    path: str, headers: dict[str, str], code: str
) -> None:
    scope = _scope(path, {**headers, "Content-Length": str(4 * CAP)})
    recorder, inner = _run(scope, MIB_CHUNKS)
    assert (recorder.status, recorder.error["code"]) == (401, code)
    assert recorder.read == 0
    assert inner.body is None


def test_declared_oversize_is_refused_before_reading() -> None:
    scope = _scope(
        "/admin/v1/policy",
        {"Authorization": f"Bearer {TEST_ADMIN_KEY}", "Content-Length": str(CAP + 1)},
        method="PUT",
    )
    recorder, inner = _run(scope, MIB_CHUNKS)
    assert (recorder.status, recorder.error["code"]) == (413, "request_too_large")
    assert recorder.read == 0
    assert inner.body is None


def test_undeclared_oversize_is_cut_off_while_streaming() -> None:
    # Chunked (no Content-Length): the cap applies to the bytes actually received.
    scope = _scope(
        "/v1/fine_tuning/jobs",
        {"Authorization": "Bearer sk-keel-x", "Transfer-Encoding": "chunked"},
    )
    recorder, inner = _run(scope, MIB_CHUNKS)
    assert (recorder.status, recorder.error["code"]) == (413, "request_too_large")
    assert recorder.read == CAP // 65536 + 1  # stopped one chunk past the cap, not 4 MiB
    assert inner.body is None


def test_a_small_lying_content_length_does_not_lift_the_cap() -> None:
    scope = _scope("/v1/fine_tuning/jobs", {"Authorization": "Bearer k", "Content-Length": "10"})
    recorder, _ = _run(scope, MIB_CHUNKS)
    assert recorder.status == 413


def test_a_body_under_the_cap_is_replayed_whole() -> None:
    chunks = [b'{"a": ', b"1}"]
    scope = _scope("/v1/fine_tuning/jobs", {"Authorization": "Bearer k", "Content-Length": "8"})
    recorder, inner = _run(scope, chunks)
    assert recorder.status == 200
    assert inner.body == b'{"a": 1}'


def test_oversize_job_body_over_http(client: TestClient, alice: Customer) -> None:
    body = {"model": TEST_MODEL, "training_file": "file-x", "metadata": {"k": "v" * (CAP + 10)}}
    response = client.post("/v1/fine_tuning/jobs", headers=alice.headers, json=body)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
    # An unauthenticated one is a 401, never a parse.
    anonymous = client.post("/v1/fine_tuning/jobs", json=body)
    assert anonymous.status_code == 401


def test_deeply_nested_json_body_is_a_400(client: TestClient, alice: Customer) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    response = client.post(
        "/v1/fine_tuning/jobs",
        headers={**alice.headers, "Content-Type": "application/json"},
        content=deep.encode(),
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_body"


def _file_id(client: TestClient, who: Customer) -> str:
    from tests.fixtures.factories import chat_jsonl

    response = client.post(
        "/v1/files",
        headers=who.headers,
        data={"purpose": "fine-tune"},
        files={"file": ("t.jsonl", chat_jsonl())},
    )
    return str(response.json()["id"])


@pytest.mark.parametrize(
    ("patch", "code", "param"),
    [
        ({"integrations": [{"type": "wandb"}] * 9}, "too_many_items", "integrations"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "invalid_value", "metadata"),
        (
            {"hyperparameters": {"lora_target_modules": ["q_proj"] * 17}},
            "too_many_items",
            "hyperparameters.lora_target_modules",
        ),
        (
            {"method": {"type": "dpo", "dpo": {"a": list(range(20_000))}}},
            "json_too_complex",
            "method.dpo",
        ),
        (
            {"integrations": [json.loads('{"a":' * 20 + "1" + "}" * 20)]},
            "json_too_complex",
            "integrations.0",
        ),
    ],
)
def test_request_schemas_bound_lists_and_dicts(
    client: TestClient, alice: Customer, patch: dict[str, Any], code: str, param: str
) -> None:
    body = {"model": TEST_MODEL, "training_file": _file_id(client, alice), **patch}
    response = client.post("/v1/fine_tuning/jobs", headers=alice.headers, json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == (code, param)


def test_policy_document_is_bounded(client: TestClient, admin_headers: dict[str, str]) -> None:
    huge = {"allowed_models": [f"m{i}" for i in range(20_000)]}
    response = client.put("/admin/v1/policy", headers=admin_headers, json=huge)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "json_too_complex"
    deep = json.loads('{"a":' * 20 + "1" + "}" * 20)
    response = client.put("/admin/v1/policy", headers=admin_headers, json={"gate": deep})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "json_too_complex"


@pytest.mark.parametrize(
    ("path", "admin", "template"),
    [
        ("/v1/fine_tuning/jobs", False, '{{"model": "m", "training_file": "f", "seed": {n}}}'),
        ("/admin/v1/policy", True, '{{"mixer": {{"min_ratio": {n}}}}}'),
        ("/admin/v1/tenants", True, '{{"name": {n}}}'),
    ],
)
def test_huge_integer_literals_in_json_bodies_are_400(
    client: TestClient,
    alice: Customer,
    admin_headers: dict[str, str],
    path: str,
    admin: bool,
    template: str,
) -> None:
    headers = admin_headers if admin else alice.headers
    for digits in (40, 5_000):
        body = template.format(n="9" * digits)
        response = client.request(
            "PUT" if path.endswith("policy") else "POST",
            path,
            headers={**headers, "Content-Type": "application/json"},
            content=body.encode(),
        )
        assert response.status_code == 400, (digits, response.text)
        assert "Traceback" not in response.text
        if digits > 4_300:  # over CPython's int-conversion limit: the body does not decode
            assert response.json()["error"]["code"] == "invalid_body"
