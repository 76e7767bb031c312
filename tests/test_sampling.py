"""The samplers against straightforward transcriptions of the reference loops (tests/reference_llada.py)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from illada.sampling import SamplerSettings, generate
from illada.sampling import rules
from tests.reference_llada import fast_transfer, fastdllm_generate, llada_generate
from tests.toy_models import CausalToy, Recorder, ToyLogits, tiny_transformer

V, MASK, EOS, EOT = 24, 23, 1, 2




def padded_prompts(batch: int = 3, length: int = 6, seed: int = 0, vocab: int = V) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded prompts (pad id 0) of lengths length, length-2, length-4 ..."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab - 1, (batch, length), generator=g)
    mask = torch.ones(batch, length, dtype=torch.long)
    for row in range(batch):
        pad = min(2 * row, length - 1)
        ids[row, :pad], mask[row, :pad] = 0, 0
    return ids, mask


def run_both(model, prompt, mask, seed=0, **kw):
    """(reference tokens, reference NFE) and our result for the same knobs and seed."""
    torch.manual_seed(seed)
    ref, nfe = llada_generate(model, prompt, mask, mask_id=MASK, eos_id=EOS, eot_id=EOT, **kw)
    ours = generate(model, prompt, SamplerSettings(mask_id=MASK, eos_id=EOS, eot_id=EOT, seed=seed, **kw), mask)
    return ref, nfe, ours


SCHEDULES = [  # (gen_length, steps, block_length)
    (16, 16, 16), (16, 8, 4), (12, 12, 4), (16, 4, 8), (8, 16, 8), (10, 4, 10), (12, 6, 12),
]


@pytest.mark.parametrize("gen_length,steps,block_length", SCHEDULES)
@pytest.mark.parametrize("remasking", ["low_confidence", "random"])
@pytest.mark.parametrize("cfg_scale", [0.0, 1.5])
def test_fixed_schedule_matches_reference_generate(gen_length, steps, block_length, remasking, cfg_scale):
    model = ToyLogits(V, bias={EOS: 1.5, EOT: 1.0})
    prompt, mask = padded_prompts()
    for flags in ({}, {"logits_eos_inf": True}, {"confidence_eos_eot_inf": True}):
        ref, nfe, ours = run_both(model, prompt, mask, gen_length=gen_length, steps=steps,
                                  block_length=block_length, remasking=remasking, cfg_scale=cfg_scale, **flags)
        assert torch.equal(ours.tokens, ref), flags
        assert ours.nfe == nfe == steps * (2 if cfg_scale else 1)
        assert ours.tokens_per_step.sum(0).tolist() == [gen_length] * 3


@pytest.mark.parametrize("temperature", [0.5, 1.0])
@pytest.mark.parametrize("flags", [{}, {"confidence_eos_eot_inf": True}, {"cfg_scale": 0.5, "remasking": "random"}])
def test_temperature_sampling_reproduces_reference_stream(temperature, flags):
    # same seed, same draws in the same order as the reference's global-RNG calls: identical samples
    model = ToyLogits(V, bias={EOS: 1.0, EOT: 1.0})
    prompt, mask = padded_prompts()
    ref, _, ours = run_both(model, prompt, mask, seed=7, gen_length=12, steps=6, block_length=4,
                            temperature=temperature, **flags)
    assert torch.equal(ours.tokens, ref)
    again = generate(model, prompt, SamplerSettings(mask_id=MASK, seed=7, gen_length=12, steps=6, block_length=4,
                                                    temperature=temperature, eos_id=EOS, eot_id=EOT, **flags), mask)
    assert torch.equal(again.tokens, ours.tokens)


def test_exact_ties_break_like_the_reference():
    # quantised logits: many positions share the same confidence, so the topk tie-break is exercised
    model = ToyLogits(V, quantum=1.0, scale=3.0)
    prompt, mask = padded_prompts(batch=4, length=5)
    for gen_length, steps, block_length in [(16, 16, 16), (16, 4, 8), (12, 3, 12)]:
        ref, nfe, ours = run_both(model, prompt, mask, gen_length=gen_length, steps=steps, block_length=block_length)
        assert torch.equal(ours.tokens, ref)


@pytest.mark.parametrize("kw", [
    dict(gen_length=16, steps=8, block_length=4),
    dict(gen_length=12, steps=12, block_length=12, cfg_scale=1.0, confidence_eos_eot_inf=True),
    dict(gen_length=8, steps=8, block_length=4, logits_eos_inf=True, remasking="random"),
])
def test_transformer_left_padded_batch_matches_reference(kw):
    model = tiny_transformer()
    prompt, mask = padded_prompts(vocab=48)
    torch.manual_seed(3)
    ref, nfe = llada_generate(model, prompt, mask, mask_id=47, eos_id=EOS, eot_id=EOT, **kw)
    ours = generate(model, prompt, SamplerSettings(mask_id=47, eos_id=EOS, eot_id=EOT, seed=3, **kw), mask)
    assert torch.equal(ours.tokens, ref) and ours.nfe == nfe


def test_logits_eos_inf_never_emits_eos():
    model = ToyLogits(V, bias={EOS: 8.0})  # EOS is the argmax almost everywhere
    prompt, mask = padded_prompts()
    base = SamplerSettings(mask_id=MASK, eos_id=EOS, gen_length=12, steps=12, block_length=12)
    assert (generate(model, prompt, base, mask).generated == EOS).any()
    assert not (generate(model, prompt, base.replace(logits_eos_inf=True), mask).generated == EOS).any()


# ------------------------------------------------------------------------------------------ Fast-dLLM rules
def random_confidences(seed: int, B: int = 5, W: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    conf = torch.rand(B, W, generator=g, dtype=torch.float64) ** 0.3  # skewed towards 1 like real confidences
    masked = torch.rand(B, W, generator=g) < 0.7
    masked[0] = False  # a finished row
    masked[1, :] = False
    masked[1, 3] = True  # a single masked position
    return torch.where(masked, conf, torch.tensor(float("-inf"), dtype=torch.float64)), masked


def direct_rule(conf: torch.Tensor, masked: torch.Tensor, threshold=None, factor=None) -> torch.Tensor:
    """Fast-dLLM's per-row selection, via the transcription (logits chosen so the softmax gives ``conf``)."""
    # fast_transfer computes confidences from logits; feed log-confidences over a 2-token vocabulary instead
    p = conf.clamp(min=0.5 + 1e-9).where(masked, torch.tensor(0.75, dtype=torch.float64))
    logits = torch.stack([p.log(), (1 - p).log()], -1)
    x = torch.zeros(conf.shape, dtype=torch.long)
    _, chosen = fast_transfer(logits, 0.0, "low_confidence", masked, x, None, threshold, factor)
    return chosen, torch.where(masked, p, torch.tensor(float("-inf"), dtype=torch.float64))


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("threshold", [0.55, 0.8, 0.9, 1.0])
def test_threshold_rule_picks_fast_dllm_positions(seed, threshold):
    conf, masked = random_confidences(seed)
    expected, conf = direct_rule(conf, masked, threshold=threshold)
    assert torch.equal(rules.select_threshold(conf, masked, threshold), expected)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("factor", [0.5, 1.0, 2.0, 4.0])
