"""Dream's sampler (illada/sampling/dream.py) and Dream's likelihood scorer (illada/scoring.py: ``dream``)
against oracles transcribed from Dream's code (tests/reference_dream.py), on toy logits."""

from __future__ import annotations

import pytest
import torch

from illada.sampling import SamplerSettings, generate
from tests.reference_dream import ShiftedModel, dream_generate
from tests.toy_models import ToyLogits, tiny_transformer

MASK = 23
ALGS = ["origin", "maskgit_plus", "topk_margin", "entropy"]


def toy(**kw) -> ShiftedModel:
    # the mask token's logit pushed down: a trained Dream never proposes it (see the module docstring of dream.py)
    return ShiftedModel(ToyLogits(vocab=24, bias={MASK: -30.0}, **kw))


def padded():
    prompt = torch.tensor([[0, 0, 5, 6, 7], [3, 4, 5, 6, 2], [0, 0, 0, 9, 8]])
    mask = (torch.arange(5) >= torch.tensor([2, 0, 3])[:, None]).long()
    return prompt, mask


def settings(**kw) -> SamplerSettings:
    kw.setdefault("gen_length", 12)
    kw.setdefault("block_length", kw["gen_length"])
    return SamplerSettings(mask_id=MASK, decoder="dream", **kw)


def reference(model, prompt, mask, s: SamplerSettings):
    return dream_generate(model.raw, prompt.clone(), mask, MASK, s.gen_length, s.steps, eps=s.eps, alg=s.alg,
                          alg_temp=s.alg_temp, temperature=s.temperature, top_p=s.top_p, top_k=s.top_k)


@pytest.mark.parametrize("alg", ALGS)
@pytest.mark.parametrize("steps,eps,filters", [(12, 1e-3, {}), (5, 1e-3, {"top_p": 0.8}), (20, 0.1, {"top_k": 3})])
def test_greedy_matches_dream(alg, steps, eps, filters):
    model = toy()
    prompt, mask = padded()
    s = settings(steps=steps, eps=eps, alg=alg, seed=0, **filters)  # origin draws its positions even at T=0
    for p, m in ((prompt[1:2], None), (prompt, mask)):
        out = generate(model, p, s, m)
        torch.manual_seed(0)
        assert torch.equal(out.tokens, reference(model, p, m, s))
        assert out.nfe == steps and out.tokens_per_step.shape == (steps, p.shape[0])
        assert not (out.generated == MASK).any() and (out.tokens_per_step.sum(0) == s.gen_length).all()


@pytest.mark.parametrize("alg,alg_temp", [("origin", None), ("maskgit_plus", None), ("maskgit_plus", 0.5),
                                          ("topk_margin", 2.0), ("entropy", 0.3)])
@pytest.mark.parametrize("filters", [{}, {"top_p": 0.9, "top_k": 6}])
def test_seeded_sampling_follows_dreams_random_stream(alg, alg_temp, filters):
    model = toy(scale=2.0)  # flat distributions: draws differ from the argmax
    prompt, mask = padded()
    s = settings(steps=6, alg=alg, alg_temp=alg_temp, temperature=0.9, seed=123, **filters)
    for p, m in ((prompt[:1, 2:], None), (prompt, mask)):
        torch.manual_seed(123)
        expected = reference(model, p, m, s)
        assert torch.equal(generate(model, p, s, m).tokens, expected)
    greedy = generate(model, prompt, s.replace(temperature=0.0, alg_temp=None, seed=None), mask)
    assert not torch.equal(generate(model, prompt, s, mask).tokens, greedy.tokens)


def test_origin_with_more_steps_than_tokens_and_empty_draws():
    # many steps over few positions: most steps unmask nothing (empty draws must not shift the stream)
    model = toy(scale=2.0)
    prompt = torch.tensor([[4, 5]])
    for temperature in (0.0, 1.0):
        s = settings(gen_length=3, steps=16, alg="origin", temperature=temperature, seed=7)
        torch.manual_seed(7)
        assert torch.equal(generate(model, prompt, s).tokens, reference(model, prompt, None, s))


# not origin: it draws one uniform per masked position of the whole batch, so rows share one stream (as Dream)
@pytest.mark.parametrize("alg", ALGS[1:])
def test_batched_equals_one_by_one(alg):
    model = toy()
    prompt, mask = padded()
    s = settings(steps=7, alg=alg, top_k=5)
    batched = generate(model, prompt, s, mask)
    for r in range(prompt.shape[0]):
        real = int(mask[r].sum())
        alone = generate(model, prompt[r:r + 1, -real:], s)
        assert torch.equal(batched.generated[r], alone.generated[0])


