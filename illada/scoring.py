"""Multiple-choice scoring of masked-diffusion LMs (LLaDA's Monte-Carlo likelihood, iLLaDA's confidence scoring).

Three scorers share one signature, ``scorer(model, pairs, settings) -> Tensor[N]`` (float64, higher = better),
over (context ids, continuation ids) pairs:

* :func:`likelihood` -- LLaDA's Monte-Carlo ELBO (``get_log_likelihood``): the context is never masked; each row
  masks exactly l of the L continuation tokens, l stratified across a mini-batch of ``batch_size`` rows, loss
  weighted L/l; ``mc_num`` rows per pair; seeded.
* :func:`confidence` -- iLLaDA's confidence-ordered chain rule: start fully masked, at each step reveal the masked
  position where the candidate's own token is most probable and add its log-prob (L forwards).
* :func:`ar_order` -- the left-to-right chain rule (L forwards, all independent).
* :func:`dream` -- Dream's lm-eval likelihoods (``nll_type`` mc / ar_ftb / ar_btf, ``log_type`` ftb / btf /
  union, ``mc_num``, ``sampling_eps``), the model's EOS appended to each continuation as Dream's eval does.

All pairs (candidates of a question and questions of a batch) are packed together, left-padded, and run in
forwards of at most ``max_rows`` rows; :func:`score_questions` adds the per-question grouping and the
normalisations sum / per-token / per-character.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Sequence

import torch

from illada.metrics import NORMALISATIONS, normalise_scores  # noqa: F401  (re-exported)
from illada.sampling.guidance import guided_logits

Pair = tuple[Sequence[int], Sequence[int]]


@dataclass(frozen=True)
class ScoringSettings:
    """``mask_id`` of the model at hand; ``mc_num``/``batch_size`` as LLaDA's get_log_likelihood (``batch_size``
    rows share one stratified draw); ``max_rows`` caps the rows of one forward (memory, not semantics).

    Read only by the ``dream`` scorer (None = Dream's default): ``nll_type`` (``mc``: Monte-Carlo over random
    masks; ``ar_ftb`` / ``ar_btf``: the chain rule left-to-right / right-to-left), ``log_type`` (``ftb``:
    log p(continuation | context); ``btf``: log p(context | continuation); ``union``: the joint per token, mc
    only) and ``sampling_eps`` (the lowest masking probability of mc).
    """

    mask_id: int
    mc_num: int = 128
    batch_size: int = 16
    cfg_scale: float = 0.0
    seed: int = 0
    max_rows: int = 16  # the model returns logits for every position: rows x length x vocab per forward
    nll_type: str | None = None
    log_type: str | None = None
    sampling_eps: float | None = None

    def __post_init__(self) -> None:
        for name in ("mask_id", "mc_num", "batch_size", "seed", "max_rows"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"ScoringSettings.{name}={value!r}: must be an integer")
        for name in ("mc_num", "batch_size", "max_rows"):
            if getattr(self, name) < 1:
                raise ValueError(f"ScoringSettings.{name}={getattr(self, name)!r}: must be >= 1")
        if self.mask_id < 0:
            raise ValueError(f"ScoringSettings.mask_id={self.mask_id!r}: must be a token id >= 0")
        if self.mc_num % self.batch_size:
            raise ValueError(f"ScoringSettings.mc_num={self.mc_num}: must be divisible by "
                             f"batch_size={self.batch_size}")
        if not isinstance(self.cfg_scale, (int, float)) or not math.isfinite(self.cfg_scale) or self.cfg_scale < 0:
            raise ValueError(f"ScoringSettings.cfg_scale={self.cfg_scale!r}: must be a finite number >= 0")
        _check_dream_fields(self)


# ------------------------------------------------------------------------------------------------- packing
@dataclass
class _Packed:
    """Pairs laid out [pad; context; continuation] so every continuation ends at the last column."""

    tokens: torch.Tensor  # [N, T]
    attention: torch.Tensor  # [N, T] 1 = real
    context: torch.Tensor  # [N, T] bool, context positions (masked in the unconditional CFG rows)
    lengths: torch.Tensor  # [N] continuation lengths L
    span: int  # Lmax: the continuation columns are tokens[:, -span:]

    @property
    def valid(self) -> torch.Tensor:
        """[N, span] bool: which of the last ``span`` columns belong to the row's continuation."""
        col = torch.arange(self.span, device=self.lengths.device)
        return col >= (self.span - self.lengths)[:, None]

    @property
    def targets(self) -> torch.Tensor:
        return self.tokens[:, -self.span:]


