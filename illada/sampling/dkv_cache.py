"""dKV-Cache (Ma et al. 2025, arXiv 2505.15781; horseee/dKV-Cache ``generation_utils/``): a delayed KV cache for
the block loop (``SamplerSettings.cache="dkv"``), in its two variants (``dkv_variant``).

**Decode** (``llada_dkv_cache_decode.py``): within a block, a token's keys/values are cached one step after it is decoded (the forward that first sees it
decoded computes them) and reused until the next refresh; every still-masked token (the block's and the later
blocks') is fed, with fresh keys/values, at every step. Step 0 of a block and every step ``i`` with ``i == 1`` or
``i % cache_steps == 0`` is a full forward that recomputes every key/value (``cache_steps=1``: no caching).

A cached step feeds, per row, the columns that were not yet decoded when the previous step's forward ran; rows
of a batch feed different counts under an adaptive rule, so the fed columns are padded up to the longest row
with already-decoded columns that do not write the cache (``KVCache.write``): each row gets its unbatched keys.

**Greedy** (``llada_dkv_cache_greedy.py``): each block is decoded in an order drawn at its start (``remasking=
"random"``, LLaDA's fixed schedule), so the tokens of the next step are known one step ahead. Step ``i`` with
``i % cache_steps == 0`` is a full forward; any other step feeds only the tokens decoded at the previous step,
the tokens it decodes itself and, for each of those in order, the first ``dkv_window`` still-masked columns
met walking outwards from it (left 1, right 1, left 2, ...). Every fed column writes its keys/values; the rest
attend from the cache.
"""

from __future__ import annotations

import torch

from illada.sampling import rules
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
    """dKV-Cache for one block; ``__call__`` is :class:`illada.sampling.loop._Forward`'s contract:
    ``(x, start, end, step) -> (logits [B, T, V] over the whole canvas, offset 0)``. The loop builds one object
    per block; for the greedy variant it sets :attr:`order` (the block's unmasking scores) before the first
    forward and calls :meth:`after_step` after each commit."""

    feeds_columns = True  # a forward may feed a gathered subset of columns (not for shifted-logit models)

    def __init__(self, model, settings: SamplerSettings, attention_mask: torch.Tensor | None) -> None:
        self.model, self.s, self.attention_mask = model, settings, attention_mask
        self.greedy = settings.dkv_variant == "greedy"
        self.kv = None
        self.feed: torch.Tensor | None = None  # [B, T] columns the next cached step feeds
        self.order: torch.Tensor | None = None  # greedy: [B, T] unmasking scores, -inf outside the block
        self.quota: list[int] = []  # greedy: tokens decoded per step (LLaDA's fixed schedule)
        self.step = 0
        self.drawn: torch.Tensor | None = None  # [B, W] columns the last forward fed, None: all

    def refreshes(self, step: int) -> bool:
        if self.greedy:
            return step % self.s.cache_steps == 0
        return step <= 1 or step % self.s.cache_steps == 0

    def __call__(self, x: torch.Tensor, start: int, end: int, step: int) -> tuple[torch.Tensor, int]:
        mask = self.attention_mask
        self.step = step
        if step == 0 and self.greedy:
            self.quota = rules.transfer_counts(end - start, self.s.steps_per_block)
        self.drawn = None
        if self.refreshes(step):
            if self.kv is None:
                self.kv = self.model.new_kv_cache(x.shape[0], x.shape[1])
            logits = self.model(x, mask, kv_cache=self.kv, cache_start=0)
        else:
            index, write = fed_columns(self.feed)
            self.drawn = index  # the reference draws its noise / random scores for these columns only
            positions = canvas_positions(mask, x.shape[0], x.shape[1], x.device).gather(1, index)
            self.kv.index, self.kv.write = index, write
            try:
                fed = self.model(x.gather(1, index), mask, position_ids=positions, kv_cache=self.kv)
            finally:
                self.kv.index = self.kv.write = None
            # back onto the canvas; an unfed column is never committed this step, so its (zero or padding-slot)
            # logits are never read
            logits = fed.new_zeros(x.shape[0], x.shape[1], fed.shape[-1])
            logits.scatter_(1, index[..., None].expand_as(fed), fed)
        if not self.greedy:  # Decode: the next cached step feeds what is still masked now
            self.feed = x == self.s.mask_id
        return logits, 0

    def after_step(self, x: torch.Tensor, window_start: int, commit: torch.Tensor) -> None:
        """Greedy: strike the committed columns from the order and choose what the next step feeds."""
        if not self.greedy:
            return
        B, T = x.shape
        committed = torch.zeros(B, T, dtype=torch.bool, device=x.device)
        committed[:, window_start:window_start + commit.shape[1]] = commit
        # the reference walks its sorted order once: a committed column leaves it even when the model's token
        # was the mask itself
        self.order.masked_fill_(committed, rules.NEG_INF)
        nxt = self.step + 1
        if nxt >= len(self.quota) or self.refreshes(nxt):
            return
        masked_before = (x == self.s.mask_id) | committed
        upcoming = torch.topk(self.order, self.quota[nxt], dim=1).indices  # [B, k], next step's, in order
        feed = committed.scatter(1, upcoming, True)
        if self.s.dkv_window > 0:
            cols = torch.arange(T, device=x.device)
            for j in range(upcoming.shape[1]):  # each upcoming token's window excludes the previous ones'
                feed |= window_columns(cols - upcoming[:, j:j + 1], masked_before & ~feed, self.s.dkv_window)
        self.feed = feed


def window_columns(offset: torch.Tensor, candidate: torch.Tensor, width: int) -> torch.Tensor:
    """The first ``width`` candidate columns [B, T] met walking outwards from a column (``offset`` [B, T]: each
    column's distance from it), alternating left 1, right 1, left 2, right 2, ... as dKV-Cache's
    ``find_window_tokens``."""
    walk = torch.where(offset < 0, -2 * offset - 2, 2 * offset - 1)  # the walk's turn that visits each column
    turn = torch.where(candidate & (offset != 0), walk, torch.full_like(walk, offset.shape[1] * 2 + 1))
    width = min(width, turn.shape[1])
    first = torch.topk(turn, width, dim=1, largest=False)
    real = first.values <= 2 * offset.shape[1]
    return torch.zeros_like(candidate).scatter(1, first.indices, real)
