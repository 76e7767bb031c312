"""dLLM-Cache (Liu et al. 2025, arXiv 2506.06295; maomaocun/dLLM-Cache ``dllm_cache/hooks/cache_hook_LLaDA.py``):
an adaptive feature cache for the block loop (``SamplerSettings.cache="dllm"``).

Per layer it keeps the keys/values, the attention output and the feed-forward output of every canvas column,
split into the prompt (the first P columns) and the response (all generated columns). Forward n of a
:func:`~illada.sampling.generate` call (counted over all blocks) recomputes the prompt's features when
``(n - 1) % prompt_interval_steps == 0`` and the response's when ``(n - 1) % gen_interval_steps == 0``
(layer 0 always recomputes everything). Otherwise the response is refreshed partially: its values are recomputed
for every column, and the ``int(G * transfer_ratio)`` columns whose new values are least cosine-similar to the
cached ones get fresh queries/keys, attention output and feed-forward output; the others keep their cached
attention and feed-forward outputs (added to the fresh residual stream).

The model is fed the whole canvas each step; the cache object takes over each block's computation through the
``block_forward`` hook of :class:`illada.model.Block`, using the block's own modules.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from illada.model import apply_rope
from illada.sampling.settings import SamplerSettings


class _Layer:
    """One layer's cached features: keys/values [B, Hkv, T, D] (after RoPE), attention and FFN outputs [B, T, C]."""

    def __init__(self, k: torch.Tensor, v: torch.Tensor) -> None:
        self.k, self.v = k, v
        self.attn: torch.Tensor | None = None
        self.ffn: torch.Tensor | None = None


def _gather(t: torch.Tensor, cols: torch.Tensor, dim: int) -> torch.Tensor:
    """``t`` at columns ``cols`` [B, n] along ``dim`` (batch first)."""
    shape = [1] * t.dim()
    shape[0], shape[dim] = cols.shape
    index = cols.view(shape).expand(*[n if i != dim else cols.shape[1] for i, n in enumerate(t.shape)])
    return t.gather(dim, index)


def _scatter(t: torch.Tensor, cols: torch.Tensor, dim: int, src: torch.Tensor) -> None:
    shape = [1] * t.dim()
    shape[0], shape[dim] = cols.shape
    t.scatter_(dim, cols.view(shape).expand_as(src), src)


class DLLMCache:
    """dLLM-Cache for one :func:`~illada.sampling.generate` call (its features span the blocks)."""

    spans_blocks = True
    index = None  # read by Transformer.forward: this is not an indexed KV cache

    def __init__(self, model, settings: SamplerSettings, attention_mask: torch.Tensor | None) -> None:
        self.model, self.s, self.attention_mask = model, settings, attention_mask
        self.layers: list[_Layer] = []
        self.forwards = 0
        self.prompt_length = 0
        self.refresh_prompt = self.refresh_gen = True
        self.max_len = 0

    def __call__(self, x: torch.Tensor, start: int, end: int, step: int) -> tuple[torch.Tensor, int]:
        s = self.s
        self.forwards += 1
        self.refresh_prompt = (self.forwards - 1) % s.prompt_interval_steps == 0
        self.refresh_gen = (self.forwards - 1) % s.gen_interval_steps == 0
        self.prompt_length, self.max_len = x.shape[1] - s.gen_length, x.shape[1]
        return self.model(x, self.attention_mask, kv_cache=self), 0

    def block_forward(self, block, layer: int, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                      key_mask: torch.Tensor | None, attn_fn) -> torch.Tensor:
        """One Transformer block over the canvas ``h`` [B, T, C], recomputing only what the schedule asks."""
        B, T, _ = h.shape
        P = self.prompt_length
        att = block.attention
        hn = block.attention_norm(h)
        full = layer >= len(self.layers) or (layer == 0) or (self.refresh_prompt and self.refresh_gen)
        if full:
            q, k, v = self._project(att, hn, cos, sin)
            if layer >= len(self.layers):
                self.layers.append(_Layer(k, v))
            st = self.layers[layer]
            st.k, st.v = k, v
            cols = None
        else:
            st = self.layers[layer]
            pieces, col_pieces = [], []
            ar = torch.arange(T, device=h.device).expand(B, T)
            if self.refresh_prompt:
                qp, kp, vp = self._project(att, hn[:, :P], cos[:, :, :P], sin[:, :, :P])
                st.k[:, :, :P], st.v[:, :, :P] = kp, vp
                pieces.append(qp)
                col_pieces.append(ar[:, :P])
            if self.refresh_gen:
                qg, kg, vg = self._project(att, hn[:, P:], cos[:, :, P:], sin[:, :, P:])
                st.k[:, :, P:], st.v[:, :, P:] = kg, vg
                pieces.append(qg)
                col_pieces.append(ar[:, P:])
            elif self.s.transfer_ratio > 0:
                gen_cols = P + self._least_similar(att, hn[:, P:], st)
                qs, ks, _ = self._project(att, _gather(hn, gen_cols, 1), _gather(cos, gen_cols, 2),
                                          _gather(sin, gen_cols, 2), values=False)
                _scatter(st.k, gen_cols, 2, ks)
                pieces.append(qs)
                col_pieces.append(gen_cols)
            q = torch.cat(pieces, dim=2) if pieces else None
            cols = torch.cat(col_pieces, dim=1) if col_pieces else None
        if cols is None and not full:  # nothing recomputed: cached outputs on the fresh residual stream
            h = h + st.attn
            return h + st.ffn
        out = attn_fn(q, st.k, st.v, key_mask)
        out = att.wo(out.transpose(1, 2).reshape(B, q.shape[2], att.n_heads * att.head_dim))
        if full:
            st.attn = out
        else:
            _scatter(st.attn, cols, 1, out)
        h = h + st.attn
        ffn_in = h if full else _gather(h, cols, 1)
        ffn_out = block.feed_forward(block.ffn_norm(ffn_in))
        if full:
            st.ffn = ffn_out
        else:
            _scatter(st.ffn, cols, 1, ffn_out)
        return h + st.ffn

    def _least_similar(self, att, hn_gen: torch.Tensor, st: _Layer) -> torch.Tensor:
        """Response columns (0-based) whose fresh values are least cosine-similar to the cached ones [B, n]; all
        response values are replaced by the fresh ones, as the reference does."""
        B, G, _ = hn_gen.shape
        v_new = att.wv(hn_gen)  # [B, G, Hkv * D]
        v_old = st.v[:, :, -G:].transpose(1, 2).reshape(B, G, -1)
        similarity = F.cosine_similarity(v_new, v_old, dim=-1)
        chosen = torch.topk(similarity, k=int(G * self.s.transfer_ratio), largest=False).indices
        st.v[:, :, -G:] = v_new.view(B, G, att.n_kv_heads, att.head_dim).transpose(1, 2)
        return chosen

    @staticmethod
    def _project(att, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, values: bool = True):
        """Queries, keys (after RoPE) and values of ``x`` [B, n, C], as :class:`illada.model.Attention` does."""
        B, n, _ = x.shape
        q = att.wq(x).view(B, n, att.n_heads, att.head_dim)
        k = att.wk(x).view(B, n, att.n_kv_heads, att.head_dim)
        if att.q_norm is not None:
            q, k = att.q_norm(q), att.k_norm(k)
        v = att.wv(x).view(B, n, att.n_kv_heads, att.head_dim).transpose(1, 2) if values else None
        return apply_rope(q.transpose(1, 2), cos, sin), apply_rope(k.transpose(1, 2), cos, sin), v