def _pack(model, pairs: Sequence[Pair], mask_id: int) -> _Packed:
    if not pairs:
        raise ValueError("pairs is empty: nothing to score")
    max_len = getattr(getattr(model, "config", None), "max_seq_len", None)
    rows = []
    for n, (ctx, cont) in enumerate(pairs):
        ctx, cont = [int(t) for t in ctx], [int(t) for t in cont]
        if not cont:
            raise ValueError(f"pair {n}: the continuation is empty")
        if mask_id in ctx or mask_id in cont:
            raise ValueError(f"pair {n}: contains mask_id={mask_id}; contexts and continuations must not")
        if max_len is not None and len(ctx) + len(cont) > max_len:
            raise ValueError(f"pair {n}: context {len(ctx)} + continuation {len(cont)} tokens exceed the model's "
                             f"max_seq_len={max_len}")
        rows.append((ctx, cont))
    width = max(len(c) + len(a) for c, a in rows)
    pad = 0 if mask_id != 0 else 1  # never attended; only must not read as a mask
    tokens = torch.full((len(rows), width), pad, dtype=torch.long)
    attention = torch.zeros(len(rows), width, dtype=torch.long)
    context = torch.zeros(len(rows), width, dtype=torch.bool)
    for n, (ctx, cont) in enumerate(rows):
        seq = ctx + cont
        tokens[n, width - len(seq):] = torch.tensor(seq, dtype=torch.long)
        attention[n, width - len(seq):] = 1
        context[n, width - len(seq):width - len(cont)] = True
    lengths = torch.tensor([len(a) for _, a in rows])
    device = _model_device(model)
    return _Packed(tokens.to(device), attention.to(device), context.to(device), lengths.to(device),
                   int(lengths.max()))


def _model_device(model) -> torch.device:
    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    params = getattr(model, "parameters", None)
    if callable(params):
        for p in params():
            return p.device
    return torch.device("cpu")


def _continuation_log_probs(model, packed: _Packed, rows: torch.Tensor, cont_masked: torch.Tensor,
                            settings: ScoringSettings) -> torch.Tensor:
    """log p(target) at every continuation column of ``rows`` [R] whose continuation is masked as ``cont_masked``
    [R, span]; one forward (or one guided forward) over the rows, leading all-padding columns trimmed."""
    tokens, attention, context = packed.tokens[rows], packed.attention[rows], packed.context[rows]
    # drop columns that are padding in every row, but keep the continuation columns whole
    first = min(int((attention.sum(dim=0) > 0).nonzero()[0]), tokens.shape[1] - packed.span)
    tokens, attention, context = tokens[:, first:], attention[:, first:], context[:, first:]
    x = tokens.clone()
    x[:, -packed.span:] = torch.where(cont_masked, torch.full_like(cont_masked, settings.mask_id, dtype=x.dtype),
                                      x[:, -packed.span:])
    mask = None if bool(attention.all()) else attention
    logits = guided_logits(model, x, mask, context, settings.cfg_scale, settings.mask_id)[:, -packed.span:]
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    return log_probs.gather(-1, tokens[:, -packed.span:, None]).squeeze(-1)


def _chunks(n: int, size: int, device: torch.device):
    for lo in range(0, n, size):
        yield torch.arange(lo, min(lo + size, n), device=device)


