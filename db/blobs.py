"""Tenant-scoped blob storage (uploaded files) under the local data dir.

Paths stored in the database are relative to the root (KEEL_DATA_DIR) so the data dir can move.
Writes go to a temp file in the target directory, then an atomic rename: a crash never leaves a
half-written blob under a real name.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

_SAFE_COMPONENT = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


def job_artifacts_path(tenant_id: str, job_id: str) -> str:
    """A job's working directory (checkpoints, unpacked adapter, adapter zip), data-dir relative."""
    return f"artifacts/{tenant_id}/{job_id}"


class BlobTooLargeError(ValueError):
    def __init__(self, max_bytes: int) -> None:
        super().__init__(f"upload exceeds {max_bytes} bytes")
        self.max_bytes = max_bytes


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def relative_path_for(self, tenant_id: str, object_id: str) -> str:
        for component in (tenant_id, object_id):
            if not _SAFE_COMPONENT.match(component) or component in (".", ".."):
                raise ValueError(f"unsafe storage path component {component!r}")
        return f"files/{tenant_id}/{object_id}"

    def path_for(self, storage_path: str) -> Path:
        """Absolute path of a stored relative path; refuses anything outside the root."""
        root = self.root.resolve()
        path = (root / storage_path).resolve()
        if path != root and root not in path.parents:
            raise ValueError("storage path escapes the data dir")
        return path

    def open_writer(self, tenant_id: str, object_id: str, max_bytes: int) -> BlobWriter:
        relative = self.relative_path_for(tenant_id, object_id)
        return BlobWriter(self.path_for(relative), relative, max_bytes)

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

    def open(self, storage_path: str) -> BinaryIO:
        return self.path_for(storage_path).open("rb")

    def delete(self, storage_path: str) -> None:
        self.path_for(storage_path).unlink(missing_ok=True)

    def delete_tree(self, storage_path: str) -> None:
        """Remove a stored directory and everything below it (missing is fine; never the root)."""
        path = self.path_for(storage_path)
        if path == self.root.resolve():
            raise ValueError("refusing to delete the data dir itself")
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


class BlobWriter:
    """Incremental writer: temp file next to the target, size cap, sha256, atomic rename."""

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
