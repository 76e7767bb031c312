"""dKV-Cache-Decode (Ma et al. 2025, arXiv 2505.15781; horseee/dKV-Cache ``generation_utils/
llada_dkv_cache_decode.py``): a delayed KV cache for the block loop (``SamplerSettings.cache="dkv"``).

Within a block, a token's keys/values are cached one step after it is decoded (the forward that first sees it
decoded computes them) and reused until the next refresh; every still-masked token (the block's and the later
blocks') is fed, with fresh keys/values, at every step. Step 0 of a block and every step ``i`` with ``i == 1`` or
``i % cache_steps == 0`` is a full forward that recomputes every key/value (``cache_steps=1``: no caching).

A cached step feeds, per row, the columns that were not yet decoded when the previous step's forward ran; rows
of a batch feed different counts under an adaptive rule, so the fed columns are padded up to the longest row
with already-decoded columns that do not write the cache (``KVCache.write``): each row gets its unbatched keys.
"""

from __future__ import annotations

import torch

from illada.sampling.settings import SamplerSettings


def canvas_positions(attention_mask: torch.Tensor | None, batch: int, length: int,
                     device: torch.device) -> torch.Tensor:
    """RoPE position of every canvas column [B, T]: the count of real tokens before it (left padding)."""
    if attention_mask is None:
        return torch.arange(length, device=device).expand(batch, length)
    return (attention_mask.long().cumsum(dim=1) - 1).clamp_(min=0)


def fed_columns(feed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Columns to feed per row [B, W] (W = the largest count), ascending, padded with unfed columns, and which
    slots are real [B, W]."""
    B, T = feed.shape
    count = feed.sum(dim=1)
    width = int(count.max())
    cols = torch.arange(T, device=feed.device)
    # fed columns first, each group in column order: one stable argsort, no loop over rows
    order = torch.argsort((~feed).long() * T + cols, dim=1)[:, :width]
    return order, torch.arange(width, device=feed.device) < count[:, None]


class DKVCache:
    """dKV-Cache-Decode for one block; ``__call__`` is :class:`illada.sampling.loop._Forward`'s contract:
    ``(x, start, end, step) -> (logits [B, T, V] over the whole canvas, offset 0)``. The loop builds one object
    per block."""

    feeds_columns = True  # a forward may feed a gathered subset of columns (not for shifted-logit models)

    def __init__(self, model, settings: SamplerSettings, attention_mask: torch.Tensor | None) -> None:
        self.model, self.s, self.attention_mask = model, settings, attention_mask
        self.kv = None
        self.decoded_before: torch.Tensor | None = None  # columns decoded when the previous step's forward ran

    def refreshes(self, step: int) -> bool:
        return step <= 1 or step % self.s.cache_steps == 0

    def __call__(self, x: torch.Tensor, start: int, end: int, step: int) -> tuple[torch.Tensor, int]:
        decoded = x != self.s.mask_id
        mask = self.attention_mask
        if self.refreshes(step):
            if self.kv is None:
                self.kv = self.model.new_kv_cache(x.shape[0], x.shape[1])
            logits = self.model(x, mask, kv_cache=self.kv, cache_start=0)
        else:
            index, write = fed_columns(~self.decoded_before)
            positions = canvas_positions(mask, x.shape[0], x.shape[1], x.device).gather(1, index)
            self.kv.index, self.kv.write = index, write
            try:
                fed = self.model(x.gather(1, index), mask, position_ids=positions, kv_cache=self.kv)
            finally:
                self.kv.index = self.kv.write = None
            # back onto the canvas; unfed columns are decoded, so their (zero) logits are never read
            logits = fed.new_zeros(x.shape[0], x.shape[1], fed.shape[-1])
            logits.scatter_(1, index[..., None].expand_as(fed), fed)
        self.decoded_before = decoded
        return logits, 0
