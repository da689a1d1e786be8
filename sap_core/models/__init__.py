"""Model registry (models.yaml, pull + verify + safetensors cache) and local loading."""

from sap_core.models.loading import load_model_and_tokenizer, load_tokenizer
from sap_core.models.registry import (
    ModelSpec,
    load_registry,
    pull_model,
    resolve_model,
    verify_cached_model,
)

__all__ = [
    "ModelSpec",
    "load_model_and_tokenizer",
    "load_registry",
    "load_tokenizer",
    "pull_model",
    "resolve_model",
    "verify_cached_model",
]