def test_factor_rule_picks_fast_dllm_positions(seed, factor):
    conf, masked = random_confidences(seed)
    expected, conf = direct_rule(conf, masked, factor=factor)
    assert torch.equal(rules.select_factor(conf, masked, factor), expected)


def test_factor_rule_quirk_first_failure_at_last_position_commits_all():
    conf = torch.tensor([[0.99, 0.98, 0.10]], dtype=torch.float64)
    masked = torch.ones(1, 3, dtype=torch.bool)
    # bounds: -1, 1 - 1/3, 1 - 1/4 -> the third fails, and it is the last one: Fast-dLLM commits all three
    assert rules.select_factor(conf, masked, 1.0).tolist() == [[True, True, True]]
    conf4 = torch.tensor([[0.99, 0.98, 0.10, 0.05]], dtype=torch.float64)
    assert rules.select_factor(conf4, torch.ones(1, 4, dtype=torch.bool), 1.0).tolist() == [[True, True, False, False]]


@pytest.mark.parametrize("rule", [dict(threshold=0.9), dict(threshold=0.5), dict(factor=1.0), dict()])
@pytest.mark.parametrize("cache", ["none", "prefix", "dual"])
def test_fast_dllm_loops_match_reference(rule, cache):
    model = tiny_transformer()
    prompt = padded_prompts(batch=2, vocab=48)[0][:, -4:]  # Fast-dLLM has no padding mask
    torch.manual_seed(0)
    ref, nfe = fastdllm_generate(model, prompt, steps=16, gen_length=16, block_length=8, mask_id=47, cache=cache,
                                 **rule)
    ours = generate(model, prompt, SamplerSettings(mask_id=47, steps=16, gen_length=16, block_length=8,
                                                   cache=cache, **rule))
    assert torch.equal(ours.tokens, ref)
    assert ours.nfe == nfe


