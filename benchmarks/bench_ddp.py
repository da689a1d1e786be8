"""Data-parallel SAP throughput: tokens/s of the same global batches on 1, 2, ... processes.

Each count is a real worker launch (worker.distributed_launch: ``python -m torch.distributed.run
--standalone --nproc_per_node N -m worker.distributed_rank``), Gloo on the CPU, NCCL with one GPU
per rank on CUDA. The global batch is the same at every count (each rank takes its shard), so
the runs do the same work; tokens/s = global non-padding tokens / rank 0's step time (which
includes the reductions), over the steps after the warm-up. Random weights, real shapes: the
numbers are about speed only.

    .venv/bin/python benchmarks/bench_ddp.py                      # CPU: tiny shape, 1 vs 2
    .venv/bin/python benchmarks/bench_ddp.py --device cuda --shape 1b --processes 1,8 \\
        --batch 64x512 --steps 20                                 # 8 GPUs on one node

On the CPU every count shares the same cores (threads per rank = cores / processes): expect no
speed-up on a 2-core machine, only the cost of the reductions. The LAST line is exactly:
    tokens_per_s_p<N>=<n> ... speedup_p<max>=<ratio> device=<cpu|cuda> contended=<0|1>
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from transformers import LlamaConfig, LlamaForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_sap import SHAPES  # noqa: E402
from sap_core.callbacks import NullCallback  # noqa: E402
from sap_core.config import LoraConfig, OptimConfig, SapConfig, TrainConfig  # noqa: E402
from sap_core.data import EncodedExample, EncodedPair  # noqa: E402
from worker.distributed_launch import launch, write_spec  # noqa: E402


def _data(
    vocab: int, rows: int, length: int, pairs: int
) -> tuple[list[EncodedExample], list[EncodedPair]]:
    rng = random.Random(0)

    def seq(n: int, prompt: int) -> EncodedExample:
        ids = [rng.randrange(3, vocab) for _ in range(n)]
        return EncodedExample(ids, [-100] * prompt + ids[prompt:])

    train = [seq(length, length // 4) for _ in range(rows)]
    safety = []
    for _ in range(pairs):
        chosen, rejected = seq(length // 2, 16), seq(length // 2, 16)
        rejected = EncodedExample(
            chosen.input_ids[:16] + rejected.input_ids[16:], [-100] * 16 + rejected.input_ids[16:]
        )
        safety.append(EncodedPair(chosen, rejected, 16))
    return train, safety


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", default="tiny", choices=sorted(SHAPES))
    parser.add_argument("--batch", default="8x128", help="global rows x tokens per micro-batch")
    parser.add_argument("--processes", default="1,2", help="comma-separated process counts")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--sft", action="store_true", help="plain SFT instead of SAP")
    parser.add_argument(
        "--contended", action="store_true", help="mark the figures as taken on a busy machine"
    )
    args = parser.parse_args()
    rows, length = (int(x) for x in args.batch.split("x"))
    counts = [int(n) for n in args.processes.split(",")]
    shape = SHAPES[args.shape]
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="bench-ddp-") as tmp:
        root = Path(tmp)
        torch.manual_seed(0)
        dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
        config = LlamaConfig(**shape, max_position_embeddings=max(2048, length))
        model: Any = LlamaForCausalLM(config)
        model.to(dtype).save_pretrained(str(root / "model"))
        train, pairs = _data(shape["vocab_size"], rows * (args.steps + args.warmup), length, 64)
        figures: dict[int, float] = {}
        for n in counts:
            cfg = TrainConfig(
                model_path=str(root / "model"),
                output_dir=str(root / f"out-{n}"),
                lora=LoraConfig(r=8, alpha=16),
                optim=OptimConfig(lr=1e-4),
                sap=SapConfig(enabled=not args.sft, safety_batch_size=4),
                batch_size=rows,
                max_length=length,
                max_steps=args.steps + args.warmup,
                seed=0,
                device=args.device,
                dtype="bfloat16" if args.device == "cuda" else "float32",
                autocast=args.device == "cuda",
            )
            work = root / f"run-{n}"
            write_spec(
                work,
                config=cfg,
                examples=train,
                pairs=pairs,
                eval_examples=[],
                pad_id=0,
                resume_from=None,
            )
            threads = max(1, cores // n) if args.device == "cpu" else None
            result = launch(work, n, NullCallback(), threads_per_rank=threads)
            timed = result.history[args.warmup :]
            tokens = sum(h["tokens"] for h in timed)
            seconds = sum(h["step_time"] for h in timed)
            figures[n] = tokens / seconds
            print(
                f"processes={n} threads_per_rank={threads or '-'} steps={len(timed)} "
                f"tokens={tokens:.0f} seconds={seconds:.2f} tokens_per_s={figures[n]:.1f}",
                flush=True,
            )
    top = max(counts)
    speedup = figures[top] / figures[min(counts)]
    parts = [f"tokens_per_s_p{n}={figures[n]:.1f}" for n in counts]
    print(
        " ".join(parts)
        + f" speedup_p{top}={speedup:.2f} device={args.device} contended={int(args.contended)}"
    )


if __name__ == "__main__":
    main()
