"""EB-Sampler (d2Cache and SGLang variants), hierarchy decoding (dInfer), certainty prior and PC-Sampler against
transcriptions of their reference code (tests/reference_decoders_f.py): same logits function, same tokens and
NFE at temperature 0, a left-padded batch giving each row its unbatched tokens."""

from __future__ import annotations

import json

import pytest
import torch

from illada.sampling import SamplerSettings, generate
from illada.sampling import decoders
from illada.sampling.settings import DECODERS
from illada.sampling.token_frequencies import (DEFAULT_FILE, count_tokens, embedded_training_rows,
                                               load_frequencies)
from tests.reference_decoders_f import (d2cache_certainty_density, d2cache_vanilla, dinfer_hierarchy,
                                        neuir_pc_sampler, sglang_eb)
from tests.test_sampling import padded_prompts
from tests.toy_models import ToyLogits, tiny_transformer

V, MASK = 24, 23


def toy(**kw):
    return ToyLogits(V, bias={MASK: -30.0}, **kw)  # the mask token is never proposed (the references would loop)


def each_row(reference, model, prompt, mask, **kw):
    """The reference run one row at a time (as the reference codebases run): ([tokens], [nfe])."""
    out = [reference(model, prompt[r:r + 1], mask[r:r + 1], **kw) for r in range(prompt.shape[0])]
    return torch.cat([t for t, _ in out]), [n for _, n in out]


def ours_batched_and_alone(model, prompt, mask, **kw):
    s = SamplerSettings(mask_id=MASK, **kw)
    batched = generate(model, prompt, s, mask)
    alone = [generate(model, prompt[r:r + 1], s, mask[r:r + 1]) for r in range(prompt.shape[0])]
    return batched, alone


def assert_matches(reference_out, batched, alone):
    ref_tokens, ref_nfe = reference_out
    assert torch.equal(batched.tokens, ref_tokens)
    assert [a.nfe for a in alone] == ref_nfe
    assert torch.equal(torch.cat([a.tokens for a in alone]), batched.tokens)
    assert batched.nfe >= max(ref_nfe)  # a batch runs each block until its slowest row is done


SHAPES = [dict(gen_length=16, block_length=8), dict(gen_length=12, block_length=4), dict(gen_length=8, block_length=8)]


# ---------------------------------------------------------------------------------------------- EB-Sampler
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("gamma", [0.0, 0.001, 0.1, 0.5, 2.0])
@pytest.mark.parametrize("remasking,alg", [("low_confidence", "maskgit_plus"), ("topk_margin", "topk_margin"),
                                           ("entropy", "entropy")])
def test_eb_sampler_matches_d2cache_confidence_unmasking(shape, gamma, remasking, alg):
    model = toy(scale=4.0)
    prompt, mask = padded_prompts()
    ref = each_row(d2cache_vanilla, model, prompt, mask, mask_id=MASK, gamma=gamma, alg=alg, **shape)
    assert_matches(ref, *ours_batched_and_alone(model, prompt, mask, decoder="eb_sampler", gamma=gamma,
                                                remasking=remasking, **shape))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("gamma", [0.0, 0.01, 0.15, 0.5, 2.0])
def test_eb_sampler_sglang_matches_ebsampling(shape, gamma):
    model = ToyLogits(V, scale=4.0)  # SGLang suppresses the mask token itself
    prompt, mask = padded_prompts()
    ref = each_row(sglang_eb, model, prompt, mask, mask_id=MASK, gamma=gamma, **shape)
    assert_matches(ref, *ours_batched_and_alone(model, prompt, mask, decoder="eb_sampler_sglang", gamma=gamma,
                                                **shape))


def test_eb_sampler_budget_trades_forwards_for_parallelism():
    model = toy(scale=4.0)
    prompt, mask = padded_prompts()
    nfe = [generate(model, prompt, SamplerSettings(mask_id=MASK, gen_length=16, block_length=8,
                                                   decoder="eb_sampler", gamma=g), mask).nfe
           for g in (0.0, 0.5, 5.0, 100.0)]
    assert nfe[0] == 16 and nfe == sorted(nfe, reverse=True) and nfe[-1] == 2  # gamma large: a block per step