def test_threshold_commits_several_tokens_per_step():
    model = ToyLogits(V, scale=12.0)  # peaked: many confidences above tau
    prompt, mask = padded_prompts()
    ours = generate(model, prompt, SamplerSettings(mask_id=MASK, gen_length=16, steps=16, block_length=8,
                                                   threshold=0.9), mask)
    assert ours.nfe < 16 and ours.tokens_per_step.max() > 1
    assert ours.tokens_per_step.sum(0).tolist() == [16] * 3 and not (ours.generated == MASK).any()
    assert ours.tokens_per_forward == pytest.approx(16 / ours.nfe)


# ------------------------------------------------------------------------------------------------ caches
@pytest.mark.parametrize("cache", ["prefix", "dual"])
@pytest.mark.parametrize("rule", [dict(), dict(threshold=0.6)])
def test_cache_is_exact_for_a_one_layer_model(cache, rule):
    # With one layer, a position's keys/values depend only on its own token and position. During a block the
    # prefix never changes (prefix cache exact) and neither do the later masks (dual cache exact), so the
    # cached run must reproduce the uncached one token for token (float64 keeps round-off from flipping ties).
    model = tiny_transformer(n_layers=1, dtype=torch.float64)
    prompt, mask = padded_prompts(vocab=48)
    base = SamplerSettings(mask_id=47, gen_length=24, steps=24, block_length=8, **rule)
    plain = generate(model, prompt, base, mask)
    cached = generate(model, prompt, base.replace(cache=cache), mask)
    assert torch.equal(cached.tokens, plain.tokens) and cached.nfe == plain.nfe
    # with a second layer, cached keys/values go stale (bidirectional attention): the cache is approximate
    deeper = tiny_transformer(n_layers=2, dtype=torch.float64)
    assert not torch.equal(generate(deeper, prompt, base.replace(cache=cache), mask).tokens,
                           generate(deeper, prompt, base, mask).tokens)


@pytest.mark.parametrize("cache", ["prefix", "dual"])
def test_cache_feeds_the_reference_spans(cache):
    model = Recorder(tiny_transformer())
    prompt, mask = padded_prompts(vocab=48)
    out = generate(model, prompt, SamplerSettings(mask_id=47, gen_length=16, steps=8, block_length=8, cache=cache,
                                                  cfg_scale=1.0), mask)
    P, T = prompt.shape[1], prompt.shape[1] + 16
    expected = []
    for start in (P, P + 8):
        expected.append(((6, T), 0))  # block start: full forward over both CFG copies, fills the cache
        width = T - start if cache == "prefix" else 8
        expected += [((6, width), start)] * 3
    assert model.calls == expected
    assert out.nfe == 2 * 8 and out.tokens_per_step.sum(0).tolist() == [16] * 3


def test_cache_needs_a_model_with_kv_cache():
    with pytest.raises(ValueError, match="cache='dual'"):
        generate(ToyLogits(V), padded_prompts()[0], SamplerSettings(mask_id=MASK, gen_length=8, steps=8,
                                                                    block_length=4, cache="dual"))


# ------------------------------------------------------------------------------------------ variable length
def test_variable_length_stops_rows_independently_and_matches_the_fixed_canvas():
    # A causal toy never looks right, so the blocks a fixed canvas decodes before the answer's EOS are exactly
    # the blocks variable-length generation decodes; rows leave the batch once their block holds EOS.
    stop = {5: 8, 6: 13, 7: 10 ** 4}  # by first prompt token: EOS from position 8, 13, never
    model = CausalToy(V, eos_id=EOS, stop_at=stop, scale=5.0)
    prompt = torch.tensor([[5, 9, 10, 11], [6, 12, 13, 14], [7, 15, 16, 17]])
    s = SamplerSettings(mask_id=MASK, eos_id=EOS, gen_length=16, steps=16, block_length=4, variable_length=True)
    var = generate(model, prompt, s)
    batch_sizes = [shape[0] for shape in model.calls]
    fixed = generate(model, prompt, s.replace(variable_length=False))
    assert var.generated_tokens.tolist() == [8, 12, 16]  # blocks of 4: EOS at 8 -> block 2, 13 -> block 3, none
    assert var.row_nfe.tolist() == [8, 12, 16] and var.nfe == 16
    assert var.answer_lengths.tolist() == [4, 9, 16]
    for row, n in enumerate(var.generated_tokens.tolist()):
        assert torch.equal(var.generated[row, :n], fixed.generated[row, :n])
        assert (var.generated[row, n:] == EOS).all()  # filler after the row's own canvas
    assert batch_sizes == [3] * 8 + [2] * 4 + [1] * 4  # finished rows leave the batch


