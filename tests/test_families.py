"""Model families beyond LLaDA/iLLaDA: Dream (Qwen2 layout, shifted logits) and LLaDA-MoE (routed experts).

Parity is checked against independent implementations on the same tiny random weights, written to disk in each
family's own checkpoint format (sharded, with an index) and read back through ``illada.load``:

* Dream  vs ``transformers``' Qwen2 run bidirectionally (an all-zeros additive 4-D mask), shifted as Dream's
  ``diffusion_generate`` shifts: logits = cat([l[:, :1], l[:, :-1]]).
* LLaDA-MoE vs a transcription of the modeling code its checkpoint ships (tests/reference_lladamoe.py, which
  names the copy and commit read), with and without the shared expert and a padding mask, and vs
  ``transformers``' OLMoE with one attention head (where OLMoE's whole-vector q/k norm is the per-head one).

Each parity test prints its max abs logit difference (``pytest -s``); README's families table quotes them.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

import illada
from illada.config import FAMILIES, PRESETS, ConfigError, ModelConfig, preset
from illada.model import MoEFeedForward, Transformer
from tests.reference_lladamoe import llada_moe_logits

transformers = pytest.importorskip("transformers")

TOL = 1e-5


def report(family: str, diff: float) -> None:
    print(f"\nparity {family}: max abs logit difference {diff:.2e}")


def bidirectional_logits(model, ids: torch.Tensor) -> torch.Tensor:
    B, T = ids.shape
    with torch.no_grad():  # additive 4-D mask of zeros: every query sees every key
        return model(ids, attention_mask=torch.zeros(B, 1, T, T)).logits


def randomise(model) -> None:
    """Non-trivial norms and biases (transformers initialises them to 1 and 0, which would hide a swap)."""
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
            elif name.endswith(".bias"):
                p.normal_(0.0, 0.5)


def patch_config(path, **fields) -> None:
    cfg = json.loads((path / "config.json").read_text())
    cfg.update(fields)
    (path / "config.json").write_text(json.dumps(cfg))


# ------------------------------------------------------------------------------------------------ Dream
def hf_qwen2(tie: bool = False):
    cfg = transformers.Qwen2Config(
        vocab_size=48, hidden_size=32, intermediate_size=40, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128, rope_theta=1000000.0, rms_norm_eps=1e-6,
        tie_word_embeddings=tie, use_sliding_window=False, attn_implementation="eager",
    )
    torch.manual_seed(0)
    model = transformers.Qwen2ForCausalLM(cfg).eval()
    randomise(model)
    return model


def dream_shift(logits: torch.Tensor) -> torch.Tensor:
    """What Dream's diffusion_generate does to its model's logits before sampling."""
    return torch.cat([logits[:, :1], logits[:, :-1]], dim=1)


@pytest.mark.parametrize("tie", [False, True])
def test_dream_matches_transformers_qwen2_bidirectional_and_shifted(tmp_path, tie):
    hf = hf_qwen2(tie)
    hf.save_pretrained(tmp_path, max_shard_size="20KB")  # Qwen2 names, several shards + index, like Dream's
    assert (tmp_path / "model.safetensors.index.json").is_file() and len(list(tmp_path.glob("model-*"))) > 2
    patch_config(tmp_path, model_type="Dream", architectures=["DreamModel"], mask_token_id=47, pad_token_id=46,
                 eos_token_id=46, bos_token_id=46)
    loaded = illada.load(tmp_path)
    cfg = loaded.config
    assert (cfg.family, cfg.qkv_bias, cfg.logits_shift, cfg.tie_embeddings) == ("dream", True, True, tie)
    assert (loaded.special_ids.mask, loaded.special_ids.eos) == (47, 46)
    ids = torch.randint(0, 48, (3, 13))
    raw = bidirectional_logits(hf, ids)
    expected = dream_shift(raw)
    with torch.no_grad():
        ours = loaded.model(ids)
    diff = (ours - expected).abs().max().item()
    report("dream", diff)
    assert diff < TOL
    # the check can tell the shift and the causal mask apart from what is tested
    assert (raw - expected)[:, 1:].abs().max() > 1e-2
    with torch.no_grad():
        assert (dream_shift(hf(ids).logits) - expected).abs().max() > 1e-3


def test_dream_checkpoint_without_biases_loads_as_zero_biases(tmp_path):
    # A converted checkpoint that says attention_bias=false stores no biases; Dream's code zero-fills them.
    hf = hf_qwen2()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if name.endswith(".bias"):
                p.zero_()
    hf.save_pretrained(tmp_path)
    patch_config(tmp_path, model_type="Dream", mask_token_id=47)
    ours_with = illada.load(tmp_path).model
    sd = {k: v for k, v in hf.state_dict().items() if not k.endswith(".bias")}
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "model.safetensors"))
    patch_config(tmp_path, attention_bias=False)
    ours_without = illada.load(tmp_path).model
    assert not ours_without.config.qkv_bias
    ids = torch.randint(0, 48, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(ours_without(ids), ours_with(ids), rtol=0, atol=1e-6)


def test_dream_cached_slice_keeps_its_first_position_raw():
    """A forward over a cached slice [s, s+T) shifts within the slice, as Dream's cached decoders do."""
    cfg = preset("dream-7b").replace(vocab_size=64, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=0,
                                     ffn_dim=48, mask_token_id=63, eos_token_id=62, pad_token_id=62, bos_token_id=62)
    model = Transformer.random(cfg, seed=3)
    ids = torch.randint(0, 64, (1, 12))
    with torch.no_grad():
        full = model(ids)
        cache = model.new_kv_cache(1, 12)
        model(ids, kv_cache=cache)
        part = model(ids[:, 5:], kv_cache=cache, cache_start=5)
    torch.testing.assert_close(part[:, 1:], full[:, 6:], rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------------ LLaDA-MoE
MOE_CONFIG = {
    "architectures": ["LLaDAMoEModelLM"], "model_type": "llada", "vocab_size": 48, "hidden_size": 32,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "expert_intermediate_size": 16,
    "dense_intermediate_size": 64, "shared_expert_intermediate_size": 24, "num_experts": 6,
    "num_experts_per_tok": 3, "moe_layer_freq": [1, 1], "moe_router_score_function": "softmax",
    "moe_router_enable_expert_bias": None, "norm_topk_prob": None, "routed_scaling_factor": 1,
    "qk_layernorm": True, "partial_rotary_factor": 1.0, "hidden_act": "silu", "rms_norm_eps": 1e-5,
    "rope_theta": 50000.0, "rope_scaling": None, "max_position_embeddings": 128, "attention_bias": False,
    "clip_qkv": None, "tie_word_embeddings": False, "eos_token_id": 45, "pad_token_id": 46,
}


def moe_weights(c: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights under LLaDA-MoE's own tensor names (from its modeling code's module tree)."""
    g = torch.Generator().manual_seed(seed)
    D, V, hd = c["hidden_size"], c["vocab_size"], c["hidden_size"] // c["num_attention_heads"]
    kv, F_, S = c["num_key_value_heads"] * hd, c["expert_intermediate_size"], c["shared_expert_intermediate_size"]

    def w(*shape, std=0.2):
        return torch.randn(*shape, generator=g) * std

    def norm(n):
        return torch.rand(n, generator=g) + 0.5

    out = {"model.embed_tokens.weight": w(V, D, std=1.0), "model.norm.weight": norm(D), "lm_head.weight": w(V, D)}
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        out.update({
            p + "input_layernorm.weight": norm(D), p + "post_attention_layernorm.weight": norm(D),
            p + "self_attn.q_proj.weight": w(D, D), p + "self_attn.k_proj.weight": w(kv, D),
            p + "self_attn.v_proj.weight": w(kv, D), p + "self_attn.o_proj.weight": w(D, D),
            p + "self_attn.q_norm.weight": norm(hd), p + "self_attn.k_norm.weight": norm(hd),
            p + "mlp.gate.weight": w(c["num_experts"], D, std=1.0),
        })
        for e in range(c["num_experts"]):
            e_ = p + f"mlp.experts.{e}."
            out.update({e_ + "gate_proj.weight": w(F_, D), e_ + "up_proj.weight": w(F_, D),
                        e_ + "down_proj.weight": w(D, F_)})
        if S:
            out.update({p + "shared_expert.gate_proj.weight": w(S, D), p + "shared_expert.up_proj.weight": w(S, D),
                        p + "shared_expert.down_proj.weight": w(D, S)})
    return out


def write_sharded(path, tensors: dict[str, torch.Tensor], config: dict, n_shards: int = 3) -> None:
    """Shards + model.safetensors.index.json, written here independently of illada.checkpoint."""
    names = sorted(tensors)
    weight_map = {}
    for s in range(n_shards):
        fname = f"model-{s + 1:05d}-of-{n_shards:05d}.safetensors"
        part = names[s::n_shards]
        save_file({k: tensors[k].contiguous() for k in part}, str(path / fname))
        weight_map.update({k: fname for k in part})
    (path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (path / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("shared,padded", [(24, False), (24, True), (None, False)])
def test_llada_moe_matches_its_modeling_code(tmp_path, shared, padded):
    config = {**MOE_CONFIG, "shared_expert_intermediate_size": shared}
    sd = moe_weights(config)
    write_sharded(tmp_path, sd, config)
    loaded = illada.load(tmp_path, mask=47)
    cfg = loaded.config
    assert (cfg.family, cfg.n_experts, cfg.experts_per_token, cfg.ffn_dim, cfg.shared_expert_ffn_dim) == (
        "llada_moe", 6, 3, 16, shared or 0)
    assert cfg.qk_norm and not cfg.norm_topk_prob and not cfg.logits_shift
    ids = torch.randint(0, 48, (2, 11), generator=torch.Generator().manual_seed(1))
    mask = None
    if padded:  # right padding: the original takes positions 0..T-1 whatever the mask, as illada does here
        mask = torch.ones(2, 11, dtype=torch.long)
        mask[1, 7:] = 0
    with torch.no_grad():
        ours = loaded.model(ids, attention_mask=mask)
    expected = llada_moe_logits(sd, config, ids, attention_mask=mask)
    real = mask.bool() if padded else torch.ones(2, 11, dtype=torch.bool)
    diff = (ours - expected)[real].abs().max().item()
    report(f"llada_moe (modeling_lladamoe.py, shared expert {shared}, padded {padded})", diff)
    assert expected.abs().max() > 1.0  # logits of order 5 here; float32 sums in another order
    assert diff < 1e-4


def test_llada_moe_bfloat16_is_as_close_to_float32_as_its_modeling_code(tmp_path):
    # The original rounds RoPE and eager attention in bfloat16 where illada keeps RoPE in float32: the two
    # bfloat16 runs are not bit-equal, but illada's must not stray further from the float32 logits.
    sd = moe_weights(MOE_CONFIG)
    write_sharded(tmp_path, sd, MOE_CONFIG)
    ids = torch.randint(0, 48, (2, 11), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = illada.load(tmp_path, mask=47, dtype=torch.bfloat16).model(ids).float()
    exact = llada_moe_logits(sd, MOE_CONFIG, ids)
    theirs = llada_moe_logits(sd, MOE_CONFIG, ids, dtype=torch.bfloat16).float()
    ours_err, theirs_err = (ours - exact).abs().max().item(), (theirs - exact).abs().max().item()
    report("llada_moe bfloat16 vs float32 (illada)", ours_err)
    report("llada_moe bfloat16 vs float32 (modeling_lladamoe.py)", theirs_err)
    assert ours_err <= 1.5 * theirs_err


def test_llada_moe_without_partial_rotary_factor_is_refused():
    # configuration_lladamoe.py defaults the factor to -1, a negative rotary width: the original cannot build its
    # RoPE table (and the 1.0 illada assumed is not what such a config says)
    config = {k: v for k, v in MOE_CONFIG.items() if k != "partial_rotary_factor"}
    with pytest.raises(ConfigError, match="field 'partial_rotary_factor' is missing"):
        ModelConfig.from_hf_config(config)


def test_llada_moe_matches_transformers_olmoe_with_one_head(tmp_path):
    cfg = transformers.OlmoeConfig(
        vocab_size=48, hidden_size=16, intermediate_size=12, num_hidden_layers=2, num_attention_heads=1,
        num_key_value_heads=1, num_experts=5, num_experts_per_tok=2, norm_topk_prob=False, rope_theta=50000.0,
        rms_norm_eps=1e-5, max_position_embeddings=128, tie_word_embeddings=False, attn_implementation="eager",
    )
    torch.manual_seed(0)
    hf = transformers.OlmoeForCausalLM(cfg).eval()
    randomise(hf)
    with torch.no_grad():  # a sharper router so that the top-2 choice differs between tokens
        for layer in hf.model.layers:
            layer.mlp.gate.weight.normal_(0.0, 1.0)
    hf.save_pretrained(tmp_path, max_shard_size="20KB")  # OLMoE's tensor names are LLaDA-MoE's
    patch_config(tmp_path, model_type="llada", architectures=["LLaDAMoEModelLM"], expert_intermediate_size=12,
                 qk_layernorm=True, moe_layer_freq=[1, 1], shared_expert_intermediate_size=None, mask_token_id=47,
                 eos_token_id=46, pad_token_id=45, bos_token_id=None, partial_rotary_factor=1.0)
    ours = illada.load(tmp_path).model
    ids = torch.randint(0, 48, (3, 10))
    expected = bidirectional_logits(hf, ids)
    with torch.no_grad():
        diff = (ours(ids) - expected).abs().max().item()
    report("llada_moe (transformers OLMoE, 1 head)", diff)
    assert diff < TOL


@pytest.mark.parametrize("norm_topk_prob", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_moe_ffn_equals_a_per_token_mixture(norm_topk_prob, dtype):
    cfg = ModelConfig(vocab_size=16, dim=8, n_layers=1, n_heads=2, n_kv_heads=2, ffn_dim=6, format="llada_moe",
                      n_experts=5, experts_per_token=2, norm_topk_prob=norm_topk_prob)
    torch.manual_seed(0)
    moe = MoEFeedForward(cfg).to(dtype)
    x = torch.randn(3, 7, 8).to(dtype)
    with torch.no_grad():
        out = moe(x)
        expected = torch.zeros_like(x)
        for b in range(3):
            for t in range(7):
                probs = torch.softmax(moe.gate(x[b, t]).float(), -1)
                w, e = torch.topk(probs, 2)
                w = (w / w.sum() if norm_topk_prob else w).to(dtype)
                for wi, ei in zip(w, e.tolist()):
                    expected[b, t] += wi * moe.experts[ei](x[b, t])
    tol = 1e-6 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(out, expected, rtol=tol, atol=tol)


# ------------------------------------------------------------------------------------------------ configs
def test_unknown_family_names_the_model_type_and_lists_the_families():
    with pytest.raises(ConfigError) as err:
        ModelConfig.from_hf_config({"model_type": "mistral"}, source="ckpt/config.json")
    message = str(err.value)
    assert "\n" not in message and "model_type='mistral'" in message
    for family in ("LLaDA", "iLLaDA", "Dream", "LLaDA-MoE"):
        assert family in message


@pytest.mark.parametrize("field,value", [
    ("use_sliding_window", True), ("rope_scaling", {"type": "linear", "factor": 2.0}), ("hidden_act", "gelu")])
def test_dream_unsupported_field_is_named(field, value):
    hf = {**preset("dream-7b").to_hf_config(), field: value}
    with pytest.raises(ConfigError, match=f"ckpt/config.json: field '{field}'"):
        ModelConfig.from_hf_config(hf, source="ckpt/config.json")


@pytest.mark.parametrize("field,value", [
    ("moe_layer_freq", [0, 1]), ("moe_router_enable_expert_bias", True), ("moe_router_score_function", "sigmoid"),
    ("partial_rotary_factor", 0.5), ("clip_qkv", 8.0), ("attention_bias", True)])
def test_llada_moe_unsupported_field_is_named(field, value):
    with pytest.raises(ConfigError, match=f"field '{field}'"):
        ModelConfig.from_hf_config({**MOE_CONFIG, field: value})


def test_each_family_round_trips_through_config_json():
    for name, cfg in PRESETS.items():
        back = ModelConfig.from_hf_config(json.loads(json.dumps(cfg.to_hf_config())))
        assert back == cfg, name
    assert {cfg.family for cfg in PRESETS.values()} == set(FAMILIES)


@pytest.mark.parametrize("name,total,active", [
    ("dream-7b", 7.62e9, 7.07e9), ("llada-1.5-8b", 8.02e9, 7.50e9), ("llada-moe-7b-a1b", 7.36e9, 1.40e9)])
def test_family_presets_have_the_real_shapes(name, total, active):
    cfg = preset(name)
    model = Transformer.empty(cfg, device="meta", dtype=torch.bfloat16)
    n = sum(p.numel() for p in model.parameters())
    assert n == cfg.num_parameters and abs(n - total) / total < 0.005
    # parameters a token's forward multiplies with (the input embedding is a lookup): LLaDA-MoE's "A1B" is
    # the paper's 1.4B activated parameters, 8 of 64 experts
    idle = cfg.n_layers * (cfg.n_experts - cfg.experts_per_token) * 3 * cfg.dim * cfg.ffn_dim
    assert abs((n - idle - cfg.vocab_size * cfg.dim) - active) / active < 0.01


def test_family_presets_load_with_their_ids():
    dream = illada.load("dream-7b", device="meta")
    assert dream.config.family == "dream" and dream.config.logits_shift
    assert (dream.special_ids.mask, dream.special_ids.eos) == (151666, 151643)
    moe = illada.load("llada-moe-7b-a1b", device="meta")
    assert moe.config.family == "llada_moe" and (moe.special_ids.mask, moe.special_ids.eos) == (156895, 156892)
    assert illada.load("llada-1.5-8b", device="meta").config == preset("llada-8b")


# ------------------------------------------------------------------------------------------------ tokenizer
DREAM_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|mask|>"]


def write_qwen2_slow_tokenizer(path) -> dict[str, int]:
    """vocab.json + merges.txt + tokenizer_config.json the way Dream ships its (slow, Qwen2) tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    text = ["The cat sat on the mat. It's 2024!\nDon't stop: 3+4=7?", "naïve café  déjà-vu\t tabs  and   spaces",
            "def f(x):\n    return x ** 2  # comment", "数学 と 日本語 mixed text ... ok"] * 20
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(text, trainer)
    tok.model.save(str(path))
    n = tok.get_vocab_size()
    added = {str(n + i): {"content": t, "special": True, "normalized": False, "lstrip": False, "rstrip": False,
                          "single_word": False} for i, t in enumerate(DREAM_SPECIALS)}
    (path / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "Qwen2Tokenizer", "added_tokens_decoder": added, "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>", "bos_token": None, "unk_token": None, "clean_up_tokenization_spaces": False,
    }))
    return {t: n + i for i, t in enumerate(DREAM_SPECIALS)}


