"""Multiple-choice scoring of masked-diffusion LMs (../shared/reference/dllm.md section 3).

Three scorers share one signature, ``scorer(model, pairs, settings) -> Tensor[N]`` (float64, higher = better),
over (context ids, continuation ids) pairs:

* :func:`likelihood` -- LLaDA's Monte-Carlo ELBO (``get_log_likelihood``): the context is never masked; each row
  masks exactly l of the L continuation tokens, l stratified across a mini-batch of ``batch_size`` rows, loss
  weighted L/l; ``mc_num`` rows per pair; seeded.
* :func:`confidence` -- iLLaDA's confidence-ordered chain rule: start fully masked, at each step reveal the masked
  position where the candidate's own token is most probable and add its log-prob (L forwards).
* :func:`ar_order` -- the left-to-right chain rule (L forwards, all independent).

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
    rows share one stratified draw); ``max_rows`` caps the rows of one forward (memory, not semantics)."""

    mask_id: int
    mc_num: int = 128
    batch_size: int = 16
    cfg_scale: float = 0.0
    seed: int = 0
    max_rows: int = 16  # the model returns logits for every position: rows x length x vocab per forward

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


Scorer = Callable[[object, Sequence[Pair], ScoringSettings], torch.Tensor]
SCORERS: dict[str, Scorer] = {"likelihood": likelihood, "confidence": confidence, "ar_order": ar_order}


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
