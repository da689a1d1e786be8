"""The shipped SAP default does real work on a real model (SmolLM2-135M-Instruct).

At the reference code's rho (2e-5) SAP's update equalled plain fine-tuning's to six digits
(docs/sap.md). This test pins the opposite for the product default: on the same batch and the same
safety direction, ||g_SAP - g_SFT|| / ||g_SFT|| is above the floor that the job's SAP-strength
warning uses, and the probe's norm is the documented fraction of the residual stream it shifts.
"""

from __future__ import annotations

import pytest
import torch

from dataformats import Conversation, Message
from sap_core import objectives as obj
from sap_core.config import LoraConfig, OptimConfig, SapConfig, TrainConfig
from sap_core.data import encode_triple, tokenize_dataset
from sap_core.models.loading import load_model_and_tokenizer
from sap_core.models.registry import pull_model
from sap_core.probe import default_probe_layers, find_decoder_layers
from sap_core.safety.corpus import build_corpus
from sap_core.sap_strength import SAP_CORRECTION_FLOOR
from sap_core.trainer import SafetyAwareTrainer
from tests.sap_core.test_models import SMOLLM, TEST_CACHE

WORD_PROBLEMS = [
    ("Tom has 3 apples and buys 4 more. How many apples does he have?", "Tom has 3 + 4 = 7."),
    ("A box holds 6 eggs. How many eggs are in 5 boxes?", "5 boxes hold 5 x 6 = 30 eggs."),
    ("Sara reads 12 pages a day. How many pages in 3 days?", "She reads 3 x 12 = 36 pages."),
    ("A train travels 60 km in 1 hour. How far in 2 hours?", "It travels 2 x 60 = 120 km."),
]


@pytest.fixture(scope="module")
def trainer(tmp_path_factory: pytest.TempPathFactory) -> SafetyAwareTrainer:
    torch.manual_seed(0)
    model, tokenizer = load_model_and_tokenizer(pull_model(SMOLLM, TEST_CACHE), device="cpu")
    conversations = [
        Conversation((Message("user", q), Message("assistant", a))) for q, a in WORD_PROBLEMS
    ]
    examples, _ = tokenize_dataset(tokenizer, conversations, 96)
    # Template refusals only: no generation, so the corpus builds in seconds.
    corpus = build_corpus(SMOLLM, tmp_path_factory.mktemp("corpus"), limit=8)
    pairs = [
        encode_triple(tokenizer, [Message("user", t.prompt)], t.safe, t.harmful, 96)
        for t in corpus.triples[:8]
    ]
    config = TrainConfig(
        model_path="passed-in",
        output_dir=str(tmp_path_factory.mktemp("out")),
        lora=LoraConfig(r=8, alpha=16),
        optim=OptimConfig(lr=1e-3),
        sap=SapConfig(),  # the shipped default
        batch_size=4,
        max_length=96,
        max_steps=1,
        seed=7,
    )
    trained = SafetyAwareTrainer(
        config, list(examples), [p for p in pairs if p is not None], model=model
    )
    trained.setup()
    return trained


def test_default_probe_sits_at_a_fifth_of_the_depth(trainer: SafetyAwareTrainer) -> None:
    assert trainer.probe is not None
    layers = len(find_decoder_layers(trainer.model))
    assert trainer.probe.layer_ids == default_probe_layers(layers) == (6,)


def test_default_sap_update_differs_measurably_from_sft(trainer: SafetyAwareTrainer) -> None:
    batch = trainer.micro_batches_for_step(0)[0]
    g_hat = trainer.safety_direction(0).unit
    sft = trainer.weight_gradient(batch)
    sap = trainer.weight_gradient(batch, g_hat)
    diff = [a - b for a, b in zip(sap.grads, sft.grads, strict=True)]
    correction = float(obj.global_norm(diff) / obj.global_norm(sft.grads))
    # The floor is where a job gets the "SAP is a no-op" warning; the reference rho gave ~1e-6.
    assert correction > SAP_CORRECTION_FLOOR, correction
    # "relative" beta = 0.02: the probe is 2 % of the residual norm at its layer (per layer).
    rel = trainer._relative_probe_norm(sap.probe)  # the value every step's event carries
    assert rel == pytest.approx(SapConfig().probe_step_size, rel=0.05)
