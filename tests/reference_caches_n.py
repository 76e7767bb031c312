"""A slow, literal transcription of d2Cache (Kamichanw/d2Cache ``src/cache/d2cache.py`` driven by
``src/generation/vanilla.py``), written from reading it, for one unpadded sequence on illada's Transformer.

What it does, in the reference's order:

* ``vanilla_generate``: blocks left to right; in a block, steps until no mask is left in it. A step runs the
  model on the whole sequence (the cache decides what is really computed), takes p(x0) = max softmax (the
  logits' dtype) over the generated part, -inf where not masked, optionally times the decoder's certainty
  density, and commits inside the block either the top ``k``, or (threshold) everything >= tau, at least the top
  one, or (EB-Sampler, gamma) the longest confidence-ranked prefix whose entropies before each position sum to at
  most gamma, at least one. Then ``d2Cache.on_step_end`` picks the next forward's queries.
* The model forward under d2Cache: the first one is full and stores every layer's (pre-RoPE) keys/values; later
  ones embed only the query positions, overwrite their keys/values in the stored ones and attend over all of
  them (eager attention, weights kept). Logits of the other positions are zeros. Each layer multiplies the
  rollout: ``R <- norm(E + I) @ R``, ``E`` = identity with the query rows replaced by the head-mean weights,
  rows normalised to sum 1; ``R`` starts as the identity at every forward.
* The block mask is narrowed in place at the start of every step (``check_can_generate`` does
  ``eligible_mask &= generated == mask``): from then on "the block" is the block's positions still masked
  before the step, and that is what ``on_step_end`` sees.
* ``on_step_end``: the confidence cache is the first step's confidence for good (the reference's later update
  writes into a temporary copy). Scores = that confidence times the certainty density (``sigma``) of the
  decoded positions after the step; the (narrowed) block's positions get + the largest score; the top
  ``current_k`` masked positions from the block's first still-masked position up to ``search_end`` are queried,
  where ``search_end`` rounds the index of the current_k-th masked position up to a multiple of the narrowed
  block's size (counted from the canvas start); plus the positions decoded at this step; then the smallest top set of the other positions by rollout
  column sum reaching ``rollout_p`` of their total (at least one); then gaps of total width <= ``inflate_w``
  between two queried positions are filled.
"""

from __future__ import annotations

import math

import torch

from illada.model import apply_rope, rope_cos_sin
from illada.sampling.decoders import certainty_density


