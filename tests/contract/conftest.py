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
from tests.fixtures.db import TEST_POLICY, create_database, drop_database

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class LiveApi:
    base_url: str
    admin_key: str
    metrics_token: str
    tenant_key: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


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
        "KEEL_SSE_MAX_SECONDS": "2",
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
        tenant = httpx.post(
            f"{base_url}/admin/v1/tenants", json={"name": "contract"}, headers=admin
        )
        tenant.raise_for_status()
        key = httpx.post(
            f"{base_url}/admin/v1/tenants/{tenant.json()['id']}/api_keys", headers=admin
        )
        key.raise_for_status()
        yield LiveApi(base_url, admin_key, metrics_token, str(key.json()["key"]), log_path)
    finally:
        stop(process, timeout=15)
        drop_database(name)
