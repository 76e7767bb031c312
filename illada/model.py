"""The bidirectional Transformer behind every family (LLaDA, LLaDA-1.5, iLLaDA, Dream, LLaDA-MoE).

Pre-norm blocks with fp32 RMSNorm, rotate-half RoPE with fp32 frequencies, grouped-query attention with no
causal mask, and a SwiGLU feed-forward (or a top-k routed mixture of SwiGLU experts). Config fields switch on
what a family adds: q/k/v biases (Dream), per-head q/k RMSNorm and experts (LLaDA-MoE). Logits returned are
*not* shifted whatever the family: position i predicts token i (a ``logits_shift`` checkpoint is shifted back).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from illada.attention import get_backend
from illada.config import ModelConfig


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Statistics in fp32 whatever the model dtype, as both reference implementations do.
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


def rope_cos_sin(positions: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 cos/sin tables [B, 1, T, head_dim] for integer ``positions`` [B, T]."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim))
    freqs = positions.float()[..., None] * inv_freq
    emb = torch.cat((freqs, freqs), dim=-1)[:, None]
    return emb.cos(), emb.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate-half (NeoX) rotary embedding, computed in fp32 and cast back."""
    h = x.float()
    h1, h2 = h.chunk(2, dim=-1)
    rotated = torch.cat((-h2, h1), dim=-1)
    return (h * cos + rotated * sin).to(x.dtype)


@dataclass
class KVCache:
    """Per-layer keys/values of a whole canvas, [B, n_kv_heads, max_len, head_dim] each.

    A forward with ``cache_start=s`` over T tokens writes their keys/values at [s, s+T) and attends over the
    whole cache; a full forward (s=0, T=max_len) fills it. This one rule gives Fast-dLLM's prefix cache (feed
    x[s:]) and dual cache (feed x[s:e], stale suffix kept).
    """

    k: list[torch.Tensor]
    v: list[torch.Tensor]
    # Per forward, optional (dKV-Cache): canvas columns of the fed tokens [B, T] and which of them may
    # overwrite the cache [B, T] (False: padding slots of a ragged batch). None: the contiguous cache_start rule.
    index: torch.Tensor | None = None
    write: torch.Tensor | None = None
    # Per forward, optional (d2Cache): an attention function used instead of the model's backend, e.g. one that
    # also records the attention weights for the rollout (illada/sampling/d2cache.py).
    attn_fn: Callable | None = None

    @property
    def max_len(self) -> int:
        return self.k[0].shape[2]

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor, cache_start: int
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the fed tokens' keys/values [B, H, T, D]; return the whole cache's keys/values to attend over."""
        if self.index is None:
            self.k[layer][:, :, cache_start:cache_start + k.shape[2]] = k
            self.v[layer][:, :, cache_start:cache_start + k.shape[2]] = v
        else:
            idx = self.index[:, None, :, None].expand_as(k)
            for store, new in ((self.k[layer], k), (self.v[layer], v)):
                if self.write is not None:
                    # a padding slot writes back what it read (indices within a row are distinct)
                    new = torch.where(self.write[:, None, :, None], new, store.gather(2, idx))
                store.scatter_(2, idx, new)
        return self.k[layer], self.v[layer]


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.wq = nn.Linear(cfg.dim, cfg.n_heads * cfg.head_dim, bias=cfg.qkv_bias)
        self.wk = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=cfg.qkv_bias)
        self.wv = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=cfg.qkv_bias)
        self.wo = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.dim, bias=False)
        # LLaDA-MoE normalises every head of q and k (one weight of head_dim shared by the heads) before RoPE.
        self.q_norm = RMSNorm(cfg.head_dim, cfg.norm_eps) if cfg.qk_norm else None
        self.k_norm = RMSNorm(cfg.head_dim, cfg.norm_eps) if cfg.qk_norm else None

    def forward(self, x, cos, sin, key_mask, attn_fn, cache: KVCache | None, layer: int, cache_start: int):
        B, T, _ = x.shape
        q = self.wq(x).view(B, T, self.n_heads, self.head_dim)
        k = self.wk(x).view(B, T, self.n_kv_heads, self.head_dim)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = q.transpose(1, 2), k.transpose(1, 2)
        v = self.wv(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            k, v = cache.update(layer, k, v, cache_start)
        if cache is not None and cache.attn_fn is not None:
            attn_fn = cache.attn_fn
        out = attn_fn(q, k, v, key_mask)
        return self.wo(out.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim))


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)  # gate
        self.w3 = nn.Linear(dim, hidden, bias=False)  # up
        self.w2 = nn.Linear(hidden, dim, bias=False)  # down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class MoEFeedForward(nn.Module):
    """Top-k routed SwiGLU experts (LLaDA-MoE / OLMoE routing), plus an optional always-on shared expert.

    Router probabilities are a float32 softmax over ``gate(x)``; each token takes its ``experts_per_token`` most
    probable experts, weighted by those probabilities (renormalised to sum to 1 only with ``norm_topk_prob``)
    cast to the activation dtype, as the reference does.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.top_k, self.norm_topk_prob = cfg.experts_per_token, cfg.norm_topk_prob
        self.gate = nn.Linear(cfg.dim, cfg.n_experts, bias=False)
        self.experts = nn.ModuleList(FeedForward(cfg.dim, cfg.ffn_dim) for _ in range(cfg.n_experts))
        self.shared_expert = FeedForward(cfg.dim, cfg.shared_expert_ffn_dim) if cfg.shared_expert_ffn_dim else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        probs = torch.softmax(self.gate(x), dim=-1, dtype=torch.float32)
        weights, chosen = torch.topk(probs, self.top_k, dim=-1)
        if self.norm_topk_prob:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        weights = weights.to(x.dtype)
        # Sort the (token, slot) pairs by expert once, then run each expert on its contiguous run of tokens:
        # one loop over experts, none over tokens.
        order = chosen.reshape(-1).argsort(stable=True)
        token_of = order // self.top_k
        counts = torch.bincount(chosen.reshape(-1), minlength=len(self.experts)).tolist()
        routed = x[token_of]
        pair_weights = weights.reshape(-1)[order, None]
        outputs = []
        for expert, rows, w in zip(self.experts, routed.split(counts), pair_weights.split(counts)):
            if len(rows):
                outputs.append(expert(rows) * w)
        out = torch.zeros_like(x)
        if outputs:  # an empty input routes nothing
            out.index_add_(0, token_of, torch.cat(outputs))
        if self.shared_expert is not None:
            out = out + self.shared_expert(x)
        return out.reshape(shape)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.attention_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attention = Attention(cfg)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.feed_forward = MoEFeedForward(cfg) if cfg.is_moe else FeedForward(cfg.dim, cfg.ffn_dim)

    def forward(self, x, cos, sin, key_mask, attn_fn, cache, layer, cache_start):
        if getattr(cache, "block_forward", None) is not None:
            # a feature cache (dLLM-Cache) decides which positions of this block it recomputes
            return cache.block_forward(self, layer, x, cos, sin, key_mask, attn_fn)
        h = x + self.attention(self.attention_norm(x), cos, sin, key_mask, attn_fn, cache, layer, cache_start)
        return h + self.feed_forward(self.ffn_norm(h))