class _Oracle:
    def __init__(self, model, rollout_p, current_k, sigma, inflate_w):
        self.m = model
        self.rollout_p, self.current_k, self.sigma, self.inflate_w = rollout_p, current_k, sigma, inflate_w
        self.keys, self.values = [], []
        self.q_mask = None  # [T] bool, None before the first step
        self.conf_cache = None
        self.rollout = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m, cfg = self.m, self.m.config
        T = x.shape[0]
        pos = torch.arange(T)
        q_rows = pos if self.q_mask is None else pos[self.q_mask]
        h = m.tok_embeddings(x[q_rows])[None]
        rollout = torch.eye(T, dtype=h.dtype)
        cos_all, sin_all = rope_cos_sin(pos[None], cfg.head_dim, cfg.rope_theta)
        cos_q, sin_q = rope_cos_sin(q_rows[None], cfg.head_dim, cfg.rope_theta)
        for i, layer in enumerate(m.layers):
            a = layer.attention
            n = layer.attention_norm(h)
            Q = n.shape[1]
            q = a.wq(n).view(1, Q, a.n_heads, a.head_dim)
            k = a.wk(n).view(1, Q, a.n_kv_heads, a.head_dim)
            v = a.wv(n).view(1, Q, a.n_kv_heads, a.head_dim)
            if a.q_norm is not None:
                q, k = a.q_norm(q), a.k_norm(k)
            if self.q_mask is None:
                self.keys.append(k.clone())
                self.values.append(v.clone())
            else:
                self.keys[i][:, q_rows] = k
                self.values[i][:, q_rows] = v
            keys, values = self.keys[i].transpose(1, 2), self.values[i].transpose(1, 2)
            q = apply_rope(q.transpose(1, 2), cos_q, sin_q)
            keys = apply_rope(keys, cos_all, sin_all)
            groups = a.n_heads // a.n_kv_heads
            keys, values = keys.repeat_interleave(groups, 1), values.repeat_interleave(groups, 1)
            weights = torch.softmax((q @ keys.transpose(-1, -2) / math.sqrt(a.head_dim)).float(), -1).to(q.dtype)
            out = (weights @ values).transpose(1, 2).reshape(1, Q, -1)
            h = h + a.wo(out)
            h = h + layer.feed_forward(layer.ffn_norm(h))
            effective = torch.eye(T, dtype=h.dtype)
            effective[q_rows] = weights[0].mean(dim=0)
            residual = effective + torch.eye(T, dtype=h.dtype)
            residual = residual / residual.sum(dim=-1, keepdim=True)
            rollout = residual @ rollout
        self.rollout = rollout
        logits_q = m.output(m.norm(h))[0]
        logits = torch.zeros(T, logits_q.shape[-1], dtype=logits_q.dtype)
        logits[q_rows] = logits_q
        return logits

    def on_step_end(self, block: torch.Tensor, gen_after: torch.Tensor, confidence: torch.Tensor,
                    transferred: torch.Tensor, mask_id: int, P: int) -> None:
        G = gen_after.shape[0]
        if self.conf_cache is None:
            self.conf_cache = confidence
        remaining = gen_after == mask_id
        block_size = int(block.sum())
        hits = torch.nonzero(torch.cumsum(remaining.long(), 0) >= self.current_k)
        min_end = int(hits[0]) if len(hits) else G - 1
        search_end = (min_end // block_size + 1) * block_size - 1
        block_start = int(torch.nonzero(block)[0])
        col = torch.arange(G)
        search = (col >= block_start) & (col <= search_end)
        scores = self.conf_cache * certainty_density(~remaining[None], self.sigma)[0]
        scores[block] += scores.max()
        idx = torch.topk(torch.where(search & remaining, scores, torch.tensor(float("-inf"), dtype=scores.dtype)),
                         k=min(self.current_k, G)).indices
        selected = torch.zeros(G, dtype=torch.bool)
        selected[idx] = True
        response = selected & remaining
        response[transferred] = True
        q = torch.cat([torch.zeros(P, dtype=torch.bool), response])
        importance = self.rollout.sum(dim=0)
        # nucleus: normalised scores of the unqueried positions, largest first, cumulative <= p, at least one
        allowed = ~q
        s = torch.where(allowed, importance, torch.zeros_like(importance))
        probs = s / (s.sum() + 1e-9)
        sorted_probs, order = torch.sort(probs, descending=True)
        keep = torch.cumsum(sorted_probs, 0) <= self.rollout_p
        keep[0] = True
        keep &= allowed[order]
        q[order[keep]] = True
        if self.inflate_w > 0:
            chosen = torch.nonzero(q)[:, 0].tolist()
            for a, b in zip(chosen, chosen[1:]):
                if b - a <= self.inflate_w:
                    q[a:b] = True
        self.q_mask = q


@torch.no_grad()
def d2cache_generate(model, prompt: torch.Tensor, *, mask_id: int, gen_length: int, block_length: int,
                     per_step: int | None = None, threshold: float | None = None, gamma: float | None = None,
                     decode_sigma: float | None = None,
                     rollout_p: float = 0.1, current_k: int = 32, sigma: float = 10.0, inflate_w: int = 0
                     ) -> tuple[torch.Tensor, int]:
    """Tokens [1, P + G] and the number of forwards for one unpadded prompt [1, P] (T = 0 only)."""
    P = prompt.shape[1]
    x = torch.cat([prompt[0], torch.full((gen_length,), mask_id, dtype=prompt.dtype)])
    oracle = _Oracle(model, rollout_p, current_k, sigma, inflate_w)
    nfe = 0
    for b in range(gen_length // block_length):
        block = torch.zeros(gen_length, dtype=torch.bool)
        block[b * block_length:(b + 1) * block_length] = True
        while True:
            # check_can_generate(eligible_mask=block_mask) narrows the block mask in place to the positions
            # still masked; on_step_end later reads that narrowed mask
            block &= x[P:] == mask_id
            if not bool(block.any()):
                break
            logits = oracle.forward(x)[P:]
            nfe += 1
            remaining = x[P:] == mask_id
            probs = torch.softmax(logits, dim=-1)
            conf, x0 = probs.max(dim=-1)
            conf = torch.where(remaining, conf, torch.tensor(float("-inf"), dtype=conf.dtype))
            scores = conf
            if decode_sigma is not None:
                scores = conf * certainty_density(~remaining[None], decode_sigma)[0]
            ranked = torch.where(remaining & block, scores, torch.tensor(float("-inf"), dtype=scores.dtype))
            n_masked = int((remaining & block).sum())
            if gamma is not None:  # EB-Sampler (confidence_unmasking's gamma branch), one sequence
                order = torch.sort(ranked, descending=True).indices
                p = probs.float()
                entropy = -(p * torch.log(p.clamp_min(torch.finfo(p.dtype).tiny))).sum(-1)[order]
                count = int(((torch.cumsum(entropy, 0) - entropy) <= gamma).sum())
                chosen = torch.topk(ranked, min(max(count, 1), n_masked)).indices
            elif threshold is not None:
                chosen = torch.nonzero(ranked >= threshold)[:, 0]
                if len(chosen) == 0:
                    chosen = torch.topk(ranked, 1).indices
            else:
                chosen = torch.topk(ranked, min(per_step, n_masked)).indices
            gen = x[P:].clone()
            gen[chosen] = x0[chosen]
            oracle.on_step_end(block, gen, conf, chosen, mask_id, P)
            x[P:] = gen
    return x[None], nfe