def test_eb_sampler_on_a_transformer_matches_both_references():
    model = tiny_transformer()
    prompt, mask = padded_prompts(vocab=48)
    for decoder, ref_fn in (("eb_sampler", d2cache_vanilla), ("eb_sampler_sglang", sglang_eb)):
        ref = each_row(ref_fn, model, prompt, mask, mask_id=47, gamma=0.3, gen_length=16, block_length=8)
        s = SamplerSettings(mask_id=47, decoder=decoder, gamma=0.3, gen_length=16, block_length=8)
        assert torch.equal(generate(model, prompt, s, mask).tokens, ref[0])


# ------------------------------------------------------------------------------------------------ hierarchy
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("threshold", [0.9, 0.7, 1.0])
@pytest.mark.parametrize("low_threshold", [0.3, 0.5, 0.0])
def test_hierarchy_matches_dinfer(shape, threshold, low_threshold):
    model = toy(scale=5.0)
    prompt, mask = padded_prompts()
    ref = each_row(dinfer_hierarchy, model, prompt, mask, mask_id=MASK, threshold=threshold,
                   low_threshold=low_threshold, **shape)
    assert_matches(ref, *ours_batched_and_alone(model, prompt, mask, decoder="hierarchy", threshold=threshold,
                                                low_threshold=low_threshold, **shape))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("scale", [1.0, 5.0])
def test_hierarchy_defaults_are_dinfers_constructor_defaults(shape, scale):
    # HierarchyDecoder(threshold=None, low_threshold=0.4) as constructed without those arguments
    model = toy(scale=scale)
    prompt, mask = padded_prompts()
    ref = each_row(dinfer_hierarchy, model, prompt, mask, mask_id=MASK, **shape)
    assert_matches(ref, *ours_batched_and_alone(model, prompt, mask, decoder="hierarchy", **shape))


def test_hierarchy_none_and_zero_switch_the_thresholds_off():
    model = toy(scale=5.0)
    prompt, mask = padded_prompts()
    # threshold None: no position is committed for its confidence alone; low_threshold 0 is dInfer's None
    shape = SHAPES[0]
    ref = each_row(dinfer_hierarchy, model, prompt, mask, mask_id=MASK, threshold=None, low_threshold=None, **shape)
    ours = ours_batched_and_alone(model, prompt, mask, decoder="hierarchy", threshold=None, low_threshold=0.0,
                                  **shape)
    assert_matches(ref, *ours)
    with_threshold = each_row(dinfer_hierarchy, model, prompt, mask, mask_id=MASK, threshold=0.5, low_threshold=None,
                              **shape)
    assert not torch.equal(with_threshold[0], ref[0])  # the grid exercises what None switches off


def test_hierarchy_commits_one_position_per_masked_run():
    # a block whose confidences are all below low_threshold: only the block's top-1 is committed per step
    model = toy(scale=0.1)
    prompt, mask = padded_prompts()
    out = generate(model, prompt, SamplerSettings(mask_id=MASK, gen_length=8, block_length=8,
                                                  decoder="hierarchy"), mask)
    assert out.nfe == 8 and out.tokens_per_step.max() == 1


