"""Decoding strategies: which masked positions of a block to commit at each step, one small class per method,
behind the registry :data:`DECODER_CLASSES` (names = ``SamplerSettings.decoder``, knobs declared in
``illada.sampling.settings.DECODERS``), plus the confidence calibrations (certainty prior, PC-Sampler) that
confidence-ranked decoders accept.

The block loop (``illada/sampling/loop.py``) calls, per block, :meth:`Decoder.begin_block`, then per step
:meth:`Decoder.forward` -> (proposal, confidence, calibrations) -> :meth:`Decoder.select` -> remask/commit ->
:meth:`Decoder.finished`. Shapes: window logits [B, W, V], everything else [B, W] (W = window width).
Every decoder is vectorised over rows and positions, so a left-padded batch gives each row the tokens it gets
alone.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable, ClassVar

import torch

from illada.sampling import rules
from illada.sampling.settings import SamplerSettings

NEG_INF = rules.NEG_INF


@dataclass
class StepInput:
    """What a decoder sees at one step (window columns [window_start, end) of the canvas)."""

    logits: torch.Tensor  # [B, W, V] window logits after guidance and EOS controls
    x0: torch.Tensor  # [B, W] proposed tokens
    confidence: torch.Tensor  # [B, W] remasking score after calibrations, -inf where not masked
    masked: torch.Tensor  # [B, W] window positions still holding mask_id
    x: torch.Tensor  # [B, T] the canvas (read only: return what to change)
    window_start: int  # the window is x[:, window_start:end]
    start: int  # block bounds (canvas columns)
    end: int
    step: int  # 0-based step within the block (= forwards so far in this block)
    first: int  # first generated column
    noise: torch.Tensor | None = None  # [B, W, V] float64 uniforms behind x0's Gumbel-max draw (None at T=0)


@dataclass
class StepOutput:
    commit: torch.Tensor  # bool [B, W]: write ``tokens`` there
    tokens: torch.Tensor | None = None  # [B, W] tokens to write (default: the proposal x0)
    remask: torch.Tensor | None = None  # bool [B, W]: reset to mask_id before committing (e.g. WINO)


class Decoder:
    """Base class: one instance per :func:`~illada.sampling.generate` call; per-block state lives on ``self``
    and is reset in :meth:`begin_block` (rows only leave the batch between blocks)."""

    name: ClassVar[str] = ""
    ranks_stale_prefix: ClassVar[bool] = False  # LLaDA's quirk: masks left of the block stay candidates
    # a sampler that does not fit the block loop (Dream's: no blocks, its own random stream) runs this instead:
    # own_loop(model, prompt_ids, settings, attention_mask, generator) -> GenerationResult
    own_loop: ClassVar[Callable | None] = None

    def __init__(self, settings: SamplerSettings) -> None:
        self.s = settings

    def begin_block(self, x: torch.Tensor, start: int, end: int) -> None:
        """Called once at each block start (before its first forward)."""

    def forward(self, fwd, x: torch.Tensor, start: int, end: int, step: int) -> tuple[torch.Tensor, int]:
        """Logits and their column offset; ``fwd`` is the loop's forward (counts NFE)."""
        return fwd(x, start, end, step)

    def select(self, inp: StepInput) -> StepOutput:
        raise NotImplementedError

    def finished(self, x: torch.Tensor, start: int, end: int, step: int) -> bool:
        """The block is done (default: no mask left in it)."""
        return not bool((x[:, start:end] == self.s.mask_id).any())

    def max_steps(self, start: int, end: int) -> int | None:
        """Steps after which a block that still has masks is an error (None: :meth:`finished` bounds it)."""
        return 64 * (end - start)


DECODER_CLASSES: dict[str, type[Decoder]] = {}


def register(name: str) -> Callable[[type[Decoder]], type[Decoder]]:
    def wrap(cls: type[Decoder]) -> type[Decoder]:
        cls.name = name
        DECODER_CLASSES[name] = cls
        return cls
    return wrap


def build(settings: SamplerSettings) -> Decoder:
    return DECODER_CLASSES[settings.decoder](settings)


# ------------------------------------------------------------------------------------------------- llada
@register("llada")
class LLaDADecoder(Decoder):
    """LLaDA's fixed schedule (uniform counts per step, top-k by confidence) or Fast-dLLM's threshold / factor
    rule when one is set (rules.py)."""

    ranks_stale_prefix = True

    def begin_block(self, x: torch.Tensor, start: int, end: int) -> None:
        s = self.s
        self.quota = rules.transfer_counts(end - start, s.steps_per_block) if s.is_fixed_schedule else None

    def select(self, inp: StepInput) -> StepOutput:
        s = self.s
        if self.quota is not None:
            chosen = rules.select_fixed(inp.confidence, self.quota[inp.step], inp.window_start, inp.x.shape[1])
        elif s.threshold is not None:
            chosen = rules.select_threshold(inp.confidence, inp.masked, s.threshold)
        else:
            chosen = rules.select_factor(inp.confidence, inp.masked, s.factor)
        return StepOutput(chosen)

    def finished(self, x: torch.Tensor, start: int, end: int, step: int) -> bool:
        # LLaDA runs exactly steps/num_blocks forwards per block; Fast-dLLM's rules stop once it is full.
        if self.quota is not None:
            return step == len(self.quota)
        return super().finished(x, start, end, step)

    def max_steps(self, start: int, end: int) -> int | None:
        return None if self.quota is not None else super().max_steps(start, end)


