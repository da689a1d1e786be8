"""GPU checks of the SAP trainer (`make test-gpu`; deselected on CPU by `-m "not gpu"`).

Tiny random model (plumbing and numerics only): bf16 weights with autocast on CUDA, the same
properties the CPU suite checks in fp32.
"""

from __future__ import annotations

import math

import pytest
import torch

from sap_core.config import SapConfig
from tests.sap_core.test_trainer import all_equal, lora_tensors, make_trainer

pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def _needs_cuda() -> None:
    if not torch.cuda.is_available():
        pytest.fail("make test-gpu needs a CUDA device")


def test_sap_trains_in_bf16_on_cuda_and_keeps_base_weights() -> None:
    trainer = make_trainer(SapConfig(rho=1e-2), device="cuda", dtype=torch.bfloat16, autocast=True)
    base = {
        n: p.detach().clone()
        for n, p in trainer.model.named_parameters()  # type: ignore[union-attr]
        if "lora_" not in n
    }
    before = lora_tensors(trainer)
    result = trainer.train()
    assert all(math.isfinite(row["task_loss"]) for row in result.history)
    assert not all_equal(before, lora_tensors(trainer))
    for name, param in trainer.model.named_parameters():  # type: ignore[union-attr]
        if name in base:
            assert torch.equal(param, base[name]), name


def test_rho_zero_reproduces_sft_on_cuda() -> None:
    sft = make_trainer(SapConfig(enabled=False), device="cuda")
    sft.train()
    sap = make_trainer(SapConfig(rho=0.0), device="cuda")
    sap.train()
    assert all_equal(lora_tensors(sft), lora_tensors(sap))
