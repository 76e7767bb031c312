"""Our model against transformers' Llama run bidirectionally, on the same weights in both formats."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

import illada

transformers = pytest.importorskip("transformers")


def hf_llama(tie: bool, n_kv_heads: int = 2):
    cfg = transformers.LlamaConfig(
        vocab_size=40, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=n_kv_heads, max_position_embeddings=128, rope_theta=500000.0, rms_norm_eps=1e-5,
        tie_word_embeddings=tie, attn_implementation="eager",
    )
    torch.manual_seed(1)
    model = transformers.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # non-trivial norm weights so a swapped norm would show
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
    return model


def hf_bidirectional_logits(model, ids: torch.Tensor) -> torch.Tensor:
    B, T = ids.shape
    full = torch.zeros(B, 1, T, T)  # additive 4-D mask of zeros: every query sees every key
    with torch.no_grad():
        return model(ids, attention_mask=full).logits


@pytest.mark.parametrize("tie,n_kv", [(True, 2), (False, 4), (True, 1)])
def test_illada_format_matches_transformers_llama(tmp_path, tie, n_kv):
    hf = hf_llama(tie, n_kv)
    hf.save_pretrained(tmp_path)  # Llama-style names and config.json, as iLLaDA ships
    ours = illada.load(tmp_path, mask=3).model
    ids = torch.randint(0, 40, (3, 11))
    expected = hf_bidirectional_logits(hf, ids)
    torch.testing.assert_close(ours(ids), expected, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        causal = hf(ids).logits
    assert (causal - expected).abs().max() > 1e-3, "the comparison must be able to tell causal from bidirectional"


def llada_state_dict(hf_sd: dict[str, torch.Tensor], n_layers: int, tie: bool) -> dict[str, torch.Tensor]:
    """Rename Llama tensors to LLaDA's OLMo names, written out independently of illada.checkpoint."""
    out = {
        "model.transformer.wte.weight": hf_sd["model.embed_tokens.weight"],
        "model.transformer.ln_f.weight": hf_sd["model.norm.weight"],
        "model.transformer.ff_out.weight": hf_sd["model.embed_tokens.weight" if tie else "lm_head.weight"],
    }
    pairs = {
        "attn_norm": "input_layernorm", "ff_norm": "post_attention_layernorm",
        "q_proj": "self_attn.q_proj", "k_proj": "self_attn.k_proj", "v_proj": "self_attn.v_proj",
        "attn_out": "self_attn.o_proj", "ff_proj": "mlp.gate_proj", "up_proj": "mlp.up_proj",
        "ff_out": "mlp.down_proj",
    }
    for i in range(n_layers):
        for olmo, llama in pairs.items():
            out[f"model.transformer.blocks.{i}.{olmo}.weight"] = hf_sd[f"model.layers.{i}.{llama}.weight"]
    return {k: v.clone().contiguous() for k, v in out.items()}


def test_llada_format_maps_onto_the_same_computation(tmp_path):
    import json

    hf = hf_llama(tie=False, n_kv_heads=4)  # LLaDA-8B is MHA with an untied head
    sd = hf.state_dict()
    save_file(llada_state_dict(sd, 2, tie=False), str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "llada", "d_model": 32, "n_layers": 2, "n_heads": 4, "n_kv_heads": 4,
        "mlp_hidden_size": 48, "mlp_ratio": 4, "activation_type": "silu", "block_type": "llama",
        "layer_norm_type": "rms", "rms_norm_eps": 1e-5, "rope": True, "rope_full_precision": True,
        "rope_theta": 500000.0, "max_sequence_length": 128, "vocab_size": 40, "embedding_size": 40,
        "weight_tying": False, "include_bias": False, "mask_token_id": 39, "eos_token_id": 2,
        "pad_token_id": 2,
    }))
    loaded = illada.load(tmp_path)
    assert loaded.special_ids.mask == 39 and loaded.special_ids.eos == 2
    ids = torch.randint(0, 40, (2, 9))
    torch.testing.assert_close(loaded.model(ids), hf_bidirectional_logits(hf, ids), rtol=1e-5, atol=1e-5)