def test_dream_slow_tokenizer_files_match_transformers_qwen2_tokenizer(tmp_path):
    specials = write_qwen2_slow_tokenizer(tmp_path)
    from illada.tokenizer import Tokenizer

    ours = Tokenizer.from_dir(tmp_path)
    theirs = transformers.Qwen2Tokenizer(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"),
                                         unk_token=None, bos_token=None)
    theirs.add_special_tokens({"additional_special_tokens": DREAM_SPECIALS})
    texts = ["The cat sat on the mat.", " leading space and  double  spaces\n\nnew lines\r\n", "It's DON'T we'll",
             "numbers 12345 and 3.14", "naïve café déjà-vu", "数学 と 日本語", "tabs\tand\ttrailing   ",
             "<|im_start|>user\nhi<|im_end|>\n<|mask|><|mask|> end<|endoftext|>", "emoji 🙂 ok", "x**2 # c"]
    for text in texts:
        assert ours.encode(text) == theirs.encode(text, add_special_tokens=False), text
        ids = ours.encode(text)
        assert ours.decode(ids, skip_special_tokens=False) == theirs.decode(ids, skip_special_tokens=False)
    assert {t: ours.token_to_id(t) for t in DREAM_SPECIALS} == specials


def test_dream_special_ids_come_from_its_checkpoint(tmp_path):
    specials = write_qwen2_slow_tokenizer(tmp_path)
    vocab = max(specials.values()) + 1
    cfg = preset("dream-7b").replace(vocab_size=vocab, dim=32, n_layers=1, n_heads=4, n_kv_heads=2, head_dim=0,
                                     ffn_dim=48, mask_token_id=None, eos_token_id=None, pad_token_id=None,
                                     bos_token_id=None)
    from illada.checkpoint import save_checkpoint

    save_checkpoint(Transformer.random(cfg, seed=1), tmp_path)
    loaded = illada.load(tmp_path)
    ids = loaded.special_ids
    assert (ids.mask, ids.eos, ids.eot, ids.pad) == (
        specials["<|mask|>"], specials["<|endoftext|>"], specials["<|im_end|>"], specials["<|endoftext|>"])
    assert loaded.tokenizer.decode(loaded.tokenizer.encode("the cat")) == "the cat"


