"""Blobs in an S3-compatible bucket (AWS S3, MinIO, SeaweedFS, GCS's S3 interoperability API).

Objects are `<prefix>/<storage path>`. Nothing is held whole in memory: an upload is sent as a
multipart upload one part at a time (at most one part buffered), a download is read from the
response stream. Atomicity comes from S3 itself: an object becomes visible only when its PUT or
its multipart upload completes, so a reader sees the whole object or none. A stored tree (a
training checkpoint: several files) is listed, with each file's sha256, in a marker object written
after all of them; a tree without its marker was never completely stored.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, BinaryIO

from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

from db.blobs import (
    BlobNotFoundError,
    BlobStore,
    BlobTooLargeError,
    BlobWriter,
    check_storage_path,
)

# S3's smallest part (all but the last); a larger part means fewer requests per upload.
MIN_PART_BYTES = 5 * 1024 * 1024
READ_CHUNK = 1 << 20
TREE_MARKER = ".keel-tree.json"
_NOT_FOUND = {"NoSuchKey", "404", "NotFound"}


def _missing(exc: ClientError) -> bool:
    return str(exc.response.get("Error", {}).get("Code")) in _NOT_FOUND


class _BodyStream(io.RawIOBase):
    """A botocore StreamingBody as a raw stream, so io.BufferedReader gives lines and chunks."""

    def __init__(self, body: Any) -> None:
        self._body = body

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._body.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()


class S3BlobStore(BlobStore):
    def __init__(
        self, client: Any, bucket: str, prefix: str = "", part_bytes: int = 8 * 1024 * 1024
    ) -> None:
        if part_bytes < MIN_PART_BYTES:
            raise ValueError(f"S3 multipart parts must be at least {MIN_PART_BYTES} bytes")
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.part_bytes = part_bytes
        self._transfer = TransferConfig(
            multipart_threshold=part_bytes, multipart_chunksize=part_bytes, max_concurrency=4
        )

    def ensure_bucket(self) -> bool:
        """Create the bucket if it does not exist (the compose stack's first start); True if
        created. A bucket Keel creates gets a rule that collects multipart uploads left
        incomplete for a day (an API process killed mid-upload); an existing bucket's rules
        are the operator's and are left alone."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
            return False
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) not in {"404", "NoSuchBucket"}:
                raise
        region = self.client.meta.region_name
        if region and region != "us-east-1":
            self.client.create_bucket(
                Bucket=self.bucket, CreateBucketConfiguration={"LocationConstraint": region}
            )
        else:
            self.client.create_bucket(Bucket=self.bucket)
        self.client.put_bucket_lifecycle_configuration(
            Bucket=self.bucket,
            LifecycleConfiguration={
                "Rules": [
                    {
                        "ID": "keel-abort-incomplete-uploads",
                        "Status": "Enabled",
                        "Filter": {"Prefix": ""},
                        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
                    }
                ]
            },
        )
        return True

    def key_for(self, storage_path: str) -> str:
        check_storage_path(storage_path)
        return f"{self.prefix}/{storage_path}" if self.prefix else storage_path

    def _get(self, storage_path: str) -> Any:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self.key_for(storage_path))
        except ClientError as exc:
            if _missing(exc):
                raise BlobNotFoundError(storage_path) from exc
            raise

    # --- API side ---------------------------------------------------------------------------
    def open_writer(self, tenant_id: str, object_id: str, max_bytes: int) -> BlobWriter:
        relative = self.relative_path_for(tenant_id, object_id)
        return S3BlobWriter(self, self.key_for(relative), relative, max_bytes)

    def open(self, storage_path: str) -> BinaryIO:
        body = self._get(storage_path)["Body"]
        return io.BufferedReader(_BodyStream(body), READ_CHUNK)  # type: ignore[return-value]

    def open_seekable(self, storage_path: str) -> BinaryIO:
        # One GET spooled to a private temp file (deleted on close): what is hashed from it and
        # then served is one response's bytes, whatever is written to the key meanwhile.
        spool = tempfile.TemporaryFile()
        try:
            with self.open(storage_path) as source:
                shutil.copyfileobj(source, spool, READ_CHUNK)
            spool.seek(0)
        except BaseException:
            spool.close()
            raise
        return spool  # type: ignore[return-value]

    def delete(self, storage_path: str) -> None:
        # S3 answers a delete of a missing key with success: missing is fine, as locally.
        self.client.delete_object(Bucket=self.bucket, Key=self.key_for(storage_path))

    def delete_tree(self, storage_path: str) -> None:
        key = self.key_for(storage_path)
        self.client.delete_object(Bucket=self.bucket, Key=key)
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=key + "/"):
            objects = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if objects:  # a page holds at most 1000 keys, DeleteObjects' own limit
                self.client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": objects, "Quiet": True}
                )

    def read_bytes(self, storage_path: str) -> bytes:
        with self.open(storage_path) as handle:
            return handle.read()

    def write_bytes(self, storage_path: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self.key_for(storage_path), Body=data)

    # --- worker side ------------------------------------------------------------------------
    def put_file(self, local: Path, storage_path: str) -> None:
        # boto3's managed transfer: multipart above part_bytes, aborted on failure.
        self.client.upload_file(
            str(local), self.bucket, self.key_for(storage_path), Config=self._transfer
        )

    def fetch_file(self, storage_path: str, local: Path) -> Path:
        local = Path(local)
        if local.is_file():  # stored blobs are never rewritten under the same path
            return local
        self._download(storage_path, local)
        return local

    def _download(self, storage_path: str, local: Path) -> str:
        """GET into a temp file beside `local`, then rename; the sha256 of what was written."""
        local.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=local.parent, prefix=f".{local.name}.tmp-")
        digest = hashlib.sha256()
        try:
            with os.fdopen(fd, "wb") as out, self.open(storage_path) as source:
                for chunk in iter(lambda: source.read(READ_CHUNK), b""):
                    digest.update(chunk)
                    out.write(chunk)
            os.replace(tmp, local)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return digest.hexdigest()

    def put_tree(self, local_dir: Path, storage_path: str) -> None:
        local_dir = Path(local_dir)
        files: dict[str, str] = {}
        for path in sorted(p for p in local_dir.rglob("*") if p.is_file()):
            name = path.relative_to(local_dir).as_posix()
            check_storage_path(name)
            self.put_file(path, f"{storage_path}/{name}")
            files[name] = _sha256(path)
        # Written last: its presence is what "this tree is stored" means.
        self.write_bytes(
            f"{storage_path}/{TREE_MARKER}", json.dumps({"files": files}, sort_keys=True).encode()
        )

    def fetch_tree(self, storage_path: str, local_dir: Path) -> Path:
        local_dir = Path(local_dir)
        try:
            files = json.loads(self.read_bytes(f"{storage_path}/{TREE_MARKER}"))["files"]
        except (ValueError, KeyError, TypeError) as exc:
            raise BlobNotFoundError(f"{storage_path}: unreadable tree marker") from exc
        local_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{local_dir.name}.tmp-", dir=local_dir.parent))
        try:
            for name, sha256 in files.items():
                got = self._download(f"{storage_path}/{check_storage_path(name)}", tmp / name)
                if got != sha256:  # a file rewritten since the marker: not this tree
                    raise BlobNotFoundError(f"{storage_path}/{name}: sha256 differs from marker")
            if local_dir.exists():
                shutil.rmtree(local_dir)
            os.replace(tmp, local_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return local_dir


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(READ_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


class S3BlobWriter(BlobWriter):
    """A streamed upload: parts of `part_bytes` sent as they fill, one multipart upload.

    The multipart upload starts with the first full part; a blob smaller than one part is one
    PUT at commit. Until `commit` completes the upload, no object exists under the key.
    """

    def __init__(self, store: S3BlobStore, key: str, relative: str, max_bytes: int) -> None:
        self.store = store
        self.key = key
        self.relative = relative
        self.max_bytes = max_bytes
        self.size = 0
        self._digest = hashlib.sha256()
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []

    @property
    def _client(self) -> Any:
        return self.store.client

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.max_bytes:
            self.abort()
            raise BlobTooLargeError(self.max_bytes)
        self._digest.update(chunk)
        self._buffer += chunk
        part = self.store.part_bytes
        while len(self._buffer) >= part:
            self._send_part(bytes(self._buffer[:part]))
            del self._buffer[:part]

    def _send_part(self, data: bytes) -> None:
        bucket = self.store.bucket
        if self._upload_id is None:
            created = self._client.create_multipart_upload(Bucket=bucket, Key=self.key)
            self._upload_id = str(created["UploadId"])
        number = len(self._parts) + 1
        sent = self._client.upload_part(
            Bucket=bucket, Key=self.key, UploadId=self._upload_id, PartNumber=number, Body=data
        )
        self._parts.append({"ETag": sent["ETag"], "PartNumber": number})

    def commit(self) -> tuple[str, int, str]:
        bucket = self.store.bucket
        try:
            if self._upload_id is None:
                self._client.put_object(Bucket=bucket, Key=self.key, Body=bytes(self._buffer))
            else:
                if self._buffer:
                    self._send_part(bytes(self._buffer))
                self._client.complete_multipart_upload(
                    Bucket=bucket,
                    Key=self.key,
                    UploadId=self._upload_id,
                    MultipartUpload={"Parts": self._parts},
                )
                self._upload_id = None
        except BaseException:
            self.abort()
            raise
        self._buffer = bytearray()
        return self.relative, self.size, self._digest.hexdigest()

    def abort(self) -> None:
        self._buffer = bytearray()
        if self._upload_id is not None:
            upload_id, self._upload_id = self._upload_id, None
            try:
                self._client.abort_multipart_upload(
                    Bucket=self.store.bucket, Key=self.key, UploadId=upload_id
                )
            except ClientError:
                # The bucket's rule for incomplete uploads collects it (ensure_bucket, README).
                pass
