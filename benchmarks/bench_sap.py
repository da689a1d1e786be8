"""SAP vs plain-SFT step time, one process, one model, the same batches (make bench-sap).

Both step kinds run through the same `SafetyAwareTrainer` on the same LoRA model: the loop
alternates an SFT step (`sap.enabled=False`) and a SAP step on each batch, so machine noise hits
both alike.
Random weights, real shapes: the numbers are about speed only.

    .venv/bin/python benchmarks/bench_sap.py                 # CPU: hidden 256, 4 layers, 4x128
    .venv/bin/python benchmarks/bench_sap.py --shape 1b --batch 16x512   # GPU, bf16
    .venv/bin/python benchmarks/bench_sap.py --exact               # SAP without approximations

It also prints the cosine between the approximate and the exact SAP weight gradient on one batch
and, on GPU, model FLOPs utilisation of the useful pass (4 * params * tokens / step_time / peak).
The LAST line is exactly:
    sap_over_sft_step_time=<ratio> tokens_per_s_sft=<n> tokens_per_s_sap=<n> device=<cpu|cuda>
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import statistics
import time
from dataclasses import dataclass
from typing import Any

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from sap_core import objectives as obj
from sap_core.config import LoraConfig, OptimConfig, SapConfig, TrainConfig
from sap_core.trainer import Batch, SafetyAwareTrainer

SHAPES: dict[str, dict[str, Any]] = {
    "tiny": {
        "hidden_size": 256,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "intermediate_size": 688,
        "vocab_size": 8192,
    },
    # Llama-3.2-1B shape.
    "1b": {
        "hidden_size": 2048,
        "num_hidden_layers": 16,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "intermediate_size": 8192,
        "vocab_size": 128256,
    },
    # Llama-2-7B shape.
    "7b": {
        "hidden_size": 4096,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "intermediate_size": 11008,
        "vocab_size": 32000,
    },
}


@dataclass(frozen=True)
class Seq:
    input_ids: list[int]
    labels: list[int]


@dataclass(frozen=True)
class Pair:
    chosen: Seq
    rejected: Seq


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    p.add_argument("--batch", default=None, help="ROWSxSEQ; default 4x128 (tiny) or 16x512")
    p.add_argument("--steps", type=int, default=10, help="timed steps of each kind")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps of each kind")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--peak-tflops", type=float, default=989.0, help="GPU bf16 peak (H100: 989)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads")
    p.add_argument("--exact", action="store_true", help="SAP with every approximation off")
    p.add_argument("--refresh-every", type=int, default=4, help="safety direction refresh k")
    p.add_argument("--probe-fraction", type=float, default=0.25, help="probe batch fraction")
    p.add_argument("--lagged", action="store_true", help="one-step-lagged probe (cheapest)")
    p.add_argument("--safety-batch", type=int, default=4, help="triples per safety pass")
    p.add_argument(
        "--rho",
        type=float,
        default=None,
        help="default: the product's (sap_core.config.SapConfig, 0.2)",
    )
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def make_data(
    rows: int, seq: int, vocab: int, n_train: int, n_pairs: int, seed: int
) -> tuple[list[Seq], list[Pair]]:
    """Full-length rows (no padding waste): prompt = first quarter (masked), response = rest."""
    rng = random.Random(seed)
    prompt_len = seq // 4

    def toks(n: int) -> list[int]:
        return [rng.randrange(3, vocab) for _ in range(n)]

    train = []
    for _ in range(n_train):
        ids = toks(seq)
        train.append(Seq(ids, [-100] * prompt_len + ids[prompt_len:]))
    pairs = []
    half = seq // 2  # safety triples: shorter, prompt + response = seq/2
    for _ in range(n_pairs):
        prompt = toks(half // 2)
        safe, harm = toks(half - len(prompt)), toks(half - len(prompt))
        mask = [-100] * len(prompt)
        pairs.append(Pair(Seq(prompt + safe, mask + safe), Seq(prompt + harm, mask + harm)))
    return train, pairs


def build_model(shape: str, device: torch.device) -> torch.nn.Module:
    cfg = LlamaConfig(**SHAPES[shape], max_position_embeddings=4096, tie_word_embeddings=False)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM._from_config(cfg, dtype=dtype)
    return model


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_step(
    trainer: SafetyAwareTrainer, batches: list[Batch], sap_on: bool, device: torch.device
) -> float:
    trainer.config.sap.enabled = sap_on
    sync(device)
    start = time.perf_counter()
    trainer.train_step(batches)
    sync(device)
    return time.perf_counter() - start


def lora_grads(trainer: SafetyAwareTrainer) -> list[torch.Tensor]:
    grads = [p.grad.detach().clone() for p in trainer.lora_params]  # type: ignore[union-attr]
    trainer.optimizer.zero_grad(set_to_none=True)
    return grads


def update_cosines(trainer: SafetyAwareTrainer, batch: Batch) -> tuple[float, float]:
    """cos(approx, exact) of the SAP weight gradient and of its SAP-only part (minus SFT's).

    Exact: fresh safety direction, full-batch probe at V=0, no lag. Approximate: the configured
    knobs, with the cached (possibly stale) direction and the lagged probe state as they are.
    """
    approx_cfg = trainer.config.sap
    exact_cfg = dataclasses.replace(
        approx_cfg, direction_refresh_every=1, probe_batch_fraction=1.0, lagged_probe=False
    )
    trainer.optimizer.zero_grad(set_to_none=True)
    theta_norm = float(obj.global_norm(trainer.lora_params))
    saved_lag = trainer._lagged_v
    assert trainer._g_hat is not None
    fresh_g_hat, _, _ = trainer._next_safety_direction()
    fresh_eps = obj.perturbation(fresh_g_hat, theta_norm, approx_cfg.rho)
    # With refresh k > 1 the approximate step may use a direction up to k-1 steps old.
    stale = approx_cfg.direction_refresh_every > 1
    approx_eps = (
        obj.perturbation(trainer._g_hat, theta_norm, approx_cfg.rho) if stale else fresh_eps
    )
    if approx_cfg.lagged_probe:
        trainer._accum = 1  # the lagged step has no public form: it carries V_t across batches
        trainer._lagged_micro_step(batch, approx_eps)
    else:
        trainer._exact_micro_step(batch, approx_eps, approx_cfg, accum=1)
    g_approx = lora_grads(trainer)
    trainer._lagged_v = saved_lag

    g_exact = trainer.weight_gradient(batch, fresh_g_hat, exact_cfg).grads
    g_sft = trainer.weight_gradient(batch).grads
    cos_full = obj.cosine_similarity(g_approx, g_exact)
    d_approx = [a - s for a, s in zip(g_approx, g_sft, strict=True)]
    d_exact = [e - s for e, s in zip(g_exact, g_sft, strict=True)]
    return cos_full, obj.cosine_similarity(d_approx, d_exact)


def main() -> None:
    args = parse_args()
    device_name = args.device
    if device_name == "auto":
        device_name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device_name)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    batch_spec = args.batch or ("4x128" if args.shape == "tiny" else "16x512")
    rows, seq = (int(x) for x in batch_spec.lower().split("x"))
    vocab = SHAPES[args.shape]["vocab_size"]
    n_steps = args.warmup + args.steps + 1
    train, pairs = make_data(rows, seq, vocab, rows * n_steps, 4 * args.safety_batch, args.seed)

    # The product's default operating point (rho, probe rule and beta, probe layer, the
    # correction measurement on refresh steps): its cost is what a job pays.
    rho = args.rho if args.rho is not None else SapConfig().rho
    sap = SapConfig(
        rho=rho,
        safety_batch_size=args.safety_batch,
        direction_refresh_every=1 if args.exact else args.refresh_every,
        probe_batch_fraction=1.0 if args.exact else args.probe_fraction,
        lagged_probe=args.lagged and not args.exact,
    )
    cfg = TrainConfig(
        model_path="random-weights",
        output_dir="",
        lora=LoraConfig(r=8, alpha=16, dropout=0.0, target_modules=("q_proj", "v_proj")),
        optim=OptimConfig(lr=1e-4, weight_decay=0.0),
        sap=sap,
        batch_size=rows,
        max_length=seq,
        max_steps=n_steps,
        seed=args.seed,
        device=device_name,
        dtype="bfloat16" if device.type == "cuda" else "float32",
        autocast=device.type == "cuda",
    )
    model = build_model(args.shape, device)
    n_params = sum(p.numel() for p in model.parameters())
    trainer = SafetyAwareTrainer(cfg, train, pairs, model=model)
    trainer.setup()

    sft_times, sap_times = [], []
    tokens = rows * seq
    for step in range(args.warmup + args.steps):
        batches = trainer.micro_batches_for_step(step)
        t_sft = timed_step(trainer, batches, sap_on=False, device=device)
        t_sap = timed_step(trainer, batches, sap_on=True, device=device)
        if step >= args.warmup:
            sft_times.append(t_sft)
            sap_times.append(t_sap)
    sft_t, sap_t = statistics.median(sft_times), statistics.median(sap_times)
    trainer.config.sap.enabled = True
    cos_full, cos_sap_part = update_cosines(trainer, trainer.micro_batches_for_step(n_steps - 1)[0])

    print(f"shape={args.shape} params={n_params / 1e6:.1f}M batch={rows}x{seq} device={device}")
    print(
        f"sap knobs: rho={sap.rho} refresh_every={sap.direction_refresh_every} "
        f"probe_fraction={sap.probe_batch_fraction} lagged={sap.lagged_probe} "
        f"safety_batch={sap.safety_batch_size} probe_layers={trainer.probe.layer_ids}"  # type: ignore[union-attr]
    )
    print(f"median step time: sft={sft_t * 1e3:.1f}ms sap={sap_t * 1e3:.1f}ms ({args.steps} steps)")
    print(
        f"cos(approx, exact) SAP weight gradient: {cos_full:.4f}; SAP-only part: {cos_sap_part:.4f}"
    )
    if device.type == "cuda":
        peak = args.peak_tflops * 1e12
        mfu_sft = 4 * n_params * tokens / sft_t / peak
        mfu_sap = 4 * n_params * tokens / sap_t / peak
        print(f"useful-pass MFU: sft={mfu_sft:.1%} sap={mfu_sap:.1%} (peak {args.peak_tflops} TF)")
    else:
        print("useful-pass MFU: n/a on cpu")
    print(
        f"sap_over_sft_step_time={sap_t / sft_t:.3f} tokens_per_s_sft={tokens / sft_t:.1f} "
        f"tokens_per_s_sap={tokens / sap_t:.1f} device={device.type}"
    )


if __name__ == "__main__":
    main()
