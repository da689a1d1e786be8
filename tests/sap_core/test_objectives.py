"""Unit tests for sap_core.objectives against hand-computed values (T-SAP-2, 3, 11, 12)."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from sap_core import objectives as obj
from sap_core.errors import ConfigError, TrainingDivergedError

torch.set_num_threads(1)


def test_sequence_nll_uses_shifted_labels_and_skips_ignored() -> None:
    # vocab 3, seq 3; logits at position t predict labels[t+1].
    logits = torch.tensor([[[0.0, 0.0, 0.0], [2.0, 0.0, 0.0], [9.0, 9.0, 9.0]]])
    labels = torch.tensor([[-100, 1, 0]])  # predicted from positions 0 and 1
    nll, n = obj.sequence_nll(logits, labels)
    expected = math.log(3.0) + (math.log(math.exp(2.0) + 2.0) - 2.0)
    assert n.tolist() == [2]
    assert nll.item() == pytest.approx(expected, rel=1e-6)


def test_sequence_nll_position_zero_label_is_never_scored() -> None:
    logits = torch.zeros(1, 2, 4)
    nll, n = obj.sequence_nll(logits, torch.tensor([[3, -100]]))
    assert n.item() == 0
    assert nll.item() == 0.0


def test_mean_response_nll_matches_hf_loss() -> None:
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=50,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
    model = LlamaForCausalLM(cfg).eval()
    ids = torch.randint(0, 50, (2, 7))
    labels = ids.clone()
    labels[:, :3] = -100
    labels[1, 6] = -100
    out = model(input_ids=ids, labels=labels)
    ours = obj.mean_response_nll(out.logits, labels)
    assert ours.item() == pytest.approx(out.loss.item(), rel=1e-5)


def test_contrastive_logprob_equals_manual_token_loop() -> None:
    """T-SAP-11: teacher-forced shifted score == sum of per-token log-probs from a manual loop."""
    torch.manual_seed(1)
    cfg = LlamaConfig(
        vocab_size=40,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
    model = LlamaForCausalLM(cfg).eval()
    prompt, response = [5, 6, 7], [8, 9, 2]
    ids = torch.tensor([prompt + response])
    labels = torch.tensor([[-100] * 3 + response])
    with torch.no_grad():
        nll, _ = obj.sequence_nll(model(input_ids=ids).logits, labels)
        manual = 0.0
        for k, token in enumerate(response):
            prefix = torch.tensor([prompt + response[:k]])
            logp = torch.log_softmax(model(input_ids=prefix).logits[0, -1], dim=-1)
            manual += float(logp[token])
    assert -nll.item() == pytest.approx(manual, rel=1e-5)


def test_safety_loss_difference_and_logsigmoid_values() -> None:
    chosen = torch.tensor([1.0, 3.0])
    rejected = torch.tensor([2.0, 1.0])
    assert obj.safety_loss(chosen, rejected, "difference").item() == pytest.approx(0.5)
    # margin = logp_safe - logp_harm = -c + r = [1, -2]
    expected = (math.log1p(math.exp(-1.0)) + math.log1p(math.exp(2.0))) / 2
    assert obj.safety_loss(chosen, rejected, "logsigmoid").item() == pytest.approx(expected)
    with pytest.raises(ConfigError):
        obj.safety_loss(chosen, rejected, "dpo")


def test_logsigmoid_gradient_underflows_for_large_margin_but_difference_does_not() -> None:
    """B4: why 'difference' is the default; the trainer asserts ||g|| > 0 every step."""
    chosen = torch.tensor([0.0], requires_grad=True)
    rejected = torch.tensor([200.0])  # an aligned model: refusal far more likely
    (g_ls,) = torch.autograd.grad(obj.safety_loss(chosen, rejected, "logsigmoid"), chosen)
    (g_diff,) = torch.autograd.grad(obj.safety_loss(chosen, rejected, "difference"), chosen)
    assert g_ls.item() == 0.0
    assert g_diff.item() == 1.0


def test_unit_direction_has_unit_global_norm() -> None:
    """T-SAP-2 (function level): ||g_hat|| = 1 over the concatenation of all tensors."""
    grads = [torch.tensor([3.0, 0.0]), torch.tensor([[0.0], [4.0]])]
    g_hat, norm = obj.unit_direction(grads)
    assert norm == pytest.approx(5.0)
    assert obj.global_norm(g_hat).item() == pytest.approx(1.0, abs=1e-6)
    assert g_hat[1].shape == (2, 1)
    assert g_hat[1][1, 0].item() == pytest.approx(0.8)


@pytest.mark.parametrize("bad", [0.0, float("nan"), float("inf")])
def test_unit_direction_refuses_degenerate_gradients(bad: float) -> None:
    """T-SAP-12: a zero or non-finite safety gradient stops training instead of degrading to SFT."""
    with pytest.raises(TrainingDivergedError):
        obj.unit_direction([torch.tensor([bad, 0.0])])


def test_perturbation_size_relative_and_absolute() -> None:
    """T-SAP-3 (function level): ||eps|| = rho * ||theta|| (relative) or rho (absolute)."""
    g_hat, _ = obj.unit_direction([torch.tensor([1.0, 2.0]), torch.tensor([2.0])])
    eps = obj.perturbation(g_hat, theta_norm=13.0, rho=2e-3)
    assert obj.global_norm(eps).item() == pytest.approx(13.0 * 2e-3, rel=1e-6)
    eps_abs = obj.perturbation(g_hat, theta_norm=13.0, rho=2e-3, relative=False)
    assert obj.global_norm(eps_abs).item() == pytest.approx(2e-3, rel=1e-6)


def test_probe_ascent_steps() -> None:
    gap = torch.tensor([0.5, -2.0, 0.0])
    assert obj.probe_ascent_step(gap, "sgd", 0.1).tolist() == pytest.approx([0.05, -0.2, 0.0])
    assert obj.probe_ascent_step(gap, "sign", 0.1).tolist() == pytest.approx([0.1, -0.1, 0.0])
    with pytest.raises(ConfigError):
        obj.probe_ascent_step(gap, "adam_persistent", 0.1)


def test_relative_probe_step_is_a_fraction_of_the_residual_norm_along_the_gap() -> None:
    gap = torch.tensor([3.0, -4.0])  # ||gap|| = 5
    v = obj.probe_ascent_step(gap, "relative", 0.02, residual_norm=80.0)
    assert float(v.norm()) == pytest.approx(0.02 * 80.0)
    assert v.tolist() == pytest.approx([0.96, -1.28])  # along the gap
    assert obj.probe_ascent_step(torch.zeros(2), "relative", 0.02, 80.0).tolist() == [0.0, 0.0]
    with pytest.raises(ConfigError, match="residual norm"):
        obj.probe_ascent_step(gap, "relative", 0.02)


def test_inner_product_and_cosine() -> None:
    a = [torch.tensor([1.0, 0.0]), torch.tensor([1.0])]
    b = [torch.tensor([1.0, 1.0]), torch.tensor([0.0])]
    assert obj.inner_product(a, b) == pytest.approx(1.0)
    assert obj.cosine_similarity(a, b) == pytest.approx(0.5)
    assert obj.cosine_similarity(a, [torch.zeros(2), torch.zeros(1)]) == 0.0