class Transformer(nn.Module):
    """Token ids (+ a 2-D padding mask) in, unshifted logits [B, T, vocab] out, whatever the family."""

    def __init__(self, cfg: ModelConfig, attn_backend: str = "sdpa") -> None:
        super().__init__()
        self.config = cfg
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.output = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        self.tie_weights()
        self.attn_backend = attn_backend

    @property
    def attn_backend(self) -> str:
        return self._attn_backend

    @attn_backend.setter
    def attn_backend(self, name: str) -> None:
        get_backend(name)  # validate the name now, device checks happen at forward time
        self._attn_backend = name

    def tie_weights(self) -> None:
        if self.config.tie_embeddings:
            self.output.weight = self.tok_embeddings.weight

    @property
    def device(self) -> torch.device:
        return self.tok_embeddings.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.tok_embeddings.weight.dtype

    def new_kv_cache(self, batch_size: int, max_len: int) -> KVCache:
        """An empty cache for a canvas of ``max_len`` positions (filled by a full forward)."""
        cfg = self.config
        shape = (batch_size, cfg.n_kv_heads, max_len, cfg.head_dim)
        make = lambda: torch.zeros(shape, dtype=self.dtype, device=self.device)  # noqa: E731
        return KVCache([make() for _ in range(cfg.n_layers)], [make() for _ in range(cfg.n_layers)])

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        kv_cache: KVCache | None = None,
        cache_start: int = 0,
    ) -> torch.Tensor:
        """Logits for ``input_ids`` [B, T].

        ``attention_mask`` [B, S] marks real tokens (1) and padding (0) over all S key positions (S = T, or the
        cache length with ``kv_cache``). Positions default to the count of real tokens before each position,
        so a left-padded row gets the same positions as the unpadded sequence. A [B, T, S] mask says which key
        each query may attend to (WINO's shadow block); it needs explicit ``position_ids``.

        With ``config.logits_shift`` (Dream) the head's output at position i predicts token i+1; it is shifted
        back as Dream's own sampler does (``cat([raw[:, :1], raw[:, :-1]])``). A position with no predecessor keeps
        its own raw logits: position id 0 (the first real token, after any left padding) and the first fed
        position of a cached slice (``cache_start``): do not decode that one from such a forward.
        """
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be [batch, seq], got shape {tuple(input_ids.shape)}")
        B, T = input_ids.shape
        S = kv_cache.max_len if kv_cache is not None else T
        if kv_cache is not None and kv_cache.index is not None:
            if tuple(kv_cache.index.shape) != (B, T) or position_ids is None or cache_start != 0:
                raise ValueError(f"an indexed cache forward needs index of shape {(B, T)}, position_ids and "
                                 f"cache_start=0, got index {tuple(kv_cache.index.shape)}")
        elif kv_cache is not None and not 0 <= cache_start <= S - T:
            raise ValueError(f"cache_start={cache_start} with {T} tokens does not fit a cache of length {S}")
        key_mask = None
        if attention_mask is not None and attention_mask.dim() == 3:
            if tuple(attention_mask.shape) != (B, T, S) or position_ids is None:
                raise ValueError(f"a per-query attention_mask must have shape {(B, T, S)} and come with "
                                 f"position_ids, got {tuple(attention_mask.shape)}")
            key_mask = attention_mask.to(device=input_ids.device, dtype=torch.bool)
        elif attention_mask is not None:
            if tuple(attention_mask.shape) != (B, S):
                raise ValueError(f"attention_mask must have shape {(B, S)}, got {tuple(attention_mask.shape)}")
            key_mask = attention_mask.to(device=input_ids.device, dtype=torch.bool)
        if position_ids is None:
            if key_mask is not None:
                full = (key_mask.long().cumsum(dim=1) - 1).clamp_(min=0)
                position_ids = full[:, cache_start:cache_start + T]
            else:
                position_ids = torch.arange(cache_start, cache_start + T, device=input_ids.device).expand(B, T)
        if key_mask is not None and key_mask.dim() == 2 and bool(key_mask.all()):
            key_mask = None  # nothing padded: checked once here, not by the backend in every layer (a GPU sync)
        cos, sin = rope_cos_sin(position_ids, self.config.head_dim, self.config.rope_theta)
        attn_fn = get_backend(self._attn_backend, self.device, self.dtype)
        h = self.tok_embeddings(input_ids)
        for i, layer in enumerate(self.layers):
            h = layer(h, cos, sin, key_mask, attn_fn, kv_cache, i, cache_start)
        if self.config.logits_shift:
            # The head is applied per position, so shifting its input is shifting its logits, at dim rather
            # than vocabulary width. A sequence's first token (position 0, after left padding too) has no
            # predecessor and keeps its own: a left-padded row gets the logits of the same row unpadded.
            shifted = torch.cat([h[:, :1], h[:, :-1]], dim=1)
            h = torch.where((position_ids == 0)[..., None], h, shifted)
        return self.output(self.norm(h))

    # ------------------------------------------------------------------ construction
    @classmethod
    def empty(cls, cfg: ModelConfig, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
              attn_backend: str = "sdpa") -> "Transformer":
        """Allocate directly in ``dtype`` on ``device`` (no fp32 staging copy); values are uninitialised."""
        with torch.device("meta"):
            model = cls(cfg, attn_backend=attn_backend)
        model = model.to(dtype=dtype).to_empty(device=device)
        model.tie_weights()  # to_empty re-creates parameters one module at a time
        return model

    @classmethod
    def random(cls, cfg: ModelConfig, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
               attn_backend: str = "sdpa", seed: int = 0, std: float = 0.02) -> "Transformer":
        """Random weights (N(0, std), unit norms) generated in place, in ``dtype``, on ``device``."""
        model = cls.empty(cfg, device, dtype, attn_backend)
        if model.device.type == "meta":  # shapes only, nothing to initialise
            return model
        gen = torch.Generator(device=model.device).manual_seed(seed)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith("norm.weight"):
                    p.fill_(1.0)
                else:  # biases too: random ones exercise them
                    p.normal_(0.0, std, generator=gen)
        return model
