"""DbProgressCallback: turns trainer steps into heartbeats, events and checkpoint rows."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, OperationalError

from db.blobs import BlobStore, LocalBlobStore
from db.repositories.checkpoints import CheckpointRepository
from db.repositories.events import EventRepository
from db.repositories.jobs import JobRepository
from db.session import session_scope
from sap_core.callbacks import StopRequest
from sap_core.sap_strength import SapStrengthMonitor
from worker.faults import fault_step, maybe_die
from worker.shutdown import GracefulShutdown

T = TypeVar("T")

log = logging.getLogger("keel.worker")


class LeaseLostError(RuntimeError):
    """Another worker holds the job now (our fencing token is stale): stop without writing."""


class DbProgressCallback:
    """Writes progress to Postgres in short transactions; never holds a session across training.

    A background thread heartbeats every `heartbeat_seconds` for the whole job (model loading,
    training steps longer than the lease, evaluation), so the lease expresses "this process is
    alive". A SIGKILLed worker stops heartbeating at once and the reaper takes the job back.

    Checkpoints: besides the policy's every-n-steps, the trainer is asked for one when
    `checkpoint_every_seconds` have passed since the last (so a dead worker loses at most that
    much training, even in a job with fewer steps than n) and at the last step (so a worker that
    dies after training resumes straight into saving and evaluation). Every event written here
    carries `data.attempt`, the claim it belongs to, so a resumed attempt's events are told apart.
    """

    def __init__(
        self,
        job_id: str,
        tenant_id: str,
        token: int,
        *,
        lease_seconds: int,
        heartbeat_seconds: float,
        event_every: int = 10,
        data_dir: Path,
        attempt: int = 1,
        checkpoint_every_seconds: float | None = None,
        db_retry_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        store: BlobStore | None = None,
    ) -> None:
        self.job_id = job_id
        self.tenant_id = tenant_id
        self.token = token
        self.lease_seconds = lease_seconds
        self.heartbeat_seconds = heartbeat_seconds
        self.event_every = event_every
        self.data_dir = data_dir
        # Where checkpoints are stored for a successor to resume from (the data dir itself by
        # default: nothing to copy).
        self.store = store if store is not None else LocalBlobStore(data_dir)
        self._progress: dict[str, object] = {"phase": "starting"}
        self._stop: StopRequest | None = None
        self._lease_lost = False
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None
        self.total_steps = 0
        self.attempt = attempt
        self.checkpoint_every_seconds = checkpoint_every_seconds
        self.db_retry_seconds = db_retry_seconds
        self.clock = clock
        self.shutdown: GracefulShutdown | None = None
        self._step = 0
        self._last_checkpoint_step: int | None = None
        self._last_checkpoint_at = clock()
        # Every step's probe_rel_norm / sap_correction goes through this: one warning event when
        # SAP stays below its floor, and the summary line of the safety report.
        self.sap_strength = SapStrengthMonitor()

    # --- lease keeping ------------------------------------------------------------------------
    def start(self) -> None:
        self._beat()
        self._thread = threading.Thread(
            target=self._run, name=f"heartbeat-{self.job_id}", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._halt.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._halt.wait(self.heartbeat_seconds):
            try:
                self._beat()
            except Exception:  # a DB blip: the next beat retries well inside the lease
                log.exception("heartbeat for %s failed", self.job_id)

    def _beat(self) -> None:
        with session_scope() as session:
            state = JobRepository(session).heartbeat(
                self.job_id, self.token, self.lease_seconds, dict(self._progress)
            )
        if state is None:
            self._lease_lost = True
            self._halt.set()
        elif state.cancel_requested:
            self._stop = "cancel"
        elif state.pause_requested:
            self._stop = "pause"

    @property
    def phase(self) -> object:
        return self._progress.get("phase")

    def _retrying(self, write: Callable[[], T]) -> T:
        """Run a short write, retrying while the database is unreachable (a restart, a
        failover) for up to `db_retry_seconds`: a blip must not fail a job that is training."""
        deadline = self.clock() + self.db_retry_seconds
        delay = 0.25
        while True:
            try:
                return write()
            except DBAPIError as exc:
                transient = isinstance(exc, OperationalError) or exc.connection_invalidated
                if not transient or self.clock() >= deadline:
                    raise
                log.warning("job %s: database unavailable, retrying a write", self.job_id)
                time.sleep(delay)
                delay = min(2.0, delay * 2)

    def heartbeat(self, progress: dict[str, object] | None = None, *, force: bool = False) -> None:
        """Record progress for the next beat; raise if another worker now owns the job."""
        if progress is not None:
            self._progress = {**self._progress, **progress}
            if self.shutdown is not None and "phase" in progress:
                self.shutdown.check(progress["phase"])
        if force:
            self._beat()
        if self._lease_lost:
            raise LeaseLostError(self.job_id)

    def event(
        self,
        message: str,
        *,
        type: str = "message",
        data: dict[str, object] | None = None,
        level: str = "info",
    ) -> None:
        if self._lease_lost:
            raise LeaseLostError(self.job_id)

        def write() -> None:
            with session_scope() as session:
                EventRepository(session).append(
                    self.job_id,
                    self.tenant_id,
                    message,
                    level=level,
                    type=type,
                    data=data,
                    attempt=self.attempt,
                )

        self._retrying(write)

    # --- sap_core.callbacks.TrainingCallback -------------------------------------------------
    def on_train_start(self, total_steps: int) -> None:
        self.total_steps = total_steps
        self._last_checkpoint_at = self.clock()
        self.heartbeat({"phase": "training", "step": 0, "total_steps": total_steps}, force=True)

    def on_step(self, step: int, total_steps: int, metrics: dict[str, float]) -> None:
        self._step = step
        self.heartbeat({"phase": "training", "step": step, "total_steps": total_steps})
        if step == fault_step():
            maybe_die("during_training", self.attempt)
        warning = self.sap_strength.observe(metrics)
        if warning is not None:
            self.event(
                warning,
                type="sap_strength",
                level="warn",
                data={"step": step, "floor": self.sap_strength.floor},
            )
        if step % self.event_every == 0 or step == total_steps or step == 1:
            shown = ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items()))
            self.event(
                f"Step {step}/{total_steps}: {shown}",
                type="metrics",
                data={"step": step, "total_steps": total_steps, **metrics},
            )

    def on_checkpoint(self, step: int, path: Path) -> None:
        if self._lease_lost:
            raise LeaseLostError(self.job_id)
        relative = Path(path).resolve().relative_to(self.data_dir.resolve()).as_posix()
        # Stored completely before its row exists: a successor only ever resumes from a
        # checkpoint that is all there.
        self.store.put_tree(Path(path), relative)

        def write() -> None:
            with session_scope() as session:
                checkpoint = CheckpointRepository(session).add(
                    job_id=self.job_id,
                    tenant_id=self.tenant_id,
                    step_number=step,
                    storage_path=relative,
                    metrics={},
                    fencing_token=self.token,
                )
                EventRepository(session).append(
                    self.job_id,
                    self.tenant_id,
                    f"Checkpoint saved at step {step}",
                    type="checkpoint",
                    data={"step": step, "checkpoint_id": checkpoint.id},
                    attempt=self.attempt,
                )

        self._retrying(write)
        self._last_checkpoint_step = step
        self._last_checkpoint_at = self.clock()

    def should_stop(self) -> StopRequest | None:
        self.heartbeat()
        if self._stop is not None:
            return self._stop
        if self.shutdown is not None and self.shutdown.requested:
            return "shutdown"
        if self._step == self._last_checkpoint_step:
            return None
        if self.total_steps and self._step >= self.total_steps:
            return "checkpoint"  # the last step: a death after training resumes into saving
        interval = self.checkpoint_every_seconds
        if interval is not None and self.clock() - self._last_checkpoint_at >= interval:
            return "checkpoint"
        return None