# ------------------------------------------------------------------------------------------ certainty prior
def test_certainty_density_equals_d2cache_fft_form():
    g = torch.Generator().manual_seed(0)
    for L in (1, 5, 16, 40):
        decoded = torch.rand(4, L, generator=g) < 0.5
        decoded[0, -1], decoded[1, -1] = True, False
        for sigma in (0.5, 2.0, 10.0, 100.0):
            torch.testing.assert_close(decoders.certainty_density(decoded, sigma),
                                       d2cache_certainty_density(decoded, sigma), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("sigma", [0.5, 2.0, 10.0])
@pytest.mark.parametrize("rule", [{}, {"threshold": 0.6}, {"gamma": 0.2}])
def test_certainty_prior_matches_d2cache(shape, sigma, rule):
    model = toy(scale=4.0)
    prompt, mask = padded_prompts()
    ref = each_row(d2cache_vanilla, model, prompt, mask, mask_id=MASK, sigma=sigma, **rule, **shape)
    decoder = "eb_sampler" if "gamma" in rule else "llada"
    ours = ours_batched_and_alone(model, prompt, mask, decoder=decoder, sigma=sigma, steps=shape["gen_length"],
                                  **rule, **shape)
    assert_matches(ref, *ours)


class Bfloat16Logits:
    """A toy model whose logits are bfloat16, so the softmax's dtype decides which confidences pass a threshold."""

    def __init__(self, model) -> None:
        self.model = model

    def __call__(self, x, attention_mask=None):
        return self.model(x, attention_mask).to(torch.bfloat16)


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7])
def test_certainty_prior_with_threshold_takes_the_softmax_in_the_logits_dtype(threshold):
    # d2Cache's generate_step, where the prior comes from, runs it under the threshold rule without float64
    model = Bfloat16Logits(toy(scale=4.0))
    prompt, mask = padded_prompts()
    shape = dict(gen_length=16, block_length=8)
    assert not SamplerSettings(mask_id=MASK, sigma=2.0, threshold=threshold).uses_float64_confidence
    ref = each_row(d2cache_vanilla, model, prompt, mask, mask_id=MASK, sigma=2.0, threshold=threshold, **shape)
    assert_matches(ref, *ours_batched_and_alone(model, prompt, mask, sigma=2.0, threshold=threshold, steps=16,
                                                **shape))


# ---------------------------------------------------------------------------------------------- PC-Sampler
@pytest.fixture
def freq_file(tmp_path):
    g = torch.Generator().manual_seed(1)
    counts = (torch.rand(V - 4, generator=g) * 1000).long()  # ids V-4.. absent: they get 1/N
    data = count_tokens([[i] * int(c) for i, c in enumerate(counts)])
    path = tmp_path / "freq.json"
    path.write_text(json.dumps(data))
    return str(path), load_frequencies(str(path), V)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("pc_lambda,clip_alpha", [(0.0, 10.0), (0.25, 10.0), (1.0, 10.0), (0.25, 0.5), (1.0, 0.5)])
@pytest.mark.parametrize("per_step", [1, 2])
def test_pc_sampler_matches_neuir(freq_file, shape, pc_lambda, clip_alpha, per_step):
    # (not clip_alpha=0.5 with pc_lambda=0: most scores are then clipped to exactly 0.5, and top-k breaks such
    # exact ties by the layout of the tensor it ranks, the block in NEUIR's code, the canvas in LLaDA's)
    path, freq = freq_file
    model = toy(scale=4.0)
    prompt, mask = padded_prompts()
    steps = shape["gen_length"] // per_step
    ref = each_row(neuir_pc_sampler, model, prompt, mask, mask_id=MASK, steps=steps, lambd=pc_lambda,
                   alpha=clip_alpha, token_freq=freq, **shape)
    assert_matches(ref, *ours_batched_and_alone(model, prompt, mask, debias=True, pc_lambda=pc_lambda,
                                                clip_alpha=clip_alpha, token_frequencies=path, steps=steps,
                                                **shape))