def test_variable_length_budget_and_padding():
    model = CausalToy(V, eos_id=EOS, stop_at={}, scale=5.0)
    prompt, mask = padded_prompts()
    s = SamplerSettings(mask_id=MASK, eos_id=EOS, gen_length=8, steps=4, block_length=4, variable_length=True,
                        threshold=0.7)
    out = generate(model, prompt, s, mask)
    assert out.generated_tokens.tolist() == [8, 8, 8] and out.tokens.shape == (3, 6 + 8)
    assert not (out.generated == MASK).any()


# ------------------------------------------------------------------------------------------ settings & errors
class NoForward:
    config = type("C", (), {"max_seq_len": 32, "vocab_size": V})()

    def __call__(self, *a, **k):  # pragma: no cover - reaching it is the failure
        raise AssertionError("a forward pass ran before validation")


@pytest.mark.parametrize("kw,field", [
    (dict(gen_length=10, block_length=4), "block_length=4"),
    (dict(gen_length=16, block_length=4, steps=6), "steps=6"),
    (dict(threshold=0.0), "threshold=0.0"),
    (dict(threshold=1.5), "threshold=1.5"),
    (dict(factor=-1.0), "factor=-1.0"),
    (dict(threshold=0.9, factor=1.0), "factor=1.0"),
    (dict(remasking="low_conf"), "remasking='low_conf'"),
    (dict(cache="full"), "cache='full'"),
    (dict(temperature=-0.1), "temperature=-0.1"),
    (dict(cfg_scale=float("nan")), "cfg_scale=nan"),
    (dict(logits_eos_inf=True), "logits_eos_inf=True"),
    (dict(variable_length=True), "variable_length=True"),
    (dict(gen_length=0), "gen_length=0"),
    (dict(eos_id=MASK), "eos_id=23"),
    (dict(confidence_precision="half"), "confidence_precision='half'"),
])
def test_bad_settings_name_the_field(kw, field):
    with pytest.raises(ValueError, match=field.replace("(", r"\(").replace(".", r"\.")):
        SamplerSettings(mask_id=MASK, **kw)


def test_steps_need_not_divide_blocks_for_threshold_rules():
    s = SamplerSettings(mask_id=MASK, gen_length=16, block_length=4, steps=6, threshold=0.9)
    assert s.num_blocks == 4 and not s.is_fixed_schedule


@pytest.mark.parametrize("prompt,settings,match", [
    (torch.tensor([[3, MASK, 4]]), SamplerSettings(mask_id=MASK, gen_length=4, steps=4, block_length=4),
     "mask_id=23"),
    (torch.tensor([[3, 4, 5]]), SamplerSettings(mask_id=MASK, gen_length=32, steps=32, block_length=32),
     "gen_length=32"),
    (torch.tensor([[3, 4, 5]]), SamplerSettings(mask_id=MASK, gen_length=32, steps=32, block_length=4,
                                                variable_length=True, eos_id=EOS), "budget 32"),
    (torch.tensor([[3, 4, 5]]), SamplerSettings(mask_id=30, gen_length=4, steps=4, block_length=4),
     "mask_id=30"),
])
def test_bad_inputs_fail_before_any_forward(prompt, settings, match):
    with pytest.raises(ValueError, match=match):
        generate(NoForward(), prompt, settings)


def test_settings_are_frozen_and_typed():
    s = SamplerSettings(mask_id=MASK)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.steps = 3  # type: ignore[misc]
    with pytest.raises(ValueError, match="steps=2.5"):
        SamplerSettings(mask_id=MASK, steps=2.5)  # type: ignore[arg-type]
    model = tiny_transformer()
    assert SamplerSettings.for_model(model.config).mask_id == 47


def test_other_remasking_rules_decode_the_whole_canvas():
    model = ToyLogits(V)
    prompt, mask = padded_prompts()
    for remasking in ("topk_margin", "entropy"):
        out = generate(model, prompt, SamplerSettings(mask_id=MASK, gen_length=8, steps=4, block_length=4,
                                                      remasking=remasking), mask)
        assert not (out.generated == MASK).any() and out.tokens_per_step.tolist() == [[2, 2, 2]] * 4
    margin = rules.topk_margin(torch.tensor([[[2.0, 1.0, 0.0]]]), None, None, torch.float64)
    p = torch.softmax(torch.tensor([2.0, 1.0, 0.0], dtype=torch.float64), 0)
    assert margin.item() == pytest.approx(float(p[0] - p[1]))
    ent = rules.entropy(torch.zeros(1, 1, 4), None, None, torch.float64)
    assert ent.item() == pytest.approx(-torch.log(torch.tensor(4.0)).item(), abs=1e-8)


def test_fixed_schedule_counts():
    assert rules.transfer_counts(10, 4) == [3, 3, 2, 2]
    assert rules.transfer_counts(4, 8) == [1, 1, 1, 1, 0, 0, 0, 0]
