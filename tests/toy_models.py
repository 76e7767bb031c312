"""Deterministic toy logits functions ``f(input_ids, attention_mask) -> logits`` for the sampler/scorer tests."""

from __future__ import annotations

import torch

from illada.config import ModelConfig
from illada.model import Transformer
from illada.sampling import SamplerSettings, generate


def positions(x: torch.Tensor, attention_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    m = torch.ones_like(x, dtype=torch.float32) if attention_mask is None else attention_mask.float()
    return m, (m.cumsum(1) - 1).clamp(min=0).long()


class ToyLogits:
    """Bidirectional: position t sees its token, its position and the padding-masked mean embedding of the
    whole row, so the order of unmasking matters. ``quantum`` rounds the logits to make exact ties common;
    ``bias`` adds a per-token offset (e.g. to make EOS attractive)."""

    def __init__(self, vocab: int = 24, seed: int = 0, scale: float = 6.0, dim: int = 8,
                 quantum: float | None = None, bias: dict[int, float] | None = None) -> None:
        g = torch.Generator().manual_seed(seed)
        self.vocab = vocab
        self.tok = torch.randn(vocab, dim, generator=g)
        self.pos = torch.randn(512, dim, generator=g)
        self.out = torch.randn(dim, vocab, generator=g) * scale / dim ** 0.5
        self.bias = torch.zeros(vocab)
        for token, value in (bias or {}).items():
            self.bias[token] = value
        self.quantum = quantum
        self.calls: list[tuple[int, ...]] = []

    def __call__(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        self.calls.append(tuple(x.shape))
        m, pos = positions(x, attention_mask)
        e = self.tok[x]
        ctx = (e * m[..., None]).sum(1, keepdim=True) / m.sum(1)[:, None, None]
        logits = torch.tanh(e + ctx + self.pos[pos]) @ self.out + self.bias
        if self.quantum:
            logits = torch.round(logits / self.quantum) * self.quantum
        return logits


class CausalToy(ToyLogits):
    """Position t sees only tokens <= t (cumulative mean), and EOS becomes near certain from position
    ``stop_at[first real token]`` on: blocks after the answer can never change it."""

    def __init__(self, vocab: int = 24, eos_id: int = 1, stop_at: dict[int, int] | None = None, **kw) -> None:
        super().__init__(vocab, **kw)
        self.eos_id = eos_id
        self.stop_at = torch.full((vocab,), 10 ** 6)
        for token, pos in (stop_at or {}).items():
            self.stop_at[token] = pos

    def __call__(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        self.calls.append(tuple(x.shape))
        m, pos = positions(x, attention_mask)
        e = self.tok[x] * m[..., None]
        ctx = e.cumsum(1) / m.cumsum(1).clamp(min=1)[..., None]
        logits = torch.tanh(self.tok[x] + ctx + self.pos[pos]) @ self.out
        first = x.gather(1, m.argmax(1, keepdim=True))  # first real token of each row
        late = pos >= self.stop_at[first]
        logits[..., self.eos_id] += late.float() * 50.0
        return logits


class Factorised(ToyLogits):
    """Logits at a position depend only on that position and the row's context token sum: the continuation
    tokens are conditionally independent, so log p(y | x) = sum_j log p_j(y_j) exactly."""

    def __init__(self, vocab: int = 24, mask_id: int = 23, **kw) -> None:
        super().__init__(vocab, **kw)
        self.mask_id = mask_id

    def __call__(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        self.calls.append(tuple(x.shape))
        m, pos = positions(x, attention_mask)
        first = x.gather(1, m.argmax(1, keepdim=True))  # first real token: part of the context, never masked
        return torch.tanh(self.pos[pos]) @ self.out + (self.tok[first] @ self.out) * 0.3


def tiny_transformer(n_layers: int = 2, dtype: torch.dtype = torch.float32, vocab: int = 48, seed: int = 0,
                     max_seq_len: int = 128) -> Transformer:
    cfg = ModelConfig(vocab_size=vocab, dim=32, n_layers=n_layers, n_heads=4, n_kv_heads=2, ffn_dim=64,
                      mask_token_id=vocab - 1, eos_token_id=1, max_seq_len=max_seq_len)
    # a larger init than the default keeps the output distributions peaked enough to be interesting
    return Transformer.random(cfg, dtype=dtype, seed=seed, std=0.3)


class Recorder:
    """Wraps a model and records the input shapes (and cache offsets) of every forward."""

    def __init__(self, model) -> None:
        self.model = model
        self.calls: list[tuple[tuple[int, ...], int | None]] = []
        self.config = getattr(model, "config", None)
        if hasattr(model, "new_kv_cache"):
            self.new_kv_cache = model.new_kv_cache

    def __call__(self, x, attention_mask=None, **kw):
        self.calls.append((tuple(x.shape), kw.get("cache_start") if "kv_cache" in kw else None))
        return self.model(x, attention_mask, **kw)


def one_by_one(model, prompt, mask, s: SamplerSettings) -> tuple[torch.Tensor, list[int]]:
    """Each row alone (its padding stripped): tokens laid back into the padded layout, and NFE per row."""
    rows, nfe = [], []
    for row in range(prompt.shape[0]):
        keep = mask[row].bool()
        out = generate(model, prompt[row:row + 1, keep], s)
        rows.append(torch.cat([prompt[row, ~keep], out.tokens[0]]))
        nfe.append(out.nfe)
    return torch.stack(rows), nfe
