"""Pure tensor functions for SAP: response NLLs, contrastive safety loss, directions, probe steps.

No module state, no model calls: each function maps tensors to tensors, so each is unit-tested
against a hand-computed value (tests/sap_core/test_objectives.py). Labels use -100 for positions
that are not trained (prompt, padding); the shift is done here (`logits[:, :-1]` predicts
`labels[:, 1:]`), fixing the reference code's unshifted scoring (B2).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from sap_core.errors import ConfigError, TrainingDivergedError

IGNORE_INDEX = -100


def sequence_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed next-token NLL per sequence over labelled (response) tokens.

    Args:
        logits: `[batch, seq, vocab]` model outputs for the full prompt+response sequence.
        labels: `[batch, seq]` token ids, `IGNORE_INDEX` where not trained; **unshifted** (aligned
            with `input_ids`), as HF expects.

    Returns:
        `(nll_sum, n_tokens)`, both `[batch]`; nll_sum is at least fp32 (half logits upcast).
    """
    shift_logits = logits[:, :-1, :]  # [batch, seq-1, vocab]
    if shift_logits.dtype in (torch.float16, torch.bfloat16):
        shift_logits = shift_logits.float()  # CE in at least fp32; fp64 models stay fp64 (tests)
    shift_labels = labels[:, 1:]  # [batch, seq-1]
    mask = shift_labels != IGNORE_INDEX  # [batch, seq-1]
    token_nll = F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.size(-1)),
        shift_labels.reshape(-1).clamp_min(0),
        reduction="none",
    ).view_as(shift_labels)  # [batch, seq-1]
    token_nll = token_nll * mask
    return token_nll.sum(dim=-1), mask.sum(dim=-1)


def mean_response_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The task (usefulness) loss L_u: mean NLL over all labelled tokens of the batch (HF's loss).

    Args:
        logits: `[batch, seq, vocab]`.
        labels: `[batch, seq]`, unshifted, `IGNORE_INDEX` where not trained.

    Returns:
        Scalar fp32 loss. A batch with no labelled token gives 0 (with a graph), not NaN.
    """
    nll_sum, n_tokens = sequence_nll(logits, labels)
    return nll_sum.sum() / n_tokens.sum().clamp_min(1)


def safety_loss(
    chosen_nll: torch.Tensor, rejected_nll: torch.Tensor, form: str = "difference"
) -> torch.Tensor:
    """Contrastive safety loss L_safe over a batch of (prompt, safe, harmful) triples.

    Args:
        chosen_nll: `[batch]` summed NLL of the safe (refusal) response.
        rejected_nll: `[batch]` summed NLL of the harmful response.
        form: "difference" = mean(NLL(safe) - NLL(harmful)) (the paper's form, S6);
            "logsigmoid" = mean(-log sigmoid(logp_safe - logp_harmful)) (the reference code, B4:
            its per-example weight sigma(-margin) can underflow to 0 for an aligned model).

    Returns:
        Scalar loss; its gradient ascent direction moves the model toward the harmful response.
    """
    if form == "difference":
        return (chosen_nll - rejected_nll).mean()
    if form == "logsigmoid":
        margin = (-chosen_nll) - (-rejected_nll)  # logp_safe - logp_harmful, [batch]
        return -F.logsigmoid(margin.float()).mean()
    raise ConfigError(f"unknown contrastive form {form!r}; use 'difference' or 'logsigmoid'")


def _at_least_fp32(t: torch.Tensor) -> torch.Tensor:
    """Detached t in fp32, or fp64 if it already is (fp64 models in finite-difference tests)."""
    return t.detach().to(torch.promote_types(t.dtype, torch.float32))


def global_norm(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """L2 norm of the concatenation of all tensors (scalar, at least fp32)."""
    if not tensors:
        raise ConfigError("global_norm of an empty tensor list")
    squares = [_at_least_fp32(t).pow(2).sum() for t in tensors]
    return torch.sqrt(torch.stack(squares).sum())


def unit_direction(grads: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], float]:
    """Normalise a gradient list to unit global L2 norm (fp32).

    Returns:
        `(g_hat, norm)` with ||g_hat||_2 = 1 over all tensors together. Raises
        `TrainingDivergedError` when the norm is 0 or not finite: a zero safety gradient would
        silently turn SAP into SFT (B4), so the caller must not continue.
    """
    norm = float(global_norm(grads))
    if not (norm > 0.0 and norm < float("inf")):
        raise TrainingDivergedError(
            f"safety gradient norm is {norm}; SAP needs a finite, non-zero safety direction "
            "(check that safety triples have response labels, or use contrastive_form='difference')"
        )
    return [_at_least_fp32(g) / norm for g in grads], norm


def perturbation(
    g_hat: Sequence[torch.Tensor], theta_norm: float, rho: float, relative: bool = True
) -> list[torch.Tensor]:
    """eps = rho * ||theta|| * g_hat (relative, the code's rule) or rho * g_hat (absolute).

    Ascent on L_safe, i.e. toward the harmful response (Delta W_harmful).
    """
    scale = rho * theta_norm if relative else rho
    return [scale * g for g in g_hat]


def probe_ascent_step(
    gap_grad: torch.Tensor, rule: str, step_size: float, residual_norm: float | None = None
) -> torch.Tensor:
    """Stateless ascent step from V=0 on L_su.

    - ``sgd``: V* = beta * gap. Its size is beta * ||gap||, and ||gap|| grows with rho and with
      the model (measured ~1e-5 at rho=2e-5 on Qwen-0.5B: a no-op), so beta means nothing alone.
    - ``sign``: V* = beta * sign(gap): every coordinate moves by beta.
    - ``relative``: V* = beta * r * gap / ||gap||, r = the mean per-token residual-stream norm
      at the probed layer: the probe is a fixed fraction beta of the activations it shifts,
      pointing along the gap. One beta then means the same strength on any model or layer.

    Args:
        gap_grad: `[hidden]` = grad_V [L_u(theta+eps, V) - L_u(theta, V)].
        rule: "sgd", "sign" or "relative" ("adam_persistent" is stateful: the trainer's).
        step_size: beta.
        residual_norm: r for the "relative" rule (required there).
    """
    if rule == "sgd":
        return step_size * gap_grad
    if rule == "sign":
        return step_size * torch.sign(gap_grad)
    if rule == "relative":
        if residual_norm is None:
            raise ConfigError("the relative probe rule needs the residual norm at its layer")
        norm = float(_at_least_fp32(gap_grad).norm())
        if norm == 0.0:
            return torch.zeros_like(gap_grad)
        return (step_size * residual_norm / norm) * gap_grad
    raise ConfigError(f"probe rule {rule!r} is not stateless; use sgd, sign or relative here")


def inner_product(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> float:
    """<a, b> over tensor lists (fp64 accumulation)."""
    return float(
        sum((x.detach().double() * y.detach().double()).sum() for x, y in zip(a, b, strict=True))
    )


def cosine_similarity(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> float:
    """Cosine of the angle between two tensor lists seen as flat vectors."""
    denom = (inner_product(a, a) * inner_product(b, b)) ** 0.5
    return inner_product(a, b) / denom if denom > 0 else 0.0
