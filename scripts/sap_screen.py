"""Screen SAP settings on a real model before spending a service run on them.

SAP only equalled plain fine-tuning in every cell of docs/results.md. This asks why, in minutes and
without the service: at one mid-training LoRA state (``--warmup`` plain-SFT steps on the
experiment's benign word problems, the same training settings as its jobs) and one useful batch,
it computes SAP's weight gradient for each (rho, probe rule, beta) and compares it with the SFT
gradient on the same batch:

- ``probe``: ||V*|| over the probe layers, next to the mean residual-stream norm per token there
  (a probe far below the activations cannot change what the model computes);
- ``rel_diff`` = ||g_sap - g_sft|| / ||g_sft|| and ``cos`` = cos(g_sap, g_sft): how far SAP's
  update is from SFT's;
- ``refusal rate``: -<g, u> / ||g|| for g in (SFT, SAP), u = unit gradient of the mean NLL of
  the base model's own greedy refusals to held-out harmful prompts (evaluation prompts after the
  experiment's first 200, so neither trained on nor the ones the experiment scores): the
  first-order change of that NLL per unit step along -g/||g||. Positive = the step makes the
  model's refusals less likely. SAP can only protect if its rate is clearly below SFT's.

First-order, one batch, plain gradients (the optimiser is AdamW, which rescales per coordinate):
a screen for which settings differ from SFT at all, not a safety measurement.

``--layers`` screens several probe placements (``"6,18;2,7;12"``: decoder layer indices,
placements separated by ``;``; ``default`` = the trainer's one layer at ~20 % depth) and ``--data
harmful`` warms up and screens on the experiment's harmful pairs instead of the word problems
(the customer SAP should matter most for). ``--bf16-check`` adds, per setting, the cosine of the
probe gap under bf16 autocast with the fp32 gap on the same batch (GPU jobs run under bf16).

    .venv/bin/python scripts/sap_screen.py
    .venv/bin/python scripts/sap_screen.py --rho 2e-5,2e-2,0.2 --rules sgd:0.05,sign:0.05
    .venv/bin/python scripts/sap_screen.py --rho 0.2 --rules relative:0.01 --layers "6,18;2,7"
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a file: make the repo's packages importable
    sys.path.insert(0, str(ROOT))

from dataformats import Conversation, Message, parse_row  # noqa: E402
from sap_core import objectives  # noqa: E402
from sap_core.config import LoraConfig, OptimConfig, SapConfig, TrainConfig  # noqa: E402
from sap_core.data import encode_conversation, tokenize_dataset  # noqa: E402
from sap_core.errors import ConfigError  # noqa: E402
from sap_core.probe import ResidualProbe, default_probe_layers, find_decoder_layers  # noqa: E402
from sap_core.trainer import Batch, SafetyAwareTrainer, TokenSequence, pad_batch  # noqa: E402
from scripts.experiment_data import (  # noqa: E402
    benign_chat_row,
    default_harmful_pairs,
    harmful_chat_row,
    word_problems,
)

EXPERIMENT_EVAL_PROMPTS = 200  # docs/results.md scores the first 200 (seed 7): stay clear of them
ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
STATELESS_RULES = ("sgd", "sign", "relative")
DATA_SOURCES = ("benign", "harmful")


@dataclass(frozen=True)
class Setting:
    """One SAP configuration to screen (``layers`` None = the trainer's default placement)."""

    rho: float
    rule: str
    step_size: float
    layers: tuple[int, ...] | None = None

    @property
    def label(self) -> str:
        where = "" if self.layers is None else f", layers {','.join(map(str, self.layers))}"
        return f"ρ={self.rho:g}, {self.rule} β={self.step_size:g}{where}"


@dataclass(frozen=True)
class ScreenRow:
    """What one setting does to the update on the screened batch."""

    setting: Setting
    probe_norm: float
    gap_norm: float
    rel_diff: float
    cosine: float
    safety_rate_sap: float
    probe_rel_norm: float = float("nan")  # mean over layers of ||V*_j|| / residual norm at j
    bf16_gap_cosine: float | None = None  # cos(gap under bf16 autocast, fp32 gap)


@dataclass(frozen=True)
class Screen:
    """The whole screen: the reference figures and one row per setting."""

    hidden_norm: float
    theta_norm: float
    safety_rate_sft: float
    rows: list[ScreenRow]


def parse_floats(text: str) -> list[float]:
    values = [float(v) for v in text.split(",") if v.strip()]
    if not values or any(not (v >= 0 and math.isfinite(v)) for v in values):
        raise ConfigError(f"expected a comma list of finite numbers >= 0, got {text!r}")
    return values


def parse_layers(text: str) -> list[tuple[int, ...] | None]:
    """'6,18;2,7;default' -> [(6, 18), (2, 7), None]."""
    out: list[tuple[int, ...] | None] = []
    for item in text.split(";"):
        item = item.strip()
        if item in ("", "default"):
            out.append(None)
            continue
        try:
            layers = tuple(int(v) for v in item.split(",") if v.strip())
        except ValueError:
            raise ConfigError(f"probe layers {item!r}: expected comma-separated integers") from None
        if not layers or any(i < 0 for i in layers):
            raise ConfigError(f"probe layers {item!r}: expected indices >= 0")
        out.append(layers)
    return out


def parse_rules(text: str) -> list[tuple[str, float]]:
    """'sgd:0.05,sign:0.05' -> [("sgd", 0.05), ("sign", 0.05)]."""
    out = []
    for item in text.split(","):
        rule, _, step = item.strip().partition(":")
        if rule not in STATELESS_RULES or not step:
            raise ConfigError(
                f"rule {item!r}: expected RULE:BETA with RULE in {STATELESS_RULES} "
                "(adam_persistent is stateful: measure it in a training run)"
            )
        out.append((rule, parse_floats(step)[0]))
    return out


def setting_config(base: SapConfig, setting: Setting) -> SapConfig:
    """The trainer's SAP config with this setting's rho and probe rule (SAP on)."""
    return dataclasses.replace(
        base,
        enabled=True,
        rho=setting.rho,
        probe_step_rule=setting.rule,  # type: ignore[arg-type]
        probe_step_size=setting.step_size,
    )


def refusal_unit_gradient(
    trainer: SafetyAwareTrainer, refusals: Sequence[TokenSequence], chunk: int = 8
) -> list[torch.Tensor]:
    """Unit gradient of the mean NLL of `refusals` (logits are [rows, T, V]: chunked)."""
    total = [torch.zeros_like(p) for p in trainer.lora_params]
    for start in range(0, len(refusals), chunk):
        part = refusals[start : start + chunk]
        batch = pad_batch(part, trainer.pad_id, trainer.config.max_length).to(trainer.device)
        loss = trainer.task_loss(batch)
        grads = torch.autograd.grad(loss, trainer.lora_params, allow_unused=True)
        for acc, g in zip(total, grads, strict=True):
            if g is not None:
                acc.add_(g.detach(), alpha=len(part) / len(refusals))
    unit, _ = objectives.unit_direction(total)
    return unit


def residual_norm(trainer: SafetyAwareTrainer, batch: Batch) -> float:
    """Mean per-token L2 norm of the residual stream at the probe layers (real tokens only)."""
    assert trainer.probe is not None
    probe = trainer.probe
    with probe.active(probe.zeros(), token_mask=batch.attention_mask), torch.no_grad():
        trainer.task_loss(batch)
    norms = [float(n) for n in probe.residual_norms]
    return sum(norms) / len(norms)


def use_probe_layers(trainer: SafetyAwareTrainer, layers: tuple[int, ...] | None) -> None:
    """Point the trainer's probe at ``layers`` (None: the default ~1/4 and ~3/4 depth)."""
    assert trainer.model is not None
    if layers is None:
        layers = default_probe_layers(len(find_decoder_layers(trainer.model)))
    trainer.probe = ResidualProbe(trainer.model, layers)


def bf16_gap_cosine(
    trainer: SafetyAwareTrainer, batch: Batch, g_hat: list[torch.Tensor], sap: SapConfig
) -> float:
    """cos(probe gap under bf16 autocast, probe gap in fp32) on the same batch and direction."""
    theta_norm = float(objectives.global_norm(trainer.lora_params))
    eps = objectives.perturbation(g_hat, theta_norm, sap.rho, sap.relative_rho)
    fp32 = trainer.probe_gap(batch, eps)
    saved = trainer.config
    trainer.config = dataclasses.replace(saved, autocast=True)
    try:
        bf16 = trainer.probe_gap(batch, eps)
    finally:
        trainer.config = saved
    return objectives.cosine_similarity(bf16, fp32)


def _rate(g: Sequence[torch.Tensor], unit: Sequence[torch.Tensor]) -> float:
    """-<g, u> / ||g||: first-order change of the refusal NLL per unit step along -g/||g||."""
    return -objectives.inner_product(g, unit) / float(objectives.global_norm(g))


def run_screen(
    trainer: SafetyAwareTrainer,
    settings: Sequence[Setting],
    *,
    warmup: int,
    refusals: Sequence[TokenSequence],
    bf16_check: bool = False,
) -> Screen:
    """Train `warmup` plain steps, then screen every setting on the next useful batch."""
    trainer.config = dataclasses.replace(
        trainer.config, sap=dataclasses.replace(trainer.config.sap, enabled=False)
    )
    for step in range(warmup):
        trainer.train_step(trainer.micro_batches_for_step(step))
    batch = trainer.micro_batches_for_step(warmup)[0].to(trainer.device)
    unit = refusal_unit_gradient(trainer, refusals)
    g_sft = trainer.weight_gradient(batch).grads
    g_hat = trainer.safety_direction(0).unit  # the same direction for every setting
    rows = []
    default_probe = trainer.probe
    for setting in settings:
        use_probe_layers(trainer, setting.layers)
        config = setting_config(trainer.config.sap, setting)
        sap = trainer.weight_gradient(batch, g_hat, config)
        g_sap, probe_norm = sap.grads, float(objectives.global_norm(sap.probe))
        diff = [a - b for a, b in zip(g_sap, g_sft, strict=True)]
        rows.append(
            ScreenRow(
                setting=setting,
                probe_norm=probe_norm,
                gap_norm=sap.gap_norm,
                rel_diff=float(objectives.global_norm(diff) / objectives.global_norm(g_sft)),
                cosine=objectives.cosine_similarity(g_sap, g_sft),
                safety_rate_sap=_rate(g_sap, unit),
                probe_rel_norm=trainer._relative_probe_norm(sap.probe) if sap.probe else 0.0,
                bf16_gap_cosine=bf16_gap_cosine(trainer, batch, g_hat, config)
                if bf16_check
                else None,
            )
        )
    trainer.probe = default_probe
    return Screen(
        hidden_norm=residual_norm(trainer, batch),
        theta_norm=float(objectives.global_norm(trainer.lora_params)),
        safety_rate_sft=_rate(g_sft, unit),
        rows=rows,
    )


def render(screen: Screen, *, model: str, warmup: int, held_out: int, data: str = "benign") -> str:
    what = "benign word problems" if data == "benign" else "harmful pairs"
    bf16 = any(r.bf16_gap_cosine is not None for r in screen.rows)
    lines = [
        f"SAP screen — model `{model}`, after {warmup} plain-SFT steps on the {what}; "
        f"||θ_LoRA|| {screen.theta_norm:.3g}; residual norm per token at the default probe "
        f"layers {screen.hidden_norm:.3g}; probe / residual = mean over the probed layers of "
        f"||V*_j|| / (residual norm at j); refusal rate = first-order change of the NLL of the "
        f"base model's own refusals to {held_out} held-out harmful prompts per unit step "
        f"(SFT: {screen.safety_rate_sft:+.4g}).",
        "",
        "| setting | probe norm | probe / residual | gap norm | rel. diff from SFT | cos with SFT "
        "| refusal rate SAP | SAP − SFT |" + (" bf16 gap cos |" if bf16 else ""),
        "|---|---|---|---|---|---|---|---|" + ("---|" if bf16 else ""),
    ]
    for r in screen.rows:
        lines.append(
            f"| {r.setting.label} | {r.probe_norm:.3g} | {r.probe_rel_norm:.2g} "
            f"| {r.gap_norm:.3g} | {r.rel_diff:.3g} | {r.cosine:.6f} | {r.safety_rate_sap:+.4g} "
            f"| {r.safety_rate_sap - screen.safety_rate_sft:+.3g} |"
            + (f" {r.bf16_gap_cosine:.4f} |" if r.bf16_gap_cosine is not None else "")
        )
    return "\n".join(lines)


def _examples(
    tokenizer: Any, rows: int, seed: int, max_length: int, data: str = "benign"
) -> list[TokenSequence]:
    if data == "harmful":
        pairs = default_harmful_pairs()[:rows]
        raw = [harmful_chat_row(pair, system=None) for pair in pairs]
    else:
        raw = [benign_chat_row(p) for p in word_problems(rows, seed)]
    conversations = [parse_row(row)[1] for row in raw]
    examples, _ = tokenize_dataset(tokenizer, conversations, max_length)
    return list(examples)


def _pairs(tokenizer: Any, model: str, max_length: int) -> list[Any]:
    """SAP's safety pairs exactly as the worker builds them (template refusals, its caps)."""
    from sap_core.evaluation.judges import is_refusal
    from sap_core.safety.corpus import build_corpus
    from worker.pipeline import safety_pairs

    corpus = build_corpus(model, ROOT / "var" / "safety-corpus" / model, is_refusal=is_refusal)
    return safety_pairs(corpus, tokenizer, max_length)


def _own_refusals(model: Any, tokenizer: Any, count: int, max_length: int) -> list[TokenSequence]:
    """The base model's greedy refusals to held-out prompts, encoded as training sequences."""
    from sap_core.evaluation.generation import generate_replies
    from sap_core.evaluation.judges import is_refusal
    from sap_core.safety.corpus import load_eval_prompts

    prompts = load_eval_prompts(seed=7)[EXPERIMENT_EVAL_PROMPTS : EXPERIMENT_EVAL_PROMPTS + count]
    texts = [p.text for p in prompts]
    replies = generate_replies(model, tokenizer, texts, max_new_tokens=40, batch_size=8)
    out: list[TokenSequence] = []
    for prompt, reply in zip(texts, replies, strict=True):
        if reply.strip() and is_refusal(reply):
            conversation = Conversation(
                messages=(Message("user", prompt), Message("assistant", reply.strip()))
            )
            encoded = encode_conversation(tokenizer, conversation, max_length)
            if encoded is not None:
                out.append(encoded)
    return out


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    p.add_argument("--rho", default="2e-5,2e-3,2e-2,0.2")
    p.add_argument("--rules", default="sgd:0.05,sign:0.05")
    p.add_argument("--warmup", type=int, default=8, help="plain-SFT steps before the screen")
    p.add_argument("--rows", type=int, default=24)
    p.add_argument("--held-out", type=int, default=48, help="held-out prompts for u")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--layers", default="default", help='probe placements, e.g. "6,18;2,7;12"')
    p.add_argument("--data", choices=DATA_SOURCES, default="benign")
    p.add_argument("--bf16-check", action="store_true", help="cos of the bf16 and fp32 gaps")
    args = p.parse_args(argv)
    settings = [
        Setting(rho, rule, step, layers)
        for layers in parse_layers(args.layers)
        for rule, step in parse_rules(args.rules)
        for rho in parse_floats(args.rho)
    ]

    from sap_core.models.loading import load_model_and_tokenizer
    from sap_core.models.registry import resolve_model

    started = time.monotonic()
    model, tokenizer = load_model_and_tokenizer(resolve_model(args.model, ROOT / "var" / "models"))
    max_length = 256  # the experiment's jobs
    pairs = _pairs(tokenizer, args.model, max_length)
    refusals = _own_refusals(model, tokenizer, args.held_out, max_length)
    if not refusals:
        raise ConfigError(f"the base model refused none of {args.held_out} held-out prompts")
    config = TrainConfig(
        lora=LoraConfig(r=8, alpha=16, target_modules=ALL_LINEAR),
        optim=OptimConfig(lr=1e-3),
        sap=SapConfig(direction_refresh_every=4, probe_batch_fraction=0.5),
        batch_size=4,
        max_length=max_length,
        epochs=5,
        seed=args.seed,
    )
    trainer = SafetyAwareTrainer(
        config,
        _examples(tokenizer, args.rows, args.seed, max_length, args.data),
        pairs,
        model=model,
        tokenizer=tokenizer,
    )
    trainer.setup()
    screen = run_screen(
        trainer, settings, warmup=args.warmup, refusals=refusals, bf16_check=args.bf16_check
    )
    print(
        render(screen, model=args.model, warmup=args.warmup, held_out=len(refusals), data=args.data)
    )
    print(f"\n({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
