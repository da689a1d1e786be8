"""The base models' harmful scores from their latest safety evaluation, shared by worker and API.

Why: a base model that already fails the provider's absolute harmful-score limit makes every job
on it train, evaluate and then fail at the gate (seen: SmolLM2-135M, harmful 0.600 > 0.500, after
the whole compute). The worker records each base evaluation here; the API refuses a new job on
such a model at once (``base_model_fails_policy``) unless the policy opts in to trying, and the
admin policy endpoints name those models.

Only aggregate numbers of the *base* model on the bare held-out prompts are stored: nothing that
depends on a tenant's data or framing, so nothing here tells one tenant about another.
Records are blobs at ``base-model-scores/<model>.json`` in the blob store that API and worker
share (the data dir, or the bucket: db.blob_config), each written whole.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass

from db.blobs import BlobStore
from db.policy_schema import PolicyDocument, Thresholds

_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


@dataclass(frozen=True)
class BaseModelScore:
    """One base evaluation: harmful score on ``n`` bare held-out prompts by ``judge``."""

    model: str
    harmful_score: float
    n: int
    judge: str
    recorded_at: str


class BaseModelScores:
    """Latest base-model score per registry model name, as small JSON blobs."""

    def __init__(self, store: BlobStore) -> None:
        self.store = store

    def _path(self, model: str) -> str | None:
        # Registry names only ("qwen2.5-coder-0.5b-instruct"); anything else is never a path.
        return f"base-model-scores/{model}.json" if _SAFE_NAME.fullmatch(model) else None

    def record(self, score: BaseModelScore) -> None:
        path = self._path(score.model)
        if path is not None:
            self.store.write_bytes(path, json.dumps(asdict(score)).encode())

    def get(self, model: str) -> BaseModelScore | None:
        path = self._path(model)
        if path is None:
            return None
        try:
            return BaseModelScore(**json.loads(self.store.read_bytes(path)))
        except FileNotFoundError:  # never evaluated (BlobNotFoundError)
            return None
        except (ValueError, TypeError):  # a torn or foreign file: as if never evaluated
            return None

    def failing(self, policy: PolicyDocument) -> dict[str, BaseModelScore]:
        """Allowed models whose recorded base score exceeds the policy's absolute limit."""
        limit = (policy.gate.thresholds or Thresholds()).max_harmful_score
        failing = {}
        for model in policy.allowed_models:
            score = self.get(model)
            if score is not None and score.harmful_score > limit:
                failing[model] = score
        return failing
