"""Tenant-scoped blob storage (uploaded files) under the local data dir.

Paths stored in the database are relative to the root (KEEL_DATA_DIR) so the data dir can move.
Writes go to a temp file in the target directory, then an atomic rename: a crash never leaves a
half-written blob under a real name.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

_SAFE_COMPONENT = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


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

    def put_stream(
        self, tenant_id: str, object_id: str, chunks: Iterable[bytes], max_bytes: int
    ) -> tuple[str, int, str]:
        """Write chunks; return (relative path, byte count, sha256). Raises BlobTooLargeError."""
        relative = self.relative_path_for(tenant_id, object_id)
        target = self.path_for(relative)
        target.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        size = 0
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as handle:
                for chunk in chunks:
                    size += len(chunk)
                    if size > max_bytes:
                        raise BlobTooLargeError(max_bytes)
                    digest.update(chunk)
                    handle.write(chunk)
            os.replace(tmp_name, target)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        return relative, size, digest.hexdigest()

    def open(self, storage_path: str) -> BinaryIO:
        return self.path_for(storage_path).open("rb")

    def delete(self, storage_path: str) -> None:
        self.path_for(storage_path).unlink(missing_ok=True)
