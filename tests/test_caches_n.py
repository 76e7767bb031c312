"""d2Cache (cache='d2cache') against a transcription of its reference (tests/reference_caches_n.py)."""

from __future__ import annotations

import pytest
import torch

from illada.sampling import SamplerSettings, generate
from tests.reference_caches_n import d2cache_generate
from tests.test_sampling import padded_prompts
from tests.toy_models import Recorder, tiny_transformer

MASK = 47


def prompts(batch: int, length: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded prompts (pad id 0): row r has 2r padding positions."""
    return padded_prompts(batch, length, seed, vocab=MASK + 1)


def settings(**kw) -> SamplerSettings:
    return SamplerSettings(mask_id=MASK, cache="d2cache", **kw)


GRID = [  # (gen_length, steps or None for threshold, block_length, d2Cache knobs)
    (16, 16, 8, {}),
    (16, 8, 8, {"current_k": 3}),
    (24, 12, 8, {"current_k": 4, "cache_sigma": 2.0}),
    (16, 16, 4, {"rollout_p": 0.5, "inflate_w": 3}),
    (24, 24, 12, {"rollout_p": 0.0, "current_k": 5, "inflate_w": 1}),
    (16, 4, 16, {"rollout_p": 0.9, "current_k": 2}),
    (16, 16, 16, {"current_k": 3}),  # the narrowed block moves the query search after a few steps
]


@pytest.mark.parametrize("gen_length,steps,block_length,knobs", GRID)
@pytest.mark.parametrize("rule", ["fixed", "threshold", "sigma", "eb_sampler"])
@pytest.mark.parametrize("seed", [0, 1])
def test_d2cache_matches_reference_tokens_and_nfe(gen_length, steps, block_length, knobs, rule, seed):
    model = tiny_transformer(n_layers=3, dtype=torch.float64, seed=seed)
    prompt = prompts(1, length=5, seed=seed)[0]
    threshold = 0.3 if rule == "threshold" else None
    decode_sigma = 3.0 if rule == "sigma" else None
    gamma = 3.0 if rule == "eb_sampler" else None  # several tokens per step on this model
    decoder = {"decoder": "eb_sampler", "gamma": gamma} if gamma is not None else {}
    ref_knobs = {"sigma" if k == "cache_sigma" else k: v for k, v in knobs.items()}
    ref, nfe = d2cache_generate(model, prompt.clone(), mask_id=MASK, gen_length=gen_length,
                                block_length=block_length, per_step=gen_length // steps, threshold=threshold,
                                gamma=gamma, decode_sigma=decode_sigma, **ref_knobs)
    ours = generate(model, prompt, settings(gen_length=gen_length, steps=steps, block_length=block_length,
                                            threshold=threshold, sigma=decode_sigma, **decoder, **knobs))
    assert torch.equal(ours.tokens, ref)
    assert ours.nfe == nfe


def test_d2cache_forwards_full_once_then_only_the_chosen_queries():
    model = Recorder(tiny_transformer(dtype=torch.float64))
    prompt = prompts(1, length=5)[0]
    out = generate(model, prompt, settings(gen_length=16, steps=16, block_length=8, current_k=2))
    widths = [shape[1] for shape, _ in model.calls]
    assert out.nfe == 16 and widths[0] == 21  # no refresh at the second block start
    assert max(widths[1:]) < 21


@pytest.mark.parametrize("extra", [{"steps": 16}, {"threshold": 0.3}, {"steps": 8, "sigma": 3.0}])
def test_d2cache_batched_equals_one_by_one(extra, monkeypatch):
    """Left padding and rows that finish a block at different steps (threshold) give each row its own tokens,
    and its own cache: the same keys and the same next queries as its unbatched run."""
    from illada.sampling import loop
    from illada.sampling.d2cache import D2Cache

    made: list[D2Cache] = []

    class Kept(D2Cache):
        def __init__(self, *args) -> None:
            super().__init__(*args)
            made.append(self)

    monkeypatch.setitem(loop.CACHE_CLASSES, "d2cache", Kept)
    model = tiny_transformer(n_layers=3, dtype=torch.float64, seed=1)
    ids, mask = prompts(3)
    s = settings(gen_length=16, block_length=8, current_k=3, rollout_p=0.3, inflate_w=2, **extra)
    batched = generate(model, ids, s, mask)
    if "threshold" in extra:  # rows do finish blocks at different steps
        assert (batched.tokens_per_step == 0).any()
    for row in range(3):
        real = mask[row].bool()
        pad = int((~real).sum())
        alone = generate(model, ids[row:row + 1, real], s)
        assert torch.equal(batched.tokens[row, 6:], alone.tokens[0, 6 - pad:]), row
        together, single = made[0], made[-1]
        assert torch.equal(together.queries[row, pad:], single.queries[0]), row
        for layer in range(3):
            torch.testing.assert_close(together.kv.k[layer][row, :, pad:], single.kv.k[layer][0], rtol=0, atol=1e-10)


def test_d2cache_knob_defaults_and_validation():
    s = settings()
    assert (s.rollout_p, s.current_k, s.cache_sigma, s.inflate_w) == (0.1, 32, 10.0, 0)
    assert not s.uses_float64_confidence  # d2Cache's loop takes the softmax in the logits' dtype
    bad = [
        ({"rollout_p": 1.5}, "SamplerSettings.rollout_p=1.5"),
        ({"current_k": 0}, "SamplerSettings.current_k=0"),
        ({"inflate_w": -1}, "SamplerSettings.inflate_w=-1"),
        ({"cache_sigma": 0.0}, "SamplerSettings.cache_sigma=0.0"),
        ({"decoder": "hierarchy"}, "SamplerSettings.decoder='hierarchy'"),
        ({"cfg_scale": 1.0}, "SamplerSettings.cfg_scale=1.0"),
        ({"remasking": "random"}, "SamplerSettings.remasking='random'"),
        ({"debias": True}, "SamplerSettings.debias=True"),
    ]
    for kw, message in bad:
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.")):
            settings(**kw)
    with pytest.raises(ValueError, match=r"SamplerSettings\.rollout_p=0\.2: only used by cache d2cache"):
        SamplerSettings(mask_id=MASK, rollout_p=0.2)


def test_nucleus_takes_every_allowed_position_at_top_p_one():
    from illada.sampling.d2cache import nucleus

    scores = torch.rand(4, 50, dtype=torch.float64) + 0.5
    allowed = torch.rand(4, 50) < 0.7
    assert torch.equal(nucleus(scores, 1.0, allowed), allowed)
    one = nucleus(scores, 0.0, allowed)  # at least the largest allowed score
    assert torch.equal(one.sum(dim=1), torch.ones(4, dtype=torch.long))
    assert torch.equal(torch.where(one, scores, 0).argmax(1), torch.where(allowed, scores, 0).argmax(1))


def test_d2cache_sampler_config_resolves_to_its_published_knobs():
    from illada.benchmarks.decoders import sampler_config

    s = SamplerSettings(mask_id=5, **sampler_config("d2cache"))
    assert (s.cache, s.rollout_p, s.current_k, s.cache_sigma, s.inflate_w) == ("d2cache", 0.1, 32, 10.0, 0)
    assert s.sigma == 10.0 and s.block_length == s.gen_length and s.steps == s.gen_length  # its published runs


def test_d2cache_rejects_a_shifted_head_before_any_forward():
    from illada.config import ModelConfig
    from illada.model import Transformer

    cfg = ModelConfig(vocab_size=48, dim=32, n_layers=1, n_heads=4, n_kv_heads=2, ffn_dim=64, mask_token_id=MASK,
                      max_seq_len=64, logits_shift=True)
    model = Recorder(Transformer.random(cfg))
    with pytest.raises(ValueError, match="cache='d2cache' needs unshifted logits"):
        generate(model, prompts(1)[0], settings(gen_length=8, steps=8, block_length=8))
    assert model.calls == []
