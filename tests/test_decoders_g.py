"""KLASS and credit decoding against transcriptions of their reference code (tests/reference_decoders_g.py):
tokens and NFE at temperature 0 over a grid of knobs, batched (left padding) == one by one, knob validation."""

from __future__ import annotations

import itertools

import pytest
import torch

from illada.sampling import SamplerSettings, generate
from tests.reference_decoders_g import credit_reference, klass_reference
from tests.test_sampling import padded_prompts
from tests.toy_models import ToyLogits, one_by_one

V, MASK, EOS = 24, 23, 1


def settings(**kw) -> SamplerSettings:
    return SamplerSettings(mask_id=MASK, **kw)


# ------------------------------------------------------------------------------------------------------ KLASS
KLASS_GRID = list(itertools.product([0.9, 0.5, 0.2], [0.01, 0.3, 3.0], [1, 2, 3]))
KLASS_CANVASES = [(12, 4), (8, 8), (16, 8)]  # (gen_length, block_length); steps = gen_length


@pytest.mark.parametrize("gen_length,block_length", KLASS_CANVASES)
def test_klass_matches_reference_tokens_and_nfe(gen_length, block_length):
    model = ToyLogits(V, scale=8.0)
    prompt, mask = padded_prompts()
    parallel = fallback = 0
    for threshold, kl_threshold, history in KLASS_GRID:
        knobs = dict(threshold=threshold, kl_threshold=kl_threshold, kl_history_length=history)
        s = settings(decoder="klass", gen_length=gen_length, steps=gen_length, block_length=block_length, **knobs)
        ours = generate(model, prompt, s, mask)
        alone, alone_nfe = one_by_one(model, prompt, mask, s)
        assert torch.equal(ours.tokens, alone), knobs  # batched == one by one
        for row in range(prompt.shape[0]):
            ref, ref_nfe = klass_reference(model, prompt[row:row + 1], mask[row:row + 1], mask_id=MASK,
                                           gen_length=gen_length, steps=gen_length, block_length=block_length,
                                           conf_threshold=threshold, **_klass_ref(knobs))
            assert torch.equal(ours.tokens[row], ref[0]), (knobs, row)
            assert alone_nfe[row] == ref_nfe, (knobs, row)
        per_step = ours.tokens_per_step
        parallel += int((per_step > 1).sum())
        fallback += int((per_step == 1).sum())
    assert parallel and fallback  # the grid exercises both the KL-stable commits and the fallback


def _klass_ref(knobs: dict) -> dict:
    return {"kl_threshold": knobs["kl_threshold"], "kl_history_length": knobs["kl_history_length"]}


def test_klass_defaults_are_the_published_ones():
    s = settings(decoder="klass", gen_length=8, steps=8, block_length=8)
    assert (s.threshold, s.kl_threshold, s.kl_history_length) == (0.9, 0.01, 2)


def test_klass_exact_ties_and_transformer():
    from tests.toy_models import tiny_transformer
    for model, mask_id, vocab in [(ToyLogits(V, quantum=1.0, scale=3.0), MASK, V), (tiny_transformer(), 47, 48)]:
        prompt, mask = padded_prompts(vocab=vocab)
        s = SamplerSettings(mask_id=mask_id, decoder="klass", gen_length=12, steps=12, block_length=4,
                            threshold=0.3, kl_threshold=0.5)
        ours = generate(model, prompt, s, mask)
        for row in range(prompt.shape[0]):
            ref, _ = klass_reference(model, prompt[row:row + 1], mask[row:row + 1], mask_id=mask_id, gen_length=12,
                                     steps=12, block_length=4, conf_threshold=0.3, kl_threshold=0.5)
            assert torch.equal(ours.tokens[row], ref[0])


@pytest.mark.parametrize("cache", ["prefix", "dual"])
def test_klass_with_a_cache_batched_equals_one_by_one(cache):
    from tests.toy_models import tiny_transformer
    model = tiny_transformer()
    prompt, mask = padded_prompts(vocab=48)
    s = SamplerSettings(mask_id=47, decoder="klass", gen_length=12, steps=12, block_length=4, cache=cache,
                        threshold=0.3, kl_threshold=0.5)
    ours = generate(model, prompt, s, mask)
    alone, _ = one_by_one(model, prompt, mask, s)
    assert torch.equal(ours.tokens, alone)


