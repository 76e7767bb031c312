"""The dense bidirectional Transformer behind LLaDA and iLLaDA (one implementation for both formats).

Pre-norm blocks with fp32 RMSNorm, rotate-half RoPE with fp32 frequencies, grouped-query attention with no
causal mask, and a SwiGLU feed-forward. Logits are *not* shifted: position i predicts token i.
"""

from __future__ import annotations

from dataclasses import dataclass

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

    @property
    def max_len(self) -> int:
        return self.k[0].shape[2]


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.wq = nn.Linear(cfg.dim, cfg.n_heads * cfg.head_dim, bias=False)
        self.wk = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.wv = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.wo = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.dim, bias=False)

    def forward(self, x, cos, sin, key_mask, attn_fn, cache: KVCache | None, layer: int, cache_start: int):
        B, T, _ = x.shape
        q = self.wq(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.wk(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.wv(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            cache.k[layer][:, :, cache_start:cache_start + T] = k
            cache.v[layer][:, :, cache_start:cache_start + T] = v
            k, v = cache.k[layer], cache.v[layer]
        out = attn_fn(q, k, v, key_mask)
        return self.wo(out.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim))


class FeedForward(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.w1 = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)  # gate
        self.w3 = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)  # up
        self.w2 = nn.Linear(cfg.ffn_dim, cfg.dim, bias=False)  # down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.attention_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attention = Attention(cfg)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.feed_forward = FeedForward(cfg)

    def forward(self, x, cos, sin, key_mask, attn_fn, cache, layer, cache_start):
        h = x + self.attention(self.attention_norm(x), cos, sin, key_mask, attn_fn, cache, layer, cache_start)
        return h + self.feed_forward(self.ffn_norm(h))


class Transformer(nn.Module):
    """Token ids (+ a 2-D padding mask) in, unshifted logits [B, T, vocab] out."""

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
        """
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be [batch, seq], got shape {tuple(input_ids.shape)}")
        B, T = input_ids.shape
        S = kv_cache.max_len if kv_cache is not None else T
        if kv_cache is not None and not 0 <= cache_start <= S - T:
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
        cos, sin = rope_cos_sin(position_ids, self.config.head_dim, self.config.rope_theta)
        attn_fn = get_backend(self._attn_backend, self.device, self.dtype)
        h = self.tok_embeddings(input_ids)
        for i, layer in enumerate(self.layers):
            h = layer(h, cos, sin, key_mask, attn_fn, kv_cache, i, cache_start)
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
                else:
                    p.normal_(0.0, std, generator=gen)
        return model
