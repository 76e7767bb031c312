"""SlowFast sampling (Wei et al., arXiv 2506.10848), as the authors' ``generate_slow_fast_sampling``
(LiangrunFlora/Slow-Fast-Sampling, sampling_utils/generate_slow_fast_sampling.py).

A block is decoded in sub-cycles. The *slow* phase runs ``k_exploration_steps`` forwards that commit cautiously
(all masked positions with p(x0) >= ``high_confidence_threshold`` when more than one, else the single most
confident) from the end of the previous cycle on, while estimating how far the model is already confident: the
farthest position with p(x0) >= ``cycle_len_confidence_threshold``. Once ``cycle_length_stability_window``
estimates agree (population std < ``cycle_length_stability_std_dev_threshold``) that end is fixed. The *fast*
phase then fills the span up to it with the same rule, each forward after its first one seeing the canvas only
up to the span's end (the reference truncates the sequence; a key mask does the same per row).

Every row runs its own state machine (phase, step, estimates) in plain Python numbers, as the reference's loops
do: a step's bookkeeping is a few dozen scalar operations on one block, which a vectorised version spreads over
as many small tensor kernels (slower than the reference at batch size 1). Only the vocabulary-wide work (x0,
p(x0)) and the forward run on tensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from illada.sampling import rules
from illada.sampling.decoders import Decoder, StepInput, StepOutput, register

_DONE, _SLOW, _FAST = 0, 1, 2


@dataclass
class _Row:
    """One row's sub-cycle state; positions are block-relative."""

    phase: int
    width: int  # block width W
    cycles: int  # sub-cycles started in this block
    k: int = 0  # slow-phase forwards done in this sub-cycle
    history: list[int] = field(default_factory=list)  # the latest cycle-end estimates, at most the window
    determined: bool = False
    prev: int = 0  # end of the previous sub-cycle
    cycle: int = 0  # end of this sub-cycle
    fast_calls: int = 0  # fast-phase forwards done in this sub-cycle

    def mean_length(self) -> int:
        """int(mean) of the stored estimates (the reference's fallback), clamped to [1, W]."""
        return min(max(int(sum(self.history) / len(self.history)), 1), self.width)


