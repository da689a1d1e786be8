"""Tenant isolation: another tenant's object answers 404 `not_found` on every route, exactly
like a missing one, and lists never show it."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from tests.api.conftest import Customer
from tests.fixtures.factories import make_adapter_job

ROUTES = [
    ("GET", "/v1/files/{file}"),
    ("GET", "/v1/files/{file}/content"),
    ("GET", "/v1/files/{result}/content"),
    ("DELETE", "/v1/files/{file}"),
    ("POST", "/v1/files/{file}/screen"),
    ("GET", "/v1/fine_tuning/jobs/{job}"),
    ("POST", "/v1/fine_tuning/jobs/{job}/cancel"),
    ("POST", "/v1/fine_tuning/jobs/{job}/pause"),
    ("POST", "/v1/fine_tuning/jobs/{job}/resume"),
    ("GET", "/v1/fine_tuning/jobs/{job}/events"),
    ("GET", "/v1/fine_tuning/jobs/{job}/events?stream=true"),
    ("GET", "/v1/fine_tuning/jobs/{job}/checkpoints"),
    ("GET", "/v1/fine_tuning/jobs/{job}/safety_report"),
    ("GET", "/v1/fine_tuning/jobs/{job}/safety_report?format=html"),
    ("GET", "/v1/models/{model}"),
    ("DELETE", "/v1/models/{model}"),
]


@pytest.fixture
def alices_objects(session: Session, alice: Customer, data_dir: Path) -> dict[str, str]:
    job, result = make_adapter_job(session, alice.tenant_id, data_dir)
    session.commit()
    assert job.fine_tuned_model
    return {
        "job": job.id,
        "file": job.training_file_id,
        "result": result.id,
        "model": job.fine_tuned_model,
    }


def test_every_path_id_route_is_covered(client: TestClient) -> None:
    covered = {
        path.split("?")[0]
        .replace("{file}", "{file_id}")
        .replace("{result}", "{file_id}")
        .replace("{job}", "{job_id}")
        .replace("{model}", "{model_id}")
        for _, path in ROUTES
    }
    customer_routes = {
        route.path  # type: ignore[attr-defined]
        for route in client.app.routes  # type: ignore[attr-defined]
        if getattr(route, "path", "").startswith("/v1/") and "{" in route.path  # type: ignore[attr-defined]
    }
    assert customer_routes <= covered


@pytest.mark.parametrize(("method", "template"), ROUTES)
def test_other_tenant_gets_not_found(
    client: TestClient,
    alice: Customer,
    bob: Customer,
    alices_objects: dict[str, str],
    method: str,
    template: str,
) -> None:
    path = template.format(**alices_objects)
    response = client.request(method, path, headers=bob.headers)
    assert response.status_code == 404, response.text
    assert response.json()["error"]["code"] == "not_found"
    missing = template.format(
        file="file-" + "0" * 24,
        result="file-" + "1" * 24,
        job="ftjob-" + "0" * 24,
        model="ft:smollm2-135m-instruct:nobody:keel:ftjob-" + "0" * 24,
    )
    twin = client.request(method, missing, headers=bob.headers)
    assert twin.status_code == 404
    assert set(twin.json()["error"]) == set(response.json()["error"])
    # The owner still sees it, untouched (bob's cancel/delete had no side effect).
    assert (
        client.get(f"/v1/fine_tuning/jobs/{alices_objects['job']}", headers=alice.headers).json()[
            "status"
        ]
        == "succeeded"
    )
    assert (
        client.get(f"/v1/files/{alices_objects['file']}", headers=alice.headers).status_code == 200
    )
    assert (
        client.get(f"/v1/models/{alices_objects['model']}", headers=alice.headers).status_code
        == 200
    )
    adapter = client.get(f"/v1/files/{alices_objects['result']}/content", headers=alice.headers)
    assert adapter.status_code == 200


def test_lists_show_only_own_objects(
    client: TestClient, alice: Customer, bob: Customer, alices_objects: dict[str, str]
) -> None:
    assert client.get("/v1/files", headers=bob.headers).json()["data"] == []
    assert client.get("/v1/fine_tuning/jobs", headers=bob.headers).json()["data"] == []
    bob_models = {m["id"] for m in client.get("/v1/models", headers=bob.headers).json()["data"]}
    alice_models = {m["id"] for m in client.get("/v1/models", headers=alice.headers).json()["data"]}
    assert alice_models - bob_models == {
        f"ft:smollm2-135m-instruct:{alice.tenant_id}:keel:{alices_objects['job']}"
    }


def test_models_are_retrieved_by_id_like_openai(
    client: TestClient, alice: Customer, alices_objects: dict[str, str]
) -> None:
    own = client.get(f"/v1/models/{alices_objects['model']}", headers=alice.headers)
    assert own.status_code == 200
    assert own.json() == {
        "id": alices_objects["model"],
        "object": "model",
        "created": own.json()["created"],
        "owned_by": alice.tenant_id,
    }
    assert own.json()["created"] > 0
    base = client.get("/v1/models/smollm2-135m-instruct", headers=alice.headers)
    assert base.status_code == 200
    assert base.json()["owned_by"] == "keel"
    missing = client.get("/v1/models/gpt-4o", headers=alice.headers)
    assert missing.status_code == 404
    assert missing.json()["error"]["param"] == "model"


def test_job_with_another_tenants_training_file_is_not_found(
    client: TestClient, bob: Customer, alices_objects: dict[str, str]
) -> None:
    response = client.post(
        "/v1/fine_tuning/jobs",
        headers=bob.headers,
        json={"model": "smollm2-135m-instruct", "training_file": alices_objects["file"]},
    )
    assert response.status_code == 404
    assert response.json()["error"] == {
        "message": f"No such File object: {alices_objects['file']}",
        "type": "invalid_request_error",
        "param": "training_file",
        "code": "not_found",
    }
