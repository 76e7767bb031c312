"""Test oracles transcribed (in our own words) from Dream's published code, run on toy logits:

* :func:`dream_generate` -- ``DreamGenerationMixin._sample`` of Dream-v0's ``generation_utils.py`` (the same in
  NVlabs/Fast-dLLM ``dream/model/generation_utils.py``): global random stream, ``torch.distributions.Categorical``,
  the batch-mean transfer count and the logit shift done here on the raw (shifted) head output.
* :func:`dream_loglikelihood` -- ``DreamEvalHarness._eval_target_nll_mc`` / ``_eval_target_nll_ar`` and the
  normalisation of ``loglikelihood`` in DreamLM/Dream ``eval/eval.py`` (no guidance).

Only the tests import this module; the product lives in illada/sampling/dream.py and illada/scoring.py.
"""

from __future__ import annotations

import torch
import torch.distributions as dists
import torch.nn.functional as F


def unshift(raw: torch.Tensor) -> torch.Tensor:
    """Dream's rule: position i takes the head output of position i-1 (position 0 keeps its own)."""
    return torch.cat([raw[:, :1], raw[:, :-1]], dim=1)


class ShiftedModel:
    """What a Dream checkpoint's head returns for a toy: the toy's logits of position i moved to position i-1
    (so that :func:`unshift` gives the toy's logits back, up to position 0), and the unshifted view the
    illada Transformer returns (``as_illada``)."""

    def __init__(self, toy) -> None:
        self.toy = toy
        self.config = getattr(toy, "config", None)

    def raw(self, x, attention_mask=None):
        logits = self.toy(x, attention_mask)
        return torch.cat([logits[:, 1:], logits[:, -1:]], dim=1)

    def __call__(self, x, attention_mask=None):  # the illada view: unshifted
        return unshift(self.raw(x, attention_mask))


def _sample_tokens(logits, temperature, top_p, top_k, margin=False, neg_entropy=False):
    if temperature > 0:
        logits = logits / temperature
    if top_p is not None and top_p < 1:
        ranked, order = torch.sort(logits, descending=True)
        cum = torch.cumsum(F.softmax(ranked, dim=-1), dim=-1)
        remove = cum > top_p
        remove[..., 1:] = remove[..., :-1].clone()
        remove[..., 0] = False
        drop = torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, order, remove)
        logits = logits.masked_fill(drop, torch.finfo(logits.dtype).min)
    if top_k is not None:
        k = min(top_k, logits.size(-1))
        logits = logits.masked_fill(logits < torch.topk(logits, k)[0][..., -1, None], torch.finfo(logits.dtype).min)
    probs = torch.softmax(logits, dim=-1)
    if temperature > 0:
        try:
            x0 = dists.Categorical(probs=probs).sample()
            conf = torch.gather(probs, -1, x0.unsqueeze(-1)).squeeze(-1)
        except Exception:  # the reference's bare except: Categorical refused the probabilities
            conf, x0 = probs.max(dim=-1)
    else:
        conf, x0 = probs.max(dim=-1)
    if margin:
        top = torch.sort(probs, dim=-1, descending=True)[0]
        conf = top[:, 0] - top[:, 1]
    if neg_entropy:
        conf = torch.sum(probs * torch.log(probs + 1e-10), dim=-1)
    return conf, x0


@torch.no_grad()
def dream_generate(raw_model, input_ids, attention_mask, mask_id, max_new_tokens, steps, eps=1e-3, alg="origin",
                   alg_temp=None, temperature=0.0, top_p=None, top_k=None):
    """Dream's sampling loop; ``raw_model(x, mask)`` returns the head's SHIFTED logits (Dream's convention)."""
    B = input_ids.shape[0]
    total = input_ids.shape[1] + max_new_tokens
    x = F.pad(input_ids, (0, total - input_ids.shape[1]), value=mask_id)
    if attention_mask is not None and torch.any(attention_mask == 0):
        attention_mask = F.pad(attention_mask, (0, total - attention_mask.shape[1]), value=1)
    else:
        attention_mask = None  # "full"
    timesteps = torch.linspace(1, eps, steps + 1, device=x.device)
    for i in range(steps):
        mask_index = x == mask_id
        logits = unshift(raw_model(x, attention_mask))
        mask_logits = logits[mask_index]
        t, s = timesteps[i], timesteps[i + 1]
        if alg == "origin":
            p_transfer = 1 - s / t if i < steps - 1 else 1
            x0 = torch.zeros_like(x[mask_index], dtype=torch.long) + mask_id
            transfer = torch.rand(*x0.shape, device=x.device) < p_transfer
            _, x0[transfer] = _sample_tokens(mask_logits[transfer], temperature, top_p, top_k)
            x[mask_index] = x0.clone()
            continue
        conf, x0 = _sample_tokens(mask_logits, temperature, top_p, top_k, margin=alg == "topk_margin",
                                  neg_entropy=alg == "entropy")
        n_mask = mask_index.sum() / mask_index.shape[0]
        n_transfer = int(n_mask * (1 - s / t)) if i < steps - 1 else int(n_mask)
        full_conf = torch.full_like(x, -torch.inf, dtype=logits.dtype)
        full_conf[mask_index] = conf
        if n_transfer > 0:
            if alg_temp is None or alg_temp == 0:
                _, transfer_index = torch.topk(full_conf, n_transfer)
            else:
                full_conf = F.softmax(full_conf / alg_temp, dim=-1)
                transfer_index = torch.multinomial(full_conf, num_samples=n_transfer)
            x_ = torch.zeros_like(x, dtype=torch.long) + mask_id
            x_[mask_index] = x0.clone()
            rows = torch.arange(B, device=x.device).unsqueeze(1).expand_as(transfer_index)
            x[rows, transfer_index] = x_[rows, transfer_index]
    return x


