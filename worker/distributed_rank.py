"""One rank of a data-parallel job: ``torchrun ... -m worker.distributed_rank <work_dir>``.

Reads ``<work_dir>/spec.json`` (written by worker.distributed_launch: the resolved TrainConfig,
the tokenised examples and safety pairs, the checkpoint to resume from), joins the process group
and trains. Rank 0 relays its callbacks to the worker (worker.distributed_bridge) and, at the end,
writes the adapter to ``<work_dir>/adapter`` and ``result.json``. A rank that stops on an
exception writes ``outcome-<rank>.json`` (the error's class, code and message) and exits 1, so
torchrun ends the group and the worker raises the same error; a rank that dies without one (killed,
out of memory) leaves no outcome, which the worker treats like a dead worker.

Nothing here touches the database: the worker does, through the callbacks it answers.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sap_core.config import TrainConfig
from sap_core.data import EncodedExample, EncodedPair
from sap_core.distributed import DistContext
from sap_core.errors import SapError
from sap_core.trainer import SafetyAwareTrainer, TrainResult
from worker.distributed_bridge import BridgeCallback
from worker.faults import maybe_kill_rank

log = logging.getLogger("keel.worker.rank")


@dataclass(frozen=True)
class _PadOnly:
    """The one thing the trainer asks of a tokenizer (the worker tokenised everything)."""

    pad_token_id: int


def _examples(rows: list[list[list[int]]]) -> list[EncodedExample]:
    return [EncodedExample(ids, labels) for ids, labels in rows]


def _pairs(rows: list[list[Any]]) -> list[EncodedPair]:
    return [
        EncodedPair(EncodedExample(*chosen), EncodedExample(*rejected), int(prompt))
        for chosen, rejected, prompt in rows
    ]


def train_rank(work_dir: Path) -> TrainResult:
    """This process's part of the run described by ``work_dir/spec.json``."""
    spec = json.loads((work_dir / "spec.json").read_text())
    config = TrainConfig.from_dict(spec["config"])
    device_type = "cuda" if config.device.startswith("cuda") else "cpu"
    dist = DistContext.from_env(device_type)
    if device_type == "cuda":
        config.device = f"cuda:{dist.local_rank}"  # one GPU per rank on this node
    bridge = BridgeCallback.from_env() if dist.is_main else None
    try:
        trainer = SafetyAwareTrainer(
            config,
            _examples(spec["examples"]),
            _pairs(spec["pairs"]),
            bridge,
            eval_examples=_examples(spec["eval_examples"]),
            tokenizer=_PadOnly(int(spec["pad_id"])),
            dist=dist,
        )
        trainer.setup()
        if spec.get("resume_from"):
            trainer.resume_from(spec["resume_from"])
        maybe_kill_rank(trainer, dist.rank, int(spec.get("attempt", 1)))
        result = trainer.train()
        trainer.save_adapter(work_dir / "adapter")
        if dist.is_main:
            payload = {
                "steps": result.steps,
                "final_metrics": result.final_metrics,
                "history": result.history,
            }
            (work_dir / "result.json.tmp").write_text(json.dumps(payload))
            (work_dir / "result.json.tmp").replace(work_dir / "result.json")
        dist.barrier()  # no rank leaves (and tears the group down) before rank 0 has written
        trainer.cleanup()
        return result
    finally:
        if bridge is not None:
            bridge.close()


def _write_outcome(work_dir: Path, rank: int, exc: BaseException) -> None:
    outcome = {
        "type": type(exc).__name__,
        "code": getattr(exc, "code", "internal_error") if isinstance(exc, SapError) else None,
        "reason": getattr(exc, "reason", None),
        "message": str(exc),
        "traceback": traceback.format_exc(limit=8),
    }
    path = work_dir / f"outcome-{rank}.json"
    path.with_suffix(".tmp").write_text(json.dumps(outcome))
    path.with_suffix(".tmp").replace(path)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s rank %(name)s %(message)s")
    work_dir = Path(argv[0])
    rank = int(os.environ.get("RANK", "0"))
    try:
        train_rank(work_dir)
    except BaseException as exc:  # noqa: BLE001 - reported to the worker, then the group ends
        _write_outcome(work_dir, rank, exc)
        log.error("rank %d stopped: %s: %s", rank, type(exc).__name__, exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
