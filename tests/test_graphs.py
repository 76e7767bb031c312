"""CUDA-graph replay of repeated forwards (illada.graphs): eager fallbacks everywhere a graph cannot run, and
on a GPU (``-m gpu``) replays that give the eager logits and cache, and samplers that give the same tokens."""

from __future__ import annotations

import pytest
import torch

from illada.graphs import GraphedModel
from illada.model import Transformer
from illada.sampling import SamplerSettings, generate
from tests.conftest import tiny_config

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def model_on(device: str, **kw) -> Transformer:
    return Transformer.random(tiny_config("llada", **kw), device=device, dtype=torch.float32, seed=0)


def test_off_cuda_every_forward_runs_eagerly_and_gives_the_models_logits():
    model = model_on("cpu")
    graphed = GraphedModel(model)
    x = torch.randint(0, 39, (1, 12))
    cache = model.new_kv_cache(1, 12)
    for _ in range(3):
        torch.testing.assert_close(graphed(x), model(x))
        torch.testing.assert_close(graphed(x, kv_cache=cache, cache_start=0), model(x))
    assert (graphed.captures, graphed.replays, graphed.eager) == (0, 0, 6)
    assert graphed.config is model.config and graphed.new_kv_cache(1, 4).max_len == 4  # the model's own API


@pytest.mark.gpu
@cuda
def test_with_autograd_on_or_another_backend_nothing_stale_is_replayed():
    model = model_on("cuda")
    graphed = GraphedModel(model)
    x = torch.randint(0, 39, (1, 16), device="cuda")
    for _ in range(3):
        graphed(x)  # autograd on: eager every time
    assert (graphed.captures, graphed.eager) == (0, 3)
    with torch.no_grad():
        for backend in ("sdpa", "sdpa", "eager", "eager"):
            model.attn_backend = backend
            graphed(x)
    assert graphed.captures == 2  # one graph per backend


def test_a_sampler_through_the_wrapper_gives_the_same_tokens_on_cpu():
    model = model_on("cpu")
    prompt = torch.randint(0, 39, (1, 6))
    settings = SamplerSettings(mask_id=39, gen_length=8, steps=8, block_length=4, cache="dual")
    plain = generate(model, prompt, settings)
    graphed = generate(GraphedModel(model), prompt, settings)
    assert torch.equal(plain.tokens, graphed.tokens) and plain.nfe == graphed.nfe


@pytest.mark.gpu
@cuda
@torch.no_grad()  # graphs never capture autograd
def test_a_forward_seen_twice_is_captured_then_replayed_with_the_eager_logits_and_cache():
    model = model_on("cuda")
    graphed = GraphedModel(model)
    x = torch.randint(0, 39, (1, 16), device="cuda")
    ref_cache, cache = model.new_kv_cache(1, 16), model.new_kv_cache(1, 16)
    model(x, kv_cache=ref_cache, cache_start=0)
    graphed(x, kv_cache=cache, cache_start=0)
    for step in range(4):
        x[0, 8 + step] = (x[0, 8 + step] + 1) % 39  # the canvas changes in place between steps, as in a sampler
        span = x[:, 8:12]
        want = model(span, kv_cache=ref_cache, cache_start=8)
        got = graphed(span, kv_cache=cache, cache_start=8)
        torch.testing.assert_close(got, want)
        torch.testing.assert_close(cache.k[1], ref_cache.k[1])
    assert (graphed.captures, graphed.replays) == (1, 2)  # eager at first sight, captured at the second
    out = graphed(x[:, 8:12], kv_cache=cache, cache_start=8)
    assert out.data_ptr() != graphed(x[:, 8:12], kv_cache=cache, cache_start=8).data_ptr()  # fresh each call


@pytest.mark.gpu
@cuda
def test_samplers_through_graphs_give_the_plain_tokens_on_cuda():
    model = model_on("cuda")
    prompt = torch.randint(0, 39, (1, 6), device="cuda")
    for cache in ("none", "prefix", "dual"):
        settings = SamplerSettings(mask_id=39, gen_length=16, steps=16, block_length=4, cache=cache)
        graphed = GraphedModel(model)
        assert torch.equal(generate(graphed, prompt, settings).tokens, generate(model, prompt, settings).tokens)
        assert graphed.replays > 0, cache


@pytest.mark.gpu
@cuda
@torch.no_grad()  # graphs never capture autograd
def test_a_forward_that_syncs_the_host_falls_back_to_eager():
    model = Transformer.random(tiny_config("llada_moe", n_experts=4, experts_per_token=2), device="cuda", seed=0)
    graphed = GraphedModel(model)
    x = torch.randint(0, 39, (1, 8), device="cuda")
    for _ in range(3):
        torch.testing.assert_close(graphed(x), model(x))
    assert graphed.captures == 0 and graphed.refused and graphed.eager == 3
