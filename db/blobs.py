"""Tenant-scoped blob storage: uploaded files, checkpoints, adapters and small shared records.

`BlobStore` is the interface; `LocalBlobStore` (here) keeps blobs under the local data dir, the
embedded default; `db.blobs_s3.S3BlobStore` keeps them in an S3-compatible bucket so API and
workers on different machines share nothing but the bucket (`db.blob_config` picks one from
the settings).

Storage paths stored in the database are relative ("files/<tenant>/<id>",
"artifacts/<tenant>/<job>/adapter.zip") so the root can move. Every write is atomic: a reader
never sees half a blob under its real name (local: temp file + rename; S3: an object exists only
once its upload completed; a stored tree is listed in a marker written last).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

_SAFE_COMPONENT = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


def job_artifacts_path(tenant_id: str, job_id: str) -> str:
    """A job's working directory (checkpoints, unpacked adapter, adapter zip), root-relative."""
    return f"artifacts/{tenant_id}/{job_id}"


def check_storage_path(storage_path: str) -> str:
    """A relative path of safe components: never absolute, never `..`, never empty."""
    parts = storage_path.split("/")
    if not storage_path or any(not _SAFE_COMPONENT.match(p) or p in (".", "..") for p in parts):
        raise ValueError("storage path escapes the data dir")
    return storage_path


class BlobTooLargeError(ValueError):
    def __init__(self, max_bytes: int) -> None:
        super().__init__(f"upload exceeds {max_bytes} bytes")
        self.max_bytes = max_bytes


class BlobNotFoundError(FileNotFoundError):
    """No blob under that storage path (a FileNotFoundError, whatever the backend)."""


class BlobWriter(ABC):
    """Incremental writer with a size cap and a running sha256; `commit` makes it visible."""

    relative: str
    size: int

    @abstractmethod
    def write(self, chunk: bytes) -> None: ...

    @abstractmethod
    def commit(self) -> tuple[str, int, str]:
        """Publish the blob; (storage path, byte count, sha256)."""

    @abstractmethod
    def abort(self) -> None:
        """Drop everything written; nothing becomes visible (idempotent)."""


class BlobStore(ABC):
    """Where blobs live. Paths are the relative storage paths kept in the database."""

    def relative_path_for(self, tenant_id: str, object_id: str) -> str:
        for component in (tenant_id, object_id):
            if not _SAFE_COMPONENT.match(component) or component in (".", ".."):
                raise ValueError(f"unsafe storage path component {component!r}")
        return f"files/{tenant_id}/{object_id}"

    @abstractmethod
    def open_writer(self, tenant_id: str, object_id: str, max_bytes: int) -> BlobWriter: ...

    def put_stream(
        self, tenant_id: str, object_id: str, chunks: Iterable[bytes], max_bytes: int
    ) -> tuple[str, int, str]:
        """Write chunks; return (relative path, byte count, sha256). Raises BlobTooLargeError."""
        writer = self.open_writer(tenant_id, object_id, max_bytes)
        try:
            for chunk in chunks:
                writer.write(chunk)
        except BaseException:
            writer.abort()
            raise
        return writer.commit()

    @abstractmethod
    def open(self, storage_path: str) -> BinaryIO:
        """A forward-reading handle (lines or chunks); BlobNotFoundError when missing."""

    @abstractmethod
    def open_seekable(self, storage_path: str) -> BinaryIO:
        """A handle that can be read twice (seek(0)) and always yields the same bytes."""

    @abstractmethod
    def delete(self, storage_path: str) -> None:
        """Remove one blob (missing is fine)."""

    @abstractmethod
    def delete_tree(self, storage_path: str) -> None:
        """Remove everything stored under a path (missing is fine; never the whole root)."""

    @abstractmethod
    def read_bytes(self, storage_path: str) -> bytes:
        """A small blob's bytes; BlobNotFoundError when missing."""

    @abstractmethod
    def write_bytes(self, storage_path: str, data: bytes) -> None:
        """Replace a small blob atomically."""

    # --- the worker's side: local working copies ------------------------------------------
    @abstractmethod
    def put_file(self, local: Path, storage_path: str) -> None:
        """Store a local file under storage_path (complete or not at all)."""

    @abstractmethod
    def fetch_file(self, storage_path: str, local: Path) -> Path:
        """Make the blob readable at `local` (a cache: kept if already there); returns it."""

    @abstractmethod
    def put_tree(self, local_dir: Path, storage_path: str) -> None:
        """Store a directory's files; the tree counts as stored only once all of it is."""

    @abstractmethod
    def fetch_tree(self, storage_path: str, local_dir: Path) -> Path:
        """A complete local copy of a stored tree at `local_dir`; BlobNotFoundError if the tree
        was never completely stored."""


