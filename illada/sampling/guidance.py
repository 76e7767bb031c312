"""Unsupervised classifier-free guidance (SMDM / LLaDA), shared by the samplers and the scorers."""

from __future__ import annotations

import torch


def with_unconditional_rows(x: torch.Tensor, attention_mask: torch.Tensor | None, prompt_index: torch.Tensor,
                            mask_id: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Stack [x; x with every prompt position replaced by the mask token] (and the padding mask twice)."""
    unconditional = torch.where(prompt_index, torch.full_like(x, mask_id), x)
    x2 = torch.cat([x, unconditional], dim=0)
    mask2 = None if attention_mask is None else torch.cat([attention_mask, attention_mask], dim=0)
    return x2, mask2


def combine_guided(logits: torch.Tensor, cfg_scale: float) -> torch.Tensor:
    """un + (w + 1) * (cond - un) from logits whose first half of rows is conditional, second unconditional."""
    cond, uncond = torch.chunk(logits, 2, dim=0)
    return uncond + (cfg_scale + 1) * (cond - uncond)


def guided_logits(model, x: torch.Tensor, attention_mask: torch.Tensor | None, prompt_index: torch.Tensor,
                  cfg_scale: float, mask_id: int) -> torch.Tensor:
    """``model(x, attention_mask)``, guided when ``cfg_scale > 0`` (one forward over twice the rows)."""
    if cfg_scale > 0:
        x2, mask2 = with_unconditional_rows(x, attention_mask, prompt_index, mask_id)
        return combine_guided(model(x2, mask2), cfg_scale)
    return model(x, attention_mask)
