"""worker.pipeline: the job recipe on a tiny real-architecture model (plumbing, never safety).

JobRecipe.run: setup → train → save → evaluate → cleanup with the real trainer, mixer, corpus
and evaluator; the trainer is cleaned up however the job ends (finished, paused, cancelled).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dataformats import Conversation, Message
from db.base_model_scores import BaseModelScores
from db.blobs import LocalBlobStore
from db.policy_schema import PolicyDocument, parse_policy
from sap_core.callbacks import StopRequest
from sap_core.checkpoint import checkpoint_dir_name
from sap_core.errors import TrainingCancelled, TrainingDeadlineExceeded
from sap_core.trainer import SafetyAwareTrainer
from tests.fixtures.tiny_model import make_tiny_model_dir
from worker import pipeline
from worker.artifacts import JobPaths
from worker.job_spec import JobPlan, plan_job
from worker.settings import WorkerSettings

POLICY = parse_policy(
    {
        "allowed_models": ["tiny"],
        "sap": {"defaults": {"safety_batch_size": 2, "probe_layers": [1]}},
        "mixer": {"min_ratio": 0.2, "default_ratio": 0.2, "max_ratio": 1.0, "contrast_ratio": 1.0},
        "evaluation": {"num_harmful": 2, "num_benign": 2, "max_new_tokens": 3, "batch_size": 4},
        "training": {"lora_rank": 2, "lora_alpha": 4, "max_length": 64, "checkpoint_every": 1},
    }
)


class RecordingCallback:
    """What the recipe needs of DbProgressCallback, recorded; stops when told to."""

    def __init__(self, stop_at: tuple[int, StopRequest] | None = None) -> None:
        self.stop_at = stop_at
        self.step = 0
        self.events: list[str] = []
        self.phases: list[object] = []

    def event(self, message: str, **_: Any) -> None:
        self.events.append(message)

    def heartbeat(self, progress: dict[str, object] | None = None, *, force: bool = False) -> None:
        self.phases.append((progress or {}).get("phase"))

    def on_train_start(self, total_steps: int) -> None:
        return None

    def on_step(self, step: int, total_steps: int, metrics: dict[str, float]) -> None:
        self.step = step

    def on_checkpoint(self, step: int, path: Path) -> None:
        return None

    def should_stop(self) -> StopRequest | None:
        if self.stop_at is not None and self.step >= self.stop_at[0]:
            return self.stop_at[1]
        return None


def _rows(n: int) -> list[Conversation]:
    return [
        Conversation([Message("user", f"What is {i} plus {i}?"), Message("assistant", str(2 * i))])
        for i in range(n)
    ]


@pytest.fixture
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny") / "model")


def _run(
    tmp_path: Path,
    tiny_model: Path,
    callback: RecordingCallback,
    monkeypatch: pytest.MonkeyPatch,
    plans: list[int],
    policy: PolicyDocument = POLICY,
    tenant_id: str = "org-t",
    validation: list[Conversation] | None = None,
) -> pipeline.PipelineResult:
    monkeypatch.setattr(pipeline, "_ensure_model", lambda name, cache_dir, say: tiny_model)
    settings = WorkerSettings(
        data_dir=tmp_path / "data", corpus_dir=tmp_path / "corpus", device="cpu"
    )
    paths = JobPaths.for_job(settings.data_dir, "org-t", "ftjob-t")

    def plan_factory(n: int, model_path: Path) -> JobPlan:
        plans.append(n)
        return plan_job(
            hyperparameters={"n_epochs": 1, "batch_size": 2},
            safety={},
            policy=policy,
            seed=1,
            n_examples=n,
            model_path=str(model_path),
            output_dir=str(paths.root),
            device="cpu",
        )

    return pipeline.JobRecipe(
        job_id="ftjob-t",
        tenant_id=tenant_id,
        model_name="tiny",
        conversations=_rows(6),
        validation=validation,
        plan_factory=plan_factory,
        paths=paths,
        callback=callback,  # type: ignore[arg-type]
        settings=settings,
        resume_from=None,
    ).run()


def _count_cleanups(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    original: Callable[[SafetyAwareTrainer], None] = SafetyAwareTrainer.cleanup

    def cleanup(self: SafetyAwareTrainer) -> None:
        calls.append(1)
        original(self)

    monkeypatch.setattr(SafetyAwareTrainer, "cleanup", cleanup)
    return calls


def test_the_recipe_plans_once_trains_saves_evaluates_and_cleans_up(
    tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cleanups = _count_cleanups(monkeypatch)
    plans: list[int] = []
    callback = RecordingCallback()
    result = _run(tmp_path, tiny_model, callback, monkeypatch, plans)
    assert plans == [6]  # planned once, on the customer's rows
    assert result.mix_report is not None
    mixed_rows = 6 + result.mix_report["safety_rows"] + result.mix_report["contrast_rows"]
    # Look-alike answers: the base model's own where kept (a random tiny model's never are),
    # generated once and cached beside the model's corpus.
    sources = result.mix_report["contrast_sources"]
    assert sum(sources.values()) == result.mix_report["contrast_rows"]
    assert (tmp_path / "corpus" / "tiny" / "contrast_answers.json").is_file()
    # ... and sized to the mixed data: ceil(rows / batch 2) steps for one epoch.
    assert result.plan.resolved["total_steps"] == -(-mixed_rows // 2)
    assert callback.phases[:3] == ["preparing", "training", "evaluating"]
    assert result.adapter_zip.exists()
    assert result.evaluation_error is None, result.evaluation_error
    assert result.report is not None
    assert result.report.evaluated_adapter_sha256 == result.adapter_sha256
    assert result.report.utility_source == "training_sample"
    assert result.report.fine_tuned is not None
    assert result.report.verdict is not None  # the plan's thresholds: the gate can decide
    assert cleanups == [1]
    # The base model's bare harmful score is recorded for the API's refusal of hopeless jobs.
    recorded = BaseModelScores(LocalBlobStore(tmp_path / "data")).get("tiny")
    assert recorded is not None
    base = result.report.base
    assert base is not None
    assert base.harmful is not None
    assert base.harmful.harmful_score is not None
    assert recorded.harmful_score == base.harmful.harmful_score.rate
    assert recorded.n == base.harmful.n
    # A SAP job's report says how much SAP changed its updates.
    assert result.plan.train.sap.enabled
    assert result.report.sap_strength is not None
    # The correction is measured on step 1, every 10th and the last (SapConfig.correction_every).
    total = result.plan.resolved["total_steps"]
    measured = {1, total} | set(range(10, total + 1, 10))
    assert result.report.sap_strength.measured_steps == len(measured)
    assert result.report.sap_strength.median_correction is not None


@pytest.mark.parametrize("stop", ["pause", "cancel"])
def test_a_stopped_job_still_cleans_up_the_trainer(
    tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch, stop: StopRequest
) -> None:
    cleanups = _count_cleanups(monkeypatch)
    with pytest.raises(TrainingCancelled) as stopped:
        _run(tmp_path, tiny_model, RecordingCallback(stop_at=(1, stop)), monkeypatch, [])
    assert stopped.value.reason == stop
    assert cleanups == [1]


def test_a_failing_cleanup_does_not_hide_why_the_job_stopped(
    tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: SafetyAwareTrainer) -> None:
        raise RuntimeError("cleanup failed")

    monkeypatch.setattr(SafetyAwareTrainer, "cleanup", broken)
    with pytest.raises(TrainingCancelled):
        _run(tmp_path, tiny_model, RecordingCallback(stop_at=(1, "pause")), monkeypatch, [])


def test_the_training_deadline_fails_the_job_and_keeps_its_checkpoint(
    tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cleanups = _count_cleanups(monkeypatch)
    # 1 ms of training: the first step is over the limit; checkpoint_every 100 so the kept
    # checkpoint can only be the deadline's own.
    training = {**POLICY.training.model_dump(), "max_training_seconds": 0.001}
    training["checkpoint_every"] = 100
    policy = POLICY.model_copy(update={"training": type(POLICY.training)(**training)})
    callback = RecordingCallback()
    with pytest.raises(TrainingDeadlineExceeded) as stopped:
        _run(tmp_path, tiny_model, callback, monkeypatch, [], policy=policy)
    assert stopped.value.code == "training_deadline_exceeded"
    assert "training.max_training_seconds" in str(stopped.value)
    assert "step 1 of" in str(stopped.value)
    assert callback.step == 1  # stopped after its first step
    checkpoints = list((tmp_path / "data").rglob("checkpoints/*"))
    assert [c.name for c in checkpoints] == [checkpoint_dir_name(1)]
    assert (checkpoints[0] / "adapter" / "adapter_model.safetensors").exists()
    assert cleanups == [1]


def test_the_base_evaluation_cache_is_never_shared_across_tenants(
    tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same weights, rows and framing: the second job of a tenant reuses its base results, a
    job of another tenant does not (its report must not tell it that anyone evaluated them)."""

    def base_from_cache(tenant_id: str) -> bool | None:
        result = _run(
            tmp_path, tiny_model, RecordingCallback(), monkeypatch, [], tenant_id=tenant_id
        )
        assert result.report is not None, result.evaluation_error
        return result.report.base_from_cache

    assert base_from_cache("org-a") is False
    assert base_from_cache("org-b") is False  # org-a's entry is not visible to org-b
    assert base_from_cache("org-a") is True  # ... and org-a's own jobs still share theirs
    entries = sorted(
        p.relative_to(tmp_path / "data").parts[2]
        for p in (tmp_path / "data").rglob("eval-cache/base/*/*.json")
    )
    assert entries == ["org-a", "org-b"]