def test_klass_logits_eos_inf_never_emits_eos():
    model = ToyLogits(V, bias={EOS: 8.0})
    prompt, mask = padded_prompts()
    base = settings(decoder="klass", gen_length=12, steps=12, block_length=4, eos_id=EOS, kl_threshold=0.5,
                    threshold=0.5)
    assert (generate(model, prompt, base, mask).generated == EOS).any()
    s = base.replace(logits_eos_inf=True)
    ours = generate(model, prompt, s, mask)
    assert not (ours.generated == EOS).any()
    assert torch.equal(ours.tokens, one_by_one(model, prompt, mask, s)[0])


def test_klass_seeded_temperature_is_reproducible():
    model = ToyLogits(V)
    prompt, mask = padded_prompts()
    s = settings(decoder="klass", gen_length=8, steps=8, block_length=4, temperature=0.8, seed=3)
    first = generate(model, prompt, s, mask)
    assert torch.equal(first.tokens, generate(model, prompt, s, mask).tokens)
    assert not (first.generated == MASK).any()


def test_klass_confidence_must_exceed_the_threshold_strictly():
    # the reference's ready test is p(x0) > threshold: two stable positions exactly at the threshold are not
    # ready, so the step falls back to the single most confident one
    from illada.sampling.decoders import StepInput, build
    logits = torch.zeros(1, 3, V)
    logits[0, :2, 4] = 3.0
    p = float(torch.softmax(logits[0, 0].double(), -1)[4])
    decoder = build(settings(decoder="klass", gen_length=3, steps=3, block_length=3, threshold=p,
                             kl_history_length=1, kl_threshold=0.1))
    x = torch.full((1, 3), MASK)
    decoder.begin_block(x, 0, 3)
    decoder._p_prev = torch.softmax(logits.double(), -1)  # the previous forward saw the same distributions
    masked = torch.ones(1, 3, dtype=torch.bool)
    out = decoder.select(StepInput(logits, logits.argmax(-1), logits.amax(-1), masked, x, 0, 0, 3, 0, 0))
    assert out.commit.sum() == 1
    decoder = build(settings(decoder="klass", gen_length=3, steps=3, block_length=3, threshold=p - 1e-9,
                             kl_history_length=1, kl_threshold=0.1))
    decoder.begin_block(x, 0, 3)
    decoder._p_prev = torch.softmax(logits.double(), -1)
    out = decoder.select(StepInput(logits, logits.argmax(-1), logits.amax(-1), masked, x, 0, 0, 3, 0, 0))
    assert out.commit.tolist() == [[True, True, False]]


@pytest.mark.parametrize("kw,field", [
    (dict(steps=4), "steps"),
    (dict(kl_threshold=0.0), "kl_threshold"),
    (dict(kl_threshold=float("nan")), "kl_threshold"),
    (dict(kl_history_length=0), "kl_history_length"),
    (dict(kl_history_length=1.5), "kl_history_length"),
    (dict(threshold=1.5), "threshold"),
    (dict(cfg_scale=1.0), "cfg_scale"),
    (dict(remasking="random"), "remasking"),
    (dict(confidence_eos_eot_inf=True, eos_id=EOS), "confidence_eos_eot_inf"),
    (dict(credit_alpha=0.5), "credit_alpha"),
    (dict(confidence_precision="logits"), "confidence_precision"),
])
def test_klass_rejects_bad_knobs(kw, field):
    with pytest.raises(ValueError, match=rf"^SamplerSettings\.{field}="):
        settings(decoder="klass", gen_length=8, block_length=4, **{"steps": 8, **kw})


# ----------------------------------------------------------------------------------------------------- credit
CREDIT_GRID = list(itertools.product([0.9, 0.6], [0.7, 0.0, 2.0], [0.2, 1.0], [0.8, 0.3, 1.0]))


