"""Data-parallel SAP: two Gloo ranks under torchrun against one process (issue 25).

The model is a tiny *random* Llama (4 layers, hidden 32) saved as a real safetensors HF
directory, so the ranks load it as the worker's ranks load a registry model; it proves the
algebra and the plumbing (sharding, reductions, rank-0 callbacks, resume), never anything about
safety. Every launch is a real ``python -m torch.distributed.run`` of ``worker.distributed_rank``.

The shapes are chosen to hit the uneven cases: 13 examples in micro-batches of 5 (the last one
has 3 rows: ranks get 1 and 2), two micro-batches per step, a probe on the first 60 % of each
micro-batch's rows (3 of 5: the ranks hold 2 and 1 of them), safety batches of 3 pairs (1 and 2).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sap_core.callbacks import NullCallback, StopRequest
from sap_core.config import LoraConfig, OptimConfig, SapConfig, TrainConfig
from sap_core.data import EncodedExample, EncodedPair
from sap_core.errors import TrainingCancelled
from sap_core.trainer import SafetyAwareTrainer
from tests.sap_core.test_trainer import VOCAB as TRAINER_VOCAB
from tests.sap_core.test_trainer import make_model
from worker.distributed_launch import RankLost, launch, write_spec

pytestmark = pytest.mark.distributed

VOCAB = TRAINER_VOCAB  # the token ids below must fit make_model()'s vocabulary
STEPS = 4
# Tolerance of the 2-rank run against the 1-rank run. Both are fp32 and compute the same sums;
# they differ only in reduction order (two per-rank partial sums added by all_reduce vs one sum
# over all rows) and in padding width (a rank's rows are padded to their own longest row, which
# changes the matmul shapes and so the kernels' summation order). Each is a few ulps (~1e-7
# relative) per op. Measured on this setup: losses and norms agree to 3e-8 relative, LoRA
# weights (|w| ~ 0.04-0.2 after four AdamW steps at lr 1e-2) to 7e-8 absolute. The bounds below
# leave more than 10x margin, and a real bug is orders larger: an unreduced gradient or a
# per-rank mean instead of the token-weighted sum moves the loss by percents and the weights by
# ~lr = 1e-2.
RTOL = 1e-5  # losses, norms; and the relative part of the weight bound
ATOL = 1e-6  # weights: absolute part (|w| ~ 1e-1, so ~1e-5 relative to their scale)


@dataclass(frozen=True)
class _Tok:
    pad_token_id: int = 0


def _data() -> tuple[list[EncodedExample], list[EncodedPair]]:
    rng = random.Random(0)

    def toks(n: int) -> list[int]:
        return [rng.randrange(3, VOCAB) for _ in range(n)]

    def seq(prompt: list[int], response: list[int]) -> EncodedExample:
        return EncodedExample(prompt + response, [-100] * len(prompt) + response)

    train = [seq(toks(rng.randint(3, 9)), toks(rng.randint(2, 9))) for _ in range(13)]
    pairs = []
    for _ in range(7):
        prompt = toks(5)
        pairs.append(EncodedPair(seq(prompt, toks(4)), seq(prompt, toks(6)), 5))
    return train, pairs


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trainer tests' tiny random Llama (plumbing only), saved as a model directory."""
    path = tmp_path_factory.mktemp("tiny-llama")
    make_model().save_pretrained(str(path))
    return path


def _config(model_dir: Path, out: Path, **overrides: object) -> TrainConfig:
    base: dict[str, object] = {
        "model_path": str(model_dir),
        "output_dir": str(out),
        "lora": LoraConfig(r=4, alpha=8),
        "optim": OptimConfig(lr=1e-2, weight_decay=0.01),
        "sap": SapConfig(
            rho=0.05, probe_step_size=0.05, safety_batch_size=3, probe_batch_fraction=0.6
        ),
        "batch_size": 5,
        "gradient_accumulation": 2,
        "max_length": 32,
        "max_steps": STEPS,
        "seed": 7,
    }
    return TrainConfig(**{**base, **overrides})  # type: ignore[arg-type]


def _single(config: TrainConfig) -> tuple[list[dict[str, float]], dict[str, torch.Tensor]]:
    train, pairs = _data()
    trainer = SafetyAwareTrainer(config, train, pairs, tokenizer=_Tok())
    trainer.setup()
    result = trainer.train()
    out = Path(config.output_dir) / "adapter"
    trainer.save_adapter(out)
    trainer.cleanup()
    return result.history, load_file(str(out / "adapter_model.safetensors"))


