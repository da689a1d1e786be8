"""The OpenAPI document's promises, checked on the document itself (api/openapi.py); the live
Schemathesis run in tests/contract holds the running server to it."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.input_guard import NO_CONTROL_CHARS_PATTERN
from tests.api.conftest import Customer


@pytest.fixture
def document(client: TestClient) -> dict[str, Any]:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    return dict(response.json())


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
    ]


def test_security_schemes_on_every_guarded_operation(document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]
    assert {name: (s["type"], s["scheme"]) for name, s in schemes.items()} == {
        "ApiKey": ("http", "bearer"),
        "AdminKey": ("http", "bearer"),
        "MetricsToken": ("http", "bearer"),
    }
    for method, path, operation in _operations(document):
        if path.startswith("/v1/"):
            assert operation["security"] == [{"ApiKey": []}], (method, path)
        elif path.startswith("/admin/"):
            assert operation["security"] == [{"AdminKey": []}], (method, path)
        elif path == "/metrics":
            assert operation["security"] == [{"MetricsToken": []}]
        else:
            assert "security" not in operation, (method, path)


def test_every_error_status_uses_the_one_envelope_and_none_is_422(
    document: dict[str, Any],
) -> None:
    error = document["components"]["schemas"]["Error"]
    assert error["properties"]["error"]["required"] == ["message", "type", "param", "code"]
    assert "HTTPValidationError" not in document["components"]["schemas"]
    for method, path, operation in _operations(document):
        responses = operation["responses"]
        assert "422" not in responses, (method, path)
        assert "400" in responses, (method, path)
        for status, response in responses.items():
            if int(status) >= 400:
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/Error"}, (method, path, status)
        if path.startswith(("/v1/", "/admin/")):
            assert {"401", "503"} <= set(responses), (method, path)
            assert responses["503"]["headers"]["Retry-After"]["required"] is True
        if path.startswith("/v1/"):
            assert "429" in responses, (method, path)
        if "{" in path:
            assert "404" in responses, (method, path)
        if method in ("post", "put", "delete") and path.startswith(("/v1/", "/admin/")):
            assert "413" in responses, (method, path)


def test_upload_body_metrics_text_and_event_stream(document: dict[str, Any]) -> None:
    upload = document["paths"]["/v1/files"]["post"]["requestBody"]["content"]
    form = upload["multipart/form-data"]
    assert form["schema"]["required"] == ["file", "purpose"]
    assert form["schema"]["properties"]["file"]["format"] == "binary"
    assert form["encoding"]["file"]["contentType"] == "application/jsonl"
    metrics = document["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(metrics) == ["text/plain"]
    events = document["paths"]["/v1/fine_tuning/jobs/{job_id}/events"]["get"]
    event = events["responses"]["200"]["content"]["text/event-stream"]["schema"]
    assert event["required"] == ["event", "data"]
    assert event["properties"]["event"]["enum"] == ["fine_tuning.job.event", "done", "error"]
    content = document["paths"]["/v1/files/{file_id}/content"]["get"]["responses"]["200"]
    assert set(content["content"]) == {"application/octet-stream", "application/zip"}


def test_path_and_query_strings_state_the_control_character_rule(
    document: dict[str, Any],
) -> None:
    for method, path, operation in _operations(document):
        for parameter in operation.get("parameters", []):
            schema = parameter["schema"]
            if schema.get("type") == "string" and "enum" not in schema:
                assert schema["pattern"] == NO_CONTROL_CHARS_PATTERN, (method, path, parameter)
            if parameter["in"] == "path":
                assert schema["minLength"] == 1
    job = document["components"]["schemas"]["JobCreate"]["properties"]
    assert job["model"]["pattern"] == NO_CONTROL_CHARS_PATTERN
    metadata = job["metadata"]["anyOf"][0]
    assert metadata["maxProperties"] == 16
    assert metadata["propertyNames"]["maxLength"] == 64
    assert metadata["additionalProperties"]["maxLength"] == 512
    # suffix keeps its own, stricter pattern.
    assert job["suffix"]["anyOf"][0]["pattern"] == "^[A-Za-z0-9_.-]*$"


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("OPTIONS", "/v1/files", "GET, POST"),
        ("PATCH", "/v1/files/file-x", "DELETE, GET"),
        ("PUT", "/v1/models/m", "DELETE, GET"),
        ("OPTIONS", "/admin/v1/tenants/org-x/api_keys", "GET, POST"),
        ("DELETE", "/admin/v1/policy", "GET, PUT"),
    ],
)
def test_405_allow_lists_every_method_of_the_path(
    client: TestClient, method: str, path: str, allow: str
) -> None:
    response = client.request(method, path)
    assert response.status_code == 405
    assert response.headers["Allow"] == allow
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_the_documented_metadata_filter_bounds_are_enforced(
    client: TestClient, alice: Customer
) -> None:
    jobs = "/v1/fine_tuning/jobs"
    many = {f"metadata[k{i}]": "v" for i in range(17)}
    response = client.get(jobs, headers=alice.headers, params=many)
    assert response.status_code == 400
    assert (response.json()["error"]["code"], response.json()["error"]["param"]) == (
        "too_many_items",
        "metadata",
    )
    for params in ({"metadata[" + "k" * 65 + "]": "v"}, {"metadata[k]": "v" * 513}):
        response = client.get(jobs, headers=alice.headers, params=params)
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "invalid_value"
    fine = {f"metadata[k{i}]": "v" * 512 for i in range(16)}
    assert client.get(jobs, headers=alice.headers, params=fine).status_code == 200
