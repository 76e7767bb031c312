"""d2Cache (Jiang et al. 2025, arXiv 2509.23094; Kamichanw/d2Cache ``src/cache/d2cache.py``): dual adaptive
caching for the block loop (``SamplerSettings.cache="d2cache"``).

The first forward of a generation is full and fills a key/value cache of the whole canvas; there is no refresh
at block starts. After each step, the positions whose keys/values the next forward recomputes (its queries) are:

* the ``current_k`` still-masked positions with the highest certainty-prior score (the first forward's
  confidence times the Gaussian density of decoded neighbours, width ``cache_sigma``), the block's own positions
  ranked first. As the reference runs, "the block" here is the block's positions that were still masked before
  the step (its ``check_can_generate`` narrows the block mask in place before ``on_step_end`` reads it): the
  search starts at the first of them and ends at ``search_end``, the index of the ``current_k``-th masked
  position rounded up to a multiple of their count (canvas-relative), so the window shrinks as the block fills;
* every position decoded at this step (its token changed);
* the smallest set of the other positions holding a ``rollout_p`` share of the attention rollout's column sums
  (how much the canvas attended to each position through all layers, Abnar & Zuidema 2020), at least one;
* with ``inflate_w > 0``, every position in a gap of at most ``inflate_w`` between two selected positions.

Queries attend over the whole cache; positions that are not fed get zero logits (a uniform distribution), as
in the reference, so a masked position that was not recomputed may still be ranked (at probability 1/V).

Kept from the reference as it runs: the confidence the prior multiplies is the first forward's for the whole
generation (the reference's later write goes to a copy). Differences, so that a batch gives each row its
unbatched tokens: the in-block bias is each row's own maximum score (the reference: the batch's) and rows of a
batch with fewer queries are padded with slots that write nothing (the reference recomputes extra positions
for them); the rollout is taken in float32 whatever the model's dtype, as a product of vectors from the last
layer down (equal to the reference's matrix product up to rounding). Not supported: Dream's shifted logits.
"""

from __future__ import annotations

import torch

from illada.attention import attention_probs
from illada.sampling.decoders import certainty_density
from illada.sampling.dkv_cache import canvas_positions, fed_columns
from illada.sampling.settings import SamplerSettings


def nucleus(scores: torch.Tensor, top_p: float, allowed: torch.Tensor) -> torch.Tensor:
    """Bool [B, T]: per row, the allowed positions with the largest scores whose normalised cumulative sum stays
    within ``top_p``, and always the largest one (d2Cache's ``nucleus_select`` with min_k 1); ``top_p`` 1: all."""
    scores = torch.where(allowed, scores, torch.zeros_like(scores))
    probs = scores / (scores.sum(dim=-1, keepdim=True) + 1e-9)
    ordered, order = probs.sort(dim=-1, descending=True)
    # top_p 1 takes every allowed position (a cumulative sum can round past 1: the reference's edge)
    keep = (ordered.cumsum(dim=-1) <= top_p) | (top_p >= 1)
    keep[:, 0] = True
    keep &= allowed.gather(1, order)
    return torch.zeros_like(allowed).scatter(1, order, keep)


def inflate(selected: torch.Tensor, width: int) -> torch.Tensor:
    """Fill every run of unselected positions of length < ``width`` lying between two selected ones."""
    B, T = selected.shape
    cols = torch.arange(T, device=selected.device).expand(B, T)
    nxt = torch.where(selected, cols, torch.full_like(cols, T)).flip(-1).cummin(dim=-1).values.flip(-1)
    prev = torch.where(selected, cols, torch.full_like(cols, -1)).cummax(dim=-1).values
    return selected | ((nxt - prev <= width) & (prev >= 0) & (nxt < T))


