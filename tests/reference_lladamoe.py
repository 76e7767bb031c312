"""Test oracle transcribed (in our own words) from LLaDA-MoE's modeling code, ``modeling_lladamoe.py``.

Read from the closest public copy of the file inclusionAI's checkpoint ships: GitHub ZHZisZZ/dllm-trainer,
``dllm/pipelines/llada/models/modeling_lladamoe.py`` at commit 1d4fff38e73259e56165a3d0dbf0d2998c800967
(``LLaDAMoEModelLM.forward``, eager attention ``LLaDAMoEAttention``, ``LLaDAMoESparseMoeBlock``,
``LLaDAMoEDecoderLayer``), with ``configuration_lladamoe.py`` of the same commit for the defaults.

Written as the original computes, dtype by dtype, so that a run in bfloat16 rounds where it rounds:

* RMSNorm statistics in float32, the normalised activations cast back, then times the weight (OLMoE's order).
* q and k through ``q_proj``/``k_proj``, then the per-head RMSNorm over rows of ``head_dim`` (one weight shared by
  the heads), then ``clip_qkv`` clamps q, k *and* v (after the norm) when it is set.
* RoPE over the first ``int(head_dim * partial_rotary_factor)`` dims (transformers' default rope init), cos/sin
  computed in float32 and cast to the activations' dtype; the rotation itself runs in that dtype. The config's
  default factor is -1, a negative rotary width on which building the table fails (torch.arange), here too.
* Eager attention: ``q k^T / sqrt(head_dim)`` in the activations' dtype, plus the padding mask as a large
  negative additive bias, softmax in float32 cast back, times v.
* The sparse block: float32 softmax over the router logits, top-k (``norm_topk_prob`` is hard-coded False),
  weights cast to the activations' dtype, one expert at a time added into a zero buffer (``index_add_``), and
  the shared expert, when ``shared_expert_intermediate_size`` is set, added on the layer's normed input.

Only the tests import this module; the product lives in illada/model.py and illada/config.py.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """LLaDAMoERMSNorm: float32 statistics, cast back, then the weight."""
    x32 = x.float()
    return weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def rotary_tables(positions: torch.Tensor, head_dim: int, theta: float, partial_rotary_factor: float,
                  dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin [B, T, rotary_dim] in ``dtype``, as LLaDAMoERotaryEmbedding returns them."""
    dim = int(head_dim * partial_rotary_factor)
    inv_freq = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    freqs = positions.float()[..., None] * inv_freq  # [B, T, dim/2]
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """apply_rotary_pos_emb on one of q/k [B, H, T, D]: rotate-half over the first cos.shape[-1] dims only."""
    r = cos.shape[-1]
    cos, sin = cos[:, None], sin[:, None]
    x_rot, x_pass = x[..., :r], x[..., r:]
    half = x_rot.shape[-1] // 2
    turned = torch.cat((-x_rot[..., half:], x_rot[..., :half]), dim=-1)
    return torch.cat((x_rot * cos + turned * sin, x_pass), dim=-1)


def swiglu(sd: dict[str, torch.Tensor], prefix: str, x: torch.Tensor) -> torch.Tensor:
    """LLaDAMoEMLP: down(silu(gate(x)) * up(x))."""
    return F.linear(F.silu(F.linear(x, sd[prefix + "gate_proj.weight"])) * F.linear(x, sd[prefix + "up_proj.weight"]),
                    sd[prefix + "down_proj.weight"])


def sparse_moe(sd: dict[str, torch.Tensor], prefix: str, x: torch.Tensor, n_experts: int, top_k: int
               ) -> torch.Tensor:
    """LLaDAMoESparseMoeBlock on [B, T, D]: one expert at a time, as the original loops."""
    B, T, D = x.shape
    flat = x.reshape(-1, D)
    probs = F.softmax(F.linear(flat, sd[prefix + "gate.weight"]), dim=1, dtype=torch.float)
    weights, chosen = torch.topk(probs, top_k, dim=-1)  # no renormalisation: hard-coded off in the original
    weights = weights.to(flat.dtype)
    out = torch.zeros_like(flat)
    for e in range(n_experts):
        token, slot = torch.where(chosen == e)
        y = swiglu(sd, prefix + f"experts.{e}.", flat[token]) * weights[token, slot, None]
        out.index_add_(0, token, y.to(flat.dtype))
    return out.reshape(B, T, D)


def llada_moe_logits(sd: dict[str, torch.Tensor], config: dict, ids: torch.Tensor,
                     attention_mask: torch.Tensor | None = None, dtype: torch.dtype = torch.float32
                     ) -> torch.Tensor:
    """LLaDAMoEModelLM's logits for ``ids`` [B, T] with the weights ``sd`` (its own tensor names) cast to
    ``dtype``. ``attention_mask`` [B, T]: 1 real, 0 padding, turned into an additive bias on the keys as the
    original's AttentionMaskConverter does (positions stay 0..T-1: the original takes no position from it)."""
    c = config
    sd = {k: v.to(dtype) for k, v in sd.items()}
    D, H, Hkv = c["hidden_size"], c["num_attention_heads"], c.get("num_key_value_heads") or c["num_attention_heads"]
    hd, eps = D // H, c.get("rms_norm_eps", 1e-5)
    clip = c.get("clip_qkv")
    B, T = ids.shape
    cos, sin = rotary_tables(torch.arange(T)[None].expand(B, T), hd, c["rope_theta"],
                             c.get("partial_rotary_factor", -1), dtype)
    bias = None
    if attention_mask is not None:
        bias = torch.zeros(B, 1, 1, T, dtype=dtype).masked_fill(~attention_mask.bool()[:, None, None, :],
                                                                torch.finfo(dtype).min)
    h = sd["model.embed_tokens.weight"][ids]
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        x = rms_norm(h, sd[p + "input_layernorm.weight"], eps)
        q, k = F.linear(x, sd[p + "self_attn.q_proj.weight"]), F.linear(x, sd[p + "self_attn.k_proj.weight"])
        if c.get("qk_layernorm"):
            q = rms_norm(q.reshape(-1, hd), sd[p + "self_attn.q_norm.weight"], eps).reshape(B, T, -1)
            k = rms_norm(k.reshape(-1, hd), sd[p + "self_attn.k_norm.weight"], eps).reshape(B, T, -1)
        v = F.linear(x, sd[p + "self_attn.v_proj.weight"])
        if clip is not None:
            q, k, v = q.clamp(-clip, clip), k.clamp(-clip, clip), v.clamp(-clip, clip)
        q = q.view(B, T, H, hd).transpose(1, 2)
        k = k.view(B, T, Hkv, hd).transpose(1, 2)
        v = v.view(B, T, Hkv, hd).transpose(1, 2)
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        k, v = k.repeat_interleave(H // Hkv, dim=1), v.repeat_interleave(H // Hkv, dim=1)
        scores = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(hd)
        if bias is not None:
            scores = scores + bias
        att = torch.matmul(F.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype), v)
        h = h + F.linear(att.transpose(1, 2).reshape(B, T, D), sd[p + "self_attn.o_proj.weight"])
        x = rms_norm(h, sd[p + "post_attention_layernorm.weight"], eps)
        mixed = sparse_moe(sd, p + "mlp.", x, c["num_experts"], c["num_experts_per_tok"])
        if c.get("shared_expert_intermediate_size") is not None:
            mixed = mixed + swiglu(sd, p + "shared_expert.", x)
        h = h + mixed
    return F.linear(rms_norm(h, sd["model.norm.weight"], eps), sd["lm_head.weight"])
