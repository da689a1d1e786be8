"""SafetyAwareTrainer on a tiny random Llama (plumbing and the SAP properties T-SAP-1..15).

Random tiny models prove the algebra and plumbing only, never safety claims.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from sap_core import objectives as obj
from sap_core.callbacks import StopRequest
from sap_core.config import LoraConfig, OptimConfig, SapConfig, TrainConfig
from sap_core.errors import (
    ConfigError,
    TrainingCancelled,
    TrainingDeadlineExceeded,
    TrainingDivergedError,
)
from sap_core.trainer import Batch, SafetyAwareTrainer, pad_batch

torch.set_num_threads(1)
VOCAB = 64


@dataclass(frozen=True)
class Seq:
    input_ids: list[int]
    labels: list[int]


@dataclass(frozen=True)
class Pair:
    chosen: Seq
    rejected: Seq


def make_model(dtype: torch.dtype = torch.float32) -> nn.Module:
    torch.manual_seed(1234)
    cfg = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    model: nn.Module = LlamaForCausalLM(cfg)
    return model.to(dtype)


def make_data(n_train: int = 16, n_pairs: int = 8, seed: int = 0) -> tuple[list[Seq], list[Pair]]:
    rng = random.Random(seed)

    def seq(prompt: list[int], response: list[int]) -> Seq:
        return Seq(prompt + response, [-100] * len(prompt) + response)

    def toks(n: int) -> list[int]:
        return [rng.randrange(3, VOCAB) for _ in range(n)]

    train = [seq(toks(rng.randint(3, 8)), toks(rng.randint(3, 8))) for _ in range(n_train)]
    pairs = []
    for _ in range(n_pairs):
        prompt = toks(5)
        pairs.append(Pair(seq(prompt, toks(4)), seq(prompt, toks(6))))
    return train, pairs


def make_trainer(
    sap: SapConfig,
    tmp_path: Path | None = None,
    max_steps: int | None = 3,
    dropout: float = 0.0,
    dtype: torch.dtype = torch.float32,
    callback: object = None,
    **kwargs: object,
) -> SafetyAwareTrainer:
    train, pairs = make_data()
    cfg = TrainConfig(
        model_path="unused-model-is-passed",
        output_dir=str(tmp_path or ""),
        lora=LoraConfig(r=4, alpha=8, dropout=dropout),
        optim=OptimConfig(lr=1e-2, weight_decay=0.01),
        sap=sap,
        batch_size=4,
        max_length=32,
        max_steps=max_steps,
        seed=7,
        **kwargs,  # type: ignore[arg-type]
    )
    trainer = SafetyAwareTrainer(cfg, train, pairs, callback, model=make_model(dtype))  # type: ignore[arg-type]
    trainer.setup()
    return trainer


def lora_tensors(trainer: SafetyAwareTrainer) -> list[torch.Tensor]:
    return [p.detach().clone() for p in trainer.lora_params]


def all_equal(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def first_batch(trainer: SafetyAwareTrainer) -> Batch:
    return trainer.micro_batches_for_step(0)[0]


def step_eps(trainer: SafetyAwareTrainer) -> list[torch.Tensor]:
    g_hat, _, _ = trainer._next_safety_direction()
    trainer._g_hat = g_hat
    theta_norm = float(obj.global_norm(trainer.lora_params))
    return obj.perturbation(g_hat, theta_norm, trainer.config.sap.rho)


def safety_loss_value(trainer: SafetyAwareTrainer, batch: Batch) -> float:
    with torch.no_grad():
        nll, _ = obj.sequence_nll(trainer._logits(batch), batch.labels)
    half = nll.shape[0] // 2
    return float(obj.safety_loss(nll[:half], nll[half:]))


# ---------------------------------------------------------------- config validation
def test_config_validation_messages() -> None:
    with pytest.raises(ConfigError, match="rho"):
        SapConfig(rho=-1.0)
    with pytest.raises(ConfigError, match="probe_batch_fraction"):
        SapConfig(probe_batch_fraction=0.0)
    with pytest.raises(ConfigError, match="adam_persistent"):
        SapConfig(reference_compat=True, probe_step_rule="sgd")
    with pytest.raises(ConfigError, match="schedule"):
        OptimConfig(schedule="step")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="batch_size"):
        TrainConfig(batch_size=0)
    assert SapConfig(reference_compat=True, probe_step_rule="adam_persistent").lagged_probe
    cfg = TrainConfig(model_path="m", sap=SapConfig(probe_layers=(1, 2)))
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


def test_sap_requires_safety_pairs() -> None:
    train, _ = make_data()
    cfg = TrainConfig(model_path="m", max_steps=1)
    with pytest.raises(ConfigError, match="safety"):
        SafetyAwareTrainer(cfg, train, [], model=make_model())


def test_pad_batch_right_pads_to_longest_row_only() -> None:
    batch = pad_batch([Seq([5, 6, 7], [-100, 6, 7]), Seq([8], [8])], pad_id=0, max_length=10)
    assert batch.input_ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch.attention_mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch.labels.tolist() == [[-100, 6, 7], [8, -100, -100]]
    assert batch.head(1).input_ids.shape == (1, 3)


# ---------------------------------------------------------------- T-SAP-1, 2, 3
def test_restore_is_bit_exact_and_perturbation_has_the_right_size() -> None:
    trainer = make_trainer(SapConfig(rho=0.05), dropout=0.0)
    trainer.train_step(trainer.micro_batches_for_step(0))  # make B non-zero first
    before = lora_tensors(trainer)
    safety_batch = trainer._safety_batch(trainer._safety_batches_used)  # the one eps is built on
    eps = step_eps(trainer)
    loss_clean = safety_loss_value(trainer, safety_batch)
    with trainer._perturbed(eps):
        moved = [p.detach() - b for p, b in zip(trainer.lora_params, before, strict=True)]
        theta_norm = float(obj.global_norm(before))
        assert float(obj.global_norm(moved)) == pytest.approx(0.05 * theta_norm, rel=1e-4)
        loss_pert = safety_loss_value(trainer, safety_batch)
    assert loss_pert > loss_clean  # eps is ascent on L_safe: toward the harmful response
    assert all_equal(lora_tensors(trainer), before)  # T-SAP-1


def test_safety_direction_is_unit_norm_over_all_lora_tensors_only() -> None:
    trainer = make_trainer(SapConfig())
    g_hat, norm, _ = trainer._next_safety_direction()
    assert norm > 0
    assert float(obj.global_norm(g_hat)) == pytest.approx(1.0, abs=1e-6)
    assert [g.shape for g in g_hat] == [p.shape for p in trainer.lora_params]
    names = [n for n, _ in trainer._named_lora]
    assert names
    assert all("lora_" in n for n in names)  # no base-model and no probe tensors


# ---------------------------------------------------------------- T-SAP-5, 6
def test_probe_is_zero_outside_the_weight_step_and_reset_every_step() -> None:
    trainer = make_trainer(SapConfig(rho=0.05, probe_step_size=0.5), max_steps=2)
    assert trainer.probe is not None
    seen: list[tuple[bool, float]] = []
    original = trainer._logits

    def spy(batch: Batch) -> torch.Tensor:
        assert trainer.probe is not None
        vectors = trainer.probe._vectors
        norm = float(obj.global_norm(vectors)) if vectors else 0.0
        seen.append((trainer.probe.attached, norm))
        return original(batch)

    trainer._logits = spy  # type: ignore[method-assign]
    trainer.train()
    # per step: safety pass (off), perturbed gap pass (V=0), clean gap pass (V=0), weight pass
    # (V*), and on refresh steps (every step here) the SFT pass that measures SAP's correction
    # (off)
    assert len(seen) == 10
    for s in range(2):
        safety, pert, clean, weight, correction = seen[5 * s : 5 * s + 5]
        assert safety == (False, 0.0)
        assert pert == (True, 0.0)
        assert clean == (True, 0.0)
        assert weight[0]
        assert weight[1] > 0
        assert correction == (False, 0.0)
    assert not trainer.probe.attached
    trainer.eval_examples = list(make_data()[0][:4])  # type: ignore[arg-type]
    assert trainer.evaluate() > 0  # evaluation runs with the probe off
    assert not trainer.probe.attached


# ---------------------------------------------------------------- T-SAP-7
def test_probe_gradient_matches_finite_difference() -> None:
    # The gradient check is calibrated (h, tolerance) for the model after one "sgd" step; it tests
    # the probe gap, which no probe rule changes.
    sap = SapConfig(rho=0.2, probe_step_rule="sgd", probe_step_size=0.05)
    trainer = make_trainer(sap, dtype=torch.float64)
    trainer.train_step(trainer.micro_batches_for_step(0))
    assert trainer.probe is not None
    batch = trainer.micro_batches_for_step(1)[0]
    eps = step_eps(trainer)
    gap = trainer.probe_gap(batch, eps)

    def l_su(vectors: list[torch.Tensor]) -> float:
        assert trainer.probe is not None
        with torch.no_grad():
            with trainer._perturbed(eps), trainer.probe.active(vectors):
                pert = float(trainer.task_loss(batch))
            with trainer.probe.active(vectors):
                clean = float(trainer.task_loss(batch))
        return pert - clean

    gen = torch.Generator().manual_seed(0)
    h = 1e-5  # random directions have norm ~6 per layer; fp64 keeps the difference accurate
    for _ in range(3):
        direction = [torch.randn(v.shape, generator=gen, dtype=torch.float64) for v in gap]
        plus = l_su([h * d for d in direction])
        minus = l_su([-h * d for d in direction])
        fd = (plus - minus) / (2 * h)
        analytic = obj.inner_product(gap, direction)
        assert abs(analytic) > 1e-7
        assert fd == pytest.approx(analytic, rel=1e-3, abs=1e-9)


# ---------------------------------------------------------------- T-SAP-8
def test_weight_gradient_is_task_gradient_at_v_star_only() -> None:
    trainer = make_trainer(SapConfig(rho=0.05, probe_step_size=0.5))
    assert trainer.probe is not None
    batch = first_batch(trainer)
    eps = step_eps(trainer)
    _, v_star = trainer._exact_micro_step(batch, eps, trainer.config.sap, accum=1)
    sap_grad = [p.grad.detach().clone() for p in trainer.lora_params]  # type: ignore[union-attr]
    for p in trainer.lora_params:
        p.grad = None
    with trainer.probe.active(v_star):
        expected = torch.autograd.grad(trainer.task_loss(batch), trainer.lora_params)
    assert all(torch.allclose(a, b, atol=1e-7) for a, b in zip(sap_grad, expected, strict=True))


def test_public_weight_gradient_is_one_micro_step_without_side_effects() -> None:
    trainer = make_trainer(SapConfig(rho=0.05, probe_step_size=0.5))
    assert trainer.probe is not None
    batch = first_batch(trainer)
    before = lora_tensors(trainer)
    g_hat = trainer.safety_direction(0).unit
    assert all_equal(g_hat, trainer.safety_direction(0).unit)  # same index, same direction
    sft = trainer.weight_gradient(batch)
    expected_sft = torch.autograd.grad(trainer.task_loss(batch), trainer.lora_params)
    assert all(torch.allclose(a, b) for a, b in zip(sft.grads, expected_sft, strict=True))
    assert sft.probe == []
    assert sft.gap_norm == 0.0
    sap = trainer.weight_gradient(batch, g_hat)
    assert sap.gap_norm > 0
    assert float(obj.global_norm(sap.probe)) > 0
    with trainer.probe.active(sap.probe):
        expected = torch.autograd.grad(trainer.task_loss(batch), trainer.lora_params)
    assert all(torch.allclose(a, b, atol=1e-7) for a, b in zip(sap.grads, expected, strict=True))
    assert not all_equal(sap.grads, sft.grads)
    # Analysis only: weights untouched, no gradient left behind, no optimizer step.
    assert all_equal(lora_tensors(trainer), before)
    assert all(p.grad is None for p in trainer.lora_params)
    assert trainer.step == 0
    off = dataclasses.replace(trainer.config.sap, rho=0.0)
    assert all_equal(trainer.weight_gradient(batch, g_hat, off).grads, sft.grads)
    stateful = dataclasses.replace(trainer.config.sap, probe_step_rule="adam_persistent")
    with pytest.raises(ConfigError, match="stateless"):
        trainer.weight_gradient(batch, g_hat, stateful)


def test_base_weights_never_change() -> None:
    trainer = make_trainer(SapConfig(rho=0.05, probe_step_size=0.5, lagged_probe=True))
    assert trainer.model is not None
    base = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_" not in n}
    before = lora_tensors(trainer)
    trainer.train()
    after = dict(trainer.model.named_parameters())
    assert all(torch.equal(after[n], t) for n, t in base.items())
    assert not all_equal(lora_tensors(trainer), before)  # LoRA did train


# ---------------------------------------------------------------- T-SAP-9
@pytest.mark.parametrize(("rule", "beta"), [("sgd", 0.05), ("sign", 1e-3)])
def test_update_has_smaller_component_along_harmful_direction_than_sft(
    rule: str, beta: float
) -> None:
    """T-SAP-9 (first order, small rho and beta, dropout off)."""
    sap = SapConfig(rho=1e-3, probe_step_size=beta, probe_step_rule=rule)  # type: ignore[arg-type]
    trainer = make_trainer(sap)
    assert trainer.probe is not None
    trainer.train_step(trainer.micro_batches_for_step(0))
    batch = trainer.micro_batches_for_step(1)[0]
    eps = step_eps(trainer)
    assert trainer._g_hat is not None
    v_star = trainer._probe_step(trainer.probe_gap(batch, eps), sap)
    g_sft = torch.autograd.grad(trainer.task_loss(batch), trainer.lora_params)
    with trainer.probe.active(v_star):
        g_sap = torch.autograd.grad(trainer.task_loss(batch), trainer.lora_params)
    # update = -lr * grad: SAP's component along g_hat (toward harm) is smaller than SFT's.
    assert obj.inner_product(g_sap, trainer._g_hat) > obj.inner_product(g_sft, trainer._g_hat)


# ---------------------------------------------------------------- T-SAP-10, 15
def run_weights(sap: SapConfig, steps: int = 4, dropout: float = 0.1) -> list[torch.Tensor]:
    trainer = make_trainer(sap, max_steps=steps, dropout=dropout)
    trainer.train()
    return lora_tensors(trainer)


def test_rho_zero_and_probe_step_zero_reproduce_sft_exactly() -> None:
    """T-SAP-10 with LoRA dropout on: SAP-only passes fork the RNG, so masks match SFT."""
    sft = run_weights(SapConfig(enabled=False))
    assert all_equal(run_weights(SapConfig(rho=0.0, probe_step_size=0.5)), sft)
    assert all_equal(run_weights(SapConfig(rho=0.05, probe_step_size=0.0)), sft)
    assert all_equal(
        run_weights(SapConfig(rho=0.0, probe_step_rule="adam_persistent", lagged_probe=True)), sft
    )
    assert not all_equal(run_weights(SapConfig(rho=0.05, probe_step_size=0.5)), sft)


def test_relative_rule_sizes_the_probe_as_a_fraction_of_the_residual_norm() -> None:
    trainer = make_trainer(SapConfig(rho=0.05, probe_step_rule="relative", probe_step_size=0.03))
    history = trainer.train().history
    # ||V*_j|| = beta * (mean per-token residual norm at layer j), so the relative norm is beta.
    assert all(h["probe_rel_norm"] == pytest.approx(0.03, rel=1e-4) for h in history)
    assert all(h["probe_norm"] > 0 for h in history)


def test_sap_correction_is_logged_on_refresh_steps_and_is_zero_when_sap_is_a_no_op() -> None:
    trainer = make_trainer(
        SapConfig(rho=0.05, probe_step_size=0.5, direction_refresh_every=2, correction_every=1),
        max_steps=4,
    )
    history = trainer.train().history
    assert ["sap_correction" in h for h in history] == [True, False, True, False]
    assert all(h["sap_correction"] > 1e-4 for h in history if "sap_correction" in h)
    assert all(0 < h["probe_rel_norm"] < float("inf") for h in history)
    idle = make_trainer(SapConfig(rho=0.0, probe_step_size=0.5), max_steps=2).train().history
    assert [h["sap_correction"] for h in idle] == [0.0, 0.0]  # V* = 0: SAP's update is SFT's
    quiet = make_trainer(SapConfig(rho=0.05, measure_correction=False), max_steps=2)
    assert all("sap_correction" not in h for h in quiet.train().history)


def test_sap_correction_is_measured_on_the_logged_steps_only() -> None:
    """Steps 1, every k-th and the last (1-based): the steps whose metrics become events."""
    sap = SapConfig(rho=0.05, probe_step_size=0.5, correction_every=3)
    history = make_trainer(sap, max_steps=7).train().history
    measured = [i + 1 for i, h in enumerate(history) if "sap_correction" in h]
    assert measured == [1, 3, 6, 7]
    assert all("probe_rel_norm" in h for h in history)  # the probe's size is free: every step


def test_same_seed_same_weights() -> None:
    sap = SapConfig(rho=0.05, probe_step_size=0.5)
    assert all_equal(run_weights(sap, steps=3), run_weights(sap, steps=3))


# ---------------------------------------------------------------- T-SAP-12
def test_safety_gradient_norm_logged_finite_and_positive_every_step() -> None:
    trainer = make_trainer(SapConfig(rho=0.05), max_steps=3)
    history = trainer.train().history
    norms = [h["safety_grad_norm"] for h in history]
    assert len(norms) == 3
    assert all(0 < n < float("inf") for n in norms)


def test_zero_safety_gradient_stops_training() -> None:
    """B4: a degenerate (zero) safety gradient must not silently turn SAP into SFT."""
    train, _ = make_data()
    unlabelled = Pair(Seq([5, 6, 7, 8], [-100] * 4), Seq([5, 6, 9, 9], [-100] * 4))
    cfg = TrainConfig(model_path="m", max_steps=1, batch_size=4, sap=SapConfig())
    trainer = SafetyAwareTrainer(cfg, train, [unlabelled], model=make_model())
    trainer.setup()
    with pytest.raises(TrainingDivergedError, match="safety gradient"):
        trainer.train()


# ---------------------------------------------------------------- approximations
def test_refresh_interval_and_lagged_probe_with_fraction() -> None:
    sap = SapConfig(
        rho=0.05,
        probe_step_size=0.5,
        direction_refresh_every=2,
        lagged_probe=True,
        probe_batch_fraction=0.5,
    )
    trainer = make_trainer(sap, max_steps=4)
    history = trainer.train().history
    assert ["safety_grad_norm" in h for h in history] == [True, False, True, False]
    assert history[0]["probe_norm"] == 0.0  # lagged: step 0 uses V_0 = 0
    assert all(h["probe_norm"] > 0 for h in history[1:])


# ---------------------------------------------------------------- T-SAP-14
def literal_reference_port(trainer: SafetyAwareTrainer, steps: int) -> list[torch.Tensor]:
    """train.py's loop, transcribed: down_proj.bias probes, two AdamWs, subtract-restore."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    cfg = trainer.config
    base = make_model()
    torch.manual_seed(cfg.seed)  # the trainer seeds right before get_peft_model too
    model = get_peft_model(
        base,
        PeftLoraConfig(
            r=cfg.lora.r,
            lora_alpha=cfg.lora.alpha,
            lora_dropout=0.0,
            target_modules=list(cfg.lora.target_modules),
            task_type="CAUSAL_LM",
        ),
    )
    layers: Any = model.base_model.model.model.layers  # type: ignore[union-attr]
    biases = []
    assert trainer.probe is not None
    for j in trainer.probe.layer_ids:
        layers[j].mlp.down_proj.bias = nn.Parameter(torch.zeros(32))
        biases.append(layers[j].mlp.down_proj.bias)
    lora = [p for n, p in model.named_parameters() if "lora_" in n]
    lora_opt = torch.optim.AdamW(lora, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    bias_opt = torch.optim.AdamW(biases, lr=cfg.sap.probe_step_size)
    rate = cfg.sap.rho
    for step in range(steps):
        batch = trainer.micro_batches_for_step(step)[0]
        for b in biases:
            b.requires_grad = False
        contrast = trainer._safety_batch(step)
        logits = model(input_ids=contrast.input_ids, attention_mask=contrast.attention_mask).logits
        logp = torch.log_softmax(logits[:, :-1].float(), -1)
        labels = contrast.labels[:, 1:]
        tok = logp.gather(-1, labels.clamp_min(0).unsqueeze(-1)).squeeze(-1) * (labels != -100)
        seq_logp = tok.sum(-1)
        half = seq_logp.shape[0] // 2
        loss_c = -torch.nn.functional.logsigmoid(seq_logp[:half] - seq_logp[half:]).mean()
        loss_c.backward()
        g = [p.grad.detach().clone() for p in lora]  # type: ignore[union-attr]
        g_norm = torch.sqrt(sum(x.pow(2).sum() for x in g))  # type: ignore[arg-type]
        g_hat = [x / (g_norm + 1e-8) for x in g]
        r = torch.sqrt(sum(p.detach().pow(2).sum() for p in lora))  # type: ignore[arg-type]
        lora_opt.zero_grad()
        with torch.no_grad():
            for p, d in zip(lora, g_hat, strict=True):
                p.add_(rate * r * d)
        for b in biases:
            b.requires_grad = True
        for p in lora:
            p.requires_grad = False
        out = model(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=batch.labels
        )
        (-out.loss).backward()
        with torch.no_grad():
            for p, d in zip(lora, g_hat, strict=True):
                p.sub_(rate * r * d)
        for p in lora:
            p.requires_grad = True
        out = model(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=batch.labels
        )
        out.loss.backward()
        lora_opt.step()
        with torch.no_grad():
            for b in biases:
                b.zero_()
        bias_opt.step()
        lora_opt.zero_grad()
        bias_opt.zero_grad()
    return [p.detach().clone() for p in lora]


def test_reference_compat_reproduces_reference_code_update_order() -> None:
    sap = SapConfig(
        rho=0.05,
        probe_step_size=0.05,
        probe_step_rule="adam_persistent",
        contrastive_form="logsigmoid",
        reference_compat=True,
        safety_batch_size=2,
    )
    trainer = make_trainer(sap, max_steps=3)
    trainer.config.optim.max_grad_norm = None  # the reference code does not clip
    port = literal_reference_port(trainer, steps=3)
    trainer.train()
    ours = lora_tensors(trainer)
    assert all(torch.allclose(a, b, atol=1e-6, rtol=0) for a, b in zip(ours, port, strict=True))
    exact = make_trainer(
        SapConfig(rho=0.05, probe_step_size=0.05, safety_batch_size=2), max_steps=3
    )
    exact.config.optim.max_grad_norm = None
    exact.train()
    assert not all(
        torch.allclose(a, b, atol=1e-6, rtol=0)
        for a, b in zip(lora_tensors(exact), port, strict=True)
    )


# ---------------------------------------------------------------- callbacks
class Recorder:
    def __init__(self, stop_at: int | None = None, request: StopRequest = "cancel") -> None:
        self.events: list[tuple[str, int]] = []
        self.stop_at, self.request = stop_at, request
        self.steps = 0

    def on_train_start(self, total_steps: int) -> None:
        self.events.append(("start", total_steps))

    def on_step(self, step: int, total_steps: int, metrics: dict[str, float]) -> None:
        self.steps = step
        self.events.append(("step", step))

    def on_checkpoint(self, step: int, path: Path) -> None:
        self.events.append(("checkpoint", step))

    def should_stop(self) -> StopRequest | None:
        return self.request if self.stop_at is not None and self.steps >= self.stop_at else None


def test_callbacks_and_cancel() -> None:
    rec = Recorder(stop_at=2, request="cancel")
    trainer = make_trainer(SapConfig(enabled=False), max_steps=5, callback=rec)
    with pytest.raises(TrainingCancelled) as info:
        trainer.train()
    assert info.value.reason == "cancel"
    assert rec.events == [("start", 5), ("step", 1), ("step", 2)]


def test_pause_saves_a_checkpoint_then_raises(tmp_path: Path) -> None:
    rec = Recorder(stop_at=1, request="pause")
    trainer = make_trainer(SapConfig(enabled=False), tmp_path, max_steps=5, callback=rec)
    with pytest.raises(TrainingCancelled) as info:
        trainer.train()
    assert info.value.reason == "pause"
    assert ("checkpoint", 1) in rec.events
    assert (tmp_path / "checkpoints" / "step-00000001" / "state.json").is_file()


def test_deadline_saves_a_checkpoint_then_raises_its_own_error(tmp_path: Path) -> None:
    rec = Recorder(stop_at=2, request="deadline")
    trainer = make_trainer(SapConfig(enabled=False), tmp_path, max_steps=5, callback=rec)
    with pytest.raises(TrainingDeadlineExceeded) as info:
        trainer.train()
    assert info.value.code == "training_deadline_exceeded"
    assert "step 2 of 5" in str(info.value)
    assert rec.events[-1] == ("checkpoint", 2)
    assert (tmp_path / "checkpoints" / "step-00000002" / "state.json").is_file()


def test_shutdown_saves_a_checkpoint_then_raises(tmp_path: Path) -> None:
    rec = Recorder(stop_at=2, request="shutdown")
    trainer = make_trainer(
        SapConfig(enabled=False), tmp_path, max_steps=5, callback=rec, checkpoint_every=2
    )
    with pytest.raises(TrainingCancelled) as info:
        trainer.train()
    assert info.value.reason == "shutdown"
    # Step 2 is both an every-n checkpoint and the shutdown's: written once.
    assert rec.events == [("start", 5), ("step", 1), ("step", 2), ("checkpoint", 2)]


def test_checkpoint_request_saves_and_training_goes_on(tmp_path: Path) -> None:
    class EveryOther(Recorder):
        def should_stop(self) -> StopRequest | None:
            return "checkpoint" if self.steps in (1, 3) else None

    rec = EveryOther()
    trainer = make_trainer(SapConfig(enabled=False), tmp_path, max_steps=4, callback=rec)
    result = trainer.train()
    assert result.steps == 4
    assert [e for e in rec.events if e[0] == "checkpoint"] == [("checkpoint", 1), ("checkpoint", 3)]
    assert (tmp_path / "checkpoints" / "step-00000003" / "state.json").is_file()


# ---------------------------------------------------------------- loading from a local directory
@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma"])
def test_setup_loads_local_safetensors_dir_and_trains(arch: str, tmp_path: Path) -> None:
    from types import SimpleNamespace

    from transformers import GemmaConfig, GemmaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    sizes = {
        "vocab_size": VOCAB,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 8,
    }
    classes = {
        "llama": (LlamaConfig, LlamaForCausalLM),
        "qwen2": (Qwen2Config, Qwen2ForCausalLM),
        "gemma": (GemmaConfig, GemmaForCausalLM),
    }
    config_cls, model_cls = classes[arch]
    torch.manual_seed(0)
    model_cls(config_cls(**sizes)).save_pretrained(str(tmp_path / "model"))
    train, pairs = make_data()
    cfg = TrainConfig(
        model_path=str(tmp_path / "model"),
        max_steps=2,
        batch_size=4,
        sap=SapConfig(rho=0.05, probe_step_size=0.5),
    )
    tokenizer = SimpleNamespace(pad_token_id=0)
    trainer = SafetyAwareTrainer(cfg, train, pairs, tokenizer=tokenizer)
    trainer.setup()
    history = trainer.train().history
    assert len(history) == 2
    assert all(h["probe_norm"] > 0 and h["safety_grad_norm"] > 0 for h in history)
    trainer.cleanup()
    assert trainer.model is None


# ---------------------------------------------------------------- smaller properties
def test_faithful_probe_rule_is_stateless_and_adam_probe_grads_do_not_leak() -> None:
    """T-SAP-6 / T-SAP-8: sgd keeps no probe state; adam_persistent leaves no V.grad behind."""
    stateless = make_trainer(SapConfig(rho=0.05), max_steps=2)
    stateless.train()
    assert stateless._probe_opt is None
    adam = make_trainer(SapConfig(rho=0.05, probe_step_rule="adam_persistent"), max_steps=2)
    adam.train()
    assert adam._probe_params
    assert all(p.grad is None for p in adam._probe_params)
    assert all(p.grad is None for p in adam.lora_params)


def test_safety_stream_reshuffles_each_pass_and_compat_replays_the_first() -> None:
    """B11 / T-SAP-13: 8 pairs, batch 4 -> 2 batches per pass."""
    default = make_trainer(SapConfig(safety_batch_size=4))
    compat = make_trainer(
        SapConfig(safety_batch_size=4, reference_compat=True, probe_step_rule="adam_persistent")
    )
    for trainer, replays in ((default, False), (compat, True)):
        first_pass = [trainer._safety_batch(i).input_ids for i in range(2)]
        second_pass = [trainer._safety_batch(i).input_ids for i in range(2, 4)]
        assert first_pass[0].shape[0] == 8  # 4 chosen rows + 4 rejected rows
        same = all(torch.equal(a, b) for a, b in zip(first_pass, second_pass, strict=True))
        assert same == replays


def test_gradient_accumulation_and_step_count() -> None:
    trainer = make_trainer(SapConfig(rho=0.05), max_steps=None, gradient_accumulation=2)
    assert trainer.total_steps == 2  # 16 examples / batch 4 = 4 micro-batches / 2
    history = trainer.train().history
    assert len(history) == 2
    assert all(h["tokens"] > 0 for h in history)


def test_bf16_model_with_autocast_trains_with_fp32_lora() -> None:
    """The GPU configuration (bf16 base, autocast) exercised on CPU."""
    sap = SapConfig(rho=0.05, probe_step_size=0.5)
    trainer = make_trainer(sap, dtype=torch.bfloat16, autocast=True)
    history = trainer.train().history
    assert all(p.dtype == torch.float32 for p in trainer.lora_params)
    assert all(torch.isfinite(torch.tensor(h["task_loss"])) for h in history)
    assert history[-1]["probe_norm"] > 0


def test_a_zero_probe_gradient_under_a_nonzero_perturbation_is_refused() -> None:
    """The guard itself, independent of hardware: gap exactly 0 while eps is not -> error."""
    trainer = make_trainer(SapConfig(rho=1e-2), max_steps=1)
    hidden = trainer.model.config.hidden_size
    nonzero_eps = [torch.full((2, 2), 1e-6)]
    with pytest.raises(TrainingDivergedError, match="below the compute precision"):
        trainer._check_gap([torch.zeros(hidden)], nonzero_eps)
    trainer._check_gap([torch.zeros(hidden)], [torch.zeros(2, 2)])  # no perturbation: fine
    trainer._check_gap([torch.full((hidden,), 1e-9)], nonzero_eps)  # tiny but real: fine


def test_perturbation_below_bf16_precision_is_refused_not_silently_sft() -> None:
    """rho=2e-5 (the code's value) under bf16 autocast never trains as silent SFT.

    Whether the perturbed and clean passes are bit-identical depends on the CPU's bf16 path
    (they were on a CPU with native bf16 matmuls; an AVX2-only CPU keeps the difference), so
    the property is: either the trainer refuses, or every step had a real probe gradient.
    """
    tiny_rho = make_trainer(SapConfig(rho=2e-5), autocast=True, max_steps=3)
    refused: TrainingDivergedError | None = None
    history: list[dict[str, float]] = []
    try:
        history = tiny_rho.train().history
    except TrainingDivergedError as exc:
        refused = exc
    if refused is not None:
        assert "below the compute precision" in str(refused)
    else:
        assert all(h["probe_gap_norm"] > 0 for h in history), history
    ok = make_trainer(SapConfig(rho=1e-2), autocast=True, max_steps=1)
    assert ok.train().history[0]["probe_gap_norm"] > 0
