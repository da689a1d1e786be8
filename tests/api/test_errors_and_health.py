"""Error body shape on every failure class, auth failures, health, readiness and metrics."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from tests.api.conftest import Customer

SHAPE = {"message", "type", "param", "code"}


@pytest.mark.parametrize(
    "header", [None, "Bearer sk-keel-wrong", "Basic Zm9vOmJhcg==", "Bearer", "sk-keel-x"]
)
def test_bad_api_keys_all_answer_the_same_401(client: TestClient, header: str | None) -> None:
    headers = {"Authorization": header} if header is not None else {}
    response = client.get("/v1/fine_tuning/jobs", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json() == {
        "error": {
            "message": "Invalid or missing API key.",
            "type": "authentication_error",
            "param": None,
            "code": "invalid_api_key",
        }
    }


def test_unknown_route_and_method(client: TestClient, alice: Customer) -> None:
    missing = client.get("/v1/nothing", headers=alice.headers)
    assert missing.status_code == 404
    assert set(missing.json()["error"]) == SHAPE
    wrong = client.put("/v1/files", headers=alice.headers)
    assert wrong.status_code == 405
    assert wrong.json()["error"]["code"] == "method_not_allowed"


def test_validation_error_names_the_field(client: TestClient, alice: Customer) -> None:
    response = client.post("/v1/fine_tuning/jobs", headers=alice.headers, json={"model": "m"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert set(error) == SHAPE | {"details"}
    assert (error["code"], error["param"]) == ("missing_required_parameter", "training_file")


def test_unhandled_exception_is_a_bare_500(engine: object) -> None:
    app = create_app()

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("secret internal detail /etc/passwd")

    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/boom")
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
    assert "secret" not in response.text
    assert "Traceback" not in response.text


def test_health_ready_metrics(client: TestClient, alice: Customer) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": True, "broker": True}
    client.get("/v1/files", headers=alice.headers)
    metrics = client.get("/metrics").text
    assert 'keel_http_requests_total{method="GET",route="/v1/files",status="200"}' in metrics
    assert 'keel_jobs{status="queued"} 0.0' in metrics


def test_readyz_reports_an_unreachable_broker(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from db.settings import get_settings

    monkeypatch.setattr(get_settings(), "broker_url", "redis://127.0.0.1:1/0")
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"] == {"database": True, "broker": False}
