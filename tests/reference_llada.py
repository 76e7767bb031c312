"""Test-only, deliberately straightforward transcriptions of the reference samplers (LLaDA's ``generate`` and
its low-confidence remasking, as published): per-row Python loops, full-canvas tensors, global RNG.

They are what the library is checked against; they are not fast and not used by the library.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def gumbel_argmax_logits(logits, temperature):
    """The reference's noised logits: the logits themselves at T=0, else exp(l) / (-log u)^T in float64."""
    if temperature == 0:
        return logits
    l64 = logits.to(torch.float64)
    u = torch.rand_like(l64, dtype=torch.float64)
    return l64.exp() / (-torch.log(u)) ** temperature


def per_step_counts(block_masked, steps):
    """[B, steps] uniform transfer counts, remainder on the first steps (row by row)."""
    m = block_masked.sum(dim=1)
    out = torch.zeros(block_masked.shape[0], steps, dtype=torch.int64)
    for row in range(block_masked.shape[0]):
        for i in range(steps):
            out[row, i] = int(m[row]) // steps + (1 if i < int(m[row]) % steps else 0)
    return out


@torch.no_grad()
def llada_generate(model, prompt, attention_mask=None, steps=128, gen_length=128, block_length=128,
                   temperature=0.0, cfg_scale=0.0, remasking="low_confidence", mask_id=126336,
                   logits_eos_inf=False, confidence_eos_eot_inf=False, eos_id=None, eot_id=None):
    """LLaDA generate(): returns (x, nfe) with nfe counting both rows of a guided forward."""
    B, P = prompt.shape
    x = torch.full((B, P + gen_length), mask_id, dtype=torch.long, device=prompt.device)
    x[:, :P] = prompt
    if attention_mask is not None:
        ones = torch.ones(B, gen_length, dtype=attention_mask.dtype, device=prompt.device)
        attention_mask = torch.cat([attention_mask, ones], dim=1)
    prompt_index = x != mask_id
    assert gen_length % block_length == 0
    num_blocks = gen_length // block_length
    assert steps % num_blocks == 0
    steps = steps // num_blocks
    nfe = 0
    for nb in range(num_blocks):
        lo, hi = P + nb * block_length, P + (nb + 1) * block_length
        counts = per_step_counts(x[:, lo:hi] == mask_id, steps)
        for i in range(steps):
            mask_index = x == mask_id
            if cfg_scale > 0:
                un_x = x.clone()
                un_x[prompt_index] = mask_id
                am = None if attention_mask is None else torch.cat([attention_mask, attention_mask])
                both = model(torch.cat([x, un_x]), am)
                cond, un = torch.chunk(both, 2, dim=0)
                logits = un + (cfg_scale + 1) * (cond - un)
                nfe += 2
            else:
                logits = model(x, attention_mask)
                nfe += 1
            if logits_eos_inf:
                logits[:, :, eos_id] = -torch.inf
            noised = gumbel_argmax_logits(logits, temperature)
            x0 = torch.argmax(noised, dim=-1)
            if confidence_eos_eot_inf:
                noised[:, :, eos_id] = -torch.inf  # same tensor as logits at temperature 0
                logits[:, :, eot_id] = -torch.inf
            if remasking == "low_confidence":
                p = F.softmax(logits, dim=-1)
                x0_p = torch.gather(p, -1, x0[..., None])[..., 0]
            elif remasking == "random":
                x0_p = torch.rand(x0.shape, device=x0.device)
            else:
                raise NotImplementedError(remasking)
            x0_p[:, hi:] = -torch.inf
            x0 = torch.where(mask_index, x0, x)
            confidence = torch.where(mask_index, x0_p, -torch.inf)
            transfer = torch.zeros_like(x0, dtype=torch.bool)
            for j in range(B):
                _, idx = torch.topk(confidence[j], k=int(counts[j, i]))
                transfer[j, idx] = True
            x[transfer] = x0[transfer]
    return x, nfe