def test_slow_tokenizer_of_another_class_is_named(tmp_path):
    write_qwen2_slow_tokenizer(tmp_path)
    cfg = json.loads((tmp_path / "tokenizer_config.json").read_text())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({**cfg, "tokenizer_class": "GPT2Tokenizer"}))
    from illada.tokenizer import Tokenizer, TokenizerError

    with pytest.raises(TokenizerError, match="tokenizer_class='GPT2Tokenizer'"):
        Tokenizer.from_dir(tmp_path)


def test_dream_left_padded_row_equals_the_row_alone():
    cfg = preset("dream-7b").replace(vocab_size=64, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=0,
                                     ffn_dim=48, mask_token_id=63, eos_token_id=62, pad_token_id=62, bos_token_id=62)
    model = Transformer.random(cfg, seed=4)
    ids = torch.randint(0, 60, (1, 9))
    padded = torch.cat([torch.full((1, 4), 62), ids], dim=1)
    mask = torch.cat([torch.zeros(1, 4, dtype=torch.long), torch.ones(1, 9, dtype=torch.long)], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(model(padded, mask)[:, 4:], model(ids), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------------ model files
MODEL_FILES = {  # sweeps/conf/model/NAME.yaml -> (family, chat template)
    "llada-1.5-8b": ("llada", True), "dream-7b-base": ("dream", False), "dream-7b-instruct": ("dream", True),
    "llada-moe-7b-a1b-base": ("llada_moe", False), "llada-moe-7b-a1b-instruct": ("llada_moe", True),
}


@pytest.mark.parametrize("name", sorted(MODEL_FILES))
def test_model_files_point_at_the_users_checkpoint_of_their_family(tmp_path, monkeypatch, name):
    from pathlib import Path

    from omegaconf import OmegaConf

    from illada.checkpoint import save_checkpoint
    from illada.loading import describe

    family, chat = MODEL_FILES[name]
    conf = Path(__file__).parents[1] / "sweeps" / "conf" / "model"
    monkeypatch.setenv("ILLADA_CKPT_DIR", str(tmp_path))
    model = OmegaConf.to_container(OmegaConf.load(conf / f"{name}.yaml"), resolve=True)
    assert set(model) == set(OmegaConf.load(conf / "llada-8b-instruct.yaml")) and model["chat"] is chat
    path = Path(model["path"])
    assert path.parent == tmp_path  # $ILLADA_CKPT_DIR/<the checkpoint's Hugging Face name>
    small = {"llada": PRESETS["llada-8b"], "dream": PRESETS["dream-7b"], "llada_moe": PRESETS["llada-moe-7b-a1b"]}
    cfg = small[family].replace(vocab_size=64, dim=32, n_layers=1, n_heads=4, n_kv_heads=4, head_dim=0, ffn_dim=16,
                                n_experts=min(small[family].n_experts, 4),
                                experts_per_token=min(small[family].experts_per_token, 2),
                                mask_token_id=63, eos_token_id=62, pad_token_id=62, bos_token_id=None)
    save_checkpoint(Transformer.random(cfg), path, max_shard_bytes=20_000)
    assert describe(path)[0].family == family


# ------------------------------------------------------------------------------------------------ benchmark
def test_families_benchmark_reports_every_family(tmp_path, monkeypatch, capsys):
    from illada.benchmarks import families

    real = families.family_configs(quick=True)
    assert {cfg.family for cfg in real.values()} == set(FAMILIES)
    tiny = {f: cfg.replace(vocab_size=64, dim=32, n_layers=1, n_heads=4, n_kv_heads=2, head_dim=0, ffn_dim=16,
                           mask_token_id=63, eos_token_id=62) for f, cfg in real.items()}
    monkeypatch.setattr(families, "family_configs", lambda quick: tiny)
    out = tmp_path / "families.md"
    families.main(["--quick", "--out", str(out)])
    report = out.read_text()
    assert report.startswith("# Model families benchmark")
    for family in FAMILIES:
        assert f"| {family} | " in report
    with pytest.raises(SystemExit, match="error: --presets gpt2: unknown preset"):
        families.main(["--presets", "gpt2", "--out", str(out)])


def test_moe_fields_are_checked():
    base = dict(vocab_size=16, dim=8, n_layers=1, n_heads=2, n_kv_heads=2, ffn_dim=6, format="llada_moe")
    with pytest.raises(ConfigError, match="experts_per_token=5"):
        ModelConfig(**base, n_experts=4, experts_per_token=5)
    with pytest.raises(ConfigError, match="need n_experts > 0"):
        ModelConfig(**base, experts_per_token=2)
    with pytest.raises(ConfigError, match="format='gpt2' is not a supported family"):
        ModelConfig(**{**base, "format": "gpt2"})


def test_llada_moe_missing_expert_tensor_is_named(tmp_path):
    from illada.checkpoint import CheckpointError

    sd = moe_weights(MOE_CONFIG)
    del sd["model.layers.1.mlp.experts.4.up_proj.weight"]
    write_sharded(tmp_path, sd, MOE_CONFIG)
    with pytest.raises(CheckpointError, match=r"model\.layers\.1\.mlp\.experts\.4\.up_proj\.weight"):
        illada.load(tmp_path, mask=47)


@pytest.mark.parametrize("name", ["dream-7b", "llada-moe-7b-a1b"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_family_round_trip_is_bit_exact(tmp_path, name, dtype):
    from illada.checkpoint import save_checkpoint

    cfg = preset(name).replace(vocab_size=64, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=0, ffn_dim=16,
                               n_experts=min(preset(name).n_experts, 4), shared_expert_ffn_dim=0,
                               experts_per_token=min(preset(name).experts_per_token, 2),
                               mask_token_id=63, eos_token_id=62, pad_token_id=62, bos_token_id=None)
    model = Transformer.random(cfg, dtype=dtype, seed=2)
    save_checkpoint(model, tmp_path, max_shard_bytes=4096)
    loaded = illada.load(tmp_path).model
    assert loaded.config == cfg and loaded.dtype == dtype
    pa, pb = dict(model.named_parameters()), dict(loaded.named_parameters())
    assert pa.keys() == pb.keys() and all(torch.equal(pa[k], pb[k]) for k in pa)
    ids = torch.randint(0, 64, (2, 7))
    with torch.no_grad():
        assert torch.equal(loaded(ids), model(ids))
