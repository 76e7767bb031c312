"""Dream's sampler (``diffusion_generate`` of Dream-v0, HKUNLP) as ``SamplerSettings(decoder="dream")``.

One canvas of ``gen_length`` masks after the prompt (no blocks), ``steps`` forwards over the timesteps
``linspace(1, eps, steps + 1)``; at step i (t -> s) each of Dream's ``alg`` rules unmasks:

* ``origin``: every masked position independently with probability ``1 - s/t`` (1 at the last step), its token
  drawn from the (tempered, top-p / top-k filtered) distribution;
* ``maskgit_plus`` / ``topk_margin`` / ``entropy``: ``int(n_masked * (1 - s/t))`` positions (all at the last step),
  the most confident by p(x0), top-1 minus top-2 probability, or negative entropy; with ``alg_temp`` > 0 the
  positions are drawn without replacement from ``softmax(confidence / alg_temp)`` instead.

Random numbers follow Dream's own stream (``torch.manual_seed(seed)`` before ``diffusion_generate`` equals
``seed=seed`` here): ``origin`` draws one uniform per masked position per step, token draws are
``Categorical(probs).sample()`` (one multinomial draw per position; Dream falls back to the argmax when the
probabilities fail Categorical's simplex check, and so does this), ``alg_temp`` draws a multinomial.

The model returns unshifted logits (``Transformer`` undoes Dream's shift), so position i's logits predict token i.
Dream counts the tokens to unmask from the batch's mean masked count; here each row counts its own, which is the
same number whenever no row committed the mask token itself, and keeps a batch row's tokens equal to its
unbatched ones (at temperature 0 and without ``alg_temp``; random draws are taken over the whole batch, as Dream).
"""

from __future__ import annotations

import time

import torch
from torch.distributions import constraints

from illada.sampling.decoders import Decoder, register
from illada.sampling.settings import SamplerSettings
from illada.timing import synchronize

ENTROPY_EPS = 1e-10  # Dream's epsilon inside log(p + eps) of its negative-entropy confidence


