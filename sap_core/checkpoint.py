"""Resumable training checkpoints, written atomically, with no unsafe pickles.

Layout of `<output_dir>/checkpoints/step-00000010/`::

    adapter/adapter_config.json, adapter/adapter_model.safetensors   (peft save_pretrained)
    optimizer.pt            torch.save(optimizer.state_dict()), loaded with weights_only=True
    probe_optimizer.pt      only for probe_step_rule="adam_persistent"
    tensors.safetensors     RNG states (uint8) + cached safety direction + lagged probe vectors
    state.json              step, data/safety stream positions, scheduler state, python RNG
    config.json             the resolved TrainConfig

Everything is written into a sibling temp directory first and renamed into place, so a crash never
leaves a half-written checkpoint under the final name.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def checkpoint_dir_name(step: int) -> str:
    """`step-00000010` for step 10 (zero-padded so names sort by step)."""
    return f"step-{step:08d}"


def write_atomically(final_dir: Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp_dir)`, then rename tmp_dir to final_dir (replacing an older one)."""
    final_dir = Path(final_dir)
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{final_dir.name}.tmp-", dir=final_dir.parent))
    try:
        write(tmp_dir)
        if final_dir.exists():
            shutil.rmtree(final_dir)
        os.replace(tmp_dir, final_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    return final_dir


def save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """safetensors file of contiguous CPU tensors (an empty dict writes a valid empty file)."""
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path))


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Inverse of `save_tensors`."""
    return load_file(str(path))


def save_json(path: Path, data: dict[str, Any]) -> None:
    """Pretty JSON with sorted keys (stable diffs)."""
    path.write_text(json.dumps(data, indent=2, sort_keys=True))


def load_json(path: Path) -> dict[str, Any]:
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path} does not hold a JSON object")
    return data


def save_state_dict(path: Path, state: dict[str, Any]) -> None:
    """torch.save for optimizer state dicts (tensors + plain containers only)."""
    torch.save(state, str(path))


def load_state_dict(path: Path) -> dict[str, Any]:
    """torch.load with weights_only=True: refuses arbitrary pickled objects."""
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state dict")
    return state


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The highest-step complete checkpoint under `<output_dir>/checkpoints`, or None."""
    root = Path(output_dir) / "checkpoints"
    if not root.is_dir():
        return None
    done = sorted(p for p in root.iterdir() if p.name.startswith("step-") and p.is_dir())
    return done[-1] if done else None
