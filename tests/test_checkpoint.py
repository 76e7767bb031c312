"""Checkpoints of both formats: bit-exact round trips, sharding, lazy dtype/device, and clear errors."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import illada
from illada.checkpoint import INDEX_FILE, CheckpointError, save_checkpoint, tensor_names
from illada.config import ConfigError
from illada.model import Transformer
from illada.tokenizer import TokenizerError
from tests.conftest import tiny_config, write_tokenizer


def same_weights(a: Transformer, b: Transformer) -> bool:
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    return pa.keys() == pb.keys() and all(torch.equal(pa[k], pb[k]) for k in pa)


@pytest.mark.parametrize("fmt", ["llada", "illada"])
@pytest.mark.parametrize("shard_bytes", [None, 4096])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_round_trip_is_bit_exact(tmp_path, fmt, shard_bytes, dtype):
    model = Transformer.random(tiny_config(fmt), dtype=dtype, seed=11)
    save_checkpoint(model, tmp_path, max_shard_bytes=shard_bytes)
    assert (tmp_path / INDEX_FILE).exists() == bool(shard_bytes)
    loaded = illada.load(tmp_path, mask=4)
    assert loaded.model.config == model.config
    assert same_weights(loaded.model, model)
    assert loaded.model.dtype == dtype
    ids = torch.randint(0, 40, (2, 7))
    assert torch.equal(loaded.model(ids), model(ids))


def test_tensor_names_follow_each_format(tmp_path):
    llada = tensor_names(tiny_config("llada"))
    assert llada["tok_embeddings.weight"] == "model.transformer.wte.weight"
    assert llada["output.weight"] == "model.transformer.ff_out.weight"
    assert llada["layers.1.feed_forward.w1.weight"] == "model.transformer.blocks.1.ff_proj.weight"
    assert llada["layers.1.attention.wo.weight"] == "model.transformer.blocks.1.attn_out.weight"
    illada_names = tensor_names(tiny_config("illada"))
    assert "output.weight" not in illada_names  # tied head is not stored twice
    assert illada_names["layers.0.feed_forward.w2.weight"] == "model.layers.0.mlp.down_proj.weight"
    assert len(llada) == 2 * 9 + 3 and len(illada_names) == 2 * 9 + 2


def test_load_casts_to_requested_dtype(tmp_path):
    model = Transformer.random(tiny_config(), seed=2)
    save_checkpoint(model, tmp_path)
    loaded = illada.load(tmp_path, dtype="bf16", mask=4).model
    assert all(p.dtype == torch.bfloat16 for p in loaded.parameters())
    assert torch.equal(loaded.tok_embeddings.weight, model.tok_embeddings.weight.to(torch.bfloat16))
    assert loaded.output.weight is loaded.tok_embeddings.weight


def test_tied_head_stored_anyway_is_accepted(tmp_path):
    model = Transformer.random(tiny_config("illada"), seed=2)
    save_checkpoint(model, tmp_path)
    path = tmp_path / "model.safetensors"
    with safe_open(str(path), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"].clone()  # as iLLaDA's 291-tensor index lists it
    save_file(tensors, str(path))
    assert same_weights(illada.load(tmp_path, mask=4).model, model)


@pytest.fixture
def sharded(tmp_path):
    model = Transformer.random(tiny_config("llada"), seed=5)
    save_checkpoint(model, tmp_path, max_shard_bytes=4096)
    return tmp_path


def test_missing_shard_is_named(sharded):
    victim = sorted(sharded.glob("model-*.safetensors"))[1]
    victim.unlink()
    with pytest.raises(CheckpointError, match=victim.name):
        illada.load(sharded)


def test_truncated_shard_is_named(sharded):
    victim = sorted(sharded.glob("model-*.safetensors"))[0]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=f"{victim.name}.*truncated"):
        illada.load(sharded)


def test_missing_tensor_is_named(tmp_path):
    model = Transformer.random(tiny_config("llada"), seed=5)
    save_checkpoint(model, tmp_path)
    path = tmp_path / "model.safetensors"
    with safe_open(str(path), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys() if k != "model.transformer.blocks.1.up_proj.weight"}
    save_file(tensors, str(path))
    with pytest.raises(CheckpointError, match="model.transformer.blocks.1.up_proj.weight"):
        illada.load(tmp_path)


def test_misshapen_tensor_is_named(tmp_path):
    model = Transformer.random(tiny_config("illada"), seed=5)
    save_checkpoint(model, tmp_path)
    path = tmp_path / "model.safetensors"
    with safe_open(str(path), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    tensors["model.layers.0.self_attn.k_proj.weight"] = torch.zeros(32, 32)
    save_file(tensors, str(path))
    with pytest.raises(CheckpointError, match=r"k_proj.weight.*\(32, 32\).*\(16, 32\)"):
        illada.load(tmp_path, mask=4)


def test_unexpected_tensor_is_named(tmp_path):
    model = Transformer.random(tiny_config("illada"), seed=5)
    save_checkpoint(model, tmp_path)
    path = tmp_path / "model.safetensors"
    with safe_open(str(path), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    tensors["model.layers.0.self_attn.q_norm.weight"] = torch.ones(8)
    save_file(tensors, str(path))
    with pytest.raises(CheckpointError, match="q_norm"):
        illada.load(tmp_path, mask=4)


def test_unknown_model_type_is_named(tmp_path):
    save_checkpoint(Transformer.random(tiny_config(), seed=1), tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["model_type"] = "gpt_neox"
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="model_type='gpt_neox'"):
        illada.load(tmp_path)


def test_unsupported_field_is_named(tmp_path):
    save_checkpoint(Transformer.random(tiny_config("llada"), seed=1), tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["include_qkv_bias"] = True
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="include_qkv_bias"):
        illada.load(tmp_path)


def test_missing_directory_and_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a checkpoint directory"):
        illada.load(tmp_path / "nope")
    (tmp_path / "config.json").write_text(json.dumps(tiny_config("llada").to_hf_config()))
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        illada.load(tmp_path)


def test_illada_mask_comes_from_the_tokenizer(tmp_path):
    save_checkpoint(Transformer.random(tiny_config("illada"), seed=1), tmp_path)
    vocab = write_tokenizer(tmp_path, mask_token="<[MASK]>")
    loaded = illada.load(tmp_path)
    ids = loaded.special_ids
    assert ids.mask == vocab["<[MASK]>"]
    assert (ids.eos, ids.eot, ids.end_think, ids.pad, ids.bos) == (
        vocab["</s>"], vocab["<|eot_id|>"], vocab["</think>"], vocab["<pad>"], vocab["<s>"])
    over = illada.load(tmp_path, mask=7, eos=8).special_ids
    assert (over.mask, over.eos) == (7, 8)


def test_tokenizer_without_mask_token_is_an_error(tmp_path):
    save_checkpoint(Transformer.random(tiny_config("illada"), seed=1), tmp_path)
    write_tokenizer(tmp_path, mask_token=None)
    with pytest.raises(TokenizerError, match="no mask token"):
        illada.load(tmp_path)


def test_preset_loads_with_random_weights_and_config_ids():
    loaded = illada.load("illada-8b", device="meta")
    assert loaded.tokenizer is None
    assert loaded.special_ids.mask == 5
    assert loaded.model.dtype == torch.float32
    assert illada.load("llada-8b", device="meta", dtype="bf16").special_ids.mask == 126336
