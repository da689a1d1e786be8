"""The SAP residual-stream probe: forward hooks that add a vector V_j to decoder layer j's output.

`x_j = l_j(x_{j-1}) + v_j` (paper notation). The reference code implemented this as a fp32
`down_proj.bias` (B9: dtype mismatch without autocast, wrong device under sharding); here it is a
forward hook on the decoder layer that adds `v_j.to(hidden.dtype)` on the hidden state's device, so
it works for Llama, Qwen2 and Gemma-style models in any dtype and is physically absent (hooks
removed) whenever the probe is not attached — at evaluation, generation and saving.

A vector is `[hidden]` (same shift at every position of every row) or `[batch, hidden]` (one shift
per row; used to read per-row probe gradients out of a single backward, see trainer's lagged mode).

Usage::

    probe = ResidualProbe(model, layers=(1, 3))
    with probe.active(probe.zeros(requires_grad=True)) as vs:
        loss = model(...).loss
        grads = torch.autograd.grad(loss, vs)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from sap_core.errors import ConfigError


def find_decoder_layers(model: nn.Module) -> nn.ModuleList:
    """Return the decoder-layer list of a (possibly peft-wrapped) HF causal LM.

    Picks the longest `nn.ModuleList` whose qualified name ends in "layers" (`model.layers` for
    Llama/Qwen2/Gemma; peft prefixes `base_model.model.`).
    """
    best: nn.ModuleList | None = None
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and name.split(".")[-1] == "layers":
            if best is None or len(module) > len(best):
                best = module
    if best is None:
        raise ConfigError("no decoder layer list (a ModuleList named 'layers') found in the model")
    return best


# Fraction of the depth of the default probe layer. Screened on Qwen2.5-Coder-0.5B (docs/sap.md §
# "Operating point"): one layer at ~20 % depth (layer 5 of 24) kept the most refusal likelihood per
# unit of update change; layer 1 did nothing, the late layer (20 of 24) made erosion worse, and two
# layers at the same relative strength were unstable. The reference code probed 3 and 9 of 32.
DEFAULT_PROBE_DEPTH = 0.2


def default_probe_layers(num_layers: int) -> tuple[int, ...]:
    """One layer at ~20 % depth (0-based): 5 of 24 (Qwen2.5-0.5B), 6 of 30 (SmolLM2-135M)."""
    if num_layers < 1:
        raise ConfigError("model has no decoder layers")
    return (min(num_layers - 1, round(num_layers * DEFAULT_PROBE_DEPTH)),)


class ResidualProbe:
    """Adds probe vectors to the outputs of chosen decoder layers while attached.

    Args:
        model: the HF causal LM (peft-wrapped or not).
        layers: 0-based decoder layer indices that get a probe.
    """

    def __init__(self, model: nn.Module, layers: Sequence[int]) -> None:
        self._layers = find_decoder_layers(model)
        self.layer_ids = tuple(int(i) for i in layers)
        bad = [i for i in self.layer_ids if not 0 <= i < len(self._layers)]
        if bad:
            raise ConfigError(
                f"probe layers {bad} out of range for a model with {len(self._layers)} layers"
            )
        first_param = next(model.parameters())
        self.device = first_param.device
        self.hidden_size = int(getattr(model.config, "hidden_size", 0)) or self._infer_hidden()
        self._vectors: list[torch.Tensor] = []
        self._handles: list[RemovableHandle] = []
        self._token_mask: torch.Tensor | None = None
        # Mean per-token L2 norm of the residual stream each probed layer produced in the last
        # forward pass run with a `token_mask` (0-dim fp32 tensors, one per probe layer): the
        # scale a probe vector is compared with (and, for the "relative" rule, sized by).
        self.residual_norms: list[torch.Tensor] = []

    def _infer_hidden(self) -> int:
        for p in self._layers[0].parameters():
            return int(p.shape[-1])
        raise ConfigError("cannot infer hidden size for the probe")

    @property
    def attached(self) -> bool:
        """True while hooks are registered (the probe is in the forward pass)."""
        return bool(self._handles)

    def zeros(self, rows: int | None = None, requires_grad: bool = False) -> list[torch.Tensor]:
        """Fresh fp32 zero vectors, `[hidden]` each (or `[rows, hidden]`), on the model's device."""
        shape = (self.hidden_size,) if rows is None else (rows, self.hidden_size)
        return [
            torch.zeros(shape, dtype=torch.float32, device=self.device, requires_grad=requires_grad)
            for _ in self.layer_ids
        ]

    def attach(
        self, vectors: Sequence[torch.Tensor], token_mask: torch.Tensor | None = None
    ) -> None:
        """Register hooks with these vectors (one per probe layer), replacing any current ones.

        With ``token_mask`` ([batch, seq], nonzero on real tokens) the hooks also record
        ``residual_norms`` of the next forward pass (padding excluded).
        """
        if len(vectors) != len(self.layer_ids):
            raise ConfigError(f"need {len(self.layer_ids)} probe vectors, got {len(vectors)}")
        self.detach()
        self._vectors = list(vectors)
        self._token_mask = None if token_mask is None else token_mask.bool()
        for slot, layer_id in enumerate(self.layer_ids):
            hook = self._make_hook(slot)
            self._handles.append(self._layers[layer_id].register_forward_hook(hook))

    def detach(self) -> None:
        """Remove every hook; the model is exactly the un-probed model again."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._vectors = []
        self._token_mask = None

    @contextmanager
    def active(
        self, vectors: Sequence[torch.Tensor], token_mask: torch.Tensor | None = None
    ) -> Iterator[list[torch.Tensor]]:
        """Attach for the duration of the block, always detach afterwards."""
        self.attach(vectors, token_mask)
        try:
            yield list(vectors)
        finally:
            self.detach()

    def _make_hook(self, slot: int) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> Any:
            vector = self._vectors[slot]
            if self._token_mask is not None:
                self._record_norm(slot, output[0] if isinstance(output, tuple) else output)
            if isinstance(output, tuple):
                return (self._shift(output[0], vector), *output[1:])
            return self._shift(output, vector)

        return hook

    def _record_norm(self, slot: int, hidden: torch.Tensor) -> None:
        assert self._token_mask is not None
        if len(self.residual_norms) != len(self.layer_ids):
            self.residual_norms = [torch.zeros(()) for _ in self.layer_ids]
        with torch.no_grad():
            # hidden: [batch, seq, hidden] -> per-token norms [batch, seq] -> mean over real tokens.
            norms = hidden.detach().float().norm(dim=-1)
            mask = self._token_mask.to(norms.device)
            self.residual_norms[slot] = norms[mask].mean()

    @staticmethod
    def _shift(hidden: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
        # hidden: [batch, seq, hidden]; vector: [hidden] or [batch, hidden]. Cast to the layer's
        # dtype/device so bf16 models work without autocast (B9); gradients flow back to fp32 V.
        v = vector.to(device=hidden.device, dtype=hidden.dtype)
        if v.dim() == 2:
            v = v.unsqueeze(-2)  # [batch, 1, hidden]
        return hidden + v