@pytest.mark.parametrize("temperature", [0.5, 1.0])
def test_pc_sampler_follows_neuir_random_stream(freq_file, temperature):
    path, freq = freq_file
    model = toy(scale=4.0)
    prompt, mask = padded_prompts()
    for r in range(prompt.shape[0]):
        torch.manual_seed(11)
        ref, nfe = neuir_pc_sampler(model, prompt[r:r + 1], mask[r:r + 1], mask_id=MASK, steps=8, gen_length=16,
                                    block_length=8, token_freq=freq, temperature=temperature)
        ours = generate(model, prompt[r:r + 1], SamplerSettings(
            mask_id=MASK, steps=8, gen_length=16, block_length=8, debias=True, pc_lambda=0.25,
            token_frequencies=path, temperature=temperature, seed=11), mask[r:r + 1])
        assert torch.equal(ours.tokens, ref) and ours.nfe == nfe


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("rule", [{}, {"threshold": 0.8}, {"gamma": 0.1, "sigma": 3.0}])
def test_debias_matches_d2cache_sample_tokens(freq_file, shape, rule):
    path, freq = freq_file
    model = toy(scale=4.0)
    prompt, mask = padded_prompts()
    ref = each_row(d2cache_vanilla, model, prompt, mask, mask_id=MASK, debias=True, token_freq=freq,
                   clip_alpha=10.0, **rule, **shape)
    decoder = "eb_sampler" if "gamma" in rule else "llada"
    # d2Cache's threshold compares the calibrated score (up to alpha=10) with tau, as illada does
    assert_matches(ref, *ours_batched_and_alone(model, prompt, mask, decoder=decoder, debias=True,
                                                token_frequencies=path, steps=shape["gen_length"], **rule,
                                                **shape))


def test_shipped_frequencies_are_the_embedded_training_text():
    shipped = json.loads(DEFAULT_FILE.read_text())
    again = count_tokens(embedded_training_rows())
    assert shipped["num_token"] == again["num_token"] and shipped["p_baseline_dict"] == again["p_baseline_dict"]
    freq = load_frequencies(None, 102)
    assert freq.shape == (102,) and float(freq.min()) == pytest.approx(1 / shipped["num_token"])


def test_pc_sampler_runs_on_the_embedded_model_with_the_shipped_file():
    from illada.loading import load

    loaded = load("default")
    ids = torch.tensor([loaded.tokenizer.encode("000352+003366=")])
    s = SamplerSettings(mask_id=loaded.special_ids.mask, gen_length=8, steps=8, block_length=8, debias=True,
                        pc_lambda=0.25)
    out = generate(loaded.model, ids, s)
    assert not (out.generated == loaded.special_ids.mask).any()
    assert loaded.tokenizer.decode(out.generated[0].tolist()).startswith("0003718")


# ------------------------------------------------------------------------------------- combinations, errors
def test_every_decoder_has_an_implementation():
    assert set(decoders.DECODER_CLASSES) == set(DECODERS)


class NoMaskProposals:
    """A transformer whose mask-token logit is pushed down (a trained model never proposes the mask token; a
    random one does, and a decoder that runs until the block is full would then never finish)."""

    def __init__(self, model) -> None:
        self.model, self.config, self.new_kv_cache = model, model.config, model.new_kv_cache

    def __call__(self, x, attention_mask=None, **kw):
        logits = self.model(x, attention_mask, **kw)
        logits[..., self.config.mask_token_id] -= 30.0
        return logits


ALL = [dict(decoder="eb_sampler"), dict(decoder="eb_sampler_sglang"), dict(decoder="hierarchy"),
       dict(sigma=5.0), dict(debias=True, pc_lambda=0.25), dict(decoder="eb_sampler", sigma=5.0, debias=True)]


@pytest.fixture(scope="module")
def freq48(tmp_path_factory):
    """A frequency file for the vocabulary of tests.toy_models.tiny_transformer (48 ids)."""
    path = tmp_path_factory.mktemp("freq") / "freq48.json"
    path.write_text(json.dumps(count_tokens([list(range(3, 40)) * 3, [0, 1, 2] * 50])))
    return str(path)


def with_freq(kw, path):
    return {**kw, "token_frequencies": path} if kw.get("debias") else kw


@pytest.mark.parametrize("kw", ALL)
@pytest.mark.parametrize("cache", ["prefix", "dual"])
def test_caches_are_exact_for_a_one_layer_model(kw, cache, freq48):
    kw = with_freq(kw, freq48)
    # one layer: cached keys/values never go stale within a block, so a cached run equals the plain one
    model = NoMaskProposals(tiny_transformer(n_layers=1, dtype=torch.float64))
    prompt, mask = padded_prompts(vocab=48)
    base = SamplerSettings(mask_id=47, gen_length=16, steps=16, block_length=8, **kw)
    plain = generate(model, prompt, base, mask)
    cached = generate(model, prompt, base.replace(cache=cache), mask)
    assert torch.equal(cached.tokens, plain.tokens) and cached.nfe == plain.nfe


