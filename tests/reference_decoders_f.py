"""Test-only transcriptions (written from reading the reference code, in plain per-row loops, one row at a time
as the references are run) of the EB-Sampler, hierarchy, certainty-prior and PC-Sampler decoders:

* d2Cache ``src/generation/vanilla.py``: ``vanilla_generate`` + ``generate_step`` + ``confidence_unmasking``
  (fixed count / threshold / EB gamma), with ``sample_tokens``' debias and ``certainty_density`` (the FFT form
  the reference uses) for ``sigma``.
* SGLang ``python/sglang/srt/dllm/algorithm/eb_sampling.py`` ``EBSampling.run``.
* dInfer ``python/dinfer/decoding/parallel_strategy.py`` ``HierarchyDecoder`` in the block-wise loop.
* NEUIR/PC-Sampler ``src/generate.py`` ``generate_with_pc_sampler`` / ``pc_sampler_function``.

At temperature 0, and PC-Sampler also at T > 0 (its draws are LLaDA's stream; the other references draw theirs
differently: d2Cache samples a categorical, dInfer and SGLang draw over the block only). Each returns
(tokens [1, P + G], nfe) for one row; ``model(x, attention_mask) -> logits``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _canvas(prompt, gen_length, mask_id):
    x = torch.full((1, prompt.shape[1] + gen_length), mask_id, dtype=torch.long)
    x[:, :prompt.shape[1]] = prompt
    return x


def _extend(attention_mask, gen_length):
    if attention_mask is None:
        return None
    return torch.cat([attention_mask, torch.ones(1, gen_length, dtype=attention_mask.dtype)], dim=1)


# ------------------------------------------------------------------------------------------------- d2Cache
def d2cache_certainty_density(decoded, sigma):
    """certainty_density: FFT convolution of the padded decoded-mask with a Gaussian, over the kernel's mass."""
    B, L = decoded.shape
    padded = F.pad(decoded.float(), (L, L), "constant", 1.0)
    padded[decoded[:, -1] == False, 2 * L:] = 0.0  # noqa: E712 (as the reference)
    ext = 3 * L
    n = 2 * ext
    dist = torch.cat((torch.arange(ext), torch.arange(-ext, 0)))
    kernel = torch.fft.fft(torch.exp(-(dist ** 2) / (2 * sigma ** 2)), n=n)
    num = torch.fft.ifft(torch.fft.fft(F.pad(padded, (0, ext)), n=n) * kernel, n=n).real
    den = torch.fft.ifft(torch.fft.fft(torch.ones(B, 2 * ext), n=n) * kernel, n=n).real
    return num[..., L:2 * L] / den[..., L:2 * L].clamp_min(1e-8)


def _categorical_entropy(p):
    """torch.distributions.Categorical(probs=p).entropy(), spelled out."""
    q = p / p.sum(-1, keepdim=True)
    logits = torch.log(q).clamp(min=torch.finfo(q.dtype).min)
    return -(logits * q).sum(-1)


