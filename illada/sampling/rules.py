"""Token sampling, remasking (confidence) rules and position-selection rules, one small function each.

Shapes: ``logits`` [B, W, V] over the W positions of the current block, ``x0`` / confidences / masks [B, W].
"""

from __future__ import annotations

from typing import Callable

import torch

NEG_INF = float("-inf")


def transfer_counts(masked: int, steps: int) -> list[int]:
    """LLaDA's uniform schedule: ``masked`` tokens over ``steps`` steps, the remainder on the first steps.

    Justified by the linear noise schedule (the expected number of tokens revealed per step is constant).
    """
    base, remainder = divmod(masked, steps)
    return [base + (i < remainder) for i in range(steps)]


def sample_tokens(logits: torch.Tensor, temperature: float, noise: torch.Tensor | None) -> torch.Tensor:
    """x0: greedy at temperature 0, else Gumbel-max in float64 as ``argmax(exp(l) / (-log u)^T)``."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    gumbel = (-torch.log(noise)) ** temperature
    return (logits.to(torch.float64).exp() / gumbel).argmax(dim=-1)


# ---------------------------------------------------------------------------------------------- remasking rules
# Each returns a score per position, higher = unmask earlier. ``dtype`` is the softmax precision.

def low_confidence(logits: torch.Tensor, x0: torch.Tensor, uniform: torch.Tensor | None,
                   dtype: torch.dtype) -> torch.Tensor:
    """LLaDA / MaskGIT: probability of the chosen token, p(x0)."""
    probs = torch.softmax(logits.to(dtype), dim=-1)
    return torch.gather(probs, -1, x0.unsqueeze(-1)).squeeze(-1)


def random_confidence(logits: torch.Tensor, x0: torch.Tensor, uniform: torch.Tensor | None,
                      dtype: torch.dtype) -> torch.Tensor:
    """LLaDA ``random``: a fresh U(0, 1) score per position (drawn by the caller, float32 as the reference)."""
    return uniform


def topk_margin(logits: torch.Tensor, x0: torch.Tensor, uniform: torch.Tensor | None,
                dtype: torch.dtype) -> torch.Tensor:
    """Dream ``topk_margin``: p(1) - p(2), the gap between the two most probable tokens."""
    top2 = torch.softmax(logits.to(dtype), dim=-1).topk(2, dim=-1).values
    return top2[..., 0] - top2[..., 1]


def entropy(logits: torch.Tensor, x0: torch.Tensor, uniform: torch.Tensor | None,
            dtype: torch.dtype) -> torch.Tensor:
    """Dream ``entropy``: sum p log p = -H(p) (eps 1e-10 inside the log as Dream), higher = more certain."""
    probs = torch.softmax(logits.to(dtype), dim=-1)
    return (probs * torch.log(probs + 1e-10)).sum(dim=-1)


ConfidenceRule = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None", torch.dtype], torch.Tensor]
CONFIDENCE_RULES: dict[str, ConfidenceRule] = {
    "low_confidence": low_confidence,
    "random": random_confidence,
    "topk_margin": topk_margin,
    "entropy": entropy,
}


# --------------------------------------------------------------------------------------------- selection rules
# Each returns the bool [B, W] set of positions to commit; ``confidence`` is -inf where nothing may be committed.

def select_fixed(confidence: torch.Tensor, k: int, start: int, canvas_len: int) -> torch.Tensor:
    """LLaDA's fixed schedule: the top-``k`` positions of every row (same k for all rows).

    The scores are laid out on the whole canvas (-inf outside the block) before ``topk``, exactly the tensor the
    reference ranks, so that exactly equal confidences break ties the same way.
    """
    B, W = confidence.shape
    chosen = torch.zeros(B, canvas_len, dtype=torch.bool, device=confidence.device)
    if k > 0:
        canvas = torch.full((B, canvas_len), NEG_INF, dtype=confidence.dtype, device=confidence.device)
        canvas[:, start:start + W] = confidence
        chosen.scatter_(1, torch.topk(canvas, k, dim=-1).indices, True)
    return chosen[:, start:start + W]


def select_threshold(confidence: torch.Tensor, masked: torch.Tensor, threshold: float) -> torch.Tensor:
    """Fast-dLLM ``get_transfer_index`` with tau: the top-1 masked position plus every one with c >= tau."""
    chosen = (confidence >= threshold) & masked
    top1 = confidence.argmax(dim=-1, keepdim=True)
    return chosen.scatter(1, top1, masked.any(dim=-1, keepdim=True) | chosen.gather(1, top1))


def select_factor(confidence: torch.Tensor, masked: torch.Tensor, factor: float) -> torch.Tensor:
    """Fast-dLLM ``get_transfer_index_dynamic``: the largest prefix n of the sorted confidences with
    c(j) >= 1 - f/(j+1) for j = 2..n (top-1 always), including the reference's rule that a first failure at the
    last masked position still commits every masked position.
    """
    B, W = confidence.shape
    n = masked.sum(dim=-1)
    ordered, order = confidence.sort(dim=-1, descending=True)
    rank = torch.arange(W, device=confidence.device)
    # thresholds are Python floats in the reference, so they meet the scores in the scores' dtype
    bound = (1.0 - factor / (rank + 2).to(torch.float64)).to(confidence.dtype)
    bound[0] = -1.0
    passes = (ordered >= bound) & (rank < n[:, None])
    k = passes.long().cumprod(dim=-1).sum(dim=-1)
    k = torch.where(k == n - 1, n, k).clamp(min=1)
    k = torch.where(n > 0, k, torch.zeros_like(k))
    return torch.zeros_like(masked).scatter(1, order, rank < k[:, None])