@pytest.mark.parametrize("kw", ALL)
def test_batched_equals_one_by_one_with_guidance_and_variable_length(kw, freq48):
    kw = with_freq(kw, freq48)
    model = NoMaskProposals(tiny_transformer())
    prompt, mask = padded_prompts(vocab=48)
    for extra in ({"cfg_scale": 1.0}, {"variable_length": True, "eos_id": 1}):
        s = SamplerSettings(mask_id=47, gen_length=16, steps=16, block_length=4, **kw, **extra)
        batched = generate(model, prompt, s, mask)
        for r in range(prompt.shape[0]):
            alone = generate(model, prompt[r:r + 1], s, mask[r:r + 1])
            width = alone.tokens.shape[1]
            assert torch.equal(batched.tokens[r, :width], alone.tokens[0])


@pytest.mark.parametrize("kw,field", [
    (dict(decoder="beam"), "decoder"),
    (dict(decoder=None), "decoder"),
    (dict(gamma=0.1), "gamma"),
    (dict(decoder="eb_sampler", gamma=-0.1), "gamma"),
    (dict(decoder="eb_sampler", gamma=float("nan")), "gamma"),
    (dict(decoder="eb_sampler", threshold=0.9), "threshold"),
    (dict(decoder="eb_sampler_sglang", temperature=0.5), "temperature"),
    (dict(decoder="eb_sampler_sglang", remasking="entropy"), "remasking"),
    (dict(decoder="eb_sampler_sglang", sigma=1.0), "sigma"),
    (dict(decoder="hierarchy", low_threshold=1.5), "low_threshold"),
    (dict(decoder="hierarchy", low_threshold=float("nan")), "low_threshold"),
    (dict(decoder="hierarchy", threshold=-0.1), "threshold"),
    (dict(decoder="hierarchy", factor=1.0), "factor"),
    (dict(decoder="hierarchy", remasking="random"), "remasking"),
    (dict(sigma=0.0), "sigma"),
    (dict(clip_alpha=5.0), "clip_alpha"),
    (dict(pc_lambda=0.25), "pc_lambda"),
    (dict(debias=True, clip_alpha=0.0), "clip_alpha"),
    (dict(debias=True, pc_lambda=-1.0), "pc_lambda"),
    (dict(debias=True, remasking="entropy"), "debias"),
    (dict(debias="yes"), "debias"),
])
def test_invalid_settings_name_the_field(kw, field):
    with pytest.raises(ValueError, match=rf"^SamplerSettings\.{field}="):
        SamplerSettings(mask_id=MASK, **kw)


def test_published_defaults_are_filled_in():
    s = lambda **kw: SamplerSettings(mask_id=MASK, **kw)  # noqa: E731
    assert s(decoder="eb_sampler").gamma == 0.001 and s(decoder="eb_sampler_sglang").gamma == 0.15
    h = s(decoder="hierarchy")
    assert (h.threshold, h.low_threshold) == (None, 0.4)  # dInfer's HierarchyDecoder constructor
    d = s(debias=True)
    assert (d.clip_alpha, d.pc_lambda) == (10.0, 0.0)
    assert s().threshold is None and s().decoder == "llada"


@pytest.mark.parametrize("content", ["not json", json.dumps({"num_token": 10}), json.dumps(
    {"num_token": 10, "p_baseline_dict": {"500": 3}})])
