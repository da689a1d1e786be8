"""The live API for the contract test: a real uvicorn process serving the app on a fresh,
migrated Postgres database (no worker: the contract is the HTTP surface)."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from cli.local_service import api_argv, free_port, spawn, stop, wait_ready
from tests.fixtures.db import TEST_MODEL, TEST_POLICY, create_database, drop_database
from tests.fixtures.factories import chat_jsonl

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class LiveApi:
    base_url: str
    admin_key: str
    metrics_token: str
    tenant_key: str
    log_path: Path
    # Real objects, offered to Schemathesis as path ids beside generated ones (so retrieve,
    # download, stream, cancel, delete reach their 200/403/409 answers, not only 404).
    file_id: str
    job_id: str
    # Admin operations act on a second tenant, so that disabling a tenant or revoking a key
    # never takes away the key the /v1 operations are tested with.
    other_tenant_id: str
    other_key_id: str

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


def _tenant(base_url: str, admin: dict[str, str], name: str) -> tuple[str, dict[str, str]]:
    tenant = httpx.post(f"{base_url}/admin/v1/tenants", json={"name": name}, headers=admin)
    tenant.raise_for_status()
    tenant_id = str(tenant.json()["id"])
    key = httpx.post(f"{base_url}/admin/v1/tenants/{tenant_id}/api_keys", headers=admin)
    key.raise_for_status()
    return tenant_id, dict(key.json())


@pytest.fixture(scope="module")
def live_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApi]:
    tmp = tmp_path_factory.mktemp("contract")
    name = f"keel_contract_{uuid.uuid4().hex[:10]}"
    url = create_database(name)
    (tmp / "policy.yaml").write_text(yaml.safe_dump(TEST_POLICY))
    admin_key = secrets.token_urlsafe(32)
    metrics_token = secrets.token_urlsafe(32)
    redis_db = os.environ.get("KEEL_TEST_E2E_REDIS_DB", "7")
    env = {
        **os.environ,
        "KEEL_ENV": "testing",
        "KEEL_DATABASE_URL": url,
        "KEEL_BROKER_URL": f"redis://127.0.0.1:6379/{redis_db}",
        "KEEL_DATA_DIR": str(tmp / "data"),
        "KEEL_POLICY_FILE": str(tmp / "policy.yaml"),
        "KEEL_ADMIN_KEY": admin_key,
        "KEEL_METRICS_TOKEN": metrics_token,
        "KEEL_MAX_UPLOAD_BYTES": str(256 * 1024),
        # Deterministic: the generated requests must not depend on how fast they were sent.
        "KEEL_RATE_LIMIT_READS": "off",
        "KEEL_RATE_LIMIT_WRITES": "off",
        # A stream that stays open (a queued job) ends after this; the test reads it whole.
        "KEEL_SSE_MAX_SECONDS": "0.5",
        "PYTHONUNBUFFERED": "1",
    }
    subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    port = free_port()
    log_path = tmp / "api.log"
    process = spawn(api_argv("127.0.0.1", port, log_level="warning"), log_path, env, cwd=ROOT)
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base_url, process, timeout=90)
        admin = {"Authorization": f"Bearer {admin_key}"}
        tenant_id, key = _tenant(base_url, admin, "contract")
        other_tenant_id, other_key = _tenant(base_url, admin, "contract-admin-target")
        customer = {"Authorization": f"Bearer {key['key']}"}
        file = httpx.post(
            f"{base_url}/v1/files",
            headers=customer,
            data={"purpose": "fine-tune"},
            files={"file": ("train.jsonl", chat_jsonl(), "application/jsonl")},
        )
        file.raise_for_status()
        job = httpx.post(
            f"{base_url}/v1/fine_tuning/jobs",
            headers=customer,
            json={"model": TEST_MODEL, "training_file": file.json()["id"]},
        )
        job.raise_for_status()
        yield LiveApi(
            base_url=base_url,
            admin_key=admin_key,
            metrics_token=metrics_token,
            tenant_key=str(key["key"]),
            log_path=log_path,
            file_id=str(file.json()["id"]),
            job_id=str(job.json()["id"]),
            other_tenant_id=other_tenant_id,
            other_key_id=str(other_key["id"]),
        )
    finally:
        stop(process, timeout=15)
        drop_database(name)