def test_transformer_matches_dream():
    class NoMask:  # a random transformer proposes the mask token; a trained Dream does not
        def __init__(self, model):
            self.model, self.config = model, model.config

        def __call__(self, x, attention_mask=None):
            logits = self.model(x, attention_mask)
            logits[..., self.config.mask_token_id] -= 30.0
            return logits

    model = ShiftedModel(NoMask(tiny_transformer()))
    prompt = torch.tensor([[0, 3, 4, 5], [6, 7, 8, 9]])
    mask = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])
    s = SamplerSettings(mask_id=47, decoder="dream", gen_length=10, block_length=10, steps=10, alg="entropy")
    out = generate(model, prompt, s, mask)
    ref = dream_generate(model.raw, prompt.clone(), mask, 47, 10, 10, alg="entropy")
    assert torch.equal(out.tokens, ref)


def test_published_defaults():
    s = settings()
    assert (s.alg, s.alg_temp, s.top_p, s.top_k, s.eps) == ("origin", None, None, None, 1e-3)


@pytest.mark.parametrize("kw,field", [
    (dict(alg="confidence"), "alg"),
    (dict(alg="entropy", alg_temp=-1.0), "alg_temp"),
    (dict(alg_temp=0.5), "alg_temp"),  # origin reads no alg_temp
    (dict(top_p=0.0), "top_p"),
    (dict(top_p=1.5), "top_p"),
    (dict(top_k=0), "top_k"),
    (dict(top_k=2.5), "top_k"),
    (dict(eps=1.0), "eps"),
    (dict(eps=float("nan")), "eps"),
    (dict(block_length=6), "block_length"),
    (dict(remasking="entropy"), "remasking"),
    (dict(cfg_scale=1.0), "cfg_scale"),
    (dict(cache="dual"), "cache"),
    (dict(threshold=0.9), "threshold"),
    (dict(confidence_precision="float64"), "confidence_precision"),
])
def test_invalid_settings_name_the_field(kw, field):
    with pytest.raises(ValueError, match=rf"^SamplerSettings\.{field}="):
        settings(**kw)


@pytest.mark.parametrize("field,value", [("alg", "entropy"), ("eps", 0.01), ("top_k", 3)])
def test_dream_knobs_are_rejected_by_other_decoders(field, value):
    with pytest.raises(ValueError, match=rf"^SamplerSettings\.{field}=.*only used by decoder dream"):
        SamplerSettings(mask_id=MASK, **{field: value})


def test_sweep_config_resolves():
    from illada.benchmarks.decoders import sampler_config

    config = sampler_config("dream")
    s = SamplerSettings(mask_id=5, **config)
    assert s.decoder == "dream" and s.alg == "entropy" and s.block_length == s.gen_length


# ------------------------------------------------------------------------------------------------ scorer
from types import SimpleNamespace  # noqa: E402

from illada.scoring import SCORERS, ScoringSettings, ar_order, dream, score_questions, Question  # noqa: E402
from tests.reference_dream import dream_loglikelihood  # noqa: E402

EOS = 1
PAIRS = [([3, 4, 5], [6, 7]), ([8], [9, 10, 11]), ([12, 13, 14, 15, 16], [17]), ([2, 5], [4])]


def scoring_toy() -> ShiftedModel:
    model = ShiftedModel(ToyLogits(vocab=24, scale=3.0))
    model.config = SimpleNamespace(eos_token_id=EOS)
    return model


def dream_reference(model, pairs, seed=0, **kw):
    out = []
    for ctx, cont in pairs:
        torch.manual_seed(seed)  # the product restarts Dream's stream for every pair
        out.append(dream_loglikelihood(model.raw, torch.tensor(ctx), torch.tensor([*cont, EOS]), MASK, **kw))
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("nll_type,log_type", [("mc", "ftb"), ("mc", "btf"), ("mc", "union"), ("ar_ftb", "ftb"),
                                               ("ar_btf", "ftb"), ("ar_ftb", "btf"), ("ar_btf", "btf")])
def test_dream_scorer_matches_dreams_eval(nll_type, log_type):
    model = scoring_toy()
    s = ScoringSettings(mask_id=MASK, mc_num=16, batch_size=4, seed=5, max_rows=7, nll_type=nll_type,
                        log_type=log_type, sampling_eps=0.05)
    ours = dream(model, PAIRS, s)
    expected = dream_reference(model, PAIRS, seed=5, nll_type=nll_type, log_type=log_type, mc_num=16, batch_size=4,
                               sampling_eps=0.05)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)
    assert (ours <= 0).all() if nll_type != "mc" else torch.isfinite(ours).all()


