"""The generated development admin key over HTTP, and the /metrics token."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from api.main import create_app
from db.settings import Environment, get_settings
from tests.api.conftest import Customer


def test_development_prints_a_generated_admin_key_once_and_accepts_only_it(
    engine: Engine,
    data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = get_settings()
    monkeypatch.setattr(settings, "env", Environment.DEVELOPMENT)
    monkeypatch.setattr(settings, "admin_key", "")
    with TestClient(create_app()) as client:
        printed = capsys.readouterr().err
        [key] = [line.strip() for line in printed.splitlines() if "sk-keel-admin-" in line]
        for wrong in ("change-me-admin-key", "", key[:-1]):
            response = client.get("/admin/v1/tenants", headers={"Authorization": f"Bearer {wrong}"})
            assert response.status_code == 401
        ok = client.get("/admin/v1/tenants", headers={"Authorization": f"Bearer {key}"})
        assert ok.status_code == 200
    # A restart reads the stored hash: the same key works and nothing is printed again.
    with TestClient(create_app()) as client:
        assert "sk-keel-admin-" not in capsys.readouterr().err
        ok = client.get("/admin/v1/tenants", headers={"Authorization": f"Bearer {key}"})
        assert ok.status_code == 200
    assert key not in "".join(
        p.read_text(errors="ignore") for p in data_dir.rglob("*") if p.is_file()
    )


def test_metrics_token(
    client: TestClient, alice: Customer, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = get_settings()
    token = "metrics-" + "Qx7pL2mZ9vB4nR8tK1wY6cJ3"
    monkeypatch.setattr(settings, "metrics_token", token)
    for headers in ({}, alice.headers, {"Authorization": "Bearer wrong"}):
        response = client.get("/metrics", headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_metrics_token"
    ok = client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert ok.status_code == 200
    assert "keel_http_requests_total" in ok.text


def test_metrics_without_a_token_is_refused_in_production(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(get_settings(), "env", Environment.PRODUCTION)
    monkeypatch.setattr(get_settings(), "metrics_token", "")
    response = client.get("/metrics")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "metrics_token_required"