@pytest.mark.parametrize("gen_length,block_length", [(12, 4), (8, 8), (16, 8)])
def test_credit_matches_reference_tokens_and_nfe(gen_length, block_length):
    model = ToyLogits(V, scale=8.0)
    prompt, mask = padded_prompts()
    parallel = 0
    for threshold, alpha, gamma, beta in CREDIT_GRID:
        knobs = dict(threshold=threshold, credit_alpha=alpha, boost_gamma=gamma, decay_beta=beta)
        s = settings(decoder="credit", gen_length=gen_length, block_length=block_length, **knobs)
        ours = generate(model, prompt, s, mask)
        ref, ref_nfe = credit_reference(model, prompt, mask, mask_id=MASK, gen_length=gen_length,
                                        block_length=block_length, **knobs)
        assert torch.equal(ours.tokens, ref), knobs
        assert ours.nfe == ref_nfe, knobs
        alone, alone_nfe = one_by_one(model, prompt, mask, s)
        assert torch.equal(alone, ours.tokens), knobs  # batched == one by one
        for row in range(prompt.shape[0]):
            _, nfe = credit_reference(model, prompt[row:row + 1], mask[row:row + 1], mask_id=MASK,
                                      gen_length=gen_length, block_length=block_length, **knobs)
            assert alone_nfe[row] == nfe
        parallel += int((ours.tokens_per_step > 1).sum())
    assert parallel


@pytest.mark.parametrize("temperature", [0.5, 1.0])
def test_credit_seeded_temperature_follows_the_reference_stream(temperature):
    model = ToyLogits(V, scale=4.0)
    prompt, mask = padded_prompts()
    s = settings(decoder="credit", gen_length=12, block_length=4, threshold=0.7, temperature=temperature, seed=9)
    ours = generate(model, prompt, s, mask)
    torch.manual_seed(9)
    ref, nfe = credit_reference(model, prompt, mask, mask_id=MASK, gen_length=12, block_length=4, threshold=0.7,
                                temperature=temperature)
    assert torch.equal(ours.tokens, ref) and ours.nfe == nfe


@pytest.mark.parametrize("cache", ["none", "prefix", "dual"])
@pytest.mark.parametrize("cfg_scale", [0.0, 1.0])
def test_credit_combines_with_caches_and_guidance_batched_equals_one_by_one(cache, cfg_scale):
    # dInfer runs credit decoding with its KV caches; illada's are Fast-dLLM's (no oracle for the combination)
    from tests.toy_models import tiny_transformer
    model = tiny_transformer()
    prompt, mask = padded_prompts(vocab=48)
    s = SamplerSettings(mask_id=47, decoder="credit", gen_length=12, block_length=4, cache=cache,
                        cfg_scale=cfg_scale, threshold=0.5)
    ours = generate(model, prompt, s, mask)
    alone, _ = one_by_one(model, prompt, mask, s)
    assert torch.equal(ours.tokens, alone)


def test_credit_float64_confidence_is_dinfer_use_float64():
    model = ToyLogits(V, scale=8.0)
    prompt, mask = padded_prompts()
    s = settings(decoder="credit", gen_length=12, block_length=4, threshold=0.8, confidence_precision="float64")
    ref, nfe = credit_reference(model, prompt, mask, mask_id=MASK, gen_length=12, block_length=4, threshold=0.8,
                                use_float64=True)
    ours = generate(model, prompt, s, mask)
    assert torch.equal(ours.tokens, ref) and ours.nfe == nfe


def test_credit_never_commits_a_proposed_mask_token():
    # dInfer's rm_mask: a position whose proposal is the mask token is not eligible, even as the most confident
    from illada.sampling.decoders import StepInput, build
    logits = torch.zeros(1, 3, V)
    logits[0, 0, MASK] = 9.0  # most confident, but proposes the mask token
    logits[0, 1, 5] = 3.0
    logits[0, 2, 7] = 2.0
    decoder = build(settings(decoder="credit", gen_length=3, block_length=3, threshold=0.99))
    decoder.begin_block(None, 0, 3)
    masked = torch.ones(1, 3, dtype=torch.bool)
    x = torch.full((1, 3), MASK)
    out = decoder.select(StepInput(logits, logits.argmax(-1), logits.amax(-1), masked, x, 0, 0, 3, 0, 0))
    assert out.commit.tolist() == [[False, True, False]] and int(out.tokens[0, 1]) == 5