def fast_transfer(logits, temperature, remasking, mask_index, x, counts, threshold=None, factor=None):
    """Fast-dLLM's get_transfer_index / get_transfer_index_dynamic (float64 softmax), row by row."""
    noised = gumbel_argmax_logits(logits, temperature)
    x0 = torch.argmax(noised, dim=-1)
    if remasking == "low_confidence":
        p = F.softmax(logits.to(torch.float64), dim=-1)
        x0_p = torch.gather(p, -1, x0[..., None])[..., 0]
    else:
        x0_p = torch.rand(x0.shape, device=x0.device)
    x0 = torch.where(mask_index, x0, x)
    confidence = torch.where(mask_index, x0_p, -torch.inf)
    transfer = torch.zeros_like(x0, dtype=torch.bool)
    for j in range(confidence.shape[0]):
        n = int(mask_index[j].sum())
        if factor is not None:
            if n == 0:
                continue
            bounds = [1 - factor / (m + 1) for m in range(1, n + 1)]
            bounds[0] = -1
            ordered = torch.sort(confidence[j][mask_index[j]], descending=True)[0]
            top = 0
            for top in range(n):
                if ordered[top] < bounds[top]:
                    break
            if top == 0 or top == n - 1:
                top += 1
            _, idx = torch.topk(confidence[j], k=top)
            transfer[j, idx] = True
        elif threshold is not None:
            _, idx = torch.topk(confidence[j], k=n)
            transfer[j, idx] = True
            for k in range(1, n):
                if confidence[j, idx[k]] < threshold:
                    transfer[j, idx[k]] = False
        else:
            _, idx = torch.topk(confidence[j], k=int(counts[j]))
            transfer[j, idx] = True
    return x0, transfer


@torch.no_grad()
def fastdllm_generate(model, prompt, steps=128, gen_length=128, block_length=128, temperature=0.0,
                      remasking="low_confidence", mask_id=126336, threshold=None, factor=None, cache="none"):
    """Fast-dLLM generate / generate_with_prefix_cache / generate_with_dual_cache; returns (x, nfe).

    ``model`` is an illada Transformer for the cache modes (full forward fills the cache; cache_start feeds a
    suffix or the block).
    """
    B, P = prompt.shape
    x = torch.full((B, P + gen_length), mask_id, dtype=torch.long, device=prompt.device)
    x[:, :P] = prompt
    assert gen_length % block_length == 0
    num_blocks = gen_length // block_length
    assert steps % num_blocks == 0
    steps = steps // num_blocks
    nfe = 0
    for nb in range(num_blocks):
        lo, hi = P + nb * block_length, P + (nb + 1) * block_length
        counts = per_step_counts(x[:, lo:hi] == mask_id, steps)
        i = 0
        kv = None
        while True:
            if cache != "none" and i > 0 and (x[:, lo:hi] == mask_id).sum() == 0:
                break
            nfe += 1
            if cache == "none" or i == 0:
                if cache != "none":
                    kv = model.new_kv_cache(B, x.shape[1])
                    logits = model(x, None, kv_cache=kv, cache_start=0)
                else:
                    logits = model(x, None)
                mask_index = x == mask_id
                mask_index[:, hi:] = False
                view = x
            else:
                stop = x.shape[1] if cache == "prefix" else hi
                logits = model(x[:, lo:stop], None, kv_cache=kv, cache_start=lo)
                mask_index = x[:, lo:stop] == mask_id
                mask_index[:, block_length:] = False
                view = x[:, lo:stop]
            x0, transfer = fast_transfer(logits, temperature, remasking, mask_index, view,
                                         counts[:, i] if threshold is None and factor is None else None,
                                         threshold, factor)
            view[transfer] = x0[transfer]
            i += 1
            if cache == "none" and (x[:, lo:hi] == mask_id).sum() == 0:
                break
    return x, nfe
