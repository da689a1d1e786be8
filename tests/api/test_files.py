"""/v1/files: upload validation (every problem with line and field), streaming cap, CRUD."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import Customer
from tests.fixtures.factories import CHAT_ROW, chat_jsonl, jsonl
from worker.validation import screen_file

CAP = 256 * 1024  # KEEL_MAX_UPLOAD_BYTES in the test session


def _upload(
    client: TestClient,
    who: Customer,
    content: bytes,
    purpose: str = "fine-tune",
    name: str = "train.jsonl",
) -> object:
    return client.post(
        "/v1/files", headers=who.headers, data={"purpose": purpose}, files={"file": (name, content)}
    )


def _stored_blobs(data_dir: Path) -> list[Path]:
    root = data_dir / "files"
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


@pytest.mark.parametrize(
    ("rows", "fmt"),
    [
        ([CHAT_ROW] * 2, "chat"),
        ([{"prompt": "2+2?", "completion": "4"}] * 2, "prompt_completion"),
        ([{"instruction": "Add", "input": "2 and 2", "output": "4"}] * 2, "alpaca"),
    ],
)
def test_upload_each_format(
    client: TestClient, alice: Customer, rows: list[dict[str, object]], fmt: str
) -> None:
    content = jsonl(rows)
    response = _upload(client, alice, content)
    assert response.status_code == 200, response.text  # type: ignore[attr-defined]
    body = response.json()  # type: ignore[attr-defined]
    assert body["id"].startswith("file-")
    assert body["object"] == "file"
    assert (body["bytes"], body["purpose"], body["format"], body["row_count"]) == (
        len(content),
        "fine-tune",
        fmt,
        2,
    )
    assert client.get(f"/v1/files/{body['id']}", headers=alice.headers).json() == body
    assert client.get(f"/v1/files/{body['id']}/content", headers=alice.headers).content == content


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b'{"messages": [\n', [(1, "(line)")]),
        (
            jsonl([CHAT_ROW, {"messages": [{"role": "robot", "content": "x"}]}]),
            [(2, "messages[0].role")],
        ),
        (jsonl([CHAT_ROW, {"prompt": "a", "completion": "b"}]), [(2, "(row)")]),
        (b"", [(0, "(file)")]),
        (b"\xff\xfe not utf-8\n", [(1, "(line)")]),
        (
            jsonl([{"prompt": "", "completion": 3}, CHAT_ROW, {"x": 1}]),
            [(1, "prompt"), (3, "(row)")],
        ),
    ],
    ids=["bad-json", "wrong-field", "mixed-formats", "empty", "non-utf8", "every-problem"],
)
def test_invalid_uploads_report_line_and_field(
    client: TestClient,
    alice: Customer,
    data_dir: Path,
    content: bytes,
    expected: list[tuple[int, str]],
) -> None:
    response = _upload(client, alice, content)
    assert response.status_code == 400  # type: ignore[attr-defined]
    error = response.json()["error"]  # type: ignore[attr-defined]
    assert error["code"] == "invalid_file_format"
    assert error["param"] == "file"
    assert [(d["line"], d["field"]) for d in error["details"]] == expected
    assert f"line {expected[0][0]}" in error["message"] or expected[0][0] == 0
    assert _stored_blobs(data_dir) == []
    assert client.get("/v1/files", headers=alice.headers).json()["data"] == []


def test_oversize_upload_is_cut_off_while_streaming(
    client: TestClient, alice: Customer, data_dir: Path
) -> None:
    row = jsonl([CHAT_ROW])
    sent = {"bytes": 0}

    def body() -> Iterator[bytes]:
        boundary = b"--xyz"
        yield boundary + b'\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
        yield (
            boundary
            + b'\r\nContent-Disposition: form-data; name="file"; filename="a.jsonl"\r\n\r\n'
        )
        # 4x the cap, with no Content-Length: only the streamed-byte count can stop it.
        for _ in range(4 * CAP // len(row)):
            sent["bytes"] += len(row)
            yield row
        yield b"\r\n--xyz--\r\n"

    response = client.post(
        "/v1/files",
        headers={**alice.headers, "Content-Type": "multipart/form-data; boundary=xyz"},
        content=body(),
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "file_too_large"
    assert _stored_blobs(data_dir) == []
    assert not any(p.name.startswith(".upload-") for p in (data_dir / "files").rglob("*"))


def test_declared_oversize_is_refused_before_reading(client: TestClient, alice: Customer) -> None:
    response = client.post(
        "/v1/files",
        headers={
            **alice.headers,
            "Content-Type": "multipart/form-data; boundary=xyz",
            "Content-Length": str(10 * CAP),
        },
        content=b"--xyz--\r\n" + b" " * (10 * CAP - 9),
    )
    assert response.status_code == 413


def test_just_under_the_cap_is_accepted(client: TestClient, alice: Customer) -> None:
    row = jsonl([CHAT_ROW])
    content = row * ((CAP - 1) // len(row))
    assert len(content) < CAP
    assert _upload(client, alice, content).status_code == 200  # type: ignore[attr-defined]


@pytest.mark.parametrize("purpose", ["fine-tune-results", "assistants", ""])
def test_bad_purpose(client: TestClient, alice: Customer, purpose: str) -> None:
    response = _upload(client, alice, chat_jsonl(), purpose=purpose)
    assert response.status_code == 400  # type: ignore[attr-defined]
    assert response.json()["error"]["param"] == "purpose"  # type: ignore[attr-defined]


def test_missing_file_part_and_wrong_content_type(client: TestClient, alice: Customer) -> None:
    missing = client.post(
        "/v1/files",
        headers=alice.headers,
        data={"purpose": "fine-tune"},
        files={"other": ("x", b"y")},
    )
    assert missing.status_code == 400
    assert missing.json()["error"]["param"] == "file"
    as_json = client.post("/v1/files", headers=alice.headers, json={"purpose": "fine-tune"})
    assert as_json.status_code == 400
    assert as_json.json()["error"]["code"] == "invalid_content_type"


def test_filename_is_sanitised_and_storage_is_tenant_scoped(
    client: TestClient, alice: Customer, data_dir: Path
) -> None:
    body = _upload(client, alice, chat_jsonl(), name="../../etc/pass\u202ewd.jsonl").json()  # type: ignore[attr-defined]
    assert body["filename"] == "passwd.jsonl"
    [blob] = _stored_blobs(data_dir)
    assert blob == (data_dir / "files" / alice.tenant_id / body["id"]).resolve()


def test_list_pagination_order_and_delete(
    client: TestClient, alice: Customer, data_dir: Path
) -> None:
    ids = [_upload(client, alice, chat_jsonl(i + 1)).json()["id"] for i in range(3)]  # type: ignore[attr-defined]
    page = client.get("/v1/files", headers=alice.headers, params={"limit": 2}).json()
    assert [f["id"] for f in page["data"]] == ids[::-1][:2]
    assert page["has_more"]
    assert page["first_id"] == ids[2]
    assert page["last_id"] == ids[1]
    rest = client.get(
        "/v1/files", headers=alice.headers, params={"limit": 2, "after": page["last_id"]}
    ).json()
    assert [f["id"] for f in rest["data"]] == [ids[0]]
    assert not rest["has_more"]
    asc = client.get("/v1/files", headers=alice.headers, params={"order": "asc"}).json()
    assert [f["id"] for f in asc["data"]] == ids
    filtered = client.get(
        "/v1/files", headers=alice.headers, params={"purpose": "fine-tune-results"}
    ).json()
    assert filtered["data"] == []

    deleted = client.delete(f"/v1/files/{ids[0]}", headers=alice.headers)
    assert deleted.json() == {"id": ids[0], "object": "file", "deleted": True}
    assert client.get(f"/v1/files/{ids[0]}", headers=alice.headers).status_code == 404
    assert len(_stored_blobs(data_dir)) == 2


@pytest.mark.parametrize(
    "params", [{"limit": 0}, {"limit": 101}, {"after": "file-nope"}, {"order": "sideways"}]
)
def test_bad_list_params(client: TestClient, alice: Customer, params: dict[str, object]) -> None:
    response = client.get("/v1/files", headers=alice.headers, params=params)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == next(iter(params))


def test_screen_reports_per_line_results(
    client: TestClient, alice: Customer, screens: list[tuple[str, str]]
) -> None:
    file_id = _upload(client, alice, chat_jsonl(4)).json()["id"]  # type: ignore[attr-defined]
    pending = client.post(f"/v1/files/{file_id}/screen", headers=alice.headers)
    assert pending.status_code == 202
    assert pending.json() == {"object": "file.screening", "file_id": file_id, "status": "pending"}
    assert screens == [(alice.tenant_id, file_id)]
    screen_file(*screens[0])  # what the validation worker does
    done = client.post(f"/v1/files/{file_id}/screen", headers=alice.headers)
    assert done.status_code == 200
    report = done.json()
    assert report["status"] == "completed"
    assert report["file_id"] == file_id
    assert report["summary"]["rows"] == 4
    assert [r["line"] for r in report["results"]] == [1, 2, 3, 4]