# ------------------------------------------------------------------------------------------------ EB-Sampler
def entropy(logits: torch.Tensor) -> torch.Tensor:
    """H(p) per position from logits [..., V]; 0 log 0 = 0 also for -inf logits (forbidden tokens)."""
    logp = torch.log_softmax(logits, dim=-1)
    return -(logp.exp() * logp.clamp(min=torch.finfo(logp.dtype).min)).sum(dim=-1)


def commit_prefix(order: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """Bool [B, W]: the first ``count[b]`` positions of each row's ``order`` (a permutation of 0..W-1)."""
    rank = torch.arange(order.shape[1], device=order.device)
    return torch.zeros(order.shape, dtype=torch.bool, device=order.device).scatter(1, order, rank < count[:, None])


@register("eb_sampler")
class EBSamplerDecoder(Decoder):
    """EB-Sampler as d2Cache's ``confidence_unmasking`` (gamma branch): rank the masked positions by confidence
    (the remasking rule's score), commit the longest prefix whose entropies before each position sum to at most
    ``gamma`` (cumsum minus the position's own entropy), at least one position.

    Entropies come from the softmax of the logits taken in float32. d2Cache subtracts a running maximum taken
    over the batch dimension, which equals the position's own entropy at batch size 1 (how its evaluations run);
    illada applies that batch-size-1 rule to every row, so a batch gives each row its unbatched tokens.
    """

    def select(self, inp: StepInput) -> StepOutput:
        probs = torch.softmax(inp.logits, dim=-1).float()
        h = entropy(probs.log())
        order = inp.confidence.argsort(dim=-1, descending=True)
        h_sorted = h.gather(1, order)
        n = inp.masked.sum(dim=-1)
        within = (h_sorted.cumsum(dim=-1) - h_sorted <= self.s.gamma).sum(dim=-1)
        count = torch.minimum(within.clamp(min=1), n)
        return StepOutput(commit_prefix(order, count))


@register("eb_sampler_sglang")
class EBSamplerSGLangDecoder(Decoder):
    """EB-Sampler as SGLang's ``EBSampling``: the mask token's logit is suppressed, masked positions are ranked
    by entropy (lowest first), the lowest is always revealed and each further one while the entropies ranked
    before it sum to at most ``gamma``; tokens are the argmax of the suppressed logits (greedy only).

    With entropy as the ranking, the entropies before a position are the prefix's sum minus its maximum: this
    is the rule of the EB-Sampler paper (arXiv 2505.24857) with entropy as the error proxy.
    """

    def select(self, inp: StepInput) -> StepOutput:
        logits = inp.logits.clone()
        logits[..., self.s.mask_id] = torch.finfo(logits.dtype).min
        x0 = logits.argmax(dim=-1)
        h = torch.where(inp.masked, entropy(logits), torch.full_like(logits[..., 0], math.inf))
        h_sorted, order = h.sort(dim=-1)
        before = h_sorted.cumsum(dim=-1) - h_sorted
        rank = torch.arange(h.shape[1], device=h.device)
        n = inp.masked.sum(dim=-1, keepdim=True)
        reveal = ((before <= self.s.gamma) | (rank == 0)) & (rank < n)
        commit = torch.zeros_like(inp.masked).scatter(1, order, reveal)
        return StepOutput(commit, tokens=x0)


# ------------------------------------------------------------------------------------------------ hierarchy
@register("hierarchy")
class HierarchyDecoder(Decoder):
    """dInfer's ``HierarchyDecoder``: in every run of consecutive masked positions, the most confident one
    (if its confidence exceeds ``low_threshold``), plus every position above ``threshold`` (None: none), plus the
    block's most confident position. Spreading the commits over separate runs keeps neighbours from being decided in
    the same step."""

    def select(self, inp: StepInput) -> StepOutput:
        s = self.s
        masked, conf = inp.masked, inp.confidence
        before = torch.nn.functional.pad(masked[:, :-1], (1, 0), value=False)
        run = (masked & ~before).long().cumsum(dim=-1) - 1
        run = torch.where(masked, run, torch.zeros_like(run))
        run_max = torch.full_like(conf, NEG_INF).scatter_reduce(1, run, conf, reduce="amax", include_self=True)
        chosen = conf == run_max.gather(1, run)
        chosen &= conf > s.low_threshold
        if s.threshold is not None:
            chosen |= conf > s.threshold
        chosen.scatter_(1, conf.argmax(dim=-1, keepdim=True), True)
        return StepOutput(chosen & masked)


# ----------------------------------------------------------------------------------- confidence calibrations
@functools.lru_cache(maxsize=16)
def _certainty_kernel(length: int, sigma: float, device: str) -> torch.Tensor:
    """Gaussian weights for offsets -r..r, divided by the kernel's mass over offsets -3L..3L-1 (the constant
    d2Cache normalises by). r = 12 sigma (the weights beyond are below 1e-31) or 2L - 1 (the farthest padded
    position any canvas position reaches)."""
    reach = min(2 * length - 1, math.ceil(12 * sigma))
    offsets = torch.arange(-reach, reach + 1, dtype=torch.float64)
    mass = torch.exp(-torch.arange(-3 * length, 3 * length, dtype=torch.float64) ** 2 / (2 * sigma ** 2)).sum()
    return (torch.exp(-offsets ** 2 / (2 * sigma ** 2)) / mass).view(1, 1, -1).to(device)


def certainty_density(decoded: torch.Tensor, sigma: float) -> torch.Tensor:
    """d2Cache's certainty prior: a Gaussian-smoothed density of decoded positions [B, L] -> [B, L].

    The canvas is padded with L decoded positions on the left (the prompt) and L on the right that count as
    decoded only when the canvas's last position is; beyond those, nothing. A banded convolution (O(L sigma))
    instead of d2Cache's FFT over 6L: equal to 1e-6.
    """
    B, L = decoded.shape
    right = decoded[:, -1:].expand(B, L)
    padded = torch.cat([torch.ones_like(decoded), decoded, right], dim=1).to(torch.float64)[:, None]
    kernel = _certainty_kernel(L, float(sigma), str(decoded.device))
    smoothed = torch.nn.functional.conv1d(padded, kernel, padding=kernel.shape[-1] // 2)
    return smoothed[:, 0, L:2 * L].float()


def pc_sampler_scores(confidence: torch.Tensor, x0: torch.Tensor, frequencies: torch.Tensor, clip_alpha: float,
                      pc_lambda: float, positions: torch.Tensor) -> torch.Tensor:
    """PC-Sampler: ``exp(-pc_lambda * j) * min(-p(x0) * log(f(x0) + 1e-9), clip_alpha)``; j = position in block.

    Tokens frequent in ordinary text (f large) lose confidence, so content is decoded before filler.
    """
    freq = frequencies.to(device=confidence.device, dtype=confidence.dtype)[x0]  # a no-op once the caller cached it
    calibrated = (-confidence * torch.log(freq + 1e-9)).clamp(max=clip_alpha)
    if pc_lambda:
        calibrated = torch.exp(-pc_lambda * positions.to(torch.float32)).to(confidence.dtype) * calibrated
    return calibrated


class Calibration:
    """The confidence calibrations a settings object asks for (none, debias, sigma, or both, in d2Cache's
    order: debias inside the proposal, then the certainty prior)."""

    def __init__(self, settings: SamplerSettings, frequencies: torch.Tensor | None) -> None:
        self.s, self.frequencies = settings, frequencies

    @property
    def active(self) -> bool:
        return self.s.debias or self.s.sigma is not None

    def __call__(self, confidence: torch.Tensor, x0: torch.Tensor, x: torch.Tensor, first: int,
                 window_start: int, start: int, end: int, vocab_size: int) -> torch.Tensor:
        s = self.s
        if s.debias and self.frequencies is None:  # a model without a config: its vocabulary is known only now
            from illada.sampling.token_frequencies import load_frequencies  # lazily: it is also a CLI module

            self.frequencies = load_frequencies(s.token_frequencies, vocab_size)
        if s.debias:
            if self.frequencies.device != confidence.device or self.frequencies.dtype != confidence.dtype:
                # once per generate(): the table stays where the scores are (no host copy per step)
                self.frequencies = self.frequencies.to(device=confidence.device, dtype=confidence.dtype)
            positions = torch.arange(window_start - start, end - start, device=confidence.device)
            confidence = pc_sampler_scores(confidence, x0, self.frequencies, s.clip_alpha, s.pc_lambda, positions)
        if s.sigma is not None:
            density = certainty_density(x[:, first:] != s.mask_id, s.sigma)
            confidence = confidence * density[:, window_start - first:end - first].to(confidence.dtype)
        return confidence


# the decoders of their own modules register themselves on import (KLASS, credit decoding, WINO, SlowFast)
from illada.sampling import credit, klass, slow_fast, wino  # noqa: E402,F401
from illada.sampling import dream  # noqa: E402,F401  (Dream's sampler: own_loop, illada/sampling/dream.py)