def _two(
    config: TrainConfig,
    work: Path,
    callback: object = None,
    resume_from: Path | None = None,
    attempt: int = 1,
    env: dict[str, str] | None = None,
) -> tuple[list[dict[str, float]], dict[str, torch.Tensor]]:
    train, pairs = _data()
    write_spec(
        work,
        config=config,
        examples=train,
        pairs=pairs,
        eval_examples=[],
        pad_id=0,
        resume_from=resume_from,
        attempt=attempt,
    )
    result = launch(work, 2, callback or NullCallback(), threads_per_rank=1, env=env)  # type: ignore[arg-type]
    return result.history, load_file(str(work / "adapter" / "adapter_model.safetensors"))


@pytest.fixture(scope="module")
def two_rank_run(
    model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[list[dict[str, float]], dict[str, torch.Tensor]]:
    """The uninterrupted 2-rank run the tests compare against (launched once)."""
    out = tmp_path_factory.mktemp("two-rank")
    return _two(_config(model_dir, out), out / "ddp")


def test_two_ranks_match_one_process_with_sap_on(
    model_dir: Path,
    tmp_path: Path,
    two_rank_run: tuple[list[dict[str, float]], dict[str, torch.Tensor]],
) -> None:
    history_1, weights_1 = _single(_config(model_dir, tmp_path))
    history_2, weights_2 = two_rank_run
    assert len(history_1) == len(history_2) == STEPS
    for one, two in zip(history_1, history_2, strict=True):
        # The global quantities each rank only holds a share of, reduced.
        for key in ("task_loss", "safety_loss", "safety_grad_norm", "probe_gap_norm", "grad_norm"):
            assert two[key] == pytest.approx(one[key], rel=RTOL), key
        assert two["tokens"] == one["tokens"]
        assert two["probe_norm"] > 0  # SAP really probed
    # Training moved the weights, and both runs moved them the same way.
    assert any(float(w.abs().max()) > 1e-3 for w in weights_1.values())
    assert weights_2.keys() == weights_1.keys()
    for key in weights_1:
        torch.testing.assert_close(weights_2[key], weights_1[key], rtol=RTOL, atol=ATOL)


class _PauseAt:
    """The worker's callback in miniature: asks for a pause after a given step."""

    def __init__(self, step: int) -> None:
        self.at = step
        self.step = 0
        self.checkpoints: list[int] = []

    def on_train_start(self, total_steps: int) -> None:
        return None

    def on_step(self, step: int, total_steps: int, metrics: dict[str, float]) -> None:
        self.step = step

    def on_checkpoint(self, step: int, path: Path) -> None:
        assert path.is_dir()  # written completely before rank 0 reports it
        self.checkpoints.append(step)

    def should_stop(self) -> StopRequest | None:
        return "pause" if self.step == self.at else None


def test_checkpoint_then_resume_under_two_ranks_equals_an_uninterrupted_run(
    model_dir: Path,
    tmp_path: Path,
    two_rank_run: tuple[list[dict[str, float]], dict[str, torch.Tensor]],
) -> None:
    config = _config(model_dir, tmp_path)
    pause = _PauseAt(2)
    with pytest.raises(TrainingCancelled) as stopped:
        _two(config, tmp_path / "ddp", callback=pause)
    assert stopped.value.reason == "pause"
    assert pause.checkpoints == [2]  # saved by rank 0, reported once
    checkpoint = tmp_path / "checkpoints" / "step-00000002"
    history, weights = _two(config, tmp_path / "ddp", resume_from=checkpoint, attempt=2)
    full_history, full_weights = two_rank_run
    # Same ranks, same reduction order: the resumed run is the uninterrupted one, bit for bit.
    assert [h["task_loss"] for h in history] == [h["task_loss"] for h in full_history]
    for key in full_weights:
        assert torch.equal(weights[key], full_weights[key]), key


def test_a_killed_rank_ends_the_group_and_the_run_resumes_from_its_checkpoint(
    model_dir: Path,
    tmp_path: Path,
    two_rank_run: tuple[list[dict[str, float]], dict[str, torch.Tensor]],
) -> None:
    config = _config(model_dir, tmp_path, checkpoint_every=1)
    fault = {
        "KEEL_ENV": "testing",
        "KEEL_FAULT_POINT": "rank_during_training",
        "KEEL_FAULT_RANK": "1",
        "KEEL_FAULT_STEP": "3",
    }
    with pytest.raises(RankLost):
        _two(config, tmp_path / "ddp", env=fault)
    done = sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith("step"))
    # Rank 1 died after step 3: rank 0 saved step 2, and maybe 3 before its barrier failed.
    assert done[-1] in ("step-00000002", "step-00000003")
    assert not (tmp_path / "ddp" / "adapter").exists()  # nothing half-trained was saved
    # Attempt 2 (the fault is armed for attempt 1 only), from the last checkpoint.
    _, weights = _two(
        config,
        tmp_path / "ddp",
        resume_from=tmp_path / "checkpoints" / done[-1],
        attempt=2,
        env=fault,
    )
    _, full_weights = two_rank_run
    for key in full_weights:
        assert torch.equal(weights[key], full_weights[key]), key
