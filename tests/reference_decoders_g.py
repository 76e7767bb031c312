"""Test-only transcriptions (written from reading the public code, in our own words) of the decoders
implements: KLASS (shkim0116/KLASS ``stable_confident_decode``, the authors' code), dInfer's credit decoding
(``CreditThresholdParallelDecoder`` driven by ``BlockWiseDiffusionLLM`` without a KV cache).

Deliberately plain: per-row Python loops, whole-canvas tensors, torch's global RNG, exactly the reference's
order of operations. The library is checked against these; they are not used by the library.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _noised(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """The references' Gumbel trick: the logits unchanged at T=0, else exp(l) / (-log u)^T in float64."""
    if temperature == 0:
        return logits
    l64 = logits.to(torch.float64)
    u = torch.rand_like(l64, dtype=torch.float64)
    return l64.exp() / (-torch.log(u)) ** temperature


def _uniform_counts(masked: int, steps: int) -> list[int]:
    return [masked // steps + (1 if i < masked % steps else 0) for i in range(steps)]


# ------------------------------------------------------------------------------------------------------ KLASS
@torch.no_grad()
def klass_reference(model, prompt, attention_mask=None, *, gen_length, steps, block_length, mask_id,
                    conf_threshold=0.9, kl_threshold=0.01, kl_history_length=2, temperature=0.0):
    """KLASS as the authors' ``stable_confident_decode`` with ``alg="klass"``, ``unmask_strategy="all"``.

    One row (the reference is written for batch 1). Per block, at most ``steps / num_blocks`` forwards, leaving
    the block early once it has no mask. Each forward: p = softmax(float64 of the (noised) logits) over the whole
    canvas, x0 = argmax p, confidence = p(x0); per position KL(p || p_prev) with eps 1e-12 inside both logs
    (p_prev starts as zeros); a length-H history of KLs is shifted left and the new KL appended; p_prev = p.
    A masked position of the current block is *ready* when, from the H-th step of the block on, all H
    stored KLs are < kl_threshold and its confidence is > conf_threshold (strict). All ready positions are
    committed; if none is ready, the top-k masked positions of the block by confidence, k from LLaDA's uniform
    schedule of the block's step. Returns (x, number of forwards).
    """
    assert prompt.shape[0] == 1
    P = prompt.shape[1]
    x = torch.full((1, P + gen_length), mask_id, dtype=torch.long)
    x[:, :P] = prompt
    mask = None
    if attention_mask is not None:
        mask = torch.cat([attention_mask, torch.ones(1, gen_length, dtype=attention_mask.dtype)], dim=1)
    num_blocks = gen_length // block_length
    per_block = steps // num_blocks
    history = torch.zeros(1, x.shape[1], kl_history_length, dtype=torch.float64)
    p_prev = None  # zeros of the vocabulary size, made at the first forward
    used = 0
    for b in range(num_blocks):
        lo, hi = P + b * block_length, P + (b + 1) * block_length
        counts = _uniform_counts(int((x[0, lo:hi] == mask_id).sum()), per_block)
        for step in range(per_block):
            in_block = torch.zeros_like(x, dtype=torch.bool)
            in_block[:, lo:hi] = True
            masked = (x == mask_id) & in_block
            if not masked[:, lo:hi].any():
                break
            logits = model(x, mask)
            p = F.softmax(_noised(logits, temperature).to(torch.float64), dim=-1)
            x0 = p.argmax(dim=-1)
            conf = p.gather(-1, x0[..., None])[..., 0]
            if p_prev is None:
                p_prev = torch.zeros_like(p)
            kl = (p * (torch.log(p + 1e-12) - torch.log(p_prev + 1e-12))).sum(dim=-1)
            history = history.roll(-1, dims=-1)
            history[..., -1] = kl
            p_prev = p.clone()
            if step >= kl_history_length - 1:
                stable = (history < kl_threshold).all(dim=-1)
            else:
                stable = torch.zeros_like(masked)
            ready = stable & (conf > conf_threshold) & masked
            transfer = torch.zeros_like(masked)
            if ready[0].any():
                transfer[0, ready[0].nonzero()[:, 0]] = True
            else:
                conf = conf.clone()
                conf[:, hi:] = float("-inf")
                ranked = torch.where(masked, conf, torch.tensor(float("-inf"), dtype=conf.dtype))
                transfer[0, torch.topk(ranked[0], k=counts[step]).indices] = True
            x[transfer] = x0[transfer]
            used += 1
    return x, used


# ----------------------------------------------------------------------------------------------------- credit
@torch.no_grad()
def credit_reference(model, prompt, attention_mask=None, *, gen_length, block_length, mask_id, threshold=0.9,
                     credit_alpha=0.7, boost_gamma=0.2, decay_beta=0.8, temperature=0.0, use_float64=False):
    """dInfer's credit decoding: ``BlockWiseDiffusionLLM`` (no cache, no early stop, one forward between mask
    checks) with ``CreditThresholdParallelDecoder``. Batch-capable as the reference (every row takes part in
    every forward of a block until all rows have filled it).

    Per block a fresh credit matrix C [B, block, V] (float32). Per forward on the whole canvas, with l the
    block's logits: C is multiplied by decay_beta except on the block's first forward; q = softmax(float32 l);
    C[b, i, argmax q] += max(q)^boost_gamma where position i is masked; fused = l + credit_alpha * log(C + 1).
    Then dInfer's threshold rule on the fused logits: x0 = argmax of the (noised) fused logits, confidence =
    softmax(fused)(x0) (float32, or float64), a position predicting mask_id is not eligible; commit every
    eligible masked position with confidence >= min(threshold, max confidence - 1e-5) (the cut clamped below
    at -1000). Returns (x, number of forwards).
    """
    B, P = prompt.shape
    x = torch.full((B, P + gen_length), mask_id, dtype=torch.long)
    x[:, :P] = prompt
    mask = None
    if attention_mask is not None:
        mask = torch.cat([attention_mask, torch.ones(B, gen_length, dtype=attention_mask.dtype)], dim=1)
    forwards = 0
    for b in range(gen_length // block_length):
        lo, hi = P + b * block_length, P + (b + 1) * block_length
        credit, first = None, True
        while (x[:, lo:hi] == mask_id).sum() > 0:
            assert forwards < 10_000, "the model keeps proposing mask_id (the reference would loop forever)"
            logits = model(x, mask)[:, lo:hi]
            forwards += 1
            masked = x[:, lo:hi] == mask_id
            if credit is None:
                credit = torch.zeros(logits.shape, dtype=torch.float32)
            if not first:
                credit.mul_(decay_beta)
            first = False
            q = F.softmax(logits.to(torch.float32), dim=-1)
            top_p, top_i = q.max(dim=-1)
            credit.scatter_add_(2, top_i[..., None], (top_p.pow(boost_gamma) * masked.float())[..., None])
            fused = logits + credit_alpha * torch.log(credit + 1)
            x0 = _noised(fused, temperature).argmax(dim=-1)
            p = F.softmax(fused.to(torch.float64 if use_float64 else torch.float32), dim=-1)
            x0_p = p.gather(-1, x0[..., None])[..., 0]
            eligible = masked & (x0 != mask_id)
            block = x[:, lo:hi]
            x0 = torch.where(eligible, x0, block)
            conf = torch.where(eligible, x0_p, torch.tensor(float("-inf"), dtype=x0_p.dtype))
            cut = (conf.max(dim=1).values - 1e-5).clamp(-1000, threshold)[:, None]
            transfer = (conf >= cut) & masked
            x[:, lo:hi] = torch.where(transfer, x0, block)
    return x, forwards


# ------------------------------------------------------------------------------------------------------- WINO
@torch.no_grad()
def wino_reference(model, prompt, *, gen_length, block_length, mask_id, wide_in_threshold=0.6,
                   narrow_out_threshold=0.9, temperature=0.0):
    """WINO as the authors' ``decoding_wino`` (Feng-Hong/WINO-DLLM LLaDA/decoding.py). One unpadded row.

    The canvas gets a *shadow* copy of the current block appended: W masks at the block's positions, which
    nothing else attends to, which attend to everything except (leave-one-out) their own counterpart in the
    block. Per forward, with p = float64 softmax: masked block positions propose x0 with confidence p(x0);
    a shadow position whose counterpart is decoded scores the counterpart's current token (p of that token).
    Wide in: commit every masked position with confidence > wide_in_threshold, the top max_accept when more
    (max_accept = min(max(int(0.7 * masked), 5), 20)), the single best when none. Narrow out: only when more
    than one token was accepted this step, decoded tokens (before this step) whose shadow score is
    < narrow_out_threshold are remasked, at most (previous step's accepted count - 1) of the lowest once
    their number reaches the previous count (30 at each block start). Returns (x, forwards).
    ``model(ids, mask, position_ids)`` with mask [1, T, T] (query, key) bool.
    """
    assert prompt.shape[0] == 1
    P, W = prompt.shape[1], block_length
    x = torch.full((1, P + gen_length + W), mask_id, dtype=torch.long)
    x[:, :P] = prompt
    total = x.shape[1]
    forwards = 0
    for b in range(gen_length // block_length):
        lo, hi = P + b * W, P + (b + 1) * W
        masked = x == mask_id
        masked[:, hi:] = False  # also the shadow
        decoded_shadow = torch.zeros_like(masked)  # shadow positions whose counterpart holds a token
        decoded_shadow[:, -W:] = ~masked[:, lo:hi]
        positions = torch.cat([torch.arange(P + gen_length), torch.arange(lo, hi)])[None]
        attn = torch.ones(1, total, total, dtype=torch.bool)
        attn[:, :, -W:] = False
        attn[:, -W:, -W:] = True
        attn[:, -W:, lo:hi] = ~torch.eye(W, dtype=torch.bool)
        last_accept = 30
        while masked.any():
            max_accept = min(max(int(masked.sum() * 0.7), 5), 20)
            logits = model(x, attn, positions)
            forwards += 1
            x0 = _noised(logits, temperature).argmax(dim=-1)
            counterpart = torch.zeros_like(decoded_shadow)
            counterpart[:, lo:hi] = decoded_shadow[:, -W:]
            x0[decoded_shadow] = x[counterpart]
            p = F.softmax(logits.to(torch.float64), dim=-1)
            x0_p = p.gather(-1, x0[..., None])[..., 0]
            x0 = torch.where(masked, x0, x)
            conf = torch.where(masked, x0_p, torch.tensor(float("-inf"), dtype=x0_p.dtype))
            conf_back = torch.where(decoded_shadow, x0_p, torch.tensor(float("inf"), dtype=x0_p.dtype))
            transfer = conf > wide_in_threshold
            if transfer.sum() > max_accept:
                transfer = torch.zeros_like(transfer)
                transfer.view(-1)[torch.topk(conf.view(-1), k=max_accept).indices] = True
            elif not transfer.any():
                transfer.view(-1)[conf.view(-1).argmax()] = True
            x[transfer] = x0[transfer]
            accepted = int(transfer.sum())
            if accepted > 1:
                remask = conf_back < narrow_out_threshold
                if remask.sum() >= last_accept:
                    remask = torch.zeros_like(remask)
                    remask.view(-1)[torch.topk(conf_back.view(-1), k=last_accept - 1, largest=False).indices] = True
            else:
                remask = torch.zeros_like(transfer)
            back = torch.zeros_like(remask)
            back[:, lo:hi] = remask[:, -W:]
            x[back] = mask_id
            masked[transfer] = False
            masked[back] = True
            moved = torch.zeros_like(transfer)
            moved[:, -W:] = transfer[:, lo:hi]
            decoded_shadow[moved] = True
            decoded_shadow[remask] = False
            last_accept = accepted
    return x[:, :P + gen_length], forwards


# --------------------------------------------------------------------------------------------------- SlowFast
@torch.no_grad()
def slow_fast_reference(model, prompt, *, gen_length, block_length, mask_id, k_exploration_steps=6,
                        cycle_len_confidence_threshold=0.3, cycle_length_stability_window=2,
                        cycle_length_stability_std_dev_threshold=1.0, high_confidence_threshold=0.9,
                        max_sub_cycles_per_block=256):
    """SlowFast sampling as LiangrunFlora/Slow-Fast-Sampling ``generate_slow_fast_sampling`` (LLaDA, no CFG, no
    feature cache, T=0). One unpadded row (the reference's bookkeeping of active regions is only sound at batch
    size 1, how its evaluations run).

    Per block, sub-cycles until the block has no mask (at most max_sub_cycles_per_block). A sub-cycle:
    * slow phase, exactly k forwards on the whole canvas. While the cycle length is undetermined, each forward
      estimates it: from the end of the previous cycle (prev) on, the farthest masked position of the block with
      p(x0) >= cycle_len_confidence_threshold gives prev + its offset + 1 (prev + 1 if none), clamped to
      [1, block]; once the last `window` estimates have population std < std threshold the cycle length is the
      latest one, else (at the last slow step) int(mean). Each slow forward also commits, in [prev, block end):
      every masked position with p(x0) >= high_confidence_threshold if there are more than one, else the most
      confident masked one.
    * fast phase, until no mask is left in [prev, cycle end): the same rule restricted to that region; its first
      forward sees the whole canvas, later ones only the canvas up to the cycle end (the reference feeds the
      truncated sequence and reuses the first forward's logits beyond it, which no selection reads).
    p = softmax in the logits' dtype, x0 = argmax of exp(logits). Returns (x, forwards).
    """
    import numpy as np

    P, W = prompt.shape[1], block_length
    x = torch.full((1, P + gen_length), mask_id, dtype=torch.long)
    x[:, :P] = prompt
    forwards = 0

    def scored(ids):
        logits = model(ids, None)[:, P:]
        x0 = logits.exp().argmax(dim=-1)
        p = F.softmax(logits, dim=-1).gather(-1, x0[..., None])[..., 0]
        return x0[0], p[0]

    def fill(lo, hi, x0, p, first_k):
        region = x[0, P + lo:P + hi] == mask_id
        if not region.any():
            return
        conf = torch.where(region, p[lo:hi], torch.tensor(float("-inf"), dtype=p.dtype))
        high = (p[lo:hi] >= high_confidence_threshold) & region
        if int(high.sum()) > 1:
            chosen = high.nonzero()[:, 0]
        else:
            chosen = torch.topk(conf, k=first_k).indices
        x[0, P + lo + chosen] = x0[lo + chosen]

    for b in range(gen_length // block_length):
        g0 = b * W  # block start in generated coordinates
        cycle, prev, cycles = W, 0, 0
        while (x[0, P + g0:P + g0 + W] == mask_id).any() and cycles < max_sub_cycles_per_block:
            cycles += 1
            determined, history = False, []
            for k in range(k_exploration_steps):
                forwards += 1
                x0, p = scored(x)
                masked = x[0, P:] == mask_id
                conf = torch.where(masked, p, torch.tensor(float("-inf"), dtype=p.dtype))
                if not determined:
                    grow = 0
                    if prev < W:
                        hits = (conf[g0 + prev:g0 + W] >= cycle_len_confidence_threshold).nonzero()
                        grow = int(hits.max()) + 1 if len(hits) else 1
                    history = (history + [min(max(1, prev + grow), W)])[-cycle_length_stability_window:]
                    if len(history) >= cycle_length_stability_window:
                        if np.std(np.array(history)) < cycle_length_stability_std_dev_threshold:
                            cycle, determined = max(1, min(history[-1], W)), True
                        else:
                            cycle = max(1, min(int(np.mean(np.array(history))), W))
                            determined = k == k_exploration_steps - 1
                if prev < W:
                    fill(g0 + prev, g0 + W, x0, p, 1)
            if not determined:
                cycle = max(1, min(int(np.mean(history)), W)) if history else W // 2
            fast_calls = 0
            while (x[0, P + g0 + prev:P + g0 + cycle] == mask_id).any():
                fast_calls += 1
                forwards += 1
                if fast_calls == 1:
                    x0, p = scored(x)
                else:
                    cut = P + g0 + cycle
                    x0, p = scored(x[:, :cut])
                    pad = gen_length - (cut - P)  # beyond the cut: never read by the selection
                    x0 = torch.cat([x0, x0.new_zeros(pad)])
                    p = torch.cat([p, p.new_zeros(pad)])
                fill(g0 + prev, g0 + cycle, x0, p, 1)
            prev = cycle
    return x, forwards