def test_credit_commits_every_near_tie_of_the_best_below_threshold():
    # dInfer's cut is min(threshold, best - 1e-5): near-ties of the best commit together, farther ones wait
    from illada.sampling.decoders import StepInput, build
    base = torch.log(torch.tensor(23.0))  # p(top) = 0.5 with 23 other tokens at logit 0
    logits = torch.zeros(1, 3, V)
    for pos, delta in enumerate([0.0, -2e-5, -2e-3]):  # p = 0.5, 0.5 - 5e-6, 0.5 - 5e-4
        logits[0, pos, 4] = base + delta
    decoder = build(settings(decoder="credit", gen_length=3, block_length=3, threshold=0.9, credit_alpha=0.0))
    decoder.begin_block(None, 0, 3)
    masked = torch.ones(1, 3, dtype=torch.bool)
    out = decoder.select(StepInput(logits, logits.argmax(-1), logits.amax(-1), masked, torch.full((1, 3), MASK),
                                   0, 0, 3, 0, 0))
    assert out.commit.tolist() == [[True, True, False]]


def test_credit_boost_changes_the_decoding():
    # the credit actually matters: with a strong alpha some token or some commit order differs from alpha=0
    model = ToyLogits(V, scale=4.0)
    prompt, mask = padded_prompts()
    base = settings(decoder="credit", gen_length=16, block_length=8, threshold=0.95)
    plain = generate(model, prompt, base.replace(credit_alpha=0.0), mask)
    boosted = generate(model, prompt, base.replace(credit_alpha=3.0), mask)
    assert boosted.nfe < plain.nfe or not torch.equal(boosted.tokens, plain.tokens)


def test_credit_defaults_are_the_published_ones():
    s = settings(decoder="credit", gen_length=8, block_length=8)
    assert (s.threshold, s.credit_alpha, s.boost_gamma, s.decay_beta) == (0.9, 0.7, 0.2, 0.8)


@pytest.mark.parametrize("kw,field", [
    (dict(threshold=0.0), "threshold"),
    (dict(threshold=1.2), "threshold"),
    (dict(credit_alpha=-0.1), "credit_alpha"),
    (dict(credit_alpha=float("inf")), "credit_alpha"),
    (dict(boost_gamma=-1.0), "boost_gamma"),
    (dict(decay_beta=1.5), "decay_beta"),
    (dict(decay_beta=-0.1), "decay_beta"),
    (dict(kl_threshold=0.1), "kl_threshold"),
    (dict(remasking="entropy"), "remasking"),
    (dict(confidence_eos_eot_inf=True, eos_id=EOS), "confidence_eos_eot_inf"),
    (dict(sigma=1.0), "sigma"),
])
def test_credit_rejects_bad_knobs(kw, field):
    with pytest.raises(ValueError, match=rf"^SamplerSettings\.{field}="):
        settings(decoder="credit", gen_length=8, block_length=4, **kw)


# ------------------------------------------------------------------------------------------------------- WINO
class MaskedToy(ToyLogits):
    """ToyLogits that also takes a per-query mask [B, T, S] and explicit positions (WINO's shadow block): a
    query's context is the mean embedding of the keys it may attend to."""

    def __call__(self, x, attention_mask=None, position_ids=None):
        if attention_mask is None or attention_mask.dim() == 2:
            m = torch.ones_like(x, dtype=torch.float32) if attention_mask is None else attention_mask.float()
            allowed = m[:, None, :].expand(x.shape[0], x.shape[1], x.shape[1])
            if position_ids is None:
                position_ids = (m.cumsum(1) - 1).clamp(min=0).long()
        else:
            allowed = attention_mask.float()
        e = self.tok[x]
        ctx = (allowed @ e) / allowed.sum(-1, keepdim=True)
        return torch.tanh(e + ctx + self.pos[position_ids]) @ self.out + self.bias


WINO_GRID = list(itertools.product([0.6, 0.3, 0.9], [0.9, 0.5, 0.99]))