class LocalBlobStore(BlobStore):
    """Blobs as files under `root` (KEEL_DATA_DIR): the embedded default, one machine or a
    shared volume."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path_for(self, storage_path: str) -> Path:
        """Absolute path of a stored relative path; refuses anything outside the root."""
        root = self.root.resolve()
        path = (root / storage_path).resolve()
        if path != root and root not in path.parents:
            raise ValueError("storage path escapes the data dir")
        return path

    def open_writer(self, tenant_id: str, object_id: str, max_bytes: int) -> BlobWriter:
        relative = self.relative_path_for(tenant_id, object_id)
        return LocalBlobWriter(self.path_for(relative), relative, max_bytes)

    def open(self, storage_path: str) -> BinaryIO:
        try:
            return self.path_for(storage_path).open("rb")
        except FileNotFoundError as exc:
            raise BlobNotFoundError(storage_path) from exc

    def open_seekable(self, storage_path: str) -> BinaryIO:
        # An open file keeps its inode: a rename over the path afterwards is never read.
        return self.open(storage_path)

    def delete(self, storage_path: str) -> None:
        self.path_for(storage_path).unlink(missing_ok=True)

    def delete_tree(self, storage_path: str) -> None:
        path = self.path_for(storage_path)
        if path == self.root.resolve():
            raise ValueError("refusing to delete the data dir itself")
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)

    def read_bytes(self, storage_path: str) -> bytes:
        with self.open(storage_path) as handle:
            return handle.read()

    def write_bytes(self, storage_path: str, data: bytes) -> None:
        path = self.path_for(storage_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, delete=False, suffix=".tmp") as tmp:
            tmp.write(data)
        os.replace(tmp.name, path)

    # The worker's working copy under the data dir *is* the stored blob when the two roots are
    # the same directory (the usual case): nothing to copy then.
    def put_file(self, local: Path, storage_path: str) -> None:
        target = self.path_for(storage_path)
        if Path(local).resolve() != target:
            self.write_bytes(storage_path, Path(local).read_bytes())

    def fetch_file(self, storage_path: str, local: Path) -> Path:
        source = self.path_for(storage_path)
        if not source.is_file():
            raise BlobNotFoundError(storage_path)
        if Path(local).resolve() != source:
            _copy_atomically(source, Path(local))
        return Path(local)

    def put_tree(self, local_dir: Path, storage_path: str) -> None:
        target = self.path_for(storage_path)
        if Path(local_dir).resolve() != target:
            _copy_tree_atomically(Path(local_dir), target)

    def fetch_tree(self, storage_path: str, local_dir: Path) -> Path:
        source = self.path_for(storage_path)
        if not source.is_dir():
            raise BlobNotFoundError(storage_path)
        if Path(local_dir).resolve() != source:
            _copy_tree_atomically(source, Path(local_dir))
        return Path(local_dir)


def _copy_atomically(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.tmp-")
    os.close(fd)
    shutil.copyfile(source, tmp)
    os.replace(tmp, target)


def _copy_tree_atomically(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        shutil.copytree(source, tmp, dirs_exist_ok=True)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


class LocalBlobWriter(BlobWriter):
    """Temp file next to the target, size cap, sha256, atomic rename."""

    def __init__(self, target: Path, relative: str, max_bytes: int) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        self.target = target
        self.relative = relative
        self.max_bytes = max_bytes
        self.size = 0
        self._digest = hashlib.sha256()
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".upload-")
        self._tmp = Path(tmp_name)
        self._handle = os.fdopen(fd, "wb")

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.max_bytes:
            self.abort()
            raise BlobTooLargeError(self.max_bytes)
        self._digest.update(chunk)
        self._handle.write(chunk)

    def commit(self) -> tuple[str, int, str]:
        self._handle.close()
        os.replace(self._tmp, self.target)
        return self.relative, self.size, self._digest.hexdigest()

    def abort(self) -> None:
        if not self._handle.closed:
            self._handle.close()
        self._tmp.unlink(missing_ok=True)
