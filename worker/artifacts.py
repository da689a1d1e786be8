"""Where a job's files live under the data dir, and how the adapter is packaged for download."""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

from db.blobs import job_artifacts_path

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
# A fixed timestamp makes the zip byte-identical for identical adapter files.
_ZIP_EPOCH = (2020, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class JobPaths:
    root: Path

    @classmethod
    def for_job(cls, data_dir: Path, tenant_id: str, job_id: str) -> JobPaths:
        return cls(data_dir / job_artifacts_path(tenant_id, job_id))

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def adapter_dir(self) -> Path:
        return self.root / "adapter"

    @property
    def adapter_zip(self) -> Path:
        return self.root / "adapter.zip"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def package_adapter(adapter_dir: Path, manifest: dict[str, object], out_zip: Path) -> str:
    """Zip the PEFT adapter files plus keel-manifest.json (their sha256s); return the zip sha256."""
    missing = [name for name in ADAPTER_FILES if not (adapter_dir / name).exists()]
    if missing:
        raise FileNotFoundError(f"adapter files missing: {missing}")
    files = {name: sha256_file(adapter_dir / name) for name in ADAPTER_FILES}
    full_manifest = {**manifest, "files": files}
    tmp = out_zip.with_suffix(".zip.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in (*ADAPTER_FILES, "keel-manifest.json"):
            info = zipfile.ZipInfo(name, date_time=_ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            if name == "keel-manifest.json":
                data = json.dumps(full_manifest, indent=2, sort_keys=True).encode()
            else:
                data = (adapter_dir / name).read_bytes()
            archive.writestr(info, data)
    tmp.replace(out_zip)
    return sha256_file(out_zip)


def unpack_adapter(zip_path: Path, out_dir: Path) -> Path:
    """Extract only the known adapter files (no path traversal possible)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(zip_path) as archive:
        for name in (*ADAPTER_FILES, "keel-manifest.json"):
            (out_dir / name).write_bytes(archive.read(name))
    return out_dir


def reset_dir(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path