@pytest.mark.parametrize("gen_length,block_length", [(12, 4), (8, 8), (16, 8), (24, 24)])
def test_wino_matches_reference_tokens_and_nfe(gen_length, block_length):
    from tests.reference_decoders_g import wino_reference
    model = MaskedToy(V, scale=6.0)
    prompt, mask = padded_prompts()
    remasked = parallel = 0
    for wide, narrow in WINO_GRID:
        knobs = dict(wide_in_threshold=wide, narrow_out_threshold=narrow)
        s = settings(decoder="wino", gen_length=gen_length, block_length=block_length, **knobs)
        ours = generate(model, prompt, s, mask)
        alone, alone_nfe = one_by_one(model, prompt, mask, s)
        assert torch.equal(ours.tokens, alone), knobs  # batched == one by one
        for row in range(prompt.shape[0]):
            keep = mask[row].bool()
            ref, ref_nfe = wino_reference(model, prompt[row:row + 1, keep], mask_id=MASK, gen_length=gen_length,
                                          block_length=block_length, **knobs)
            assert torch.equal(alone[row, -gen_length:], ref[0, -gen_length:]), (knobs, row)
            assert alone_nfe[row] == ref_nfe, (knobs, row)
        committed = int(ours.tokens_per_step.sum())
        remasked += committed - 3 * gen_length  # commits beyond the canvas were remasked and redone
        parallel += int((ours.tokens_per_step > 1).sum())
    assert parallel
    if block_length >= 8:
        assert remasked > 0  # narrow-out happened somewhere in the grid


def test_wino_seeded_temperature_follows_the_reference_stream():
    from tests.reference_decoders_g import wino_reference
    model = MaskedToy(V, scale=6.0)
    prompt = padded_prompts(batch=1)[0]
    s = settings(decoder="wino", gen_length=16, block_length=8, temperature=0.7, seed=11)
    ours = generate(model, prompt, s)
    torch.manual_seed(11)
    ref, nfe = wino_reference(model, prompt, mask_id=MASK, gen_length=16, block_length=8, temperature=0.7)
    assert torch.equal(ours.tokens, ref) and ours.nfe == nfe


def test_wino_runs_on_the_transformer_batched_equals_one_by_one():
    from tests.toy_models import tiny_transformer
    model = tiny_transformer()
    prompt, mask = padded_prompts(vocab=48)
    s = SamplerSettings(mask_id=47, decoder="wino", gen_length=16, block_length=8, wide_in_threshold=0.3)
    ours = generate(model, prompt, s, mask)
    alone, _ = one_by_one(model, prompt, mask, s)
    assert torch.equal(ours.tokens, alone)


def test_transformer_per_query_mask_matches_key_mask_and_backends_agree():
    # WINO feeds the Transformer a [B, T, S] mask: a key mask repeated per query must give the 2-D result, and
    # eager and sdpa must agree on a genuinely per-query (shadow) mask
    from tests.toy_models import tiny_transformer
    model = tiny_transformer()
    ids, mask = padded_prompts(vocab=48, length=8)
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    per_query = mask.bool()[:, None, :].expand(3, 8, 8)
    assert torch.allclose(model(ids, per_query, position_ids=positions), model(ids, mask), atol=1e-5)
    shadow = per_query.clone()
    shadow[:, :6, 6:] = False
    outs = []
    for backend in ("eager", "sdpa"):
        model.attn_backend = backend
        outs.append(model(ids, shadow, position_ids=positions))
    assert torch.allclose(outs[0], outs[1], atol=1e-5)
    with pytest.raises(ValueError, match="position_ids"):
        model(ids, shadow)


def test_wino_defaults_are_the_published_ones():
    s = settings(decoder="wino", gen_length=8, block_length=8)
    assert (s.wide_in_threshold, s.narrow_out_threshold) == (0.6, 0.9)


@pytest.mark.parametrize("kw,field", [
    (dict(wide_in_threshold=1.5), "wide_in_threshold"),
    (dict(narrow_out_threshold=-0.1), "narrow_out_threshold"),
    (dict(narrow_out_threshold=float("nan")), "narrow_out_threshold"),
    (dict(cache="prefix"), "cache"),
    (dict(cfg_scale=0.5), "cfg_scale"),
    (dict(remasking="topk_margin"), "remasking"),
    (dict(threshold=0.9), "threshold"),
    (dict(confidence_precision="float64"), "confidence_precision"),
])
def test_wino_rejects_bad_knobs(kw, field):
    with pytest.raises(ValueError, match=rf"^SamplerSettings\.{field}="):
        settings(decoder="wino", gen_length=8, block_length=4, **kw)


