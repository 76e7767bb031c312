"""Test oracle: dKV-Cache-Decode as horseee/dKV-Cache runs it (generation_utils/llada_dkv_cache_decode.py with
models/modeling_llada_dkv_cache_decode.py), transcribed from reading it, over the layers of an illada
Transformer and written slowly on purpose: its own layer loop, its own attention, its own cache bookkeeping.

What the reference does per block (fixed LLaDA schedule, no padding mask, no guidance):
* the cache and the two "decoded" sets start empty; ``prev`` = decoded after the step before last,
  ``cur`` = decoded after the last step (whole canvas, prompt included);
* step 0: plain full forward, nothing cached;
* step 1 and every step with ``i % cache_steps == 0``: full forward over the canvas, then the keys/values of the
  ``cur`` columns (in column order) are kept;
* any other step: only the columns outside ``prev`` are fed (in column order); each layer attends over
  [fresh keys of the fed columns] + [kept keys of the ``prev`` columns], in that order; the kept set becomes the
  ``cur`` columns, with fresh keys for those decoded by the last step and the old ones for the rest;
* logits of the fed columns go back to their columns (-inf confidence elsewhere); float64 softmax confidence,
  top-k by LLaDA's per-step counts, positions after the block at -inf.
"""

from __future__ import annotations

import math

import torch

from illada.model import apply_rope, rope_cos_sin


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    groups = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
    return weights @ v


def _layers(model, tokens: torch.Tensor, positions: torch.Tensor, kept: list | None):
    """Logits of ``tokens`` [B, T] at ``positions``; ``kept``: per layer (k, v) [B, H, N, D] appended after the
    fresh keys. Returns logits and the fresh per-layer (k, v)."""
    cfg = model.config
    B, T = tokens.shape
    cos, sin = rope_cos_sin(positions, cfg.head_dim, cfg.rope_theta)
    h = model.tok_embeddings(tokens)
    fresh = []
    for i, block in enumerate(model.layers):
        att = block.attention
        hn = block.attention_norm(h)
        q = att.wq(hn).view(B, T, cfg.n_heads, cfg.head_dim)
        k = att.wk(hn).view(B, T, cfg.n_kv_heads, cfg.head_dim)
        if att.q_norm is not None:
            q, k = att.q_norm(q), att.k_norm(k)
        v = att.wv(hn).view(B, T, cfg.n_kv_heads, cfg.head_dim).transpose(1, 2)
        q, k = apply_rope(q.transpose(1, 2), cos, sin), apply_rope(k.transpose(1, 2), cos, sin)
        fresh.append((k, v))
        keys, values = k, v
        if kept is not None:
            keys, values = torch.cat([k, kept[i][0]], dim=2), torch.cat([v, kept[i][1]], dim=2)
        out = _attend(q, keys, values).transpose(1, 2).reshape(B, T, cfg.n_heads * cfg.head_dim)
        h = h + att.wo(out)
        h = h + block.feed_forward(block.ffn_norm(h))
    return model.output(model.norm(h)), fresh


def _columns(sel: torch.Tensor) -> torch.Tensor:
    """Column ids of a boolean selection [B, T] with the same count per row, in column order [B, N]."""
    return torch.nonzero(sel, as_tuple=True)[1].view(sel.shape[0], -1)


def _pick(kv: list, cols: torch.Tensor) -> list:
    def at(t: torch.Tensor) -> torch.Tensor:
        return t.gather(2, cols[:, None, :, None].expand(*t.shape[:2], -1, t.shape[3]))
    return [(at(k), at(v)) for k, v in kv]