# ------------------------------------------------------------------------------------------------- likelihood
@lru_cache(maxsize=None)
def _stratified_table(length: int, batch: int) -> torch.Tensor:
    """[length, batch]: row k-1 holds the mask counts l_i of a mini-batch whose draw is k.

    l_i = ((round(k + i L / b) - 1) mod L) + 1, evaluated with the reference's float32 ``linspace`` so that
    rounding at exact halves agrees with it.
    """
    out = torch.empty(length, batch, dtype=torch.long)
    for k in range(1, length + 1):
        end = torch.tensor(k) + (batch - 1) * (length / batch)
        out[k - 1] = torch.round(torch.linspace(float(k), end, steps=batch)).long()
    return ((out - 1) % length) + 1


def likelihood_masks(lengths: torch.Tensor, settings: ScoringSettings) -> tuple[torch.Tensor, torch.Tensor,
                                                                                  torch.Tensor]:
    """The Monte-Carlo draws of :func:`likelihood`: (pair index [R], l [R], masked [R, Lmax] right-aligned),
    R = N * mc_num rows, pair-major. Seeded by ``settings.seed`` alone (independent of device and ``max_rows``)."""
    gen = torch.Generator().manual_seed(settings.seed)
    lengths = lengths.cpu()
    N, b, groups = len(lengths), settings.batch_size, settings.mc_num // settings.batch_size
    span = int(lengths.max())
    k = (torch.rand(N, groups, generator=gen, dtype=torch.float64) * lengths[:, None]).long() + 1
    counts = torch.empty(N, groups, b, dtype=torch.long)
    for length in lengths.unique().tolist():
        rows = lengths == length
        counts[rows] = _stratified_table(length, b)[k[rows] - 1]
    pair = torch.arange(N).repeat_interleave(settings.mc_num)
    counts = counts.reshape(-1)
    # A uniformly random subset of exactly l positions: the l smallest of i.i.d. keys (padding keys are +inf).
    keys = torch.rand(len(pair), span, generator=gen)
    valid = torch.arange(span) >= (span - lengths[pair])[:, None]
    keys = keys.masked_fill(~valid, float("inf"))
    rank = keys.argsort(dim=-1).argsort(dim=-1)
    return pair, counts, rank < counts[:, None]


@torch.no_grad()
def likelihood(model, pairs: Sequence[Pair], settings: ScoringSettings) -> torch.Tensor:
    """LLaDA's Monte-Carlo estimate of log p(continuation | context) (an ELBO), one value per pair."""
    check_scorer_settings("likelihood", settings)
    packed = _pack(model, pairs, settings.mask_id)
    pair, counts, masked = likelihood_masks(packed.lengths, settings)
    device = packed.tokens.device
    pair, counts, masked = pair.to(device), counts.to(device), masked.to(device)
    weight = packed.lengths[pair].double() / counts.double()  # 1/t with t = l / L
    total = torch.zeros(len(pairs), dtype=torch.float64, device=device)
    for rows in _chunks(len(pair), settings.max_rows, device):
        log_p = _continuation_log_probs(model, packed, pair[rows], masked[rows], settings)
        row_loss = -(log_p.double() * masked[rows]).sum(dim=-1) * weight[rows]
        total.index_add_(0, pair[rows], row_loss)
    return (-total / settings.mc_num).cpu()


# ------------------------------------------------------------------------------------------------- chain rules
@torch.no_grad()
def confidence(model, pairs: Sequence[Pair], settings: ScoringSettings) -> torch.Tensor:
    """iLLaDA confidence-based score: greedy reveal order by the candidate's own token probability."""
    check_scorer_settings("confidence", settings)
    packed = _pack(model, pairs, settings.mask_id)
    device = packed.tokens.device
    hidden = packed.valid.clone()  # still-masked continuation positions
    total = torch.zeros(len(pairs), dtype=torch.float64, device=device)
    for step in range(packed.span):
        active = (packed.lengths > step).nonzero().squeeze(-1)  # finished candidates leave the batch
        for part in active.split(settings.max_rows):
            log_p = _continuation_log_probs(model, packed, part, hidden[part], settings)
            log_p = log_p.masked_fill(~hidden[part], float("-inf"))
            best, where = log_p.max(dim=-1)
            total[part] += best.double()
            hidden[part, where] = False
    return total.cpu()


