"""KLASS, KL-Adaptive Stability Sampling (Kim et al., NeurIPS 2025, arXiv 2511.05664), as the authors' code
(shkim0116/KLASS ``stable_confident_decode``, ``alg="klass"``, ``unmask_strategy="all"``).

A masked position is *ready* once its predictive distribution has settled: the KL divergence between the
distributions of consecutive forwards stayed below ``kl_threshold`` for the last ``kl_history_length`` forwards
of the block, and its confidence p(x0) exceeds ``threshold``. Every ready position is committed at once; a step
with none falls back to LLaDA's schedule (``steps == gen_length``: the single most confident masked position).
"""

from __future__ import annotations

import torch

from illada.sampling import rules
from illada.sampling.decoders import Decoder, StepInput, StepOutput, register

_EPS = 1e-12  # inside both logs of the KL, as the reference


@register("klass")
class KlassDecoder(Decoder):
    """State: each row's previous distribution over the block and its last H KL values.

    A row whose block is already full takes no part in the reference's forwards (it is run one row at a time,
    or, in d2Cache, only active rows are fed), so its state is frozen while the rest of the batch finishes.
    """

    def __init__(self, settings) -> None:
        super().__init__(settings)
        self._next: torch.Tensor | None = None  # [B, W, V] logits of the next block, each row's latest forward
        self._p_prev: torch.Tensor | None = None  # [B, W, V] float64
        self._history: torch.Tensor | None = None  # [B, W, H] float64
        self._quota: list[int] = []  # the fallback's LLaDA schedule for the block (1 per step: steps == gen_length)

    def forward(self, fwd, x, start, end, step):
        logits, offset = fwd(x, start, end, step)
        # The reference keeps one distribution per canvas position, so the next block's first KL compares with
        # the last forward that saw those (then masked) positions; keep their logits as of each row's last
        # active forward (a forward that does not cover them, e.g. dual cache, leaves the older ones).
        nxt_end = end + (end - start)
        if start >= offset and nxt_end - offset <= logits.shape[1]:
            view = logits[:, end - offset:nxt_end - offset]
            if self._next is None or self._next.shape != view.shape:
                self._next = view.clone()
            else:
                active = (x[:, start:end] == self.s.mask_id).any(dim=-1)
                self._next = torch.where(active[:, None, None], view, self._next)
        return logits, offset

    def begin_block(self, x, start, end) -> None:
        # zeros (no previous forward saw the block: first block, or a variable-length canvas grown by this
        # block) make the first KL huge, as the reference's zero-initialised buffer does
        nxt = self._next
        same = nxt is not None and nxt.shape[0] == x.shape[0] and nxt.shape[1] == end - start
        if same and self.s.logits_eos_inf:  # as the loop does to the block's logits
            nxt[..., self.s.eos_id] = float("-inf")
        self._p_prev = _probs(nxt) if same else None
        self._next, self._history = None, None
        self._quota = rules.transfer_counts(end - start, self.s.steps_per_block)

    def select(self, inp: StepInput) -> StepOutput:
        s = self.s
        active = inp.masked.any(dim=-1, keepdim=True)  # [B, 1]
        p = _probs(inp.logits)
        p_prev = self._p_prev if self._p_prev is not None else torch.zeros_like(p)
        kl = (p * (torch.log(p + _EPS) - torch.log(p_prev + _EPS))).sum(dim=-1)
        if self._history is None:
            self._history = kl.new_zeros(*kl.shape, s.kl_history_length)
        self._history = torch.where(active[..., None], torch.cat([self._history[..., 1:], kl[..., None]], -1),
                                    self._history)
        self._p_prev = torch.where(active[..., None], p, p_prev)
        confidence = p.gather(-1, inp.x0[..., None])[..., 0]
        confidence = torch.where(inp.masked, confidence, torch.full_like(confidence, rules.NEG_INF))
        # the reference trusts the history only once the block has produced H KL values of its own
        stable = (self._history < s.kl_threshold).all(dim=-1) & (inp.step >= s.kl_history_length - 1)
        ready = stable & (confidence > s.threshold) & inp.masked
        fallback = rules.select_fixed(confidence, self._quota[inp.step], inp.start, inp.x.shape[1]) & inp.masked
        return StepOutput(commit=torch.where(ready.any(dim=-1, keepdim=True), ready, fallback))

    def finished(self, x, start, end, step) -> bool:
        # at most steps/num_blocks forwards per block, leaving early once the block is full
        return step >= self.s.steps_per_block or not bool((x[:, start:end] == self.s.mask_id).any())

    def max_steps(self, start: int, end: int) -> int | None:
        return None  # finished() bounds the block


def _probs(logits: torch.Tensor) -> torch.Tensor:
    return torch.softmax(logits.to(torch.float64), dim=-1)
