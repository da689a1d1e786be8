"""Checkpoints: resume is bit-identical, files are safe and atomic, the adapter is probe-free."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file

from sap_core import checkpoint as ckpt
from sap_core.config import SapConfig, TrainConfig
from tests.sap_core.test_trainer import all_equal, lora_tensors, make_model, make_trainer

torch.set_num_threads(1)

RESUME_CASES = {
    "sft": SapConfig(enabled=False),
    "exact": SapConfig(rho=0.05, probe_step_size=0.5, direction_refresh_every=2),
    "lagged_adam": SapConfig(
        rho=0.05,
        probe_step_size=0.05,
        probe_step_rule="adam_persistent",
        lagged_probe=True,
        direction_refresh_every=2,
    ),
}


@pytest.mark.parametrize("case", sorted(RESUME_CASES))
def test_resume_gives_bit_identical_weights(case: str, tmp_path: Path) -> None:
    """Checkpoint at step 3 of 5 (odd: mid refresh interval), resume, finish == uninterrupted."""
    sap = RESUME_CASES[case]
    full = make_trainer(sap, tmp_path / "full", max_steps=5, dropout=0.1)
    full.train()

    first = make_trainer(sap, tmp_path / "split", max_steps=5, dropout=0.1, checkpoint_every=3)
    first.total_steps = 3  # stop early, as a crash after the step-3 checkpoint would
    first.train()
    saved = tmp_path / "split" / "checkpoints" / "step-00000003"
    assert saved.is_dir()

    resumed = make_trainer(sap, tmp_path / "resumed", max_steps=5, dropout=0.1)
    resumed.resume_from(saved)
    assert resumed.step == 3
    resumed.train()
    assert all_equal(lora_tensors(resumed), lora_tensors(full))
    assert len(resumed.history) == 5


def test_checkpoint_layout_config_and_no_temp_dirs(tmp_path: Path) -> None:
    trainer = make_trainer(SapConfig(rho=0.05), tmp_path, max_steps=2, checkpoint_every=1)
    trainer.train()
    root = tmp_path / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["step-00000001", "step-00000002"]
    step = root / "step-00000002"
    assert sorted(p.name for p in step.iterdir()) == [
        "adapter",
        "config.json",
        "optimizer.pt",
        "state.json",
        "tensors.safetensors",
    ]
    assert sorted(p.name for p in (step / "adapter").iterdir()) == sorted(ckpt.ADAPTER_FILES)
    config = TrainConfig.from_dict(json.loads((step / "config.json").read_text()))
    assert config == trainer.config
    state = json.loads((step / "state.json").read_text())
    assert state["step"] == 2
    assert ckpt.latest_checkpoint(tmp_path) == step
    tensors = load_file(str(step / "tensors.safetensors"))
    assert "rng_cpu" in tensors
    assert any(k.startswith("g_hat.") for k in tensors)


def test_saved_adapter_has_only_lora_tensors_and_reloads_in_peft(tmp_path: Path) -> None:
    """T-SAP-5: no probe tensors in the adapter; a fresh base + adapter gives the same logits."""
    trainer = make_trainer(SapConfig(rho=0.05, probe_step_size=0.5), max_steps=2)
    trainer.train()
    out = trainer.save_adapter(tmp_path / "adapter")
    assert sorted(p.name for p in out.iterdir()) == sorted(ckpt.ADAPTER_FILES)
    weights = load_file(str(out / "adapter_model.safetensors"))
    assert weights
    assert all("lora_" in k for k in weights)
    assert trainer.model is not None
    trainer.model.eval()
    ids = torch.randint(3, 64, (2, 6))
    with torch.no_grad():
        expected = trainer.model(input_ids=ids).logits
        reloaded = PeftModel.from_pretrained(make_model(), str(out)).eval()
        got = reloaded(input_ids=ids).logits
    assert torch.allclose(got, expected, atol=1e-6)


def test_write_atomically_leaves_nothing_on_failure(tmp_path: Path) -> None:
    def boom(tmp: Path) -> None:
        (tmp / "partial.txt").write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        ckpt.write_atomically(tmp_path / "step-00000001", boom)
    assert list(tmp_path.iterdir()) == []


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("pickled code ran",))


def test_state_dict_loading_refuses_pickled_objects(tmp_path: Path) -> None:
    path = tmp_path / "optimizer.pt"
    torch.save({"state": _Evil()}, str(path))
    with pytest.raises(Exception, match="(?i)weights_only|unsupported|global"):
        ckpt.load_state_dict(path)
    ckpt.save_state_dict(path, {"state": {0: {"step": torch.tensor(1.0)}}, "param_groups": []})
    assert ckpt.load_state_dict(path)["state"][0]["step"].item() == 1.0