# --------------------------------------------------------------------------------------------------- SlowFast
SLOW_FAST_GRID = [
    {},  # published defaults
    dict(k_exploration_steps=2, high_confidence_threshold=0.5),
    dict(k_exploration_steps=1, cycle_length_stability_window=1, cycle_len_confidence_threshold=0.5),
    dict(k_exploration_steps=3, cycle_length_stability_window=3, cycle_length_stability_std_dev_threshold=0.5),
    dict(k_exploration_steps=4, cycle_length_stability_window=6),  # never stable in time: the mean fallback
    dict(k_exploration_steps=2, high_confidence_threshold=0.3, max_sub_cycles_per_block=1),
    dict(k_exploration_steps=5, cycle_length_stability_std_dev_threshold=0.6,  # population std, not sample
         cycle_len_confidence_threshold=0.5),
    dict(k_exploration_steps=3, cycle_len_confidence_threshold=0.95),  # estimates that grow by one
    dict(k_exploration_steps=2, cycle_len_confidence_threshold=0.95, max_sub_cycles_per_block=1),  # leaves masks
]


@pytest.mark.parametrize("gen_length,block_length", [(12, 4), (16, 16), (32, 32), (24, 8)])
@pytest.mark.parametrize("scale", [3.0, 5.0, 8.0])
def test_slow_fast_matches_reference_tokens_and_nfe(gen_length, block_length, scale):
    from tests.reference_decoders_g import slow_fast_reference
    model = ToyLogits(V, scale=scale)
    prompt, mask = padded_prompts()
    parallel = 0
    for knobs in SLOW_FAST_GRID:
        s = settings(decoder="slow_fast", gen_length=gen_length, block_length=block_length, **knobs)
        ours = generate(model, prompt, s, mask)
        alone, alone_nfe = one_by_one(model, prompt, mask, s)
        assert torch.equal(ours.tokens, alone), knobs  # batched == one by one
        for row in range(prompt.shape[0]):
            keep = mask[row].bool()
            ref, ref_nfe = slow_fast_reference(model, prompt[row:row + 1, keep], mask_id=MASK,
                                               gen_length=gen_length, block_length=block_length, **knobs)
            assert torch.equal(alone[row, -gen_length:], ref[0, -gen_length:]), (knobs, row)
            assert alone_nfe[row] == ref_nfe, (knobs, row)
        parallel += int((ours.tokens_per_step > 1).sum())
    assert parallel


def test_slow_fast_on_the_transformer_truncates_like_the_reference():
    # the fast phase's later forwards see the canvas only up to the cycle end: a per-row key mask in a batch,
    # the truncated sequence in the reference
    from tests.reference_decoders_g import slow_fast_reference
    from tests.toy_models import tiny_transformer
    model = tiny_transformer()
    prompt, mask = padded_prompts(vocab=48)
    s = SamplerSettings(mask_id=47, decoder="slow_fast", gen_length=16, block_length=16, k_exploration_steps=2,
                        high_confidence_threshold=0.5)
    ours = generate(model, prompt, s, mask)
    alone, alone_nfe = one_by_one(model, prompt, mask, s)
    assert torch.equal(ours.tokens, alone)
    for row in range(3):
        keep = mask[row].bool()
        ref, nfe = slow_fast_reference(model, prompt[row:row + 1, keep], mask_id=47, gen_length=16, block_length=16,
                                       k_exploration_steps=2, high_confidence_threshold=0.5)
        assert torch.equal(alone[row, -16:], ref[0, -16:]) and alone_nfe[row] == nfe


def test_slow_fast_defaults_are_the_published_ones():
    s = settings(decoder="slow_fast", gen_length=8, block_length=8)
    assert (s.k_exploration_steps, s.cycle_len_confidence_threshold, s.cycle_length_stability_window,
            s.cycle_length_stability_std_dev_threshold, s.high_confidence_threshold,
            s.max_sub_cycles_per_block) == (6, 0.3, 2, 1.0, 0.9, 256)


@pytest.mark.parametrize("kw,field", [
    (dict(k_exploration_steps=0), "k_exploration_steps"),
    (dict(cycle_length_stability_window=2.0), "cycle_length_stability_window"),
    (dict(max_sub_cycles_per_block=True), "max_sub_cycles_per_block"),
    (dict(cycle_len_confidence_threshold=1.1), "cycle_len_confidence_threshold"),
    (dict(high_confidence_threshold=-0.5), "high_confidence_threshold"),
    (dict(cycle_length_stability_std_dev_threshold=0.0), "cycle_length_stability_std_dev_threshold"),
    (dict(temperature=1.0), "temperature"),
    (dict(cache="dual"), "cache"),
    (dict(cfg_scale=2.0), "cfg_scale"),
    (dict(wide_in_threshold=0.5), "wide_in_threshold"),
    (dict(confidence_precision="float64"), "confidence_precision"),
])
def test_slow_fast_rejects_bad_knobs(kw, field):
    with pytest.raises(ValueError, match=rf"^SamplerSettings\.{field}="):
        settings(decoder="slow_fast", gen_length=8, block_length=4, **kw)


