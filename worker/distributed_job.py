"""A job's training step when its plan asks for n_processes > 1 (JobRecipe._train_distributed).

Everything that runs once stays in the worker: the mixer, the tokenisation before this, the
safety evaluation after it (on the worker's own copy of the base model plus the saved adapter).
Only the training loop runs as torchrun ranks (worker.distributed_launch); the worker answers
rank 0's callbacks with the job's DbProgressCallback, so heartbeats, progress events,
checkpoint rows and cancel / pause / shutdown / deadline behave as in a single-process job.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from sap_core import checkpoint as ckpt
from sap_core.batch import pad_id_of
from sap_core.callbacks import TrainingCallback
from sap_core.errors import SapError
from sap_core.trainer import ContrastivePair, TokenSequence, TrainResult
from worker.distributed_launch import launch, write_spec
from worker.job_spec import JobPlan


class NotEnoughDevices(SapError):
    code = "not_enough_devices"


class DistributedTraining:
    """The spec written for the ranks, the launch, and the adapter rank 0 saved."""

    def __init__(
        self,
        plan: JobPlan,
        work_dir: Path,
        *,
        examples: Sequence[TokenSequence],
        pairs: Sequence[ContrastivePair],
        eval_examples: Sequence[TokenSequence],
        tokenizer: Any,
        resume_from: Path | None,
        attempt: int,
    ) -> None:
        self.n_processes = plan.n_processes
        self.config = plan.train
        self.work_dir = work_dir
        self.on_gpu = plan.train.device.startswith("cuda")
        self.backend = "NCCL" if self.on_gpu else "Gloo"
        resume = resume_from if resume_from is not None and resume_from.exists() else None
        state = ckpt.load_json(resume / "state.json") if resume is not None else {}
        # What the worker says and charges to the deadline before the ranks load the checkpoint.
        self.resume_step: int | None = int(state["step"]) if resume is not None else None
        self.resume_history: list[dict[str, float]] = list(state.get("history", []))
        write_spec(
            work_dir,
            config=plan.train,
            examples=examples,
            pairs=pairs,
            eval_examples=eval_examples,
            pad_id=pad_id_of(tokenizer),
            resume_from=resume,
            attempt=attempt,
        )

    def train(self, callback: TrainingCallback, worker_model: Any) -> TrainResult:
        """Run the ranks to the end; the worker's model leaves the GPU meanwhile (the ranks
        each load their own copy, one per GPU)."""
        if self.on_gpu and torch.cuda.device_count() < self.n_processes:
            raise NotEnoughDevices(
                f"the job asks for {self.n_processes} processes (one GPU each) but this worker "
                f"has {torch.cuda.device_count()} GPU(s); lower hyperparameters.n_processes or "
                "run the job on a larger worker"
            )
        device = self.config.device
        if self.on_gpu and worker_model is not None:
            worker_model.to("cpu")
            torch.cuda.empty_cache()
        try:
            return launch(self.work_dir, self.n_processes, callback)
        finally:
            if self.on_gpu and worker_model is not None:
                worker_model.to(device)

    def copy_adapter(self, out_dir: Path) -> None:
        """The adapter rank 0 saved at the end of training, into the job's adapter dir."""
        out_dir.mkdir(parents=True, exist_ok=True)
        for name in ckpt.ADAPTER_FILES:
            shutil.copy2(self.work_dir / "adapter" / name, out_dir / name)
