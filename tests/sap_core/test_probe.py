"""ResidualProbe on tiny real-architecture models (T-SAP-4, B9)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn
from transformers import (
    GemmaConfig,
    GemmaForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from sap_core.errors import ConfigError
from sap_core.probe import ResidualProbe, default_probe_layers, find_decoder_layers

torch.set_num_threads(1)

HIDDEN = 16
SIZES: dict[str, Any] = {
    "vocab_size": 48,
    "hidden_size": HIDDEN,
    "intermediate_size": 32,
    "num_hidden_layers": 4,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "head_dim": 8,
}


def tiny(arch: str) -> nn.Module:
    torch.manual_seed(0)
    if arch == "llama":
        return LlamaForCausalLM(LlamaConfig(**SIZES)).eval()
    if arch == "qwen2":
        return Qwen2ForCausalLM(Qwen2Config(**SIZES)).eval()
    return GemmaForCausalLM(GemmaConfig(**SIZES)).eval()


def layer_outputs(model: nn.Module, ids: torch.Tensor) -> list[torch.Tensor]:
    """Outputs of every decoder layer, captured by hooks registered after the probe's."""
    captured: list[torch.Tensor] = []
    layers = find_decoder_layers(model)
    handles = [
        layer.register_forward_hook(
            lambda m, a, out: captured.append(
                (out[0] if isinstance(out, tuple) else out).detach().clone()
            )
        )
        for layer in layers
    ]
    try:
        with torch.no_grad():
            model(input_ids=ids)
    finally:
        for h in handles:
            h.remove()
    return captured


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma"])
def test_probe_shifts_exactly_the_chosen_layer_output(arch: str) -> None:
    """T-SAP-4: V_j = c*1 changes layer j's output by c everywhere; upstream layers unchanged."""
    model = tiny(arch)
    ids = torch.randint(0, 48, (2, 5))
    clean = layer_outputs(model, ids)
    probe = ResidualProbe(model, layers=(2,))
    c = 0.25
    with probe.active([torch.full((HIDDEN,), c)]):
        probed = layer_outputs(model, ids)
    assert torch.equal(probed[0], clean[0])
    assert torch.equal(probed[1], clean[1])
    # Layer 2's own computation sees unchanged inputs, so its output moves by exactly c (fp32 add).
    assert torch.allclose(probed[2] - clean[2], torch.full_like(clean[2], c), atol=1e-6)
    assert not torch.allclose(probed[3], clean[3])  # downstream layers see the shift


def test_probe_records_mean_residual_norm_over_real_tokens_only() -> None:
    model = tiny("llama")
    ids = torch.randint(0, 48, (2, 5))
    mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]])
    clean = layer_outputs(model, ids)
    probe = ResidualProbe(model, layers=(1, 3))
    with probe.active(probe.zeros(), token_mask=mask), torch.no_grad():
        model(input_ids=ids)
    for slot, layer in enumerate((1, 3)):
        expected = clean[layer].norm(dim=-1)[mask.bool()].mean()
        assert float(probe.residual_norms[slot]) == pytest.approx(float(expected), rel=1e-5)
    with probe.active(probe.zeros()), torch.no_grad():  # no mask: nothing is recorded
        model(input_ids=ids * 0)
    assert float(probe.residual_norms[0]) == pytest.approx(
        float(clean[1].norm(dim=-1)[mask.bool()].mean()), rel=1e-5
    )


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma"])
def test_detached_probe_leaves_model_bit_identical(arch: str) -> None:
    model = tiny(arch)
    ids = torch.randint(0, 48, (1, 6))
    with torch.no_grad():
        before = model(input_ids=ids).logits
    probe = ResidualProbe(model, layers=(1, 3))
    with probe.active([torch.ones(HIDDEN), torch.ones(HIDDEN)]):
        assert probe.attached
    assert not probe.attached
    with torch.no_grad():
        after = model(input_ids=ids).logits
    assert torch.equal(before, after)


def test_probe_in_bf16_model_without_autocast_and_grad_reaches_fp32_vector() -> None:
    """B9: fp32 probe vectors work on a bf16 model with no autocast; V's gradient is fp32."""
    model = tiny("llama").to(torch.bfloat16)
    probe = ResidualProbe(model, layers=(1,))
    vectors = probe.zeros(requires_grad=True)
    ids = torch.randint(0, 48, (2, 5))
    with probe.active(vectors):
        out = model(input_ids=ids, labels=ids)
    (grad,) = torch.autograd.grad(out.loss, vectors)
    assert out.logits.dtype == torch.bfloat16
    assert grad.dtype == torch.float32
    assert torch.isfinite(grad).all()
    assert float(grad.abs().sum()) > 0


def test_per_row_vectors_give_per_row_gradients() -> None:
    """[batch, hidden] vectors: one backward gives per-row gradients summing to the shared one."""
    model = tiny("qwen2")
    probe = ResidualProbe(model, layers=(1,))
    ids = torch.randint(0, 48, (3, 5))
    rows = probe.zeros(rows=3, requires_grad=True)
    with probe.active(rows):
        (g_rows,) = torch.autograd.grad(model(input_ids=ids, labels=ids).loss, rows)
    shared = probe.zeros(requires_grad=True)
    with probe.active(shared):
        (g_shared,) = torch.autograd.grad(model(input_ids=ids, labels=ids).loss, shared)
    assert g_rows.shape == (3, HIDDEN)
    assert torch.allclose(g_rows.sum(0), g_shared, atol=1e-6)


def test_find_layers_through_peft_wrapper() -> None:
    model = tiny("llama")
    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    assert find_decoder_layers(peft_model) is find_decoder_layers(model)
    assert len(find_decoder_layers(peft_model)) == 4


def test_default_layers_and_range_check() -> None:
    assert default_probe_layers(24) == (5,)  # Qwen2.5-0.5B: the screened layer
    assert default_probe_layers(30) == (6,)  # SmolLM2-135M
    assert default_probe_layers(32) == (6,)
    assert default_probe_layers(4) == (1,)
    assert default_probe_layers(1) == (0,)
    with pytest.raises(ConfigError):
        ResidualProbe(tiny("llama"), layers=(4,))
    probe = ResidualProbe(tiny("llama"), layers=(0, 1))
    with pytest.raises(ConfigError):
        probe.attach([torch.zeros(HIDDEN)])
