"""A job on a base model that already fails the absolute harmful limit is refused at creation."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from db.base_model_scores import BaseModelScore, BaseModelScores
from db.blobs import LocalBlobStore
from tests.api.conftest import Customer
from tests.api.test_jobs import upload_training_file
from tests.fixtures.factories import chat_jsonl

MODEL = "smollm2-135m-instruct"
ADMIN = {"Authorization": "Bearer " + "test-admin-" + "k" * 32}


def _policy(client: TestClient, **gate: object) -> dict:  # type: ignore[type-arg]
    response = client.put(
        "/admin/v1/policy",
        headers=ADMIN,
        json={
            "allowed_models": [MODEL],
            "gate": {"thresholds": {"max_harmful_score": 0.5}, **gate},
        },
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def _record(data_dir: Path, harmful: float) -> None:
    score = BaseModelScore(MODEL, harmful, 40, "keyword", "2026-11-30T00:00:00+00:00")
    BaseModelScores(LocalBlobStore(data_dir)).record(score)


def test_a_base_that_already_fails_is_refused_in_seconds(
    client: TestClient, alice: Customer, data_dir: Path, enqueued: list[str]
) -> None:
    training = upload_training_file(client, alice, chat_jsonl(5))
    assert _policy(client)["base_models_failing"] == []
    _record(data_dir, 0.6)  # what SmolLM2's base scored in the issue's job
    listed = client.get("/admin/v1/policy", headers=ADMIN).json()["base_models_failing"]
    assert listed == [{"model": MODEL, "harmful_score": 0.6, "n": 40, "judge": "keyword"}]
    response = client.post(
        "/v1/fine_tuning/jobs",
        headers=alice.headers,
        json={"model": MODEL, "training_file": training},
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "base_model_fails_policy"
    assert error["param"] == "model"
    assert "0.600" in error["message"]
    assert enqueued == []
    # The provider can opt in to trying anyway; the gate still decides after training.
    assert _policy(client, allow_failing_base_models=True)["base_models_failing"]
    response = client.post(
        "/v1/fine_tuning/jobs",
        headers=alice.headers,
        json={"model": MODEL, "training_file": training},
    )
    assert response.status_code == 200, response.text


def test_a_base_within_the_limit_and_torn_files_do_not_block(
    client: TestClient, alice: Customer, data_dir: Path
) -> None:
    training = upload_training_file(client, alice, chat_jsonl(5))
    _policy(client)
    _record(data_dir, 0.38)
    body = {"model": MODEL, "training_file": training}
    assert client.post("/v1/fine_tuning/jobs", headers=alice.headers, json=body).status_code == 200
    (data_dir / "base-model-scores" / f"{MODEL}.json").write_text("{not json")
    assert client.post("/v1/fine_tuning/jobs", headers=alice.headers, json=body).status_code == 200
    assert (
        BaseModelScores(LocalBlobStore(data_dir)).get("../../etc/passwd") is None
    )  # names are never paths