@torch.no_grad()
def d2cache_vanilla(model, prompt, attention_mask=None, gen_length=16, block_length=8, mask_id=23,
                    num_transfer_tokens=1, threshold=None, gamma=None, sigma=None, debias=False, clip_alpha=None,
                    token_freq=None, alg="maskgit_plus"):
    P = prompt.shape[1]
    x = _canvas(prompt, gen_length, mask_id)
    am = _extend(attention_mask, gen_length)
    nfe = 0
    for b in range(gen_length // block_length):
        block = torch.zeros(1, gen_length, dtype=torch.bool)
        block[:, b * block_length:(b + 1) * block_length] = True
        while True:
            remaining = x[:, P:] == mask_id
            eligible = remaining & block
            if not eligible.any():
                break
            logits = model(x, am)[:, P:]
            nfe += 1
            probs = torch.softmax(logits, dim=-1)
            conf, x0 = probs.max(dim=-1)
            if debias:
                alpha = clip_alpha if clip_alpha is not None else 10.0
                conf = torch.clamp_max(-conf * torch.log(token_freq.to(conf.dtype)[x0] + 1e-10), max=alpha)
            if alg == "topk_margin":
                top = probs.sort(dim=-1, descending=True).values
                conf = top[..., 0] - top[..., 1]
            elif alg == "entropy":
                conf = (probs * torch.log(probs + 1e-10)).sum(-1)
            scores = torch.where(remaining, conf, -torch.inf)
            if sigma is not None and sigma > 0:
                scores = scores * d2cache_certainty_density(~remaining, sigma)
            scores = torch.where(eligible, scores, -torch.inf)
            n_elig = int(eligible.sum())
            k = min(num_transfer_tokens, n_elig)
            chosen = None
            if threshold is not None:
                above = (scores[0] >= threshold).nonzero()[:, 0]
                if len(above) > 0:
                    chosen = above
            elif gamma is not None:
                _, ids = torch.sort(scores, dim=-1, descending=True)
                ent = torch.gather(_categorical_entropy(probs.float()), -1, ids)
                acc = torch.cumsum(ent, dim=1)
                run_max = torch.cummax(ent, dim=0).values  # over the batch dimension, as the reference
                k = int((acc - run_max <= gamma).sum(dim=1))
                k = max(min(k, n_elig), min(num_transfer_tokens, n_elig))
            if chosen is None:
                chosen = torch.topk(scores[0], k).indices
            x[0, P + chosen] = x0[0, chosen]
    return x, nfe


# -------------------------------------------------------------------------------------------------- SGLang
@torch.no_grad()
def sglang_eb(model, prompt, attention_mask=None, gen_length=16, block_length=8, mask_id=23, gamma=0.15):
    """EBSampling.run per block (the trailing forward SGLang makes for its scheduler after a block is not an
    unmasking step and is not counted)."""
    P = prompt.shape[1]
    x = _canvas(prompt, gen_length, mask_id)
    am = _extend(attention_mask, gen_length)
    nfe = 0
    for b in range(gen_length // block_length):
        lo, hi = P + b * block_length, P + (b + 1) * block_length
        for _ in range(block_length):
            masked = x[0, lo:hi] == mask_id
            if not masked.any():
                break
            logits = model(x, am)[0, lo:hi].clone()
            nfe += 1
            logits[..., mask_id] = torch.finfo(logits.dtype).min
            x0 = logits.argmax(-1)
            pos = masked.nonzero().flatten()
            logp = F.log_softmax(logits[pos], dim=-1)
            ent = -(logp.exp() * logp).sum(-1)
            order = torch.argsort(ent)
            sorted_pos, sorted_ent = pos[order], ent[order]
            reveal = torch.zeros_like(sorted_ent, dtype=torch.bool)
            reveal[0] = True
            reveal[1:] = torch.cumsum(sorted_ent[:-1], dim=0) <= gamma
            take = sorted_pos[reveal]
            x[0, lo + take] = x0[take]
    return x, nfe


# --------------------------------------------------------------------------------------------------- dInfer
@torch.no_grad()
def dinfer_hierarchy(model, prompt, attention_mask=None, gen_length=16, block_length=8, mask_id=23,
                     threshold=None, low_threshold=0.4):
    """``threshold`` / ``low_threshold``: HierarchyDecoder's constructor defaults (None skips the rule)."""
    P = prompt.shape[1]
    x = _canvas(prompt, gen_length, mask_id)
    am = _extend(attention_mask, gen_length)
    nfe = 0
    for b in range(gen_length // block_length):
        lo, hi = P + b * block_length, P + (b + 1) * block_length
        while (x[:, lo:hi] == mask_id).any():
            logits = model(x, am)[:, lo:hi]
            nfe += 1
            mask_index = x[:, lo:hi] == mask_id
            x0 = logits.argmax(-1)
            p = F.log_softmax(logits, dim=-1).gather(-1, x0[..., None])[..., 0].exp()
            low = torch.finfo(p.dtype).min
            conf = torch.where(mask_index, p, torch.tensor(low))
            L = conf.shape[1]
            transfer = torch.zeros(L, dtype=torch.bool)
            # each maximal run of masked positions: its best position(s)
            j = 0
            while j < L:
                if not mask_index[0, j]:
                    j += 1
                    continue
                k = j
                while k < L and mask_index[0, k]:
                    k += 1
                best = conf[0, j:k].max()
                transfer[j:k] = conf[0, j:k] == best
                j = k
            if low_threshold is not None:
                transfer &= conf[0] > low_threshold
            if threshold is not None:
                transfer |= conf[0] > threshold
            transfer[int(conf[0].argmax())] = True
            transfer &= mask_index[0]
            x[0, lo:hi][transfer] = x0[0][transfer]
    return x, nfe


# ----------------------------------------------------------------------------------------------- PC-Sampler
@torch.no_grad()
def neuir_pc_sampler(model, prompt, attention_mask=None, steps=16, gen_length=16, block_length=8, mask_id=23,
                     lambd=0.25, alpha=10.0, token_freq=None, temperature=0.0):
    """At temperature > 0 the Gumbel-max draw is LLaDA's (float64 uniforms over the whole canvas, global RNG)."""
    P = prompt.shape[1]
    x = _canvas(prompt, gen_length, mask_id)
    am = _extend(attention_mask, gen_length)
    per_block = steps // (gen_length // block_length)
    nfe = 0
    for b in range(gen_length // block_length):
        lo, hi = P + b * block_length, P + (b + 1) * block_length
        m = int((x[:, lo:hi] == mask_id).sum())
        counts = [m // per_block + (1 if i < m % per_block else 0) for i in range(per_block)]
        for i in range(per_block):
            mask_index = x == mask_id
            logits = model(x, am)
            nfe += 1
            if temperature > 0:
                l64 = logits.to(torch.float64)
                noised = l64.exp() / (-torch.log(torch.rand_like(l64))) ** temperature
            else:
                noised = logits
            x0 = noised.argmax(-1)
            p = torch.gather(F.softmax(logits, dim=-1), -1, x0[..., None])[..., 0]
            x0 = torch.where(mask_index, x0, x)
            f = token_freq[x0[:, lo:hi]]
            score = torch.clamp(-p[:, lo:hi] * torch.log(f + 1e-9), max=alpha)
            score = torch.exp(-lambd * torch.arange(hi - lo, dtype=torch.float32)) * score
            conf = torch.where(mask_index[:, lo:hi], score, -torch.inf)
            idx = torch.topk(conf[0], k=counts[i]).indices
            x[0, lo + idx] = x0[0, lo + idx]
    return x, nfe
