"""S3BlobStore against a real S3 server (SeaweedFS on 127.0.0.1, tests/fixtures/object_store.py)."""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

import pytest

from db.blob_config import BlobSettings
from db.blobs import BlobNotFoundError, BlobTooLargeError
from db.blobs_s3 import TREE_MARKER, S3BlobStore
from tests.fixtures.object_store import BUCKET, ObjectStoreServer

PART = 5 * 1024 * 1024
CHUNK = 64 * 1024


@pytest.fixture
def store(object_store: ObjectStoreServer) -> S3BlobStore:
    return object_store.store(f"unit-{uuid.uuid4().hex[:8]}", part_size_mb=5)


def _chunks(data: bytes) -> list[bytes]:
    return [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]


def _object(store: S3BlobStore, relative: str) -> dict[str, object] | None:
    try:
        return dict(store.client.head_object(Bucket=BUCKET, Key=store.key_for(relative)))
    except Exception:
        return None


def test_streamed_upload_larger_than_a_part_is_multipart_and_invisible_until_commit(
    store: S3BlobStore,
) -> None:
    data = os.urandom(2 * PART + 12345)  # three parts: two full, one short
    writer = store.open_writer("tenant-a", "file-big", max_bytes=len(data))
    for chunk in _chunks(data):
        writer.write(chunk)
        # Never more than one part waiting in memory.
        assert len(writer._buffer) < PART  # type: ignore[attr-defined]
    assert writer._upload_id is not None  # type: ignore[attr-defined]
    assert _object(store, "files/tenant-a/file-big") is None  # nothing visible before commit

    relative, size, sha = writer.commit()
    assert (relative, size, sha) == (
        "files/tenant-a/file-big",
        len(data),
        hashlib.sha256(data).hexdigest(),
    )
    head = _object(store, relative)
    assert head is not None
    assert head["ContentLength"] == len(data)
    assert str(head["ETag"]).strip('"').endswith("-3")  # S3's mark of a 3-part upload

    # Streamed back in pieces: lines/chunks from the response stream, same bytes.
    digest = hashlib.sha256()
    with store.open(relative) as handle:
        first = handle.read(1000)
        digest.update(first)
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    assert len(first) == 1000
    assert digest.hexdigest() == sha


def test_small_upload_is_one_put_and_reads_as_lines(store: S3BlobStore) -> None:
    content = b'{"a": 1}\n{"b": 2}\n'
    relative, size, _ = store.put_stream("t", "small", [content[:5], content[5:]], 100)
    with store.open(relative) as handle:
        assert list(handle) == [b'{"a": 1}\n', b'{"b": 2}\n']
    assert store.read_bytes(relative) == content
    assert size == len(content)


def test_over_the_cap_aborts_the_multipart_upload(store: S3BlobStore) -> None:
    data = os.urandom(PART + CHUNK)
    with pytest.raises(BlobTooLargeError):
        store.put_stream("t", "too-big", _chunks(data), max_bytes=PART + 10)
    assert _object(store, "files/t/too-big") is None
    pending = store.client.list_multipart_uploads(Bucket=BUCKET, Prefix=store.key_for("files/t"))
    assert not pending.get("Uploads")


def test_abort_leaves_nothing(store: S3BlobStore) -> None:
    writer = store.open_writer("t", "aborted", max_bytes=10 * PART)
    for chunk in _chunks(os.urandom(PART + 1)):
        writer.write(chunk)
    prefix = store.key_for("files/t")
    pending = store.client.list_multipart_uploads(Bucket=BUCKET, Prefix=prefix)
    assert [u["Key"] for u in pending.get("Uploads", [])] == [store.key_for("files/t/aborted")]
    writer.abort()
    pending = store.client.list_multipart_uploads(Bucket=BUCKET, Prefix=prefix)
    assert not pending.get("Uploads")
    writer.abort()  # idempotent
    assert _object(store, "files/t/aborted") is None


def test_missing_key_is_the_stores_not_found_error(store: S3BlobStore) -> None:
    with pytest.raises(BlobNotFoundError):
        store.open("files/t/never")
    with pytest.raises(FileNotFoundError):  # what the API's "content is gone" 404 catches
        store.open_seekable("files/t/never")
    with pytest.raises(BlobNotFoundError):
        store.read_bytes("base-model-scores/none.json")
    with pytest.raises(BlobNotFoundError):
        store.fetch_tree("artifacts/t/j/checkpoints/step-00000002", Path("/nonexistent/x"))


def test_delete_and_delete_tree(store: S3BlobStore) -> None:
    relative, _, _ = store.put_stream("t", "doomed", [b"x"], 10)
    store.delete(relative)
    store.delete(relative)  # missing is fine
    assert _object(store, relative) is None
    for name in ("adapter.zip", "checkpoints/step-00000002/state.json", "adapter/a.json"):
        store.write_bytes(f"artifacts/t/job1/{name}", b"1")
    store.write_bytes("artifacts/t/job10/adapter.zip", b"keep")  # a sibling sharing the prefix
    store.delete_tree("artifacts/t/job1")
    listed = store.client.list_objects_v2(Bucket=BUCKET, Prefix=store.key_for("artifacts/t"))
    kept = [o["Key"] for o in listed["Contents"]]
    assert kept == [store.key_for("artifacts/t/job10/adapter.zip")]


