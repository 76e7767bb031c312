"""Bidirectional (non-causal) attention backends, selected by name.

Every backend computes softmax(q k^T / sqrt(d) + key_padding_bias) v over all keys, with grouped-query
attention (n_heads a multiple of n_kv_heads). Shapes: q [B, H, Tq, D], k/v [B, Hkv, Tk, D],
``key_mask`` [B, Tk] bool (True = real token) or None; eager and sdpa also take a per-query mask [B, Tq, Tk]
(True = may attend; WINO's shadow block). Returns [B, H, Tq, D].
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

AttentionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]


def eager_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
    """The readable reference: explicit scores, additive key-padding bias, fp32 softmax."""
    groups = q.shape[1] // k.shape[1]
    return torch.matmul(attention_probs(q, k, key_mask), v.repeat_interleave(groups, dim=1))


def attention_probs(q: torch.Tensor, k: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
    """Eager attention's weights [B, H, Tq, Tk] (in q's dtype); d2Cache's attention rollout reads them."""
    groups = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(groups, dim=1)
    scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    if key_mask is not None:
        bias = torch.zeros(key_mask.shape, dtype=scores.dtype, device=scores.device)
        bias.masked_fill_(~key_mask, torch.finfo(scores.dtype).min)
        scores = scores + _broadcast(bias)
    return torch.softmax(scores.float(), dim=-1).to(q.dtype)


def sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
    """PyTorch's fused scaled_dot_product_attention (flash / memory-efficient kernels where eligible)."""
    mask = None if key_mask is None or bool(key_mask.all()) else _broadcast(key_mask)
    if q.shape[1] != k.shape[1]:
        if _SDPA_HAS_GQA:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=False, enable_gqa=True)
        groups = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=False)


def _broadcast(mask: torch.Tensor) -> torch.Tensor:
    """[B, Tk] key mask or [B, Tq, Tk] query-key mask -> broadcastable to the scores [B, H, Tq, Tk]."""
    return mask[:, None] if mask.dim() == 3 else mask[:, None, None, :]


def flash_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
    """flash-attn 2 (CUDA, fp16/bf16), non-causal; padded batches go through the variable-length kernel."""
    if key_mask is not None and key_mask.dim() == 3:
        raise ValueError("attention backend 'flash_attn' takes key-padding masks only; a per-query mask "
                         "[B, Tq, Tk] (decoder wino) needs 'sdpa' or 'eager'")
    from flash_attn import flash_attn_func, flash_attn_varlen_func  # optional GPU dependency

    qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))  # flash-attn wants [B, T, H, D]
    if key_mask is None or bool(key_mask.all()):
        return flash_attn_func(qt, kt, vt, causal=False).transpose(1, 2)
    B, Tq, H, D = qt.shape
    Tk = kt.shape[1]
    # Queries are never masked (padding queries get outputs that nobody reads); keys are packed per row.
    k_lens = key_mask.sum(dim=1, dtype=torch.int32)
    cu_k = F.pad(torch.cumsum(k_lens, 0, dtype=torch.int32), (1, 0))
    cu_q = torch.arange(0, (B + 1) * Tq, Tq, dtype=torch.int32, device=q.device)
    flat_mask = key_mask.reshape(-1)
    k_packed = kt.reshape(B * Tk, *kt.shape[2:])[flat_mask]
    v_packed = vt.reshape(B * Tk, *vt.shape[2:])[flat_mask]
    out = flash_attn_varlen_func(
        qt.reshape(B * Tq, H, D), k_packed, v_packed, cu_q, cu_k, Tq, int(k_lens.max()), causal=False
    )
    return out.reshape(B, Tq, H, D).transpose(1, 2)


def _sdpa_supports_gqa() -> bool:
    try:
        q = torch.zeros(1, 2, 1, 2)
        F.scaled_dot_product_attention(q, q[:, :1], q[:, :1], enable_gqa=True)
        return True
    except TypeError:
        return False


_SDPA_HAS_GQA = _sdpa_supports_gqa()

BACKENDS: dict[str, AttentionFn] = {
    "sdpa": sdpa_attention,
    "eager": eager_attention,
    "flash_attn": flash_attention,
}


def flash_attn_available() -> bool:
    """True when flash-attn imports and a CUDA device is present."""
    if not torch.cuda.is_available():
        return False
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        return False
    return True


def check_backend_settings(name: str, device: torch.device | str | None = None,
                           dtype: torch.dtype | None = None) -> None:
    """Refuse a backend that cannot run with these settings on any host: an unknown name, ``flash_attn`` off
    CUDA or in float32 (what this host has installed is :func:`get_backend`'s to check)."""
    if name not in BACKENDS:
        raise ValueError(f"attention backend {name!r} is unknown; choose one of {sorted(BACKENDS)}")
    if name == "flash_attn":
        if device is not None and torch.device(device).type != "cuda":
            raise ValueError(f"attention backend 'flash_attn' runs on CUDA only, model device is {device}")
        if dtype is not None and dtype not in (torch.float16, torch.bfloat16):
            raise ValueError(f"attention backend 'flash_attn' needs float16/bfloat16, model dtype is {dtype}")


def get_backend(name: str, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> AttentionFn:
    """The attention function called ``name``; errors say why a backend cannot run here."""
    check_backend_settings(name)
    if name == "flash_attn" and not flash_attn_available():
        raise ValueError("attention backend 'flash_attn' needs CUDA and the flash-attn package (pip install 'illada[gpu]')")
    check_backend_settings(name, device, dtype)
    return BACKENDS[name]