class D2Cache:
    """A generation's d2Cache state (it spans the blocks: ``spans_blocks``). ``__call__`` is
    :class:`illada.sampling.loop._Forward`'s contract ``(x, start, end, step) -> (block logits, start)``;
    :meth:`after_step` sees each step's commits and chooses the next forward's queries."""

    spans_blocks = True
    feeds_columns = True  # a forward feeds a gathered subset of columns (not for shifted-logit models)

    def __init__(self, model, settings: SamplerSettings, attention_mask: torch.Tensor | None) -> None:
        self.model, self.s, self.attention_mask = model, settings, attention_mask
        self.kv = None
        self.queries: torch.Tensor | None = None  # [B, T] columns the next forward feeds
        self.confidence: torch.Tensor | None = None  # [B, G] the first forward's confidence
        self.importance: torch.Tensor | None = None  # [B, T] rollout column sums of the last forward
        self.active: torch.Tensor | None = None  # [B] rows with masks in the block at the last forward
        self.block_masked: torch.Tensor | None = None  # [B, W] the block's positions masked at the last forward
        self.block = (0, 0)

    # ------------------------------------------------------------------ forward
    def __call__(self, x: torch.Tensor, start: int, end: int, step: int) -> tuple[torch.Tensor, int]:
        B, T = x.shape
        mask = self.attention_mask
        self.block_masked = x[:, start:end] == self.s.mask_id
        self.active = self.block_masked.any(dim=1)
        self.block = (start, end)
        weights: list[torch.Tensor] = []

        def attend(q, k, v, key_mask):
            probs = attention_probs(q, k, key_mask)
            weights.append(probs.float().mean(dim=1))  # head mean [B, Q, S], as the rollout reads it
            groups = q.shape[1] // k.shape[1]
            return torch.matmul(probs, v.repeat_interleave(groups, dim=1))

        if self.kv is None:  # the generation's first forward: every column, fills the cache
            self.kv = self.model.new_kv_cache(B, T)
            self.kv.attn_fn = attend
            try:
                logits = self.model(x, mask, kv_cache=self.kv, cache_start=0)
            finally:
                self.kv.attn_fn = None
            index = torch.arange(T, device=x.device).expand(B, T)
            fed = torch.ones(B, T, dtype=torch.bool, device=x.device)
            G = self.s.gen_length
            self.confidence = torch.softmax(logits[:, T - G:], dim=-1).amax(dim=-1)
            self._rollout(weights, index, fed, mask, T)
            return logits[:, start:end], start
        index, fed = fed_columns(self.queries)
        fed &= self.active[:, None]  # a row done with its block changes nothing (it sits out in the reference)
        positions = canvas_positions(mask, B, T, x.device).gather(1, index)
        self.kv.index, self.kv.write, self.kv.attn_fn = index, fed, attend
        try:
            out = self.model(x.gather(1, index), mask, position_ids=positions, kv_cache=self.kv)
        finally:
            self.kv.index = self.kv.write = self.kv.attn_fn = None
        self._rollout(weights, index, fed, mask, T)
        # the block's logits: fed columns get theirs, the others zeros (the reference's scatter into zeros)
        width = end - start
        logits = out.new_zeros(B, width + 1, out.shape[-1])
        inside = fed & (index >= start) & (index < end)
        slot = torch.where(inside, index - start, torch.full_like(index, width))  # the rest: a spare column
        logits.scatter_(1, slot[..., None].expand_as(out), out)
        return logits[:, :width], start

    def _rollout(self, weights: list[torch.Tensor], index: torch.Tensor, fed: torch.Tensor,
                 mask: torch.Tensor | None, T: int) -> None:
        """Column sums of the attention rollout prod_l norm(A_l + I) (rows of unfed columns: identity), as a
        vector pushed from the last layer down: O(queries x T) per layer instead of the T x T x T products."""
        B = index.shape[0]
        real = torch.ones(B, T, dtype=torch.bool, device=index.device) if mask is None else mask.bool()
        v = real.float()  # padding rows do not exist in the unbatched run
        is_query = torch.zeros(B, T, dtype=torch.bool, device=index.device).scatter(1, index, fed)
        eye = torch.zeros(B, index.shape[1], T, device=index.device).scatter_(2, index[..., None], 1.0)
        for attn in reversed(weights):
            rows = (attn + eye) / (attn.sum(dim=-1, keepdim=True) + 1.0)
            w = v.gather(1, index) * fed
            v = torch.where(is_query, torch.zeros_like(v), v) + torch.einsum("bq,bqt->bt", w, rows)
        importance = torch.where(real, v, torch.zeros_like(v))
        if self.importance is None:
            self.importance = importance
        else:
            self.importance = torch.where(self.active[:, None], importance, self.importance)

    # ------------------------------------------------------------------ query selection
    def after_step(self, x: torch.Tensor, window_start: int, commit: torch.Tensor) -> None:
        """Choose the next forward's queries from the canvas after this step's commits (``commit`` [B, W] over
        columns from ``window_start``)."""
        s = self.s
        B, T = x.shape
        G = s.gen_length
        P = T - G
        start, end = self.block
        decoded = torch.zeros(B, T, dtype=torch.bool, device=x.device)
        decoded[:, window_start:window_start + commit.shape[1]] = commit
        remaining = x[:, P:] == s.mask_id
        cols = torch.arange(G, device=x.device)
        # the block as the reference's on_step_end sees it: its positions masked before this step
        in_block = torch.zeros_like(remaining)
        in_block[:, start - P:end - P] = self.block_masked
        size = in_block.sum(dim=1).clamp_min(1)  # 0 only in a row that sits out (its queries are kept)
        first = in_block.long().argmax(dim=1)
        # search from there to the index of the current_k-th masked position rounded up to a multiple of size
        meets = remaining.long().cumsum(dim=1) >= s.current_k
        first_meet = torch.where(meets.any(dim=1), meets.long().argmax(dim=1), torch.full_like(cols[:1], G - 1))
        search_end = (first_meet // size + 1) * size - 1
        search = (cols >= first[:, None]) & (cols <= search_end[:, None])
        scores = self.confidence * certainty_density(~remaining, s.cache_sigma)
        scores = scores + in_block * scores.amax(dim=1, keepdim=True)
        candidates = torch.where(search & remaining, scores, torch.full_like(scores, float("-inf")))
        top = candidates.topk(min(s.current_k, G), dim=-1).indices
        selected = torch.zeros_like(remaining).scatter(1, top, True) & remaining
        queries = decoded.clone()
        queries[:, P:] |= selected
        real = torch.ones_like(queries) if self.attention_mask is None else self.attention_mask.bool()
        queries |= nucleus(self.importance, s.rollout_p, ~queries & real)
        if s.inflate_w > 0:
            queries = inflate(queries, s.inflate_w)
        if self.queries is None:
            self.queries = queries
        else:
            self.queries = torch.where(self.active[:, None], queries, self.queries)
