"""Evaluation generation: the previous path vs the new decoder, one process, same prompts.

The fine-tuned model's evaluation is what a job waits on, so both paths generate for a LoRA
model: the old one as the evaluator ran it (peft model, adapter unmerged, transformers'
``generate`` in fixed batches of 8), the new one as it runs now (adapter merged into an
in-memory copy, :func:`sap_core.evaluation.decoding.greedy_decode`, batches sized by memory,
finished rows dropped). The prompts are the evaluation's own kinds: held-out harmful prompts and
benign look-alikes, 3 : 1, greedy, 40 new tokens.

The adapter has random non-zero weights of a fine-tune's size (r=16 on every attention and MLP
projection): the numbers are about speed; the replies are compared and the count of identical
replies is printed.

    .venv/bin/python benchmarks/bench_eval.py                       # CPU, fp32, 48 prompts
    .venv/bin/python benchmarks/bench_eval.py --prompts 24 --threads 2
    .venv/bin/python benchmarks/bench_eval.py --device cuda          # bf16 on a GPU

The LAST line is exactly:
    eval_speedup=<ratio> prompts_per_s_old=<n> prompts_per_s_new=<n> device=<cpu|cuda>
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from sap_core.evaluation.benign_prompts import BENIGN_LOOKALIKE_PROMPTS, benign_prompts
from sap_core.evaluation.decoding import merged_for_evaluation
from sap_core.evaluation.generation import generate_replies
from sap_core.safety.corpus import load_eval_prompts

ROOT = Path(__file__).resolve().parents[1]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--model-dir", default=str(ROOT / "var" / "models" / "qwen2.5-coder-0.5b-instruct")
    )
    p.add_argument("--prompts", type=int, default=48, help="prompts (harmful : benign = 3 : 1)")
    p.add_argument("--max-new-tokens", type=int, default=40)
    p.add_argument("--old-batch", type=int, default=8, help="the previous fixed batch size")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def main() -> None:
    args = parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    # bf16 on a GPU (what a provider runs); fp32 on the CPU, where bf16 matmuls are slower.
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir, local_files_only=True)
    base = AutoModelForCausalLM.from_pretrained(
        args.model_dir, use_safetensors=True, local_files_only=True, dtype=dtype
    ).to(device)
    torch.manual_seed(args.seed)
    lora = LoraConfig(
        r=16,
        lora_alpha=32,
        target_modules=[
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ],
        init_lora_weights=False,
    )
    model = get_peft_model(base, lora).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.mul_(0.3)  # a fine-tune-sized change (a few % of the logits), not noise
    n_benign = min(args.prompts // 4, len(BENIGN_LOOKALIKE_PROMPTS))
    prompts = [p.text for p in load_eval_prompts(args.prompts - n_benign, args.seed)]
    prompts += benign_prompts(n_benign, args.seed)
    n = len(prompts)
    tokens = args.max_new_tokens

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    # Warm-up (kernels, allocator) on a few prompts for both paths, untimed.
    generate_replies(model, tokenizer, prompts[:2], 4, args.old_batch, legacy=True)
    # Process CPU seconds beside wall seconds: on a shared CPU the wall clock also measures the
    # neighbours, CPU time (most meaningful with --threads 1) measures the work done.
    started, cpu = time.perf_counter(), time.process_time()
    old = generate_replies(model, tokenizer, prompts, tokens, args.old_batch, legacy=True)
    sync()
    old_s, old_cpu = time.perf_counter() - started, time.process_time() - cpu

    started, cpu = time.perf_counter(), time.process_time()
    merged = merged_for_evaluation(model)  # counted: the evaluator pays it once per job
    generate_replies(merged, tokenizer, prompts[:2], 4)
    sync()
    new = generate_replies(merged, tokenizer, prompts, tokens)
    sync()
    new_s, new_cpu = time.perf_counter() - started, time.process_time() - cpu

    same = sum(a == b for a, b in zip(old, new, strict=True))
    print(
        f"model={Path(args.model_dir).name} dtype={str(dtype).removeprefix('torch.')} "
        f"prompts={n} max_new_tokens={tokens} threads={torch.get_num_threads()}"
    )
    print(
        f"old: {old_s:.1f}s wall, {old_cpu:.1f}s cpu "
        f"(peft unmerged, generate, batch {args.old_batch})"
    )
    print(
        f"new: {new_s:.1f}s wall, {new_cpu:.1f}s cpu "
        "(merge + warm-up included, memory-sized batches)"
    )
    print(f"cpu-time speedup: {old_cpu / new_cpu:.2f}")
    print(f"identical replies: {same}/{n}")
    print(
        f"eval_speedup={old_s / new_s:.2f} prompts_per_s_old={n / old_s:.3f} "
        f"prompts_per_s_new={n / new_s:.3f} device={device.type}"
    )


if __name__ == "__main__":
    main()
