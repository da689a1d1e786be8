"""The job as the worker holds it once claimed: ids, fencing token, stored spec, file paths.

Its own module so that the runner (which claims) and publish (which writes the outcome) both
import it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ClaimedJob:
    id: str
    tenant_id: str
    model: str
    token: int
    attempts: int
    # Storage paths (db.blobs): the worker fetches them into its data dir before training.
    training_storage_path: str
    validation_storage_path: str | None
    hyperparameters: dict[str, Any]
    safety: dict[str, Any]
    seed: int
    suffix: str | None