def filter_top_p(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Nucleus filter: keep the most probable tokens up to and including the first whose cumulative probability
    exceeds ``top_p``; the others get the dtype's lowest value (not -inf, as Dream)."""
    ranked, order = torch.sort(logits, descending=True)
    beyond = torch.softmax(ranked, dim=-1).cumsum(dim=-1) > top_p
    drop = torch.zeros_like(beyond)
    drop[..., 1:] = beyond[..., :-1]  # the token that crosses the threshold stays
    drop = torch.zeros_like(drop).scatter(-1, order, drop)
    return logits.masked_fill(drop, torch.finfo(logits.dtype).min)


def filter_top_k(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    """Keep the tokens whose logit reaches the k-th largest (ties at the k-th all stay)."""
    kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[..., -1:]
    return logits.masked_fill(logits < kth, torch.finfo(logits.dtype).min)


def draw_categorical(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor | None:
    """One draw per row of ``probs`` [N, V] as ``Categorical(probs).sample()``; None where Categorical would
    refuse the probabilities (not a simplex after normalising, e.g. NaN)."""
    normalised = probs / probs.sum(dim=-1, keepdim=True)
    if not bool(constraints.simplex.check(normalised).all()):
        return None
    try:
        return torch.multinomial(normalised, 1, True, generator=generator)[:, 0]
    except RuntimeError:
        return None


def propose(logits: torch.Tensor, s: SamplerSettings, generator: torch.Generator | None
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Dream's token proposal for masked positions' logits [N, V] -> (confidence [N], tokens [N])."""
    if s.temperature > 0:
        logits = logits / s.temperature
    if s.top_p is not None and s.top_p < 1:
        logits = filter_top_p(logits, s.top_p)
    if s.top_k is not None:
        logits = filter_top_k(logits, s.top_k)
    probs = torch.softmax(logits, dim=-1)
    tokens = draw_categorical(probs, generator) if s.temperature > 0 else None
    if tokens is None:
        confidence, tokens = probs.max(dim=-1)
    else:
        confidence = probs.gather(-1, tokens[:, None])[:, 0]
    if s.alg == "topk_margin":
        top2 = torch.sort(probs, dim=-1, descending=True).values
        confidence = top2[:, 0] - top2[:, 1]
    elif s.alg == "entropy":
        confidence = (probs * torch.log(probs + ENTROPY_EPS)).sum(dim=-1)
    return confidence, tokens


def _origin_step(x: torch.Tensor, masked: torch.Tensor, logits: torch.Tensor, p_unmask: torch.Tensor | float,
                 s: SamplerSettings, generator: torch.Generator | None) -> torch.Tensor:
    """Unmask each masked position with probability ``p_unmask``; returns the chosen positions [B, T]."""
    mask_logits = logits[masked]
    chosen = torch.rand(mask_logits.shape[0], device=x.device, generator=generator) < p_unmask
    tokens = torch.full_like(x[masked], s.mask_id)
    tokens[chosen] = propose(mask_logits[chosen], s, generator)[1]
    x[masked] = tokens
    where = torch.zeros_like(masked)
    where[masked] = chosen
    return where


def _ranked_step(x: torch.Tensor, masked: torch.Tensor, logits: torch.Tensor, fraction: torch.Tensor | None,
                 s: SamplerSettings, generator: torch.Generator | None) -> torch.Tensor:
    """Unmask ``int(n_masked * fraction)`` positions per row (all when ``fraction`` is None) by confidence."""
    confidence, tokens = propose(logits[masked], s, generator)
    n_masked = masked.sum(dim=1)
    counts = n_masked if fraction is None else (n_masked.to(fraction.dtype) * fraction).long()
    where = torch.zeros_like(masked)
    k = int(counts.max())
    if k == 0:
        return where
    scores = torch.full_like(x, float("-inf"), dtype=logits.dtype)
    scores[masked] = confidence.to(logits.dtype)
    if not s.alg_temp:
        picked = torch.topk(scores, k).indices
    else:
        picked = torch.multinomial(torch.softmax(scores / s.alg_temp, dim=-1), k, generator=generator)
    # rows whose count is below the batch's largest take the first of their picks (same as picking fewer)
    where.scatter_(1, picked, torch.arange(k, device=x.device) < counts[:, None])
    proposal = torch.full_like(x, s.mask_id)
    proposal[masked] = tokens
    x[where] = proposal[where]
    return where


def generate_dream(model, prompt_ids: torch.Tensor, settings: SamplerSettings,
                   attention_mask: torch.Tensor | None, generator: torch.Generator | None):
    """Dream's ``diffusion_generate`` on left-padded ``prompt_ids`` [B, P]; ``generate`` calls this for
    ``decoder="dream"`` after its input checks. Returns a :class:`~illada.sampling.loop.GenerationResult`."""
    from illada.sampling.loop import GenerationResult, _answer_lengths, _extend  # loop imports this module's registry

    s = settings
    B, P = prompt_ids.shape
    device = prompt_ids.device
    synchronize(device)
    t0 = time.perf_counter()
    x = torch.cat([prompt_ids, prompt_ids.new_full((B, s.gen_length), s.mask_id)], dim=1)
    mask = _extend(attention_mask, s.gen_length)
    if mask is not None and bool(mask.all()):
        mask = None  # Dream attends to everything when nothing is padding
    timesteps = torch.linspace(1, s.eps, s.steps + 1, device=device)
    per_step = []
    with torch.no_grad():
        for i in range(s.steps):
            masked = x == s.mask_id
            logits = model(x, mask)
            t, t_next = timesteps[i], timesteps[i + 1]
            last = i == s.steps - 1
            if s.alg == "origin":
                chosen = _origin_step(x, masked, logits, 1 if last else 1 - t_next / t, s, generator)
            else:
                chosen = _ranked_step(x, masked, logits, None if last else 1 - t_next / t, s, generator)
            per_step.append(chosen.sum(dim=1))
    synchronize(device)
    wall = time.perf_counter() - t0
    generated = torch.full((B,), s.gen_length, dtype=torch.long)
    tokens_per_step = torch.stack(per_step).cpu() if per_step else torch.zeros(0, B, dtype=torch.long)
    return GenerationResult(
        tokens=x, prompt_length=P, nfe=s.steps if B else 0, row_nfe=torch.full((B,), s.steps, dtype=torch.long),
        tokens_per_step=tokens_per_step, generated_tokens=generated,
        answer_lengths=_answer_lengths(x[:, P:], generated, s.stop_set), wall_time_s=wall,
    )


@register("dream")
class DreamDecoder(Decoder):
    """Registry entry of Dream's sampler: it has no blocks and draws its own random numbers, so ``generate``
    runs :func:`generate_dream` (``own_loop``) instead of the block loop."""

    own_loop = staticmethod(generate_dream)
