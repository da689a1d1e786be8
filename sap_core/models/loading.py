"""Load a local Hugging Face safetensors directory (never a hub name, never remote code)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from sap_core.errors import ModelRegistryError


def _check_dir(path: Path) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise ModelRegistryError(f"model path {path} is not a local directory")
    if not any(path.glob("*.safetensors")):
        raise ModelRegistryError(f"{path} holds no .safetensors weights (pickles are refused)")
    return path


def load_tokenizer(path: Path, *, padding_side: str = "right") -> Any:
    """The tokenizer of a local model directory, with a pad token (eos when none is set).

    Args:
        path: Local directory with tokenizer files.
        padding_side: "right" for training, "left" for batched generation.
    """
    from transformers import AutoTokenizer

    if padding_side not in ("left", "right"):
        raise ModelRegistryError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    tokenizer = AutoTokenizer.from_pretrained(
        str(path), trust_remote_code=False, local_files_only=True
    )
    if tokenizer.pad_token is None:
        # pad == eos is safe because padding is masked by attention mask, never by id (bug B3).
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = padding_side
    return tokenizer


def load_model_and_tokenizer(
    path: Path,
    *,
    dtype: torch.dtype = torch.float32,
    device: str = "cpu",
    padding_side: str = "right",
) -> tuple[Any, Any]:
    """Load (model, tokenizer) from a local safetensors HF directory.

    Args:
        path: A directory written by ``pull_model`` or any local HF safetensors directory.
        dtype: Weight dtype (float32 on CPU; bfloat16 is fine on GPU).
        device: Torch device string.
        padding_side: Tokenizer padding side.

    Raises:
        ModelRegistryError: Not a directory or no safetensors weights.
    """
    from transformers import AutoModelForCausalLM

    path = _check_dir(path)
    tokenizer = load_tokenizer(path, padding_side=padding_side)
    model: Any = AutoModelForCausalLM.from_pretrained(
        str(path),
        dtype=dtype,
        use_safetensors=True,
        trust_remote_code=False,
        local_files_only=True,
    )
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    model.to(device)
    return model, tokenizer
