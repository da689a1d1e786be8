"""Where an exact SAP step's time goes on a real model: each pass timed on its own.

`bench_sap.py` gives the SAP / SFT step-time ratio on random-weight models with equal-sized task
and safety batches. On a real job the two differ: the customer's micro-batch (4 rows of a short
task) can be a quarter of the safety batch (4 pairs = 8 sequences cut at 128 tokens), so the
safety-direction pass, not the probe, sets the step time. This script times, on the registry
model and the worker's own safety pairs (``worker.pipeline.safety_pairs``), at the shipped SAP
default (exact; direction refreshed every step):

- one SFT pass on a task micro-batch (the experiment's word problems);
- the safety-direction pass (unit gradient of the contrastive safety loss on one safety batch);
- the probe gap (the clean and the perturbed probe passes);
- the exact micro-step (probe gap + the weight pass with the probe on);
- whole SAP steps, without and with the correction-measuring SFT pass.

Each pass: the median of ``--repeats`` runs; the two whole steps run once each (a step moves the
weights). Seconds on this machine; run it on a quiet machine:

    .venv/bin/python benchmarks/profile_sap_step.py
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a file: make the repo's packages importable
    sys.path.insert(0, str(ROOT))

from sap_core import objectives  # noqa: E402
from sap_core.config import LoraConfig, OptimConfig, SapConfig, TrainConfig  # noqa: E402
from sap_core.trainer import SafetyAwareTrainer  # noqa: E402
from scripts.sap_screen import ALL_LINEAR, _examples, _pairs  # noqa: E402

MAX_LENGTH = 256  # the experiment's jobs


def median_seconds(trainer: SafetyAwareTrainer, fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``fn``; gradients are cleared between runs so none accumulate."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
        trainer.optimizer.zero_grad(set_to_none=True)
    return statistics.median(times)


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from sap_core.models.loading import load_model_and_tokenizer
    from sap_core.models.registry import resolve_model

    model, tokenizer = load_model_and_tokenizer(resolve_model(args.model, ROOT / "var" / "models"))
    pairs = _pairs(tokenizer, args.model, MAX_LENGTH)
    config = TrainConfig(
        lora=LoraConfig(r=8, alpha=16, target_modules=ALL_LINEAR),
        optim=OptimConfig(lr=1e-3),
        sap=SapConfig(),  # the shipped default: exact, direction every step
        batch_size=4,
        max_length=MAX_LENGTH,
        epochs=5,
        seed=args.seed,
    )
    examples = _examples(tokenizer, 24, args.seed, MAX_LENGTH)
    trainer = SafetyAwareTrainer(config, examples, pairs, model=model, tokenizer=tokenizer)
    trainer.setup()

    batch = trainer.micro_batches_for_step(0)[0]
    safety = trainer._safety_batch(0)
    print(
        f"model {args.model}, {args.threads} threads; task micro-batch"
        f" {tuple(batch.input_ids.shape)} ({int(batch.attention_mask.sum())} tokens); safety batch"
        f" {tuple(safety.input_ids.shape)} ({int(safety.attention_mask.sum())} tokens)"
    )
    direction = trainer.safety_direction(0)
    theta_norm = float(objectives.global_norm(trainer.lora_params))
    sap = trainer.config.sap
    eps = objectives.perturbation(direction.unit, theta_norm, sap.rho, sap.relative_rho)

    def sft_pass() -> None:
        trainer.task_loss(batch).backward()

    rows = {
        "SFT pass (task micro-batch, forward + backward)": sft_pass,
        "safety-direction pass": lambda: trainer.safety_direction(0),
        "probe gap (clean + perturbed probe passes)": lambda: trainer.probe_gap(batch, eps),
        "exact micro-step (probe gap + weight pass)": lambda: trainer._exact_micro_step(
            batch, eps, sap, 1
        ),
    }
    results = {name: median_seconds(trainer, fn, args.repeats) for name, fn in rows.items()}
    # Whole steps: step index 1 skips the correction pass, index 9 (the 10th step) measures it.
    for name, index in (("whole SAP step", 1), ("whole SAP step with correction", 9)):
        trainer.step = index
        started = time.perf_counter()
        trainer.train_step([batch])
        results[name] = time.perf_counter() - started
    sft = results["SFT pass (task micro-batch, forward + backward)"]
    for name, seconds in results.items():
        print(f"{name:50s} {seconds:7.1f} s  ({seconds / sft:4.1f}x SFT)")


if __name__ == "__main__":
    main()