def test_bad_frequency_file_fails_before_any_forward(tmp_path, content):
    path = tmp_path / "f.json"
    path.write_text(content)
    model = tiny_transformer()
    model_calls = []
    real = model.forward
    model.forward = lambda *a, **k: model_calls.append(1) or real(*a, **k)
    s = SamplerSettings(mask_id=47, gen_length=8, steps=8, block_length=8, debias=True, token_frequencies=str(path))
    with pytest.raises(ValueError, match=r"^SamplerSettings\.token_frequencies="):
        generate(model, padded_prompts(vocab=48)[0], s)
    assert not model_calls
    other = tmp_path / "other_tokenizer.json"
    other.write_text(json.dumps({"num_token": 10, "p_baseline_dict": {"5": 3}, "vocab_size": 1000}))
    with pytest.raises(ValueError, match="vocabulary of 1000, the model has 48"):
        generate(model, padded_prompts(vocab=48)[0], s.replace(token_frequencies=str(other)))
    missing = s.replace(token_frequencies=str(tmp_path / "absent.json"))
    with pytest.raises(ValueError, match="no such file"):
        generate(model, padded_prompts(vocab=48)[0], missing)


# ------------------------------------------------------------------------------------------------ benchmark
def test_benchmark_resolves_sampler_configs_with_their_defaults():
    from illada.benchmarks.decoders import METHODS, knobs, sampler_config

    for name in METHODS:
        config = sampler_config(name)
        SamplerSettings(mask_id=5, **config)  # every field is a SamplerSettings field with a valid value
    assert sampler_config("eb_sampler")["decoder"] == "eb_sampler" and sampler_config("eb_sampler")["gen_length"] == 8
    assert knobs("pc_sampler", sampler_config("pc_sampler")) == "debias=True, clip_alpha=10.0, pc_lambda=0.25"


def test_benchmark_writes_bench_out_and_never_the_committed_report_unasked(tmp_path, monkeypatch, capsys):
    from illada.benchmarks import decoders as bench
    from illada.benchmarks.output import RESULTS_DIR

    with pytest.raises(SystemExit, match="pass --update-results"):
        bench.main(["--out", str(RESULTS_DIR / bench.REPORT), "--limit", "1"])
    monkeypatch.chdir(tmp_path)
    bench.main(["--limit", "2", "--methods", "fixed,eb_sampler", "--repeats", "0"])
    report = (tmp_path / "bench_out" / "decoders.md").read_text()
    assert "| fixed | steps=gen_length |" in report and "| eb_sampler | decoder=eb_sampler, gamma=0.001 |" in report
    assert "NFE/sample" in report and "tokens/forward" in report and "tokens/s" in report


def test_benchmark_times_wino_slow_fast_and_pc_sampler_against_their_transcribed_originals(tmp_path, capsys):
    from illada.benchmarks import decoders as bench

    rows = bench.speed_vs_originals(repeats=1, gen_length=16, block_length=8)
    assert [r["decoder"] for r in rows] == ["wino", "slow_fast", "pc_sampler"]
    for row in rows:
        ours, original = row["NFE ours / original"].split(" / ")
        assert row["same tokens"] == "yes" and ours == original, row
        assert float(row["speed ratio"]) > 0
    bench.main(["--limit", "0", "--repeats", "1", "--out", str(tmp_path / "speed.md")])
    report = (tmp_path / "speed.md").read_text()
    assert "## Speed against the transcribed originals" in report and "| slow_fast |" in report
    assert "Decoding strategies on the embedded model" not in report  # --limit 0: the speed section only


def test_decoder_search_and_ablation_run(tmp_path, monkeypatch, capsys):
    from sweeps.app import main

    monkeypatch.setenv("ILLADA_SWEEP_ROOT", str(tmp_path))
    for args in (["+ablation=search_decoders", "hydra.sweeper.n_trials=4"], ["+ablation=decoders"]):
        try:
            main(["-m", *args, "task.limit=2", "--no-plot"])
        except SystemExit as e:
            assert e.code in (0, None)
    out = capsys.readouterr().out
    assert "0 failed" in out
    records = list((tmp_path / "decoders" / "records").glob("*.json"))
    decoders_run = {json.loads(p.read_text())["settings"]["sampler"]["decoder"] for p in records}
    assert {"llada", "eb_sampler", "eb_sampler_sglang", "hierarchy"} <= decoders_run