# ------------------------------------------------------------------------------------------ variable length
@pytest.mark.parametrize("decoder", ["klass", "credit", "wino", "slow_fast"])
def test_variable_length_batched_equals_one_by_one(decoder):
    # iLLaDA's mode: one block at a time until a stop id; rows leave the batch between blocks
    class Toy(MaskedToy):
        def __call__(self, x, attention_mask=None, position_ids=None):
            logits = super().__call__(x, attention_mask, position_ids)
            if position_ids is None:
                m = torch.ones_like(x) if attention_mask is None or attention_mask.dim() == 3 else attention_mask
                position_ids = (m.cumsum(1) - 1).clamp(min=0)
            # EOS attractive late in the answer (by real position): rows stop after different numbers of blocks
            return logits + 4.0 * (position_ids >= 12)[..., None] * torch.nn.functional.one_hot(
                torch.tensor(EOS), V)

    model = Toy(V, scale=4.0)
    prompt, mask = padded_prompts()
    s = settings(decoder=decoder, gen_length=16, block_length=4, variable_length=True, eos_id=EOS,
                 **({"steps": 16} if decoder == "klass" else {}))
    ours = generate(model, prompt, s, mask)
    assert len(set(ours.generated_tokens.tolist())) > 1  # rows stopped after different numbers of blocks
    for row in range(prompt.shape[0]):
        keep = mask[row].bool()
        alone = generate(model, prompt[row:row + 1, keep], s)
        n = int(ours.generated_tokens[row])
        assert n == int(alone.generated_tokens[0])
        assert torch.equal(ours.generated[row, :n], alone.generated[0, :n])
        assert int(ours.row_nfe[row]) >= alone.nfe  # in a batch a row also waits for the block's slowest row


# ---------------------------------------------------------------------------------------------------- configs
@pytest.mark.parametrize("name", ["klass", "credit", "wino", "slow_fast"])
def test_sampler_yaml_is_the_published_default_and_runs(name):
    import yaml
    from pathlib import Path
    conf = Path(__file__).resolve().parents[1] / "sweeps" / "conf" / "sampler"
    own = yaml.safe_load((conf / f"{name}.yaml").read_text())
    assert own.pop("defaults") == ["fixed"]
    merged = {**yaml.safe_load((conf / "fixed.yaml").read_text()), **own}
    s = settings(**merged)
    assert s == settings(decoder=name, gen_length=merged["gen_length"], steps=merged["steps"],
                         block_length=merged["block_length"])  # the YAML holds exactly the published defaults
    prompt, mask = padded_prompts()
    out = generate(MaskedToy(V), prompt, s, mask)
    assert not (out.generated == MASK).any()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_slow_fast_exp_argmax_shortcut_equals_the_references_exp_argmax(dtype):
    from illada.sampling.slow_fast import _exp_argmax

    g = torch.Generator().manual_seed(0)
    shortcuts = 0
    for trial in range(120):
        scale = [0.01, 1.0, 10.0, 30.0, 95.0, 200.0][trial % 6]  # the last two overflow exp in some rows
        logits = torch.randn(2, 8, 50, generator=g) * scale
        if trial % 2:  # a runner-up a hair below the max, which exp may round onto it
            logits[..., 7] = logits.max(-1).values - torch.rand(2, 8, generator=g) * 1e-6 * scale
        logits = logits.to(dtype)
        x0 = logits.argmax(dim=-1)
        got = _exp_argmax(logits, x0)
        shortcuts += got is x0
        assert torch.equal(got, logits.exp().argmax(dim=-1)), (trial, scale)
    if dtype in (torch.float32, torch.float64):
        assert shortcuts > 0  # the shortcut is taken where it is sound
    tie = torch.tensor([[[800.0, 801.0, 3.0]]], dtype=dtype)  # both overflow: the reference takes the first
    assert _exp_argmax(tie, tie.argmax(dim=-1)).item() == 0
