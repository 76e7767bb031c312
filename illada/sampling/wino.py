"""WINO, wide-in narrow-out (Hong et al., arXiv 2507.18578), as the authors' ``decoding_wino``
(Feng-Hong/WINO-DLLM LLaDA/decoding.py).

Each forward also feeds a *shadow* copy of the current block: W mask tokens at the block's positions that no
other position attends to and that see everything but their own counterpart. The shadow thus re-predicts every
block position from the rest of the canvas (leave one out), which verifies tokens committed earlier.

* Wide in: commit every masked position with p(x0) > ``wide_in_threshold`` (at most
  min(max(int(0.7 masked), 5), 20), the most confident ones; the single best when none passes).
* Narrow out: when the step accepted more than one token, remask earlier tokens whose shadow probability is
  < ``narrow_out_threshold``; once as many as the previous step accepted qualify, only the (that count - 1)
  least certain.
"""

from __future__ import annotations

import torch

from illada.sampling import rules
from illada.sampling.decoders import Decoder, StepInput, StepOutput, register

_FIRST_LAST_ACCEPT = 30  # the reference's "accepted by the previous step" at each block start


@register("wino")
class WinoDecoder(Decoder):
    """State: the shadow block's logits of the latest forward and each row's count accepted by its last step."""

    def __init__(self, settings) -> None:
        super().__init__(settings)
        self._shadow: torch.Tensor | None = None  # [B, W, V]
        self._last_accept: torch.Tensor | None = None  # [B]

    def begin_block(self, x, start, end) -> None:
        self._last_accept = torch.full((x.shape[0],), _FIRST_LAST_ACCEPT, dtype=torch.long, device=x.device)

    def forward(self, fwd, x, start, end, step):
        B, T = x.shape
        W = end - start
        real = torch.ones(B, T, dtype=torch.bool, device=x.device)
        if fwd.attention_mask is not None:
            real = fwd.attention_mask.to(device=x.device, dtype=torch.bool)
        keys = torch.cat([real, torch.ones(B, W, dtype=torch.bool, device=x.device)], dim=1)
        allowed = keys[:, None, :].expand(B, T + W, T + W).clone()
        allowed[:, :T, T:] = False  # the shadow is invisible to the canvas
        allowed[:, T:, start:end] &= ~torch.eye(W, dtype=torch.bool, device=x.device)  # leave one out
        positions = (real.long().cumsum(dim=1) - 1).clamp(min=0)  # left padding: the unpadded row's positions
        positions = torch.cat([positions, positions[:, start:end]], dim=1)
        ext = torch.cat([x, x.new_full((B, W), self.s.mask_id)], dim=1)
        fwd.calls += 1
        logits = fwd.model(ext, allowed, position_ids=positions)
        self._shadow = logits[:, T:]
        if self.s.logits_eos_inf:  # the loop forbids EOS in the block's logits; the shadow scores alike
            self._shadow = self._shadow.clone()
            self._shadow[..., self.s.eos_id] = float("-inf")
        return logits, 0

    def select(self, inp: StepInput) -> StepOutput:
        s, masked = self.s, inp.masked
        block = inp.x[:, inp.start:inp.end]
        # masked positions score their proposal with the block's logits, decoded ones their token with the shadow's
        logits = torch.where(masked[..., None], inp.logits, self._shadow).to(torch.float64)
        scored = torch.where(masked, inp.x0, block)
        p = torch.softmax(logits, dim=-1).gather(-1, scored[..., None])[..., 0]
        conf = torch.where(masked, p, torch.full_like(p, rules.NEG_INF))
        back = torch.where(masked, torch.full_like(p, float("inf")), p)

        # wide in
        n_masked = masked.sum(dim=-1)
        max_accept = (n_masked * 0.7).long().clamp(min=5, max=20)  # the reference's int(masked * 0.7)
        above = conf > s.wide_in_threshold
        best = _lowest_first(-conf, max_accept)
        top1 = _lowest_first(-conf, torch.ones_like(n_masked)) & (n_masked > 0)[:, None]
        count = above.sum(dim=-1, keepdim=True)
        commit = torch.where(count > max_accept[:, None], best, torch.where(count == 0, top1, above))
        accepted = commit.sum(dim=-1)

        # narrow out, against the tokens committed before this step
        below = back < s.narrow_out_threshold
        last = self._last_accept
        capped = below.sum(dim=-1) >= last
        remask = torch.where(capped[:, None], _lowest_first(back, last - 1), below) & (accepted > 1)[:, None]
        self._last_accept = accepted
        return StepOutput(commit=commit, tokens=inp.x0, remask=remask)


def _lowest_first(score: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Bool [B, W]: each row's ``k[b]`` positions of lowest score (ties: lower index first)."""
    order = score.argsort(dim=-1, stable=True)
    rank = torch.arange(score.shape[1], device=score.device)
    return torch.zeros_like(score, dtype=torch.bool).scatter(1, order, rank < k[:, None])
