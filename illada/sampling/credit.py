"""Credit decoding (dInfer ``CreditThresholdParallelDecoder``, inclusionAI/dInfer): threshold parallel decoding
on logits boosted by a per-block credit memory.

Every forward adds, at each masked position, ``p_top1 ** boost_gamma`` to the credit of its current top-1
token; the credit decays by ``decay_beta`` per forward, and the decoder ranks on
``logits + credit_alpha * log(1 + credit)``: a token that stays the favourite over several forwards gains
confidence and is committed earlier. Selection is dInfer's threshold rule: every masked position whose
confidence is >= ``threshold``, or, when none is, every one within 1e-5 of the most confident.
"""

from __future__ import annotations

import torch

from illada.sampling import rules
from illada.sampling.decoders import Decoder, StepInput, StepOutput, register


@register("credit")
class CreditDecoder(Decoder):
    """State: the credit matrix [B, W, V] of the current block (float32, as the reference)."""

    def __init__(self, settings) -> None:
        super().__init__(settings)
        self._credit: torch.Tensor | None = None

    def begin_block(self, x, start, end) -> None:
        self._credit = None  # the reference keys its credit by block: each block starts from zero

    def forward(self, fwd, x, start, end, step):
        # Only the block's logits: the loop then draws temperature noise over the block, the span dInfer draws
        # its Gumbel noise over, so a seeded run follows the reference's random stream.
        logits, offset = fwd(x, start, end, step)
        return logits[:, start - offset:end - offset], start

    def select(self, inp: StepInput) -> StepOutput:
        s = self.s
        logits = inp.logits
        if self._credit is None:
            self._credit = torch.zeros(logits.shape, dtype=torch.float32, device=logits.device)
        else:
            self._credit.mul_(s.decay_beta)
        top_p, top_i = torch.softmax(logits.to(torch.float32), dim=-1).max(dim=-1)
        boost = top_p.pow(s.boost_gamma) * inp.masked.to(torch.float32)
        self._credit.scatter_add_(2, top_i[..., None], boost[..., None])
        fused = logits + s.credit_alpha * torch.log(self._credit + 1)
        x0 = rules.sample_tokens(fused, s.temperature, inp.noise)  # dInfer noises the fused logits
        # dInfer takes this softmax in float32 (float64 with its use_float64)
        dtype = {"auto": torch.float32, "float64": torch.float64, "logits": fused.dtype}[s.confidence_precision]
        p = torch.softmax(fused.to(dtype), dim=-1).gather(-1, x0[..., None])[..., 0]
        # a proposal of the mask token itself is never committed (dInfer's rm_mask)
        eligible = inp.masked & (x0 != s.mask_id)
        confidence = torch.where(eligible, p, torch.full_like(p, rules.NEG_INF))
        cut = (confidence.max(dim=-1, keepdim=True).values - 1e-5).clamp(-1000.0, s.threshold)
        return StepOutput(commit=(confidence >= cut) & inp.masked, tokens=x0)