@register("slow_fast")
class SlowFastDecoder(Decoder):
    """A :class:`_Row` per row of the batch."""

    def begin_block(self, x, start, end) -> None:
        W = end - start
        has_mask = (x[:, start:end] == self.s.mask_id).any(dim=-1).tolist()
        self.rows = [_Row(phase=_SLOW if m else _DONE, width=W, cycles=int(m), cycle=W) for m in has_mask]

    def forward(self, fwd, x, start, end, step):
        B, T = x.shape
        # the fast phase's later forwards see the canvas up to the cycle end only
        cuts = [start + r.cycle if r.phase == _FAST and r.fast_calls > 0 else T for r in self.rows]
        fwd.calls += 1
        # As the reference, the sequence is cut after the farthest row's cycle end (the columns beyond get zero
        # logits: the fast phase reads none of them); no mask at all when every kept key is visible (the
        # cheaper attention kernel).
        width = max(cuts)
        keys = None
        if fwd.attention_mask is not None or min(cuts) < width:
            cut = torch.tensor(cuts, device=x.device)
            keys = torch.arange(width, device=x.device) < cut[:, None]
            if fwd.attention_mask is not None:
                keys &= fwd.attention_mask[:, :width].to(device=x.device, dtype=torch.bool)
            keys = None if bool(keys.all()) else keys.long()
        logits = fwd.model(x[:, :width], keys)
        if width < T:
            logits = torch.cat([logits, logits.new_zeros(B, T - width, logits.shape[-1])], dim=1)
        return logits, 0

    def select(self, inp: StepInput) -> StepOutput:
        masked = inp.masked
        x0 = _exp_argmax(inp.logits, inp.x0)  # the reference's argmax of exp(logits), overflow ties included
        if x0 is inp.x0 or torch.equal(x0, inp.x0):  # the loop's confidence is then this p(x0) (same softmax)
            conf = inp.confidence
        else:
            p = torch.softmax(inp.logits, dim=-1).gather(-1, x0[..., None])[..., 0]
            conf = torch.where(masked, p, torch.full_like(p, rules.NEG_INF))
        # thresholds compared in the confidence's dtype, as a tensor comparison with a Python float does
        len_thr, high = (torch.tensor([self.s.cycle_len_confidence_threshold, self.s.high_confidence_threshold],
                                      dtype=conf.dtype).tolist())
        commit = [self._step(row, c, m, len_thr, high)
                  for row, c, m in zip(self.rows, conf.tolist(), masked.tolist())]
        return StepOutput(commit=torch.tensor(commit, dtype=torch.bool, device=masked.device), tokens=x0)

    def _step(self, row: _Row, conf: list[float], masked: list[bool], len_thr: float, high: float) -> list[bool]:
        """One step of a row: the cycle-end estimate, the commits, then the phase transitions."""
        s, W = self.s, row.width
        if row.phase == _SLOW and not row.determined:
            # the farthest position from the previous cycle end on that the model is already confident about
            farthest = next((i for i in range(W - 1, row.prev - 1, -1) if conf[i] >= len_thr), -1)
            grow = (farthest - row.prev + 1 if farthest >= 0 else 1) if row.prev < W else 0
            estimate = min(max(row.prev + grow, 1), W)
            window = s.cycle_length_stability_window
            row.history = (row.history + [estimate])[-window:]
            if len(row.history) >= window:
                if _population_std(row.history) < s.cycle_length_stability_std_dev_threshold:
                    row.cycle, row.determined = estimate, True
                else:
                    row.cycle = row.mean_length()
                    row.determined = row.k == s.k_exploration_steps - 1
        # commits: the slow phase from the previous cycle end to the block end, the fast phase within the cycle
        hi = W if row.phase == _SLOW else row.cycle if row.phase == _FAST else row.prev
        candidates = [i for i in range(row.prev, min(hi, W)) if masked[i]]
        commit = [False] * W
        sure = [i for i in candidates if conf[i] >= high]
        if len(sure) > 1:
            for i in sure:
                commit[i] = True
        elif candidates:  # the most confident candidate, the first of equals
            commit[max(candidates, key=lambda i: (conf[i], -i))] = True
        self._advance(row, [m and not c for m, c in zip(masked, commit)])
        return commit

    def _advance(self, row: _Row, remaining: list[bool]) -> None:
        """Phase transitions after a step (no forward in between), as the reference's loops run them."""
        s = self.s
        if row.phase == _SLOW:
            row.k += 1
            if row.k == s.k_exploration_steps:
                if not row.determined:
                    row.cycle = row.mean_length() if row.history else row.width // 2
                row.phase, row.fast_calls = _FAST, 0
        elif row.phase == _FAST:
            row.fast_calls += 1
        # a fast phase ends once its span has no mask; the block then starts another sub-cycle or is done
        if row.phase == _FAST and not any(remaining[row.prev:max(row.cycle, row.prev)]):
            row.prev = row.cycle
            if any(remaining) and row.cycles < s.max_sub_cycles_per_block:
                row.phase, row.k, row.history, row.determined = _SLOW, 0, [], False
                row.cycles += 1
            else:
                row.phase = _DONE

    def finished(self, x, start, end, step) -> bool:
        # the slow phase runs all its forwards even once the block is full, as the reference
        return all(r.phase == _DONE for r in self.rows)

    def max_steps(self, start: int, end: int) -> int | None:
        return None  # bounded by max_sub_cycles_per_block


def _population_std(values: list[int]) -> float:
    """numpy's std (two passes, ddof 0), as the reference computes it."""
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))


def _exp_argmax(logits: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """argmax(exp(logits)), taken as the reference takes it; ``x0`` (argmax of the logits) itself when provably
    equal, which spares a vocabulary-wide exp and argmax per step.

    exp is monotone, so its first maximum is x0 unless exp rounds a smaller logit onto exp(max): the max
    overflows to inf or underflows, or another logit lies within a few of exp's ulps of it. A margin of 64
    epsilons (relative) is far wider than that rounding: no logit inside it but the max, no overflow, no
    underflow, and x0 is the answer; otherwise the exp is taken."""
    info = torch.finfo(logits.dtype)
    top = logits.gather(-1, x0[..., None])[..., 0]
    # the largest logit but x0's (amax is several times cheaper than a comparison over the vocabulary)
    runner_up = logits.scatter(-1, x0[..., None], rules.NEG_INF).amax(dim=-1)
    clear = runner_up < top - 64 * info.eps * (1 + top.abs())
    if bool((clear & (top < math.log(info.max) - 1) & (top > math.log(info.tiny) + 1)).all()):
        return x0
    return logits.exp().argmax(dim=-1)
