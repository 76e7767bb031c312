"""SlowFast sampling (Wei et al., arXiv 2506.10848), as the authors' ``generate_slow_fast_sampling``
(LiangrunFlora/Slow-Fast-Sampling, sampling_utils/generate_slow_fast_sampling.py).

A block is decoded in sub-cycles. The *slow* phase runs ``k_exploration_steps`` forwards that commit cautiously
(all masked positions with p(x0) >= ``high_confidence_threshold`` when more than one, else the single most
confident) from the end of the previous cycle on, while estimating how far the model is already confident: the
farthest position with p(x0) >= ``cycle_len_confidence_threshold``. Once ``cycle_length_stability_window``
estimates agree (population std < ``cycle_length_stability_std_dev_threshold``) that end is fixed. The *fast*
phase then fills the span up to it with the same rule, each forward after its first one seeing the canvas only
up to the span's end (the reference truncates the sequence; a key mask does the same per row).

Every row runs its own state machine (phase, step, estimates), vectorised over the batch.
"""

from __future__ import annotations

import torch

from illada.sampling import rules
from illada.sampling.decoders import Decoder, StepInput, StepOutput, register

_DONE, _SLOW, _FAST = 0, 1, 2


@register("slow_fast")
class SlowFastDecoder(Decoder):
    """State per row: phase, slow step, estimate history, cycle bounds (block-relative), forwards in the fast
    phase, sub-cycles started in this block."""

    def begin_block(self, x, start, end) -> None:
        s, W = self.s, end - start
        B, dev = x.shape[0], x.device
        has_mask = (x[:, start:end] == s.mask_id).any(dim=-1)
        self.phase = torch.where(has_mask, _SLOW, _DONE).to(device=dev, dtype=torch.long)
        self.k = torch.zeros(B, dtype=torch.long, device=dev)
        self.history = torch.zeros(B, s.cycle_length_stability_window, dtype=torch.float64, device=dev)
        self.n_history = torch.zeros(B, dtype=torch.long, device=dev)
        self.determined = torch.zeros(B, dtype=torch.bool, device=dev)
        self.prev = torch.zeros(B, dtype=torch.long, device=dev)
        self.cycle = torch.full((B,), W, dtype=torch.long, device=dev)
        self.fast_calls = torch.zeros(B, dtype=torch.long, device=dev)
        self.cycles = has_mask.long()

    def forward(self, fwd, x, start, end, step):
        B, T = x.shape
        keys = torch.ones(B, T, dtype=torch.bool, device=x.device)
        if fwd.attention_mask is not None:
            keys = fwd.attention_mask.to(device=x.device, dtype=torch.bool)
        # the fast phase's later forwards see the canvas up to the cycle end only
        cut = torch.where((self.phase == _FAST) & (self.fast_calls > 0), start + self.cycle, T)
        keys = keys & (torch.arange(T, device=x.device) < cut[:, None])
        fwd.calls += 1
        # As the reference, the sequence is cut after the farthest row's cycle end (the columns beyond get zero
        # logits: the fast phase reads none of them); no mask at all when every kept key is visible (the
        # cheaper attention kernel).
        width = int(cut.max())
        keys = keys[:, :width]
        logits = fwd.model(x[:, :width], None if bool(keys.all()) else keys.long())
        if width < T:
            logits = torch.cat([logits, logits.new_zeros(B, T - width, logits.shape[-1])], dim=1)
        return logits, 0

    def select(self, inp: StepInput) -> StepOutput:
        s, masked = self.s, inp.masked
        W = masked.shape[1]
        rel = torch.arange(W, device=masked.device)
        x0 = inp.logits.exp().argmax(dim=-1)  # the reference's argmax of exp(logits), overflow ties included
        if torch.equal(x0, inp.x0):  # the loop's confidence is then this p(x0) (same softmax, same dtype)
            conf = inp.confidence
        else:
            p = torch.softmax(inp.logits, dim=-1).gather(-1, x0[..., None])[..., 0]
            conf = torch.where(masked, p, torch.full_like(p, rules.NEG_INF))
        slow, fast = self.phase == _SLOW, self.phase == _FAST

        # slow phase: estimate the cycle end until determined
        estimating = slow & ~self.determined
        hits = (conf >= s.cycle_len_confidence_threshold) & (rel >= self.prev[:, None])
        farthest = torch.where(hits, rel, -1).amax(dim=-1)
        grow = torch.where(farthest >= 0, farthest - self.prev + 1, 1)
        grow = torch.where(self.prev < W, grow, 0)
        estimate = (self.prev + grow).clamp(1, W)
        shifted = torch.cat([self.history[:, 1:], estimate[:, None].to(torch.float64)], dim=1)
        self.history = torch.where(estimating[:, None], shifted, self.history)
        self.n_history = torch.where(estimating, (self.n_history + 1).clamp(max=self.history.shape[1]),
                                     self.n_history)
        full = estimating & (self.n_history >= self.history.shape[1])
        stable = full & (self.history.std(dim=-1, unbiased=False) < s.cycle_length_stability_std_dev_threshold)
        mean_len = self._mean_length(W)
        self.cycle = torch.where(stable, estimate, torch.where(full, mean_len, self.cycle))
        self.determined |= stable | (full & (self.k == s.k_exploration_steps - 1))

        # commits: the slow phase from the previous cycle end to the block end, the fast phase within the cycle
        region = torch.where(slow[:, None], rel >= self.prev[:, None],
                             fast[:, None] & (rel >= self.prev[:, None]) & (rel < self.cycle[:, None]))
        commit = _fill(conf, masked & region, s.high_confidence_threshold)
        self._advance(masked & ~commit, W)
        return StepOutput(commit=commit, tokens=x0)

    def _mean_length(self, W: int) -> torch.Tensor:
        """int(mean) of each row's stored estimates (the reference's fallback), clamped to [1, W]."""
        n = self.n_history.clamp(min=1)
        valid = torch.arange(self.history.shape[1], device=n.device) >= self.history.shape[1] - n[:, None]
        mean = torch.where(valid, self.history, 0.0).sum(dim=-1) / n
        return mean.long().clamp(1, W)

    def _advance(self, remaining: torch.Tensor, W: int) -> None:
        """Phase transitions after a step (no forward in between), as the reference's loops run them."""
        s, rel = self.s, torch.arange(W, device=remaining.device)
        slow = self.phase == _SLOW
        self.k = torch.where(slow, self.k + 1, self.k)
        self.fast_calls = torch.where(self.phase == _FAST, self.fast_calls + 1, self.fast_calls)
        ends_slow = slow & (self.k == s.k_exploration_steps)
        fallback = torch.where(self.n_history > 0, self._mean_length(W), W // 2)
        self.cycle = torch.where(ends_slow & ~self.determined, fallback, self.cycle)
        self.phase = torch.where(ends_slow, _FAST, self.phase)
        self.fast_calls = torch.where(ends_slow, 0, self.fast_calls)
        # a fast phase ends once its span has no mask; the block then starts another sub-cycle or is done
        span = (rel >= self.prev[:, None]) & (rel < self.cycle[:, None])
        ends_fast = (self.phase == _FAST) & ~(remaining & span).any(dim=-1)
        self.prev = torch.where(ends_fast, self.cycle, self.prev)
        again = ends_fast & remaining.any(dim=-1) & (self.cycles < s.max_sub_cycles_per_block)
        self.phase = torch.where(ends_fast, torch.where(again, _SLOW, _DONE), self.phase)
        self.k = torch.where(again, 0, self.k)
        self.n_history = torch.where(again, 0, self.n_history)
        self.determined &= ~again
        self.cycles = self.cycles + again.long()

    def finished(self, x, start, end, step) -> bool:
        # the slow phase runs all its forwards even once the block is full, as the reference
        return not bool((self.phase != _DONE).any())

    def max_steps(self, start: int, end: int) -> int | None:
        return None  # bounded by max_sub_cycles_per_block


def _fill(conf: torch.Tensor, candidates: torch.Tensor, high: float) -> torch.Tensor:
    """All candidates with p(x0) >= high when more than one, else the most confident candidate."""
    sure = (conf >= high) & candidates
    ranked = torch.where(candidates, conf, torch.full_like(conf, rules.NEG_INF))
    top1 = torch.zeros_like(candidates).scatter(1, ranked.argmax(dim=-1, keepdim=True), True)
    top1 &= candidates.any(dim=-1, keepdim=True)
    return torch.where(sure.sum(dim=-1, keepdim=True) > 1, sure, top1)
