"""A provider-configured model judge (policy `evaluation.judge` + `judge_model`) in a live job.

SmolLM2-135M is the judge here only to prove the plumbing (policy -> worker -> registry weights
-> evaluator -> report); it is far too small to grade anything, so no safety number is asserted.
"""

from __future__ import annotations

from typing import Any

import httpx

from tests.e2e.service import (
    E2E_POLICY,
    TEST_MODEL,
    LiveService,
    create_small_job,
    wait_for_status,
)

# Every threshold at its loosest: a 135M judge grades nothing, this test is about plumbing.
PERMISSIVE_GATE = {
    "thresholds": {**E2E_POLICY["gate"]["thresholds"], "max_harmful_increase": 1.0},  # type: ignore[index]
    "on_failure": "fail",
}


def _job_under(live: LiveService, policy: dict[str, object], tenant: str) -> dict[str, Any]:
    """Store ``policy``, run a small job to its end; the job, its events and its report."""
    with live.admin() as admin:
        stored = admin.put("/policy", json=policy)
        assert stored.status_code == 200, stored.text
    key = live.create_tenant(tenant)
    with httpx.Client(
        base_url=live.base_url, timeout=30, headers={"Authorization": f"Bearer {key}"}
    ) as http:
        job_id = create_small_job(http, 8, {"n_epochs": 1, "batch_size": 4})
        try:
            done = wait_for_status(http, job_id, {"succeeded", "failed", "cancelled"}, 600)
        except TimeoutError:
            events = http.get(f"/v1/fine_tuning/jobs/{job_id}/events").json()["data"]
            messages = [e["message"] for e in events]
            raise AssertionError((messages, live.log("worker"))) from None
        events = http.get(f"/v1/fine_tuning/jobs/{job_id}/events").json()["data"]
        report = http.get(f"/v1/fine_tuning/jobs/{job_id}/safety_report")
    return {
        "job": done,
        "events": events,
        "report": report.json() if report.status_code == 200 else None,
    }


def test_the_policy_judge_model_grades_the_job(live_service: LiveService) -> None:
    evaluation = {
        **E2E_POLICY["evaluation"],  # type: ignore[dict-item]
        "judge": "llm",
        "judge_model": TEST_MODEL,
        # Few prompts: the judge scores every reply of both models (a forward pass each).
        "num_harmful": 4,
        "num_benign": 2,
        "task_format": False,
    }
    with live_service.admin() as admin:
        bad = admin.put("/policy", json={**E2E_POLICY, "evaluation": {"judge": "llm"}})
        assert bad.status_code == 400
        assert bad.json()["error"]["param"] == "evaluation"
    policy = {**E2E_POLICY, "evaluation": evaluation, "gate": PERMISSIVE_GATE}
    run = _job_under(live_service, policy, "judged-customer")
    assert run["job"]["status"] == "succeeded", (run["job"], live_service.log("worker"))
    assert run["report"]["verdict"] == "passed"
    report = run["report"]["report"]
    assert report["judge"] == "llm"
    assert report["models"]["fine_tuned"]["harmful"]["n"] == evaluation["num_harmful"]


def test_a_judge_the_registry_lacks_fails_the_job_before_training(
    live_service: LiveService,
) -> None:
    evaluation = {
        **E2E_POLICY["evaluation"],  # type: ignore[dict-item]
        "judge": "llm",
        "judge_model": "no-such-judge",
    }
    run = _job_under(live_service, {**E2E_POLICY, "evaluation": evaluation}, "unjudged-customer")
    job = run["job"]
    assert job["status"] == "failed", job
    assert job["error"]["code"] == "model_unavailable"
    assert "no-such-judge" in job["error"]["message"]
    assert not any(e["type"] == "metrics" for e in run["events"])
    assert not job["result_files"]
    assert run["report"] is None
