"""Run one job's training as a torchrun group of n_processes ranks, from the worker.

The worker has done everything that runs once (model check, corpus, mixer, tokenisation); this
module writes that to ``<work_dir>/spec.json``, starts::

    python -m torch.distributed.run --standalone --nproc_per_node N -m worker.distributed_rank DIR

(Gloo on CPU, NCCL with one GPU per rank), and answers rank 0's callbacks with the worker's own
(worker.distributed_bridge) until the group exits. Then:

- ``result.json`` (rank 0, after writing ``adapter/``): the run's TrainResult;
- an ``outcome-<rank>.json`` of a rank that stopped on an error: that error, raised here as it
  would be in a single-process job (cancel, pause, deadline, divergence, a crash);
- neither (a rank was killed, ran out of memory, its peers saw it vanish): `RankLost`, which the
  runner treats like a dead worker: the job is queued again and resumes from its last checkpoint.

Single node only (``--standalone``); docs/architecture.md says how a multi-node group is started.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from multiprocessing.connection import Client, Connection, Listener
from pathlib import Path
from typing import Any

from sap_core import errors as sap_errors
from sap_core.callbacks import TrainingCallback
from sap_core.config import TrainConfig
from sap_core.trainer import ContrastivePair, TokenSequence, TrainResult
from worker.distributed_bridge import AUTHKEY_ENV, BRIDGE_ENV, answer

log = logging.getLogger("keel.worker.distributed")

# Seconds between looks at the group while no message comes.
POLL_SECONDS = 0.2
# Seconds the group gets to stop after SIGTERM before SIGKILL.
TERMINATE_GRACE_SECONDS = 10.0
# Outcome written by a rank whose collective failed because a peer vanished: not its own error.
PEER_LOST = "PeerLost"


class RankLost(RuntimeError):
    """A rank died without reporting an error: handled like a dead worker (resume)."""


def write_spec(
    work_dir: Path,
    *,
    config: TrainConfig,
    examples: Sequence[TokenSequence],
    pairs: Sequence[ContrastivePair],
    eval_examples: Sequence[TokenSequence],
    pad_id: int,
    resume_from: Path | None,
    attempt: int = 1,
) -> Path:
    """Everything a rank needs, as JSON (token ids only: no pickles cross the process line)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("result.json", "adapter", *(p.name for p in work_dir.glob("outcome-*.json"))):
        path = work_dir / stale
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)

    def seq(s: TokenSequence) -> list[list[int]]:
        return [list(s.input_ids), list(s.labels)]

    spec = {
        "config": config.to_dict(),
        "examples": [seq(e) for e in examples],
        "pairs": [
            [seq(p.chosen), seq(p.rejected), int(getattr(p, "prompt_length", 0))] for p in pairs
        ],
        "eval_examples": [seq(e) for e in eval_examples],
        "pad_id": pad_id,
        "resume_from": str(resume_from) if resume_from is not None else None,
        "attempt": attempt,
    }
    path = work_dir / "spec.json"
    path.write_text(json.dumps(spec))
    return path


def torchrun_command(n_processes: int, work_dir: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(n_processes),
        "--max_restarts",
        "0",  # a dead rank ends the group; the job's own resume path takes over
        "--monitor_interval",
        "0.5",
        "-m",
        "worker.distributed_rank",
        str(work_dir),
    ]


