"""Tiny local model directories for evaluation tests (plumbing only, never safety claims).

A 2-layer Llama with a byte-level tokenizer (pad ``<|endoftext|>`` != eos) and a ChatML template.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    LlamaForSequenceClassification,
    PreTrainedTokenizerFast,
)

CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


def _byte_tokenizer() -> PreTrainedTokenizerFast:
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.add_special_tokens(list(SPECIAL_TOKENS))
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=CHATML_TEMPLATE,
    )


def _config(tokenizer: PreTrainedTokenizerFast, **extra: object) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        tie_word_embeddings=False,
        **extra,
    )


def make_causal_lm_dir(path: Path, seed: int = 0) -> Path:
    """A tiny causal LM directory (safetensors + tokenizer + ChatML template)."""
    # Its own byte tokenizer (pad != eos), unlike tests/fixtures/tiny_model.py (pad == eos):
    # random weights then rarely emit eos first, so generation tests see non-empty replies.
    torch.manual_seed(seed)
    tokenizer = _byte_tokenizer()
    model = LlamaForCausalLM(_config(tokenizer))
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


def make_classifier_dir(path: Path, seed: int = 0) -> Path:
    """A tiny 3-label sequence classifier whose labels name the judge classes."""
    torch.manual_seed(seed)
    tokenizer = _byte_tokenizer()
    config = _config(
        tokenizer,
        num_labels=3,
        id2label={0: "refusal", 1: "compliance", 2: "off_task"},
        label2id={"refusal": 0, "compliance": 1, "off_task": 2},
    )
    LlamaForSequenceClassification(config).save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path
