"""/v1/files with KEEL_BLOB_URL set: the upload streams to a real S3 server (SeaweedFS), as a
multipart upload with the byte cap still counted, and the content streams back from it."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from db.blobs_s3 import S3BlobStore
from db.settings import get_settings
from tests.api.conftest import Customer
from tests.fixtures.object_store import BUCKET, ObjectStoreServer

MIB = 1024 * 1024


@pytest.fixture
def bucket(
    object_store: ObjectStoreServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[S3BlobStore]:
    prefix = f"api-{uuid.uuid4().hex[:8]}"
    for key, value in object_store.env(prefix).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("KEEL_S3_PART_SIZE_MB", "5")
    monkeypatch.setenv("KEEL_MAX_UPLOAD_BYTES", str(8 * MIB))
    get_settings.cache_clear()
    yield object_store.store(prefix)
    get_settings.cache_clear()


def _big_jsonl(target_bytes: int) -> bytes:
    row = {
        "messages": [
            {"role": "user", "content": "What is 2 + 2? " + "x" * 900},
            {"role": "assistant", "content": "4"},
        ]
    }
    line = (json.dumps(row) + "\n").encode()
    return line * (target_bytes // len(line) + 1)


def _keys(store: S3BlobStore) -> list[str]:
    listed = store.client.list_objects_v2(Bucket=BUCKET, Prefix=store.prefix + "/")
    return [item["Key"] for item in listed.get("Contents", [])]


def test_upload_streams_to_the_bucket_and_downloads_back(
    bucket: S3BlobStore, client: TestClient, alice: Customer, bob: Customer, data_dir: Path
) -> None:
    content = _big_jsonl(6 * MIB)  # two parts of 5 MiB
    response = client.post(
        "/v1/files",
        headers=alice.headers,
        data={"purpose": "fine-tune"},
        files={"file": ("big.jsonl", content)},
    )
    assert response.status_code == 200, response.text
    file = response.json()
    assert file["bytes"] == len(content)
    key = f"{bucket.prefix}/files/{alice.tenant_id}/{file['id']}"
    assert _keys(bucket) == [key]
    head = bucket.client.head_object(Bucket=BUCKET, Key=key)
    assert head["ContentLength"] == len(content)
    assert str(head["ETag"]).strip('"').endswith("-2")  # sent as a two-part upload
    assert not [p for p in data_dir.rglob("*") if p.is_file()]  # nothing on the API's disk

    downloaded = client.get(f"/v1/files/{file['id']}/content", headers=alice.headers)
    assert downloaded.status_code == 200
    assert hashlib.sha256(downloaded.content).digest() == hashlib.sha256(content).digest()
    # Another tenant's id answers like a missing one, object store or not.
    other = client.get(f"/v1/files/{file['id']}/content", headers=bob.headers)
    assert other.status_code == 404

    assert client.delete(f"/v1/files/{file['id']}", headers=alice.headers).status_code == 200
    assert _keys(bucket) == []


def test_over_the_cap_is_413_and_leaves_no_object_or_pending_upload(
    bucket: S3BlobStore, client: TestClient, alice: Customer
) -> None:
    boundary = "keelboundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.jsonl"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + _big_jsonl(12 * MIB)
        + f"\r\n--{boundary}--\r\n".encode()
    )
    # Chunked, no Content-Length: the cap must be counted on the bytes, past the first part
    # already sent to the bucket.
    chunks = (body[i : i + 256 * 1024] for i in range(0, len(body), 256 * 1024))
    response = client.post(
        "/v1/files",
        headers={
            **alice.headers,
            "Content-Type": f"multipart/form-data; boundary={boundary}",
        },
        content=chunks,
    )
    assert response.status_code == 413
    assert response.json()["error"]["param"] == "file"
    assert _keys(bucket) == []
    pending = bucket.client.list_multipart_uploads(Bucket=BUCKET, Prefix=bucket.prefix + "/")
    assert not pending.get("Uploads")


def test_an_invalid_file_is_refused_and_removed_from_the_bucket(
    bucket: S3BlobStore, client: TestClient, alice: Customer
) -> None:
    response = client.post(
        "/v1/files",
        headers=alice.headers,
        data={"purpose": "fine-tune"},
        files={"file": ("bad.jsonl", b'{"messages": "nope"}\n')},
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_file_format"
    assert _keys(bucket) == []