def launch(
    work_dir: Path,
    n_processes: int,
    callback: TrainingCallback,
    *,
    threads_per_rank: int | None = None,
    env: dict[str, str] | None = None,
) -> TrainResult:
    """Train the spec in ``work_dir`` with ``n_processes`` ranks; rank 0 reports to ``callback``.

    Raises:
        RankLost: a rank died without an error of its own.
        SapError (and subclasses), RuntimeError: the error a rank stopped on.
        Whatever ``callback`` raised (the group is ended first).
    """
    sock_dir = Path(tempfile.mkdtemp(prefix="keel-ddp-"))
    address = str(sock_dir / "bridge")
    authkey = secrets.token_bytes(16)
    listener = Listener(address, "AF_UNIX", authkey=authkey)
    threads = threads_per_rank or max(1, (os.cpu_count() or 1) // n_processes)
    child_env = {
        **os.environ,
        **(env or {}),
        BRIDGE_ENV: address,
        AUTHKEY_ENV: authkey.hex(),
        "OMP_NUM_THREADS": str(threads),
    }
    log_path = work_dir / "torchrun.log"
    accepted: list[Connection] = []
    acceptor = threading.Thread(
        target=lambda: _accept(listener, accepted), name="ddp-bridge", daemon=True
    )
    acceptor.start()
    with log_path.open("ab") as log_file:
        proc = subprocess.Popen(
            torchrun_command(n_processes, work_dir),
            env=child_env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: ended as a whole
        )
    try:
        _relay(proc, accepted, callback)
    except BaseException:
        _end_group(proc)
        raise
    finally:
        if not accepted:  # unblock the acceptor thread
            try:
                Client(address, "AF_UNIX", authkey=authkey).close()
            except OSError:
                pass
        acceptor.join(timeout=5)
        for conn in accepted:
            conn.close()
        listener.close()
        shutil.rmtree(sock_dir, ignore_errors=True)
    return _result(work_dir, proc.returncode, log_path)


def _accept(listener: Listener, box: list[Connection]) -> None:
    try:
        box.append(listener.accept())
    except OSError:  # closed while waiting
        pass


def _relay(proc: subprocess.Popen[bytes], accepted: list[Connection], callback: Any) -> None:
    """Answer rank 0 until the group exits (callback errors propagate)."""
    conn: Connection | None = None
    while proc.poll() is None:
        if conn is None:
            if not accepted:
                time.sleep(POLL_SECONDS)
                continue
            conn = accepted[0]
        try:
            if not conn.poll(POLL_SECONDS):
                continue
            message = conn.recv()
        except (EOFError, OSError):
            # Rank 0 is done with the bridge (or gone): wait for the group to exit.
            time.sleep(POLL_SECONDS)
            continue
        reply = answer(callback, message)
        try:
            conn.send(reply)
        except OSError:
            continue


def _end_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to torchrun's process group (it ends its ranks), then SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=TERMINATE_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


def _result(work_dir: Path, returncode: int, log_path: Path) -> TrainResult:
    result = work_dir / "result.json"
    if returncode == 0 and result.is_file():
        data = json.loads(result.read_text())
        return TrainResult(
            steps=int(data["steps"]),
            final_metrics=dict(data["final_metrics"]),
            history=list(data["history"]),
        )
    outcomes = sorted(work_dir.glob("outcome-*.json"), key=lambda p: int(p.stem.rsplit("-", 1)[1]))
    for path in outcomes:
        outcome = json.loads(path.read_text())
        if outcome["type"] != PEER_LOST:
            raise _as_error(outcome)
    tail = log_path.read_text(errors="replace")[-2000:] if log_path.is_file() else ""
    log.warning("torchrun group exited %s with no rank error; log tail:\n%s", returncode, tail)
    raise RankLost(
        f"a training process died (torchrun exit code {returncode}); "
        "the job resumes from its last checkpoint"
    )


def _as_error(outcome: dict[str, Any]) -> BaseException:
    """A rank's error as the exception a single-process job would have raised."""
    name, message = outcome["type"], outcome["message"]
    if name == "TrainingCancelled":
        return sap_errors.TrainingCancelled(outcome.get("reason") or "cancel")
    cls = getattr(sap_errors, name, None)
    if isinstance(cls, type) and issubclass(cls, sap_errors.SapError):
        return cls(message)
    if outcome.get("code"):
        error = sap_errors.SapError(message)
        error.code = str(outcome["code"])
        return error
    return RuntimeError(f"a training process crashed: {name}: {message}")
