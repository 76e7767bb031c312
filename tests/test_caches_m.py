"""dKV-Cache (cache='dkv', variants decode and greedy) and dLLM-Cache against transcriptions of their references
(tests/reference_caches_m.py)."""

from __future__ import annotations

import math

import pytest
import torch

from illada.config import ModelConfig
from illada.model import Transformer
from illada.sampling import SamplerSettings, generate
from illada.sampling import loop
from illada.sampling.dkv_cache import window_columns
from tests.reference_caches_m import (_find_window_tokens, dkv_decode_generate, dkv_greedy_generate,
                                     dllm_cache_generate)
from tests.test_sampling import padded_prompts as left_padded_prompts
from tests.toy_models import Recorder, one_by_one, tiny_transformer

MASK = 47


def padded_prompts(batch: int = 3, length: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    return left_padded_prompts(batch, length, seed, vocab=MASK + 1)


def assert_rows_stop_as_alone(model, prompt: torch.Tensor, mask: torch.Tensor, s: SamplerSettings) -> None:
    """Variable length: each row of the batch stops where it stops alone, with the same tokens up to there."""
    batched = generate(model, prompt, s, mask)
    for row in range(prompt.shape[0]):
        alone = generate(model, prompt[row:row + 1, mask[row].bool()], s)
        n = int(alone.generated_tokens[0])
        assert int(batched.generated_tokens[row]) == n
        assert torch.equal(batched.generated[row, :n], alone.generated[0, :n]), row


@pytest.mark.parametrize("gen_length,steps,block_length",
                         [(16, 16, 8), (24, 12, 8), (16, 8, 16), (12, 12, 4), (8, 16, 8)])
@pytest.mark.parametrize("cache_steps", [1, 2, 3, 4, 8])
def test_dkv_matches_reference_tokens_and_nfe(gen_length, steps, block_length, cache_steps):
    model = tiny_transformer(dtype=torch.float64)
    prompt = padded_prompts(batch=2)[0][:, -4:]  # the reference has no padding mask
    ref, nfe = dkv_decode_generate(model, prompt.clone(), steps, gen_length, block_length, MASK, cache_steps)
    ours = generate(model, prompt, SamplerSettings(mask_id=MASK, gen_length=gen_length, steps=steps,
                                                   block_length=block_length, cache="dkv", cache_steps=cache_steps))
    assert torch.equal(ours.tokens, ref)
    assert ours.nfe == nfe == steps


@pytest.mark.parametrize("temperature,remasking", [(1.0, "low_confidence"), (0.5, "random"), (0.0, "random")])
@pytest.mark.parametrize("gen_length,steps,block_length,cache_steps", [(16, 16, 8, 3), (24, 12, 8, 2), (16, 16, 16, 8)])
def test_dkv_follows_the_references_random_stream(temperature, remasking, gen_length, steps, block_length,
                                                  cache_steps):
    # a cached step draws its noise / random scores over the fed columns only, as the reference
    model = tiny_transformer(dtype=torch.float64)
    prompt = padded_prompts(batch=2)[0][:, -4:]
    torch.manual_seed(5)
    ref, nfe = dkv_decode_generate(model, prompt.clone(), steps, gen_length, block_length, MASK, cache_steps,
                                   temperature, remasking)
    ours = generate(model, prompt, SamplerSettings(
        mask_id=MASK, gen_length=gen_length, steps=steps, block_length=block_length, cache="dkv",
        cache_steps=cache_steps, temperature=temperature, remasking=remasking, seed=5))
    assert torch.equal(ours.tokens, ref)
    assert ours.nfe == nfe


def test_dkv_is_approximate_and_cache_steps_one_is_the_uncached_run():
    model = tiny_transformer(dtype=torch.float64)
    prompt, mask = padded_prompts()
    base = SamplerSettings(mask_id=MASK, gen_length=24, steps=24, block_length=8)
    plain = generate(model, prompt, base, mask).tokens
    # every step a full forward: the uncached tokens (float64 confidence on both sides)
    every = generate(model, prompt, base.replace(cache="dkv", cache_steps=1, confidence_precision="float64"), mask)
    assert torch.equal(every.tokens, generate(model, prompt, base.replace(confidence_precision="float64"), mask).tokens)
    # stale keys change some tokens of a two-layer model
    assert not torch.equal(generate(model, prompt, base.replace(cache="dkv", cache_steps=8), mask).tokens, plain)


@pytest.mark.parametrize("kw", [dict(), dict(cache_steps=3), dict(threshold=0.5), dict(threshold=0.9, cache_steps=2),
                                dict(decoder="eb_sampler"), dict(decoder="hierarchy")])
def test_dkv_batched_equals_one_by_one(kw):
    model = tiny_transformer()
    prompt, mask = padded_prompts()
    s = SamplerSettings(mask_id=MASK, gen_length=16, steps=16, block_length=8, cache="dkv", **kw)
    assert torch.equal(generate(model, prompt, s, mask).tokens, one_by_one(model, prompt, mask, s)[0])


def test_dkv_feeds_the_columns_not_decoded_one_step_earlier():
    model = Recorder(tiny_transformer())
    prompt = padded_prompts(batch=1)[0]
    generate(model, prompt, SamplerSettings(mask_id=MASK, gen_length=16, steps=16, block_length=8, cache="dkv",
                                            cache_steps=4))
    T = 6 + 16
    widths = [shape[1] for shape, _ in model.calls]
    # steps 0, 1, 4 of a block are full; at step i the fed columns are the masks left before step i-1 (one token
    # per step): 16 - (i - 1) in block 0, 8 - (i - 1) in block 1
    first = [T, T, 15, 14, T, 12, 11, 10]
    second = [T, T, 7, 6, T, 4, 3, 2]
    assert widths == first + second


def test_indexed_cache_forward_writes_only_real_slots():
    model = tiny_transformer(n_layers=1, dtype=torch.float64)
    x = torch.randint(0, 40, (2, 6))
    kv = model.new_kv_cache(2, 6)
    model(x, kv_cache=kv)
    before = [k.clone() for k in kv.k]
    kv.index = torch.tensor([[1, 4], [0, 2]])
    kv.write = torch.tensor([[True, True], [True, False]])
    model(torch.tensor([[5, 6], [7, 8]]), position_ids=kv.index, kv_cache=kv)
    changed = (kv.k[0] != before[0]).any(dim=-1).any(dim=1)  # [B, T]
    assert changed.tolist() == [[False, True, False, False, True, False], [True, False, False, False, False, False]]


@pytest.mark.parametrize("kw,match", [
    (dict(cache_steps=4), r"cache_steps=4: only used by cache dkv \(cache='none'\)"),
    (dict(cache="dual", cache_steps=4), "cache_steps=4: only used by cache dkv"),
    (dict(cache="dkv", cache_steps=0), "cache_steps=0: the refresh interval"),
    (dict(cache="dkv", cache_steps=True), "cache_steps=True"),
    (dict(cache="dkv", cfg_scale=1.0), "cfg_scale=1.0: cache 'dkv'"),
    (dict(cache="dkv", decoder="wino"), "cache='dkv': decoder wino"),
    (dict(cache="dkv", dkv_variant="lazy"), r"dkv_variant='lazy': choose one of \['decode', 'greedy'\]"),
    (dict(cache="dkv", dkv_window=2), r"dkv_window=2: only used by dkv_variant 'greedy'"),
    (dict(dkv_window=2), r"dkv_window=2: only used by cache dkv \(cache='none'\)"),
    (dict(cache="dkv", dkv_variant="greedy"), "remasking='low_confidence': dkv_variant 'greedy' decodes each block"),
    (dict(cache="dkv", dkv_variant="greedy", remasking="random", dkv_window=-1), "dkv_window=-1: masked neighbours"),
    (dict(cache="dkv", dkv_variant="greedy", remasking="random", threshold=0.9),
     "threshold=0.9: dkv_variant 'greedy' needs LLaDA's fixed schedule"),
    (dict(cache="dkv", dkv_variant="greedy", remasking="random", decoder="eb_sampler"),
     "decoder='eb_sampler': dkv_variant 'greedy' needs LLaDA's fixed schedule"),
    (dict(cache="dkv", dkv_variant="greedy", remasking="random", sigma=3.0), "sigma=3.0: dkv_variant 'greedy'"),
])
def test_dkv_bad_settings_name_the_knob(kw, match):
    with pytest.raises(ValueError, match=match):
        SamplerSettings(mask_id=MASK, gen_length=16, steps=16, block_length=8, **kw)


def test_dkv_defaults_and_shifted_models_are_refused_before_any_forward():
    decode = SamplerSettings(mask_id=MASK, cache="dkv")
    assert (decode.dkv_variant, decode.cache_steps, decode.dkv_window) == ("decode", 8, None)
    # dKV-Cache README: llada_generate.py --greedy --sampling-alg random --cache-steps 2 --window-size 4
    greedy = SamplerSettings(mask_id=MASK, cache="dkv", dkv_variant="greedy", remasking="random")
    assert (greedy.cache_steps, greedy.dkv_window, greedy.draws_block_order) == (2, 4, True)
    cfg = ModelConfig(vocab_size=48, dim=32, n_layers=1, n_heads=4, n_kv_heads=2, ffn_dim=64, mask_token_id=MASK,
                      max_seq_len=64, logits_shift=True)
    model = Recorder(Transformer.random(cfg))
    with pytest.raises(ValueError, match="cache='dkv' needs unshifted logits"):
        generate(model, padded_prompts(batch=1)[0], SamplerSettings(mask_id=MASK, gen_length=8, steps=8,
                                                                  block_length=8, cache="dkv"))
    assert model.calls == []


# ------------------------------------------------------------------------------------------- dKV-Cache-Greedy
def greedy(**kw) -> SamplerSettings:
    return SamplerSettings(**{**dict(mask_id=MASK, gen_length=16, steps=16, block_length=8, cache="dkv",
                                     dkv_variant="greedy", remasking="random", seed=3), **kw})


@pytest.mark.parametrize("gen_length,steps,block_length",
                         [(16, 16, 8), (24, 12, 8), (16, 8, 16), (12, 12, 4), (8, 16, 8)])
@pytest.mark.parametrize("cache_steps,window", [(2, 4), (1, 4), (2, 0), (3, 1), (4, 2), (8, 16)])
def test_dkv_greedy_matches_reference_tokens_nfe_and_fed_columns(gen_length, steps, block_length, cache_steps,
                                                                  window):
    model = Recorder(tiny_transformer(dtype=torch.float64))
    prompt = padded_prompts(batch=2)[0][:, -4:]  # the reference has no padding mask
    s = greedy(gen_length=gen_length, steps=steps, block_length=block_length, cache_steps=cache_steps,
               dkv_window=window)
    torch.manual_seed(s.seed)  # the reference draws its order from torch's global generator
    ref, nfe, widths = dkv_greedy_generate(model.model, prompt.clone(), steps, gen_length, block_length, MASK,
                                           cache_steps, window)
    ours = generate(model, prompt, s)
    assert torch.equal(ours.tokens, ref)
    assert ours.nfe == nfe == steps
    assert [shape[1] for shape, _ in model.calls] == widths


@pytest.mark.parametrize("temperature", [0.5, 1.0])
@pytest.mark.parametrize("cache_steps,window", [(2, 4), (3, 1), (4, 0)])
def test_dkv_greedy_follows_the_references_random_stream(temperature, cache_steps, window):
    model = tiny_transformer(dtype=torch.float64)
    prompt = padded_prompts(batch=2)[0][:, -4:]
    s = greedy(gen_length=24, steps=12, cache_steps=cache_steps, dkv_window=window, temperature=temperature)
    torch.manual_seed(s.seed)
    ref, nfe, _ = dkv_greedy_generate(model, prompt.clone(), 12, 24, 8, MASK, cache_steps, window, temperature)
    ours = generate(model, prompt, s)
    assert torch.equal(ours.tokens, ref)
    assert ours.nfe == nfe


def test_dkv_greedy_feeds_last_next_and_window_columns():
    model = Recorder(tiny_transformer())
    generate(model, padded_prompts(batch=1)[0], greedy(cache_steps=4, dkv_window=2))
    # 16 steps over two blocks of 8: one token per step; steps 0 and 4 of a block are full forwards (T = 22);
    # a cached step feeds the token decoded last step, its own and 2 masked neighbours of its own
    # (the last block's last steps find fewer masked neighbours: nothing is masked after it)
    assert [shape[1] for shape, _ in model.calls] == [22, 4, 4, 4, 22, 4, 4, 4] + [22, 4, 4, 4, 22, 4, 3, 2]


def test_dkv_greedy_decodes_each_block_in_the_order_drawn_at_its_start():
    class Masks:  # records which columns are masked at every forward; never proposes the mask token itself
        def __init__(self, model):
            self.model, self.config, self.new_kv_cache, self.seen = model, model.config, model.new_kv_cache, []

        def __call__(self, x, attention_mask=None, **kw):
            if x.shape[1] == 22:
                self.seen.append(x == MASK)
            logits = self.model(x, attention_mask, **kw)
            logits[..., MASK] = -1e4
            return logits

    model = Masks(tiny_transformer())
    prompt = padded_prompts(batch=2)[0]
    out = generate(model, prompt, greedy(cache_steps=1))  # every step a full forward
    seen = torch.stack(model.seen + [out.tokens == MASK])  # [forwards + 1, B, T]
    decoded = seen[:-1] & ~seen[1:]  # the column each step decoded (one per step)
    assert decoded.sum(dim=-1).eq(1).all()
    columns = decoded.long().argmax(dim=-1).T  # [B, steps]
    torch.manual_seed(3)
    for b in range(2):  # one U(0, 1) draw over the canvas per block, decoded from the highest score down
        scores = torch.rand(2, 22)[:, 6 + 8 * b:14 + 8 * b]
        assert torch.equal(columns[:, 8 * b:8 * b + 8], 6 + 8 * b + scores.argsort(dim=1, descending=True))


def _content_order(sampler, x, start, end):
    """A deterministic order that depends only on a row's own tokens and a column's distance from the canvas end:
    a row gets the same order alone as in a left-padded batch."""
    T = x.shape[1]
    dist = torch.arange(T, 0, -1, dtype=torch.float64)
    seed = x[:, :start].sum(dim=1, keepdim=True).double()
    order = torch.frac(torch.sin(dist * 12.9898 + seed * 78.233) * 43758.5453).float()
    order[:, :start] = -math.inf
    order[:, end:] = -math.inf
    return order


@pytest.mark.parametrize("kw", [dict(), dict(cache_steps=3, dkv_window=0), dict(dkv_window=16, steps=8),
                                dict(gen_length=24, steps=12, cache_steps=4, dkv_window=3)])
def test_dkv_greedy_batched_equals_one_by_one(kw, monkeypatch):
    monkeypatch.setattr(loop._Sampler, "_block_order", _content_order)
    model = tiny_transformer()
    prompt, mask = padded_prompts()
    s = greedy(**kw)
    assert torch.equal(generate(model, prompt, s, mask).tokens, one_by_one(model, prompt, mask, s)[0])


def test_dkv_greedy_variable_length_rows_stop_independently(monkeypatch):
    monkeypatch.setattr(loop._Sampler, "_block_order", _content_order)
    model = tiny_transformer()
    prompt, mask = padded_prompts()
    s = greedy(gen_length=24, steps=24, variable_length=True, stop_ids=(5, 9, 21))
    assert_rows_stop_as_alone(model, prompt, mask, s)


@pytest.mark.parametrize("seed", range(40))
def test_window_columns_is_the_references_pointer_walk(seed):
    g = torch.Generator().manual_seed(seed)
    T = int(torch.randint(1, 24, (1,), generator=g))
    width = int(torch.randint(0, 8, (1,), generator=g))
    masked = torch.rand(T, generator=g) < 0.6
    marked = torch.rand(T, generator=g) < 0.2
    column = int(torch.randint(0, T, (1,), generator=g))
    marked[column] = True
    ref = marked.clone()
    _find_window_tokens(ref, torch.tensor([column]), masked, width)
    cols = torch.arange(T)
    ours = marked | window_columns((cols - column)[None], (masked & ~marked)[None], width)[0]
    assert torch.equal(ours, ref)


# ------------------------------------------------------------------------------------------------- dLLM-Cache
DLLM_GRID = [(1, 1, 0.0), (50, 7, 0.25), (3, 2, 0.25), (4, 3, 0.5), (2, 5, 1.0), (5, 4, 0.0), (1, 3, 0.3)]


@pytest.mark.parametrize("kp,kr,rho", DLLM_GRID)
@pytest.mark.parametrize("gen_length,steps,block_length", [(16, 16, 8), (24, 12, 8), (12, 12, 4), (8, 16, 8)])
def test_dllm_matches_reference_tokens_and_nfe(kp, kr, rho, gen_length, steps, block_length):
    model = tiny_transformer(dtype=torch.float64)
    prompt = padded_prompts(batch=2)[0][:, -4:]  # the reference has no padding mask
    ref, nfe = dllm_cache_generate(model, prompt.clone(), steps, gen_length, block_length, MASK, kp, kr, rho)
    ours = generate(model, prompt, SamplerSettings(
        mask_id=MASK, gen_length=gen_length, steps=steps, block_length=block_length, cache="dllm",
        prompt_interval_steps=kp, gen_interval_steps=kr, transfer_ratio=rho))
    assert torch.equal(ours.tokens, ref)
    assert ours.nfe == nfe == steps


def test_dllm_every_forward_refresh_is_the_uncached_run_and_defaults_are_approximate():
    model = tiny_transformer(dtype=torch.float64)
    prompt, mask = padded_prompts()
    base = SamplerSettings(mask_id=MASK, gen_length=24, steps=24, block_length=8)
    plain = generate(model, prompt, base, mask).tokens
    every = SamplerSettings(mask_id=MASK, gen_length=24, steps=24, block_length=8, cache="dllm",
                            prompt_interval_steps=1, gen_interval_steps=1)
    assert torch.equal(generate(model, prompt, every, mask).tokens, plain)
    cached = generate(model, prompt, base.replace(cache="dllm"), mask)
    assert not torch.equal(cached.tokens, plain) and cached.nfe == 24


@pytest.mark.parametrize("kw", [dict(), dict(gen_interval_steps=2, transfer_ratio=0.5),
                                dict(prompt_interval_steps=3, gen_interval_steps=2, transfer_ratio=0.0),
                                dict(steps=8, gen_interval_steps=3, transfer_ratio=1.0)])
def test_dllm_batched_equals_one_by_one(kw):
    model = tiny_transformer()
    prompt, mask = padded_prompts()
    s = SamplerSettings(**{**dict(mask_id=MASK, gen_length=16, steps=16, block_length=8, cache="dllm"), **kw})
    assert torch.equal(generate(model, prompt, s, mask).tokens, one_by_one(model, prompt, mask, s)[0])


@pytest.mark.parametrize("kw,match", [
    (dict(transfer_ratio=0.5), r"transfer_ratio=0.5: only used by cache dllm \(cache='none'\)"),
    (dict(cache="dkv", gen_interval_steps=2), "gen_interval_steps=2: only used by cache dllm"),
    (dict(cache="dllm", prompt_interval_steps=0), "prompt_interval_steps=0: the refresh interval"),
    (dict(cache="dllm", gen_interval_steps=2.0), "gen_interval_steps=2.0"),
    (dict(cache="dllm", transfer_ratio=1.5), r"transfer_ratio=1.5: the share"),
    (dict(cache="dllm", cfg_scale=0.5), "cfg_scale=0.5: cache 'dllm'"),
    (dict(cache="dllm", variable_length=True, eos_id=1), "variable_length=True: cache 'dllm'"),
    (dict(cache="dllm", decoder="slow_fast"), "cache='dllm': decoder slow_fast"),
])
def test_dllm_bad_settings_name_the_knob(kw, match):
    with pytest.raises(ValueError, match=match):
        SamplerSettings(mask_id=MASK, gen_length=16, steps=16, block_length=8, **kw)


def test_dllm_defaults_and_confidence_precision():
    s = SamplerSettings(mask_id=MASK, cache="dllm")
    assert (s.prompt_interval_steps, s.gen_interval_steps, s.transfer_ratio) == (50, 7, 0.25)
    # the reference's LLaDA sampler takes the softmax in the logits' dtype; Fast-dLLM's threshold rule in float64
    assert not s.uses_float64_confidence and s.replace(threshold=0.9).uses_float64_confidence


@pytest.mark.parametrize("kw", [dict(threshold=0.5, prompt_interval_steps=3, gen_interval_steps=2),
                                dict(decoder="hierarchy")])
def test_dllm_adaptive_rules_run_one_row_at_a_time(kw):
    # the refresh schedule counts the call's forwards, so a batch would tie each row to the slowest row's blocks:
    # refused before any forward; one row at a time works
    model = Recorder(tiny_transformer())
    prompt, mask = padded_prompts()
    s = SamplerSettings(mask_id=MASK, gen_length=16, steps=16, block_length=8, cache="dllm", **kw)
    with pytest.raises(ValueError, match=r"batch_size=3: SamplerSettings.cache=.dllm. with an adaptive rule .* \(batch size 1\)"):
        generate(model, prompt, s, mask)
    assert model.calls == []
    out = generate(model, prompt[2:, 4:], s)
    assert not (out.generated == MASK).any()


def test_dllm_adaptive_batch_is_refused_when_a_point_is_resolved():
    from illada.evaluate import Point, resolve

    point = Point(model="default", task="arithmetic", batch_size=16,
                  sampler={"cache": "dllm", "threshold": 0.9, "gen_length": 8, "block_length": 8})
    with pytest.raises(ValueError, match=r"^batch_size=16: SamplerSettings.cache='dllm' with an adaptive rule"):
        resolve(point)
    assert resolve(Point(model="default", task="arithmetic", batch_size=1, sampler=point.sampler)).sampler.cache == "dllm"


def test_dkv_variable_length_rows_stop_independently():
    model = tiny_transformer()
    prompt, mask = padded_prompts()
    s = SamplerSettings(mask_id=MASK, gen_length=24, steps=24, block_length=8, cache="dkv", cache_steps=3,
                        variable_length=True, stop_ids=(5, 9, 21))
    assert_rows_stop_as_alone(model, prompt, mask, s)


# ------------------------------------------------------------------------------------------- sweeps, benchmark
def test_cache_search_and_greedy_sweep_run(tmp_path, monkeypatch, capsys):
    import json

    from sweeps.app import main

    monkeypatch.setenv("ILLADA_SWEEP_ROOT", str(tmp_path))
    for args in (["+ablation=search_caches", "hydra.sweeper.n_trials=6"], ["+ablation=caches", "--dry-run"],
                 ["sampler=dkv_greedy,dkv_cache", "name=dkv"]):
        try:
            main(["-m", *args, "task.limit=2", "--no-plot"])
        except SystemExit as e:
            assert e.code in (0, None)
    out = capsys.readouterr().out
    assert "0 failed" in out and "dry run: nothing was run or written" in out
    records = [json.loads(p.read_text())["settings"]["sampler"] for p in (tmp_path / "dkv" / "records").glob("*.json")]
    assert sorted((r["dkv_variant"], r["cache_steps"], r["dkv_window"], r["remasking"]) for r in records) == [
        ("decode", 8, None, "low_confidence"), ("greedy", 2, 4, "random")]
    from analysis.load import load_sweep

    assert sorted(load_sweep(tmp_path / "dkv", cache=False).points["decoding"]) == ["fixed+dkv cache",
                                                                                    "fixed+dkv greedy cache"]


def test_caches_benchmark_reports_every_cache(tmp_path, monkeypatch):
    from illada.benchmarks import caches

    monkeypatch.chdir(tmp_path)
    caches.main(["--quick", "--limit", "2"])
    report = (tmp_path / "bench_out" / "caches.md").read_text()
    for label, _ in caches.CACHE_RUNS:
        assert f"| embedded | fixed | {label} |" in report
    assert "| embedded | fixed | dKV-Cache-Greedy, uncached (cache_steps=1) |" in report  # its own baseline
    assert "| threshold 0.9 | dKV-Cache-Greedy |" not in report  # fixed schedule only
    assert "tokens differing from no cache" in report and "ms/step" in report and "tokens/s" in report
