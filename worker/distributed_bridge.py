"""Rank 0's training callbacks, relayed over a local socket to the worker that launched it.

The worker keeps its one DbProgressCallback (heartbeat thread, lease, cancel/pause flags, the
shutdown signal, the training deadline): rank 0 of a torchrun group calls `BridgeCallback`, which
forwards each call and waits for the worker's answer, so progress, checkpoints and stop requests
behave exactly as in a single-process job. Other ranks report nothing (sap_core's trainer gives
them a NullCallback); rank 0 broadcasts the stop decision to them.

Messages are tuples ``(method, *args)``; the answer is ``("ok", value)``. When the worker's
callback raises (lease lost, shutdown) the worker ends the whole group instead of answering:
rank 0 then sees the connection close and stops.
"""

from __future__ import annotations

import os
from multiprocessing.connection import Client, Connection
from pathlib import Path
from typing import Any

from sap_core.callbacks import StopRequest, TrainingCallback

BRIDGE_ENV = "KEEL_DDP_BRIDGE"
AUTHKEY_ENV = "KEEL_DDP_AUTHKEY"


class BridgeCallback:
    """TrainingCallback for rank 0: every call is a round trip to the worker."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    @classmethod
    def from_env(cls) -> BridgeCallback | None:
        """Connect to the worker named in the environment (None when launched without one)."""
        address = os.environ.get(BRIDGE_ENV)
        if not address:
            return None
        return cls(Client(address, "AF_UNIX", authkey=bytes.fromhex(os.environ[AUTHKEY_ENV])))

    def _call(self, *message: Any) -> Any:
        self._conn.send(message)
        status, value = self._conn.recv()
        if status != "ok":  # pragma: no cover - the worker only ever answers "ok"
            raise RuntimeError(f"worker answered {status!r} to {message[0]}")
        return value

    def on_train_start(self, total_steps: int) -> None:
        self._call("on_train_start", total_steps)

    def on_step(self, step: int, total_steps: int, metrics: dict[str, float]) -> None:
        self._call("on_step", step, total_steps, dict(metrics))

    def on_checkpoint(self, step: int, path: Path) -> None:
        self._call("on_checkpoint", step, str(path))

    def should_stop(self) -> StopRequest | None:
        value: StopRequest | None = self._call("should_stop")
        return value

    def close(self) -> None:
        self._conn.close()


def answer(callback: TrainingCallback, message: tuple[Any, ...]) -> tuple[str, Any]:
    """The worker's side: call ``callback`` as rank 0 asked; exceptions propagate."""
    method, *args = message
    if method == "on_train_start":
        callback.on_train_start(int(args[0]))
        return ("ok", None)
    if method == "on_step":
        callback.on_step(int(args[0]), int(args[1]), dict(args[2]))
        return ("ok", None)
    if method == "on_checkpoint":
        callback.on_checkpoint(int(args[0]), Path(args[1]))
        return ("ok", None)
    if method == "should_stop":
        return ("ok", callback.should_stop())
    raise ValueError(f"unknown bridge message {method!r}")
