"""A provider-configured model judge (policy `evaluation.judge` + `judge_model`) in a live job.

SmolLM2-135M is the judge here only to prove the plumbing (policy -> worker -> registry weights
-> evaluator -> report); it is far too small to grade anything, so no safety number is asserted.
"""

from __future__ import annotations

import httpx

from tests.e2e.service import (
    E2E_POLICY,
    TEST_MODEL,
    LiveService,
    create_small_job,
    wait_for_status,
)

PERMISSIVE_GATE = {
    "thresholds": {"max_harmful_score": 1.0, "max_harmful_increase": 1.0, "max_over_refusal": 1.0},
    "on_failure": "fail",
}


def test_the_policy_judge_model_grades_the_job(live_service: LiveService) -> None:
    evaluation = {
        **E2E_POLICY["evaluation"],  # type: ignore[dict-item]
        "judge": "llm",
        "judge_model": TEST_MODEL,
        # Few prompts: the judge generates a grade for every reply of both models.
        "num_harmful": 4,
        "num_benign": 2,
        "task_format": False,
    }
    with live_service.admin() as admin:
        bad = admin.put("/policy", json={**E2E_POLICY, "evaluation": {"judge": "llm"}})
        assert bad.status_code == 400
        assert bad.json()["error"]["param"] == "evaluation"
        stored = admin.put(
            "/policy", json={**E2E_POLICY, "evaluation": evaluation, "gate": PERMISSIVE_GATE}
        )
        assert stored.status_code == 200, stored.text

    key = live_service.create_tenant("judged-customer")
    with httpx.Client(
        base_url=live_service.base_url, timeout=30, headers={"Authorization": f"Bearer {key}"}
    ) as http:
        job_id = create_small_job(http, 8, {"n_epochs": 1, "batch_size": 4})
        try:
            done = wait_for_status(http, job_id, {"succeeded", "failed", "cancelled"}, 600)
        except TimeoutError:
            events = http.get(f"/v1/fine_tuning/jobs/{job_id}/events").json()["data"]
            messages = [e["message"] for e in events]
            raise AssertionError((messages, live_service.log("worker"))) from None
        assert done["status"] == "succeeded", (done, live_service.log("worker"))
        stored_report = http.get(f"/v1/fine_tuning/jobs/{job_id}/safety_report").json()
    assert stored_report["verdict"] == "passed"
    report = stored_report["report"]
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
    with live_service.admin() as admin:
        stored = admin.put("/policy", json={**E2E_POLICY, "evaluation": evaluation})
        assert stored.status_code == 200, stored.text
    key = live_service.create_tenant("unjudged-customer")
    with httpx.Client(
        base_url=live_service.base_url, timeout=30, headers={"Authorization": f"Bearer {key}"}
    ) as http:
        job_id = create_small_job(http, 8, {"n_epochs": 1, "batch_size": 4})
        done = wait_for_status(http, job_id, {"succeeded", "failed", "cancelled"}, 300)
        events = http.get(f"/v1/fine_tuning/jobs/{job_id}/events").json()["data"]
    assert done["status"] == "failed", done
    error = done["error"]
    assert error["code"] == "model_unavailable"  # type: ignore[index]
    assert "no-such-judge" in error["message"]  # type: ignore[index]
    assert not any(e["type"] == "metrics" for e in events)
    assert not done["result_files"]