def test_seekable_handle_serves_the_bytes_it_hashed(store: S3BlobStore) -> None:
    store.write_bytes("artifacts/t/j/adapter.zip", b"evaluated")
    handle = store.open_seekable("artifacts/t/j/adapter.zip")
    assert handle.read() == b"evaluated"
    store.write_bytes("artifacts/t/j/adapter.zip", b"swapped after the check")
    handle.seek(0)
    assert handle.read() == b"evaluated"  # one GET, spooled: never the swapped object
    handle.close()


def test_checkpoint_tree_round_trips_to_another_directory(
    store: S3BlobStore, tmp_path: Path
) -> None:
    worker_a = tmp_path / "worker-a" / "step-00000004"
    (worker_a / "adapter").mkdir(parents=True)
    (worker_a / "adapter" / "adapter_model.safetensors").write_bytes(os.urandom(PART + 7))
    (worker_a / "state.json").write_text('{"step": 4}')
    stored = "artifacts/t/j/checkpoints/step-00000004"
    store.put_tree(worker_a, stored)

    worker_b = tmp_path / "worker-b" / "artifacts" / "step-00000004"
    assert store.fetch_tree(stored, worker_b) == worker_b
    for name in ("adapter/adapter_model.safetensors", "state.json"):
        assert (worker_b / name).read_bytes() == (worker_a / name).read_bytes()
    assert not (worker_b / TREE_MARKER).exists()
    assert [p.name for p in worker_b.parent.iterdir()] == ["step-00000004"]  # no temp dirs left


def test_a_tree_without_its_marker_or_with_a_changed_file_is_not_stored(
    store: S3BlobStore, tmp_path: Path
) -> None:
    local = tmp_path / "ckpt"
    local.mkdir()
    (local / "state.json").write_text("{}")
    stored = "artifacts/t/j/checkpoints/step-00000006"
    store.put_tree(local, stored)
    store.delete(f"{stored}/{TREE_MARKER}")  # as if the uploader died before the marker
    with pytest.raises(BlobNotFoundError):
        store.fetch_tree(stored, tmp_path / "out")
    store.put_tree(local, stored)
    store.write_bytes(f"{stored}/state.json", b'{"other": "attempt"}')
    with pytest.raises(BlobNotFoundError):
        store.fetch_tree(stored, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_worker_file_cache_and_put_file(store: S3BlobStore, tmp_path: Path) -> None:
    big = tmp_path / "adapter.zip"
    big.write_bytes(os.urandom(PART + 99))
    store.put_file(big, "artifacts/t/j/adapter.zip")
    cached = tmp_path / "cache" / "artifacts" / "t" / "j" / "adapter.zip"
    assert store.fetch_file("artifacts/t/j/adapter.zip", cached).read_bytes() == big.read_bytes()
    with pytest.raises(BlobNotFoundError):
        store.fetch_file("files/t/none", tmp_path / "cache" / "none")


def test_unsafe_paths_are_refused(store: S3BlobStore) -> None:
    for bad in ("../x", "files/../../x", "/abs", "files//x", ""):
        with pytest.raises(ValueError, match="escapes"):
            store.key_for(bad)


def test_wrong_credentials_are_refused_by_the_server(object_store: ObjectStoreServer) -> None:
    settings = BlobSettings(
        blob_url=f"s3://{BUCKET}/x",
        s3_endpoint_url=object_store.endpoint,
        s3_region="us-east-1",
        s3_access_key_id=object_store.access_key,
        s3_secret_access_key="not-the-secret",  # type: ignore[arg-type]
    )
    with pytest.raises(Exception, match="SignatureDoesNotMatch|AccessDenied|InvalidAccessKey"):
        settings.blob_store().write_bytes("files/t/x", b"x")


def test_blob_url_is_validated() -> None:
    with pytest.raises(ValueError, match="KEEL_BLOB_URL"):
        BlobSettings(blob_url="gs://bucket")
    with pytest.raises(ValueError, match="KEEL_S3_PART_SIZE_MB"):
        BlobSettings(blob_url="s3://b", s3_part_size_mb=1)
    assert type(BlobSettings(data_dir=Path("/tmp")).blob_store()).__name__ == "LocalBlobStore"


def test_ensure_bucket_creates_a_missing_bucket_once(object_store: ObjectStoreServer) -> None:
    name = f"keel-new-{uuid.uuid4().hex[:8]}"
    settings = object_store.settings("p")
    store = BlobSettings(**{**settings.model_dump(), "blob_url": f"s3://{name}/p"}).blob_store()
    assert isinstance(store, S3BlobStore)
    assert store.ensure_bucket() is True
    assert store.ensure_bucket() is False
    store.write_bytes("files/t/x", b"x")
    assert store.read_bytes("files/t/x") == b"x"