@pytest.mark.parametrize("nll_type,log_type", [("mc", "ftb"), ("mc", "union"), ("ar_btf", "btf")])
def test_dream_scorer_batched_equals_one_by_one(nll_type, log_type):
    model = scoring_toy()
    s = ScoringSettings(mask_id=MASK, mc_num=8, batch_size=4, nll_type=nll_type, log_type=log_type)
    together = dream(model, PAIRS, s)
    alone = torch.cat([dream(model, [pair], s.__class__(**{**s.__dict__, "max_rows": 3})) for pair in PAIRS])
    torch.testing.assert_close(together, alone, rtol=1e-6, atol=1e-6)


def test_dream_defaults_and_ar_ftb_is_the_left_to_right_chain_rule():
    model = scoring_toy()
    default = dream(model, PAIRS, ScoringSettings(mask_id=MASK, mc_num=128, batch_size=32))
    explicit = dream(model, PAIRS, ScoringSettings(mask_id=MASK, mc_num=128, batch_size=32, nll_type="mc",
                                                   log_type="ftb", sampling_eps=1e-3))
    assert torch.equal(default, explicit)
    chain = dream(model, PAIRS, ScoringSettings(mask_id=MASK, nll_type="ar_ftb"))
    with_eos = [(ctx, [*cont, EOS]) for ctx, cont in PAIRS]
    torch.testing.assert_close(chain, ar_order(model, with_eos, ScoringSettings(mask_id=MASK)), rtol=1e-6, atol=1e-6)
    assert "dream" in SCORERS
    scores = score_questions(model, [Question([3, 4], [[5], [6, 7]])], "dream",
                             ScoringSettings(mask_id=MASK, mc_num=8, batch_size=4))
    assert scores[0].total.shape == (2,)


@pytest.mark.parametrize("kw,field", [
    (dict(nll_type="ar"), "nll_type"),
    (dict(log_type="both"), "log_type"),
    (dict(nll_type="ar_ftb", log_type="union"), "log_type"),
    (dict(sampling_eps=0.0), "sampling_eps"),
    (dict(sampling_eps=1.5), "sampling_eps"),
])
def test_dream_scorer_settings_name_the_field(kw, field):
    with pytest.raises(ValueError, match=rf"^ScoringSettings\.{field}="):
        ScoringSettings(mask_id=MASK, **kw)


def test_dream_fields_are_rejected_by_other_scorers_and_guidance_by_dream():
    model = scoring_toy()
    for name in ("likelihood", "confidence", "ar_order"):
        with pytest.raises(ValueError, match=r"^ScoringSettings\.log_type='btf': only read by scorer dream"):
            SCORERS[name](model, PAIRS, ScoringSettings(mask_id=MASK, log_type="btf"))
    with pytest.raises(ValueError, match=r"^ScoringSettings\.cfg_scale="):
        dream(model, PAIRS, ScoringSettings(mask_id=MASK, cfg_scale=1.0))
    with pytest.raises(ValueError, match="eos_token_id"):
        dream(ShiftedModel(ToyLogits(vocab=24)), PAIRS, ScoringSettings(mask_id=MASK))


def test_scorer_config_resolves():
    import yaml
    from pathlib import Path

    conf = Path(__file__).resolve().parents[1] / "sweeps" / "conf" / "scorer"
    for path in sorted(conf.glob("dream*.yaml")):
        merged: dict = {}
        for name in ("confidence", "dream", path.stem):  # the defaults chains of dream*.yaml
            merged.update(yaml.safe_load((conf / f"{name}.yaml").read_text()))
        merged.pop("defaults", None)
        assert merged.pop("name") == "dream"
        ScoringSettings(mask_id=MASK, **merged)


def test_eval_rejects_a_dream_field_for_another_scorer_before_loading(tmp_path):
    from illada.evaluate import Point, resolve

    with pytest.raises(ValueError, match=r"^ScoringSettings\.nll_type='ar_ftb': only read by scorer dream"):
        resolve(Point(model="default", task="arithmetic_mc", scorer={"name": "confidence", "nll_type": "ar_ftb"}))
    resolved = resolve(Point(model="default", task="arithmetic_mc", scorer={"name": "dream", "log_type": "btf"}))
    assert resolved.settings["scorer"]["log_type"] == "btf"