@torch.no_grad()
def ar_order(model, pairs: Sequence[Pair], settings: ScoringSettings) -> torch.Tensor:
    """Left-to-right chain rule: row (pair, i) masks continuation tokens i.. and scores token i."""
    check_scorer_settings("ar_order", settings)
    packed = _pack(model, pairs, settings.mask_id)
    device = packed.tokens.device
    pair = torch.arange(len(pairs), device=device).repeat_interleave(packed.lengths)
    offset = packed.span - packed.lengths[pair]  # column of the row's first continuation token
    starts = torch.arange(len(pair), device=device) - (packed.lengths.cumsum(0) - packed.lengths)[pair]
    column = offset + starts  # the token this row scores
    masked = torch.arange(packed.span, device=device) >= column[:, None]
    total = torch.zeros(len(pairs), dtype=torch.float64, device=device)
    for rows in _chunks(len(pair), settings.max_rows, device):
        log_p = _continuation_log_probs(model, packed, pair[rows], masked[rows], settings)
        total.index_add_(0, pair[rows], log_p.gather(1, column[rows, None]).squeeze(1).double())
    return total.cpu()


# ------------------------------------------------------------------------------------------------- Dream
DREAM_NLL_TYPES: tuple[str, ...] = ("mc", "ar_ftb", "ar_btf")
DREAM_LOG_TYPES: tuple[str, ...] = ("ftb", "btf", "union")
DREAM_FIELDS: tuple[str, ...] = ("nll_type", "log_type", "sampling_eps")


def _check_dream_fields(s: ScoringSettings) -> None:
    if s.nll_type is not None and s.nll_type not in DREAM_NLL_TYPES:
        raise ValueError(f"ScoringSettings.nll_type={s.nll_type!r}: choose one of {list(DREAM_NLL_TYPES)}")
    if s.log_type is not None and s.log_type not in DREAM_LOG_TYPES:
        raise ValueError(f"ScoringSettings.log_type={s.log_type!r}: choose one of {list(DREAM_LOG_TYPES)}")
    if s.log_type == "union" and s.nll_type not in (None, "mc"):
        raise ValueError(f"ScoringSettings.log_type='union': only with nll_type 'mc' (Dream), not {s.nll_type!r}")
    eps = s.sampling_eps
    if eps is not None and (isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps <= 1):
        raise ValueError(f"ScoringSettings.sampling_eps={eps!r}: the lowest masking probability must lie in (0, 1]")


def check_scorer_settings(scorer: str, s: ScoringSettings) -> None:
    """Fields the named scorer cannot use are errors, not no-ops (a scorer also checks this before its first
    forward; ``illada.evaluate`` checks it before loading the model)."""
    if scorer == "dream":
        if s.cfg_scale:
            raise ValueError(f"ScoringSettings.cfg_scale={s.cfg_scale!r}: scorer dream has no guidance (leave it 0)")
        return
    for name in DREAM_FIELDS:
        if getattr(s, name) is not None:
            raise ValueError(f"ScoringSettings.{name}={getattr(s, name)!r}: only read by scorer dream "
                             f"(scorer={scorer!r})")