# ------------------------------------------------------------------------------------------------ likelihood
def _logits(raw_model, seq):
    return unshift(raw_model(seq, None))


def _forward_process(batch, mask_id, sampling_eps):
    b, l = batch.shape
    u0 = torch.rand(1, dtype=torch.float32)
    t = (u0 + torch.arange(b).float() / b) % 1
    p_mask = ((1 - sampling_eps) * t + sampling_eps)[:, None].repeat(1, l)
    masked = torch.rand((b, l)) < p_mask
    masked[:, 0] = False  # Dream keeps BOS and EOS
    masked[:, -1] = False
    return torch.where(masked, mask_id, batch), p_mask


@torch.no_grad()
def _nll_mc(raw_model, prefix, target, mask_id, log_type, mc_num, batch_size, sampling_eps):
    seq = torch.cat([prefix, target])[None, :].repeat(batch_size, 1)
    losses = []
    for _ in range(max(mc_num // batch_size, 1)):
        perturbed = seq.clone()
        noisy, p_mask = _forward_process(seq, mask_id, sampling_eps)
        if log_type == "ftb":
            perturbed[:, -len(target):] = noisy[:, -len(target):]
        elif log_type == "btf":
            perturbed[:, :len(prefix)] = noisy[:, :len(prefix)]
        else:
            perturbed = noisy
        where = perturbed == mask_id
        logits = _logits(raw_model, perturbed)
        loss = F.cross_entropy(logits[where].float(), seq[where], reduction="none") / p_mask[where]
        losses.append((loss.sum() / batch_size).item())
    return sum(losses) / len(losses)


@torch.no_grad()
def _nll_ar(raw_model, prefix, target, mask_id, nll_type, log_type):
    prefix, target = prefix[None], target[None]
    part = target if log_type == "ftb" else prefix
    n = part.shape[1]
    rows = part.repeat(n, 1).clone()
    hide = torch.ones(n, n, dtype=torch.bool)
    hide = torch.triu(hide) if nll_type == "ar_ftb" else torch.tril(hide)
    rows[hide] = mask_id
    if log_type == "ftb":
        seqs = torch.cat([prefix.repeat(n, 1), rows], -1)
    else:
        seqs = torch.cat([rows, target.repeat(n, 1)], -1)
    logits = _logits(raw_model, seqs)
    scored = torch.eye(n, dtype=torch.bool)  # each row scores the token on the diagonal
    if log_type == "ftb":
        index = torch.cat([torch.zeros(n, prefix.shape[1], dtype=torch.bool), scored], -1)
    else:
        index = torch.cat([scored, torch.zeros(n, target.shape[1], dtype=torch.bool)], -1)
    return F.cross_entropy(logits[index].float(), part[0], reduction="sum").item()


def dream_loglikelihood(raw_model, prefix, target, mask_id, nll_type="mc", log_type="ftb", mc_num=128,
                        batch_size=32, sampling_eps=1e-3):
    """Dream's log-likelihood of ``target`` (EOS already appended) given ``prefix`` (1-D tensors)."""
    if nll_type == "mc":
        ll = -_nll_mc(raw_model, prefix, target, mask_id, log_type, mc_num, batch_size, sampling_eps)
        if log_type == "union":
            ll = ll / (len(target) + len(prefix))
        return ll
    return -_nll_ar(raw_model, prefix, target, mask_id, nll_type, log_type)
