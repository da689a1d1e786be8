"""Test-only fault injection: the worker dies (``os._exit(137)``, as after SIGKILL) at a named
point of a job, so tests/faults can prove that every point recovers.

``KEEL_FAULT_POINT=after_training`` kills the process the first time the job passes that point on
attempt ``KEEL_FAULT_ATTEMPT`` (default 1), so the resumed attempt runs through. Honoured only
when ``KEEL_ENV`` is ``testing`` or ``development``; in production the variable is ignored (and
logged once), so a stray setting can never take a real worker down.

Points: ``during_training`` (after the step ``KEEL_FAULT_STEP``, default 3),
``rank_during_training`` (rank ``KEEL_FAULT_RANK``, default 1, of a data-parallel job dies after
its step ``KEEL_FAULT_STEP``; ``maybe_kill_rank``),
``after_training`` (trained, adapter not yet saved), ``during_evaluation`` (at the first
evaluation progress line), ``before_publish`` (evaluated, nothing published),
``publish_uncommitted`` (inside the publish transaction: report and adapter rows written, not
committed).
With ``KEEL_FAULT_LOG`` set, the moment of death is appended there as a JSON line (the suite
measures recovery from it).
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

log = logging.getLogger("keel.faults")

POINTS = frozenset(
    {
        "during_training",
        "after_training",
        "during_evaluation",
        "before_publish",
        "publish_uncommitted",
        "rank_during_training",
    }
)
_ALLOWED_ENVS = frozenset({"testing", "development"})
EXIT_CODE = 137  # what a SIGKILLed process reports


def _armed(point: str, attempt: int) -> bool:
    wanted = os.environ.get("KEEL_FAULT_POINT")
    if not wanted or wanted != point:
        return False
    if os.environ.get("KEEL_ENV", "development") not in _ALLOWED_ENVS:
        log.warning("KEEL_FAULT_POINT is ignored outside testing/development")
        return False
    return attempt == int(os.environ.get("KEEL_FAULT_ATTEMPT", "1"))


def fault_step() -> int:
    return int(os.environ.get("KEEL_FAULT_STEP", "3"))


def maybe_die(point: str, attempt: int) -> None:
    """Exit the process at once (no cleanup, no finally blocks) if this point is armed."""
    if point not in POINTS:
        raise ValueError(f"unknown fault point {point!r}")
    if _armed(point, attempt):
        log.error("fault injection: dying at %s (attempt %d)", point, attempt)
        record = os.environ.get("KEEL_FAULT_LOG")
        if record:
            with open(record, "a") as handle:
                handle.write(json.dumps({"point": point, "attempt": attempt, "at": time.time()}))
                handle.write("\n")
        for handler in logging.getLogger().handlers:
            handler.flush()
        os._exit(EXIT_CODE)


def maybe_kill_rank(trainer: Any, rank: int, attempt: int) -> None:
    """Arm ``rank_during_training`` on this rank's trainer (worker.distributed_rank): the rank
    dies, as if killed, right after its optimizer step ``KEEL_FAULT_STEP``."""
    if rank != int(os.environ.get("KEEL_FAULT_RANK", "1")):
        return
    if not _armed("rank_during_training", attempt):
        return
    step_once = trainer.train_step

    def train_step(micro_batches: Any) -> Any:
        metrics = step_once(micro_batches)
        if trainer.step >= fault_step():
            maybe_die("rank_during_training", attempt)
        return metrics

    trainer.train_step = train_step
