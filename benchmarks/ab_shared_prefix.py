"""The decoder with and without shared-prefix prefill, one process, same prompts, ABBA order.

Base Qwen2.5-Coder-0.5B, fp32, 1 torch thread (process CPU seconds are then the work done, even on
a shared machine), 48 prompts (36 held-out harmful, 12 look-alikes), 40 new tokens. Run:

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ab_shared_prefix.py

The last line: identical replies, and the CPU-time ratio without / with the shared prefix.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from sap_core.evaluation import decoding
from sap_core.evaluation.benign_prompts import benign_prompts
from sap_core.evaluation.generation import generate_replies
from sap_core.safety.corpus import load_eval_prompts

MODEL = Path(__file__).resolve().parents[1] / "var" / "models" / "qwen2.5-coder-0.5b-instruct"


def main() -> None:
    torch.set_num_threads(1)
    tokenizer = AutoTokenizer.from_pretrained(MODEL, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(
        MODEL, use_safetensors=True, local_files_only=True, dtype=torch.float32
    ).eval()
    prompts = [p.text for p in load_eval_prompts(36, 0)] + benign_prompts(12, 0)
    generate_replies(model, tokenizer, prompts[:2], 4)  # warm-up, untimed
    shared = decoding.shared_prefix_length
    cpu: dict[str, float] = {"prefix": 0.0, "no_prefix": 0.0}
    replies: dict[str, list[str]] = {}
    for arm in ("prefix", "no_prefix", "no_prefix", "prefix"):  # ABBA: drift cancels
        decoding.shared_prefix_length = shared if arm == "prefix" else (lambda batch: 0)
        wall, started = time.perf_counter(), time.process_time()
        replies[arm] = generate_replies(model, tokenizer, prompts, 40)
        spent = time.process_time() - started
        cpu[arm] += spent / 2
        print(f"{arm}: {time.perf_counter() - wall:.1f}s wall, {spent:.1f}s cpu", flush=True)
    decoding.shared_prefix_length = shared
    same = sum(a == b for a, b in zip(replies["prefix"], replies["no_prefix"], strict=True))
    print(
        f"identical={same}/{len(prompts)} cpu_prefix={cpu['prefix']:.1f} "
        f"cpu_no_prefix={cpu['no_prefix']:.1f} "
        f"cpu_ratio_no_prefix_over_prefix={cpu['no_prefix'] / cpu['prefix']:.3f}"
    )


if __name__ == "__main__":
    main()