def _dream_draws(length: int, n_context: int, log_type: str, s: ScoringSettings, eps: float
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Dream's mc noising of one pair of ``length`` tokens: (masked [R, length], 1/p_mask [R]) for
    R = max(mc_num // batch_size, 1) * batch_size rows. Each of the draws takes one offset u0 and stratifies the
    masking probability t over its ``batch_size`` rows; the first and last tokens are never masked (Dream's BOS /
    EOS); ``log_type`` keeps the masks of the continuation (ftb), the context (btf) or both (union). The stream
    is Dream's after ``torch.manual_seed(seed)`` (on CPU), restarted for every pair."""
    gen = torch.Generator().manual_seed(s.seed)
    b = s.batch_size
    masks, weights = [], []
    for _ in range(max(s.mc_num // b, 1)):
        u0 = torch.rand(1, generator=gen, dtype=torch.float32)
        t = (u0 + torch.arange(b).float() / b) % 1
        p_mask = (1 - eps) * t + eps
        masked = torch.rand((b, length), generator=gen) < p_mask[:, None]
        masked[:, 0] = masked[:, -1] = False
        if log_type == "ftb":
            masked[:, :n_context] = False
        elif log_type == "btf":
            masked[:, n_context:] = False
        masks.append(masked)
        weights.append(1.0 / p_mask.double())
    return torch.cat(masks), torch.cat(weights)


def _dream_chain(length: int, n_context: int, nll_type: str, log_type: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Dream's ar rows of one pair: (masked [n, length], scored column [n]) for the n tokens of the scored part
    (the continuation for ftb, the context for btf); row i scores the part's token i with the part's tokens from
    i on (ar_ftb, left to right) or up to i (ar_btf, right to left) masked; the other part stays visible."""
    lo, hi = (n_context, length) if log_type == "ftb" else (0, n_context)
    n = hi - lo
    i = torch.arange(n)[:, None]
    j = torch.arange(n)[None, :]
    hidden = j >= i if nll_type == "ar_ftb" else j <= i
    masked = torch.zeros(n, length, dtype=torch.bool)
    masked[:, lo:hi] = hidden
    return masked, lo + torch.arange(n)


@torch.no_grad()
def dream(model, pairs: Sequence[Pair], settings: ScoringSettings) -> torch.Tensor:
    """Dream's lm-eval log-likelihood (DreamLM/Dream ``eval/eval.py``) of each pair, the model's EOS appended to
    the continuation as Dream's ``_encode_pair`` does.

    ``mc``: -(1/R) sum over R noised rows of sum_{masked} CE / p_mask (``ftb``: only continuation tokens masked
    and scored; ``btf``: only context tokens; ``union``: both, divided by the pair's length). ``ar_ftb`` /
    ``ar_btf``: the exact chain rule over the scored part, left to right / right to left (no randomness).
    Rows of all pairs with the same length share forwards of at most ``max_rows`` rows (no padding).
    """
    s = settings
    nll_type, log_type = s.nll_type or "mc", s.log_type or "ftb"
    eps = 1e-3 if s.sampling_eps is None else s.sampling_eps
    check_scorer_settings("dream", s)
    eos = getattr(getattr(model, "config", None), "eos_token_id", None)
    if eos is None:
        raise ValueError("scorer dream appends the model's EOS to each continuation (as Dream's eval): "
                         "model.config.eos_token_id is missing")
    for n, (_, cont) in enumerate(pairs):
        if not len(cont):
            raise ValueError(f"pair {n}: the continuation is empty")
    packed = _pack(model, [(ctx, [*cont, eos]) for ctx, cont in pairs], s.mask_id)
    device = packed.tokens.device
    lengths = packed.attention.sum(dim=1).cpu()
    n_context = packed.context.sum(dim=1).cpu()
    width = packed.tokens.shape[1]
    pair_of, masks, weights, divisors = [], [], [], []
    for n in range(len(pairs)):
        L, C = int(lengths[n]), int(n_context[n])
        if nll_type == "mc":
            masked, weight = _dream_draws(L, C, log_type, s, eps)
            weight = weight[:, None].expand(masked.shape) / len(masked)  # the mean over rows
            divisors.append(float(L) if log_type == "union" else 1.0)
        else:
            masked, column = _dream_chain(L, C, nll_type, log_type)
            weight = torch.zeros(masked.shape, dtype=torch.float64)
            weight[torch.arange(len(column)), column] = 1.0
            divisors.append(1.0)
        # right-align to the packed row (left padding), scored positions = masked positions with a weight
        full_mask = torch.zeros(len(masked), width, dtype=torch.bool)
        full_weight = torch.zeros(len(masked), width, dtype=torch.float64)
        full_mask[:, width - L:] = masked
        full_weight[:, width - L:] = weight * masked
        pair_of.append(torch.full((len(masked),), n))
        masks.append(full_mask)
        weights.append(full_weight)
    pair = torch.cat(pair_of).to(device)
    mask, weight = torch.cat(masks).to(device), torch.cat(weights).to(device)
    total = torch.zeros(len(pairs), dtype=torch.float64, device=device)
    # Forwards hold rows of one length only, unpadded: Dream's logit shift gives a pair's first token the head
    # output of the column before it, its own in Dream's unpadded rows (scored by ar_btf and btf) but a padding
    # column's in a left-padded batch.
    row_length = lengths.to(device)[pair]
    for L in sorted(set(lengths.tolist())):
        same = (row_length == L).nonzero().squeeze(-1)
        for rows in same.split(s.max_rows):
            tokens = packed.tokens[pair[rows], width - L:]
            x = torch.where(mask[rows, width - L:], torch.full_like(tokens, s.mask_id), tokens)
            log_p = torch.log_softmax(model(x, None).float(), dim=-1).gather(-1, tokens[..., None]).squeeze(-1)
            total.index_add_(0, pair[rows], (log_p.double() * weight[rows, width - L:]).sum(dim=-1))
    return (total / torch.tensor(divisors, dtype=torch.float64, device=device)).cpu()


Scorer = Callable[[object, Sequence[Pair], ScoringSettings], torch.Tensor]
SCORERS: dict[str, Scorer] = {"likelihood": likelihood, "confidence": confidence, "ar_order": ar_order,
                              "dream": dream}


# ------------------------------------------------------------------------------------------------- questions
@dataclass(frozen=True)
class Question:
    """One multiple-choice item: a context and its candidate continuations (token ids); ``choice_chars`` are
    the candidates' lengths in characters, needed only for the per-character normalisation."""

    context: Sequence[int]
    choices: Sequence[Sequence[int]]
    choice_chars: Sequence[int] | None = None


@dataclass
class ChoiceScores:
    """Scores of the candidates of one question (``total`` is the scorer's sum of log-probabilities)."""

    total: torch.Tensor
    n_tokens: torch.Tensor
    n_chars: torch.Tensor | None

    def normalised(self, kind: str = "sum") -> torch.Tensor:
        """``sum`` (lm-eval acc), ``per_token``, or ``per_char`` (lm-eval acc_norm); see :mod:`illada.metrics`."""
        if kind == "per_char" and self.n_chars is None:
            raise ValueError("normalisation 'per_char' needs Question.choice_chars")
        chars = None if self.n_chars is None else self.n_chars.tolist()
        values = normalise_scores(self.total.tolist(), kind, n_chars=chars, n_tokens=self.n_tokens.tolist())
        return torch.tensor(values, dtype=torch.float64)

    def best(self, kind: str = "sum") -> int:
        return int(self.normalised(kind).argmax())


def score_questions(model, questions: Sequence[Question], scorer: str, settings: ScoringSettings) -> list[ChoiceScores]:
    """Score every candidate of every question in one packed run of ``scorer``."""
    if scorer not in SCORERS:
        raise ValueError(f"scorer {scorer!r} is unknown; choose one of {list(SCORERS)}")
    pairs: list[Pair] = []
    for q, question in enumerate(questions):
        if not question.choices:
            raise ValueError(f"question {q} has no choices")
        if question.choice_chars is not None and len(question.choice_chars) != len(question.choices):
            raise ValueError(f"question {q}: {len(question.choice_chars)} choice_chars for "
                             f"{len(question.choices)} choices")
        pairs.extend((question.context, choice) for choice in question.choices)
    totals = SCORERS[scorer](model, pairs, settings)
    out, i = [], 0
    for question in questions:
        c = len(question.choices)
        chars = None if question.choice_chars is None else torch.tensor(question.choice_chars, dtype=torch.float64)
        n_tokens = torch.tensor([len(choice) for choice in question.choices], dtype=torch.float64)
        out.append(ChoiceScores(totals[i:i + c], n_tokens, chars))
        i += c
    return out