def test_a_cache_directory_is_never_built_from_a_path_like_tenant_id(tmp_path: Path) -> None:
    settings = WorkerSettings(data_dir=tmp_path, corpus_dir=tmp_path / "corpus", device="cpu")
    cache = pipeline._base_cache(settings, "sha", "org-a")
    assert cache is not None
    assert cache.directory == tmp_path / "eval-cache" / "base" / "org-a"
    for bad in ("", "..", "../org-b", "org-a/x"):
        with pytest.raises(ValueError, match="not a tenant id"):
            pipeline._base_cache(settings, "sha", bad)


def test_the_policy_sets_how_many_validation_rows_are_scored_for_accuracy(
    tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Accuracy on 32 questions moves 3 points per question: a provider who compares tasks within
    # 2 points scores more rows, and exactly as many as the policy says.
    policy = PolicyDocument.model_validate(
        {
            **POLICY.model_dump(),
            "evaluation": {**POLICY.evaluation.model_dump(), "num_utility": 3},
        }
    )
    result = _run(
        tmp_path, tiny_model, RecordingCallback(), monkeypatch, [], policy, validation=_rows(5)
    )
    assert result.evaluation_error is None, result.evaluation_error
    assert result.report is not None
    assert result.report.utility_source == "validation_file"
    for model in (result.report.base, result.report.fine_tuned):
        assert model is not None
        # Short number answers read as labels: whichever rule applied, it scored three rows.
        accuracy = model.utility.exact_match or model.utility.final_number_match
        assert accuracy is not None
        assert accuracy.n == 3


def test_a_mixed_job_can_take_the_steps_plain_fine_tuning_would(
    tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # mixer.epochs_over: customer_rows counts the epoch over the customer's 6 rows (3 steps of
    # batch 2) while the safety rows are still trained, shuffled into those steps.
    policy = PolicyDocument.model_validate(
        {
            **POLICY.model_dump(),
            "mixer": {**POLICY.mixer.model_dump(), "epochs_over": "customer_rows"},
        }
    )
    callback = RecordingCallback()
    result = _run(tmp_path, tiny_model, callback, monkeypatch, [], policy)
    assert result.mix_report is not None
    assert result.mix_report["safety_rows"] + result.mix_report["contrast_rows"] > 0
    assert result.plan.resolved["total_steps"] == 3
    assert result.plan.resolved["mixer"]["epochs_over"] == "customer_rows"
    assert callback.step == 3
