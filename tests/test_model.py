"""The Transformer itself: backends, padding, KV cache, dtypes, presets."""

from __future__ import annotations

import pytest
import torch

from illada.attention import flash_attn_available
from illada.config import PRESETS, ConfigError, ModelConfig, preset
from illada.model import Transformer
from illada.tokenizer import pad_left
from tests.conftest import tiny_config

CPU_BACKENDS = ["eager", "sdpa"]


@pytest.fixture
def model():
    return Transformer.random(tiny_config(), seed=3, std=0.1)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 3e-2)])
def test_backends_agree(dtype, tol):
    m = Transformer.random(tiny_config(), dtype=dtype, seed=3, std=0.1)
    ids = torch.randint(0, 40, (2, 13))
    mask = torch.ones(2, 13, dtype=torch.long)
    mask[1, :4] = 0
    outs = {}
    for name in CPU_BACKENDS:
        m.attn_backend = name
        outs[name] = m(ids, mask).float()
    ref = outs.pop("eager")
    scale = ref.abs().max()
    for name, out in outs.items():
        assert (out - ref).abs().max() / scale < tol, name


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_left_padded_batch_matches_unpadded_rows(model, backend):
    model.attn_backend = backend
    rows = [[5, 6, 7, 8, 9, 10, 11], [12, 13, 14], [15, 16, 17, 18, 19]]
    ids, mask = pad_left(rows, pad_id=0)
    batched = model(ids, mask)
    for i, row in enumerate(rows):
        alone = model(torch.tensor([row]))
        torch.testing.assert_close(batched[i, -len(row):], alone[0], rtol=1e-5, atol=1e-5)


def test_padding_changes_nothing_but_bidirectional_context_does(model):
    ids = torch.randint(0, 40, (1, 8))
    base = model(ids)
    changed = ids.clone()
    changed[0, -1] = (changed[0, -1] + 1) % 40
    # bidirectional: changing the last token moves the logits of the first position
    assert (model(changed)[0, 0] - base[0, 0]).abs().max() > 1e-4


def test_unshifted_logits_position_i_predicts_token_i():
    # With a near-identity network (tied embeddings, tiny residual branches), position i must score its own token.
    cfg = tiny_config(vocab_size=32, dim=64)
    m = Transformer.random(cfg, seed=0, std=0.001)
    with torch.no_grad():
        m.tok_embeddings.weight.normal_(0, 1.0)
    ids = torch.randint(0, 32, (1, 10))
    assert torch.equal(m(ids).argmax(-1), ids)


def test_kv_cache_full_forward_then_prefix_and_dual_steps(model):
    ids = torch.randint(0, 40, (2, 12))
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[0, :3] = 0
    full = model(ids, mask)
    cache = model.new_kv_cache(2, 12)
    torch.testing.assert_close(model(ids, mask, kv_cache=cache), full)
    # prefix cache: with an unchanged canvas, recomputing x[s:] against cached K/V is exact
    torch.testing.assert_close(model(ids[:, 5:], mask, kv_cache=cache, cache_start=5), full[:, 5:])
    # dual cache: a middle block against cached prefix and suffix, also exact while nothing changed
    torch.testing.assert_close(model(ids[:, 5:9], mask, kv_cache=cache, cache_start=5), full[:, 5:9])
    # after the block changes, the dual-cache step sees the new block but a stale suffix (approximate by design)
    ids2 = ids.clone()
    ids2[:, 5:9] = (ids2[:, 5:9] + 1) % 40
    dual = model(ids2[:, 5:9], mask, kv_cache=cache, cache_start=5)
    assert (dual - full[:, 5:9]).abs().max() > 1e-4


def test_forward_rejects_bad_shapes(model):
    ids = torch.randint(0, 40, (2, 6))
    with pytest.raises(ValueError, match="attention_mask must have shape"):
        model(ids, torch.ones(2, 5))
    with pytest.raises(ValueError, match="input_ids must be"):
        model(ids[0])
    cache = model.new_kv_cache(2, 6)
    with pytest.raises(ValueError, match="cache_start=4"):
        model(ids[:, :3], kv_cache=cache, cache_start=4)


def test_unknown_backend_named():
    with pytest.raises(ValueError, match="'fast'"):
        Transformer(tiny_config(), attn_backend="fast")


@pytest.mark.skipif(flash_attn_available(), reason="flash-attn present")
def test_flash_attn_unavailable_is_a_clear_error(model):
    with pytest.raises(ValueError, match="'flash_attn' needs CUDA"):
        model.attn_backend = "flash_attn"


@pytest.mark.parametrize("name,total,non_embedding", [("illada-8b", 7.62e9, 6.98e9), ("llada-8b", 8.02e9, 6.98e9)])
def test_presets_have_the_real_8b_shapes(name, total, non_embedding):
    cfg = preset(name)
    m = Transformer.empty(cfg, device="meta", dtype=torch.bfloat16)
    n = sum(p.numel() for p in m.parameters())
    assert n == cfg.num_parameters
    assert abs(n - total) / total < 0.005
    emb = cfg.vocab_size * cfg.dim * (1 if cfg.tie_embeddings else 2)
    assert abs((n - emb) - non_embedding) / non_embedding < 0.005
    assert all(p.dtype == torch.bfloat16 for p in m.parameters())
    assert (m.output.weight is m.tok_embeddings.weight) == cfg.tie_embeddings


def test_random_build_is_in_target_dtype_and_seeded():
    cfg = tiny_config()
    a = Transformer.random(cfg, dtype=torch.bfloat16, seed=7)
    b = Transformer.random(cfg, dtype=torch.bfloat16, seed=7)
    assert all(p.dtype == torch.bfloat16 for p in a.parameters())
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert a.output.weight is a.tok_embeddings.weight


def test_config_validation_names_the_field():
    with pytest.raises(ConfigError, match="n_kv_heads=3"):
        tiny_config(n_kv_heads=3)
    with pytest.raises(ConfigError, match="dim"):
        ModelConfig(vocab_size=10, dim=0, n_layers=1, n_heads=1, n_kv_heads=1, ffn_dim=4)
    with pytest.raises(ConfigError, match="unknown model preset 'gpt2'"):
        preset("gpt2")
    assert set(PRESETS) == {"llada-8b", "illada-8b", "llada-1.5-8b", "dream-7b", "llada-moe-7b-a1b"}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_backends_agree_in_bf16():
    m = Transformer.random(tiny_config(dim=128, n_heads=4, n_kv_heads=2), device="cuda", dtype=torch.bfloat16, std=0.1)
    ids = torch.randint(0, 40, (2, 33), device="cuda")
    mask = torch.ones_like(ids)
    mask[1, :7] = 0
    backends = CPU_BACKENDS + (["flash_attn"] if flash_attn_available() else [])
    outs = {}
    for b in backends:
        m.attn_backend = b
        outs[b] = m(ids, mask).float()
    ref = outs.pop("eager")
    for b, out in outs.items():
        # compare real (non-pad) query positions only
        err = ((out - ref).abs().amax(-1) * mask).max() / ref.abs().max()
        assert err < 3e-2, b