def _written(kept: list, fresh: list, cols: torch.Tensor) -> list:
    """Per layer (k, v) over the whole canvas with the fresh keys/values of the fed ``cols`` [B, N] written in."""
    def write(old: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
        return old.clone().scatter_(2, cols[:, None, :, None].expand_as(new), new)
    return [(write(ok, fk), write(ov, fv)) for (fk, fv), (ok, ov) in zip(fresh, kept)]


def _num_transfer_tokens(block_masked: torch.Tensor, steps: int) -> torch.Tensor:
    """LLaDA's get_num_transfer_tokens: the block's masks over ``steps`` steps, the remainder first [B, steps]."""
    n_masked = block_masked.sum(dim=1, keepdim=True)
    counts = (n_masked // steps).repeat(1, steps)
    for j in range(block_masked.shape[0]):
        counts[j, :int(n_masked[j] % steps)] += 1
    return counts


def _sample(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """The reference's add_gumbel_noise + argmax: float64 noise drawn over exactly the logits it is given."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    noise = torch.rand_like(logits, dtype=torch.float64)
    return (logits.to(torch.float64).exp() / (-torch.log(noise)) ** temperature).argmax(dim=-1)


def dkv_decode_generate(model, prompt: torch.Tensor, steps: int, gen_length: int, block_length: int, mask_id: int,
                        cache_steps: int, temperature: float = 0.0, remasking: str = "low_confidence"):
    """dKV-Cache-Decode with LLaDA's fixed schedule (random draws from torch's global generator); returns
    (x, nfe)."""
    B, P = prompt.shape
    x = torch.cat([prompt, prompt.new_full((B, gen_length), mask_id)], dim=1)
    T = x.shape[1]
    all_pos = torch.arange(T).expand(B, T)
    per_block = steps // (gen_length // block_length)
    nfe = 0
    for b in range(gen_length // block_length):
        lo, hi = P + b * block_length, P + (b + 1) * block_length
        counts = _num_transfer_tokens(x[:, lo:hi] == mask_id, per_block)
        kept_full = None  # per layer (k, v) over the whole canvas; only the ``cur`` columns are meaningful
        prev = cur = None
        for i in range(per_block):
            masked = x == mask_id
            nfe += 1
            if i % cache_steps != 0 and i > 1:
                fed = _columns(~prev)
                logits, fresh = _layers(model, x.gather(1, fed), all_pos.gather(1, fed),
                                        _pick(kept_full, _columns(prev)))
                # the new kept set: fresh keys at the fed columns, the old ones at ``prev``
                kept_full = _written(kept_full, fresh, fed)
            else:
                fed = all_pos
                logits, fresh = _layers(model, x, all_pos, None)
                if i > 0:
                    kept_full = fresh
            x0_fed = _sample(logits, temperature)
            if remasking == "low_confidence":
                p_fed = torch.softmax(logits.to(torch.float64), dim=-1).gather(-1, x0_fed[..., None]).squeeze(-1)
            else:
                p_fed = torch.rand(x0_fed.shape)
            # refill onto the canvas: mask_id / -inf where nothing was fed
            x0 = torch.full((B, T), mask_id, dtype=torch.long).scatter_(1, fed, x0_fed)
            p = torch.full((B, T), -math.inf, dtype=p_fed.dtype).scatter_(1, fed, p_fed)
            p[:, hi:] = -math.inf
            x0 = torch.where(masked, x0, x)
            conf = torch.where(masked, p, torch.full_like(p, -math.inf))
            chosen = torch.zeros_like(masked)
            for j in range(B):
                chosen[j, torch.topk(conf[j], k=int(counts[j, i])).indices] = True
            x[chosen] = x0[chosen]
            prev, cur = cur, x != mask_id
    return x, nfe


# ------------------------------------------------------------------------------------------------- dLLM-Cache
# maomaocun/dLLM-Cache (commit 17235bf; the same files as its copy XiangZhang-zx/dLLM-cache): utils/generate_function.py `generate` with
# dllm_cache/hooks/cache_hook_LLaDA.py `cache_hook_feature` and dllm_cache/cache/Cache.py. What it does:
# * one feature store per generate() call; the n-th forward (1-based, over all blocks) refreshes the prompt part
#   (first P columns) when (n-1) % Kp == 0 and the response part (the rest) when (n-1) % Kr == 0; layer 0 always
#   refreshes both;
# * per layer it keeps keys/values *before* RoPE, the attention output and the MLP output of both parts; RoPE is
#   applied at attention time to [prompt keys, response keys] at positions 0..T-1 and to the queries at theirs;
# * without a response refresh and with 0 < rho <= 1: the response's values are recomputed for all columns, the
#   int(G * rho) columns with the lowest cosine similarity (new vs cached values) get new queries, keys, attention
#   and MLP outputs; all other outputs come from the store and are added to the fresh residual stream;
# * the sampler is LLaDA's over the response only: softmax in the logits' dtype, argmax of exp(logits) at T=0,
#   per-step counts from the block's masks, top-k over the response with later blocks at -inf.


def _rope(t: torch.Tensor, cols: torch.Tensor, cfg) -> torch.Tensor:
    cos, sin = rope_cos_sin(cols, cfg.head_dim, cfg.rope_theta)
    return apply_rope(t, cos, sin)


class _FeatureStore:
    def __init__(self, kp: int, kr: int, rho: float, prompt_length: int) -> None:
        self.kp, self.kr, self.rho, self.P = kp, kr, rho, prompt_length
        self.data: dict = {}
        self.n = 0


def _heads(t: torch.Tensor, n_heads: int) -> torch.Tensor:
    B, T, C = t.shape
    return t.view(B, T, n_heads, C // n_heads).transpose(1, 2)


def _dllm_layer(model, i: int, x: torch.Tensor, store: _FeatureStore) -> torch.Tensor:
    cfg = model.config
    block = model.layers[i]
    att = block.attention
    P = store.P
    B, T, C = x.shape
    all_cols = torch.arange(T).expand(B, T)
    refresh_gen = (store.n - 1) % store.kr == 0 or i == 0
    refresh_prompt = (store.n - 1) % store.kp == 0 or i == 0
    transfer = 0 < store.rho <= 1
    f = store.data.setdefault(i, {"prompt": {}, "gen": {}})
    xn = block.attention_norm(x)

    def qkv(t):
        return att.wq(t), att.wk(t), att.wv(t)

    def attend(q, q_cols):
        k = torch.cat([f["prompt"]["k"], f["gen"]["k"]], dim=1)
        v = torch.cat([f["prompt"]["v"], f["gen"]["v"]], dim=1)
        qh, kh = _heads(q, cfg.n_heads), _heads(k, cfg.n_kv_heads)
        if att.q_norm is not None:
            qh = att.q_norm(qh.transpose(1, 2)).transpose(1, 2)
            kh = att.k_norm(kh.transpose(1, 2)).transpose(1, 2)
        out = _attend(_rope(qh, q_cols, cfg), _rope(kh, all_cols, cfg), _heads(v, cfg.n_kv_heads))
        return att.wo(out.transpose(1, 2).reshape(B, q.shape[1], -1))

    def mlp(t):
        return block.feed_forward(block.ffn_norm(t))

    chosen = None
    if refresh_prompt:
        _, k, v = qkv(xn[:, :P])
        f["prompt"].update(k=k, v=v)
    if refresh_gen:
        _, k, v = qkv(xn[:, P:])
        f["gen"].update(k=k, v=v)
    elif transfer:
        v_new = att.wv(xn[:, P:])
        sim = torch.nn.functional.cosine_similarity(v_new, f["gen"]["v"], dim=-1)
        chosen = torch.topk(sim, largest=False, k=int((T - P) * store.rho)).indices
        sel = xn[:, P:].gather(1, chosen[..., None].expand(-1, -1, C))
        f["gen"]["v"] = v_new
        f["gen"]["k"] = f["gen"]["k"].clone().scatter_(1, chosen[..., None].expand(-1, -1, f["gen"]["k"].shape[-1]),
                                                       att.wk(sel))
    # attention: recompute the refreshed parts' queries (and the chosen response columns')
    if refresh_prompt:
        f["prompt"]["attn"] = attend(att.wq(xn[:, :P]), all_cols[:, :P])
    if refresh_gen:
        f["gen"]["attn"] = attend(att.wq(xn[:, P:]), all_cols[:, P:])
    elif chosen is not None:
        sel = xn[:, P:].gather(1, chosen[..., None].expand(-1, -1, C))
        out = attend(att.wq(sel), P + chosen)
        f["gen"]["attn"] = f["gen"]["attn"].clone().scatter_(1, chosen[..., None].expand(-1, -1, C), out)
    x = x + torch.cat([f["prompt"]["attn"], f["gen"]["attn"]], dim=1)
    if refresh_prompt:
        f["prompt"]["mlp"] = mlp(x[:, :P])
    if refresh_gen:
        f["gen"]["mlp"] = mlp(x[:, P:])
    elif chosen is not None:
        out = mlp(x[:, P:].gather(1, chosen[..., None].expand(-1, -1, C)))
        f["gen"]["mlp"] = f["gen"]["mlp"].clone().scatter_(1, chosen[..., None].expand(-1, -1, C), out)
    return x + torch.cat([f["prompt"]["mlp"], f["gen"]["mlp"]], dim=1)


def dllm_cache_generate(model, prompt: torch.Tensor, steps: int, gen_length: int, block_length: int, mask_id: int,
                        prompt_interval_steps: int, gen_interval_steps: int, transfer_ratio: float):
    """dLLM-Cache's LLaDA generate() at temperature 0, low_confidence; returns (x, nfe)."""
    B, P = prompt.shape
    x = torch.cat([prompt, prompt.new_full((B, gen_length), mask_id)], dim=1)
    store = _FeatureStore(prompt_interval_steps, gen_interval_steps, transfer_ratio, P)
    per_block = steps // (gen_length // block_length)
    for b in range(gen_length // block_length):
        lo, hi = P + b * block_length, P + (b + 1) * block_length
        counts = _num_transfer_tokens(x[:, lo:hi] == mask_id, per_block)
        for i in range(per_block):
            store.n += 1
            h = model.tok_embeddings(x)
            for layer in range(len(model.layers)):
                h = _dllm_layer(model, layer, h, store)
            logits = model.output(model.norm(h))[:, P:]
            x0 = logits.exp().argmax(dim=-1)
            p = torch.softmax(logits, dim=-1).gather(-1, x0[..., None]).squeeze(-1)
            p[:, hi - P:] = -math.inf
            gen = x[:, P:]
            masked = gen == mask_id
            x0 = torch.where(masked, x0, gen)
            conf = torch.where(masked, p, torch.full_like(p, -math.inf))
            chosen = torch.zeros_like(masked)
            for j in range(B):
                chosen[j, torch.topk(conf[j], k=int(counts[j, i])).indices] = True
            gen[chosen] = x0[chosen]
    return x, store.n


# ------------------------------------------------------------------------------------------- dKV-Cache-Greedy
# horseee/dKV-Cache generation_utils/llada_dkv_cache_greedy.py with models/modeling_llada_dkv_cache_greedy.py.
# What it does per block (fixed LLaDA schedule, remasking 'random' only, no padding mask, no guidance):
# * before the block's first forward: x0_p = torch.rand((B, T)) (float32), -inf outside the block, sorted
#   descending: the block's decoding order; step i decodes order[acc[i]:acc[i+1]] (acc: cumulative counts);
# * step i with i % cache_steps == 0: full forward; every column's keys/values become the cache;
# * any other step: only the columns of ``cur`` (chosen at the step before) are fed, in column order; each
#   layer attends over [their fresh keys] + [cached keys of every other column, in column order], then writes
#   the fed columns' fresh keys/values into the cache (in place: they persist);
# * after step i (i < steps - 1): ``cur`` = the columns decoded at step i, those of step i + 1 and, for each
#   column of step i + 1 in order, find_window_tokens: walk left 1, right 1, left 2, ... marking the first
#   ``window_size`` columns that were masked at the start of step i and are not marked yet.

def _find_window_tokens(marked: torch.Tensor, select_ids: torch.Tensor, masked: torch.Tensor, window_size: int):
    """The reference's pointer walk, as written (one row, in place)."""
    n = marked.shape[0]
    for select_id in select_ids.tolist():
        left, right = select_id - 1, select_id + 1
        count, go_left = 0, True
        while count < window_size:
            if go_left:
                if left >= 0 and not marked[left] and masked[left]:
                    marked[left] = True
                    count += 1
                left -= 1
            else:
                if right < n and not marked[right] and masked[right]:
                    marked[right] = True
                    count += 1
                right += 1
            go_left = not go_left
            if left < 0 and right > n:
                break


def dkv_greedy_generate(model, prompt: torch.Tensor, steps: int, gen_length: int, block_length: int, mask_id: int,
                        cache_steps: int, window_size: int, temperature: float = 0.0):
    """dKV-Cache-Greedy (its ``random`` order drawn from torch's global generator); returns (x, nfe, fed
    widths per forward)."""
    B, P = prompt.shape
    x = torch.cat([prompt, prompt.new_full((B, gen_length), mask_id)], dim=1)
    T = x.shape[1]
    all_pos = torch.arange(T).expand(B, T)
    per_block = steps // (gen_length // block_length)
    nfe, widths = 0, []
    for b in range(gen_length // block_length):
        lo, hi = P + b * block_length, P + (b + 1) * block_length
        counts = _num_transfer_tokens(x[:, lo:hi] == mask_id, per_block)
        acc = torch.cat([torch.zeros(B, 1, dtype=counts.dtype), counts], dim=1).cumsum(dim=1)
        x0_p = torch.rand((B, T))
        x0_p[:, hi:] = -math.inf
        x0_p[:, :lo] = -math.inf
        order = torch.sort(x0_p, descending=True).indices
        kept = None  # per layer (k, v) over the whole canvas
        cur = None
        for i in range(per_block):
            masked = x == mask_id
            nfe += 1
            if i % cache_steps != 0:
                fed = _columns(cur)
                widths.append(fed.shape[1])
                logits_fed, fresh = _layers(model, x.gather(1, fed), all_pos.gather(1, fed), _pick(kept, _columns(~cur)))
                kept = _written(kept, fresh, fed)
                x0 = torch.full((B, T), mask_id, dtype=torch.long).scatter_(1, fed, _sample(logits_fed, temperature))
            else:
                widths.append(T)
                logits, kept = _layers(model, x, all_pos, None)
                x0 = _sample(logits, temperature)
            x0 = torch.where(masked, x0, x)
            transfer = torch.zeros_like(masked)
            for j in range(B):
                transfer[j, order[j, acc[j, i]:acc[j, i + 1]]] = True
            x[transfer] = x0[transfer]
            nxt = torch.zeros_like(masked)
            for j in range(B):
                chosen = order[j, acc[j, i]:acc[j, i + 1]]
                if i < per_block - 1:
                    upcoming = order[j, acc[j, i + 1]:acc[j, i + 1] + counts[j, i + 1]]
                    nxt[j, upcoming] = True
                    nxt[j, chosen] = True
                    if window_size > 0:
                        _find_window_tokens(nxt[j], upcoming, masked[j], window_size)
            cur = nxt
    return x, nfe, widths
