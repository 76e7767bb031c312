"""One dataclass that describes every model family's Transformer, built from a checkpoint's config.json.

The families share one computation (bidirectional pre-norm SwiGLU Transformer with RoPE) and differ by config
fields and tensor names only:

* ``llada``     -- LLaDA / LLaDA-1.5: OLMo-style ``config.json`` (``d_model``, ``n_layers`` ...), ``model_type: llada``.
* ``illada``    -- iLLaDA: Llama-style ``config.json`` (``hidden_size``, ``num_hidden_layers`` ...).
* ``dream``     -- Dream-v0-7B: Qwen2-style ``config.json``, ``model_type: Dream``; biases on q/k/v, and its head's
  logits are shifted (position i predicts token i+1; the model shifts them back, see ``logits_shift``).
* ``llada_moe`` -- LLaDA-MoE-7B-A1B: OLMoE-style ``config.json`` (``model_type: llada`` with architecture
  ``LLaDAMoEModelLM``): per-head RMSNorm on q and k, and a top-k routed mixture-of-experts FFN.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

CheckpointFormat = Literal["llada", "illada", "dream", "llada_moe"]
FAMILIES: tuple[str, ...] = ("llada", "illada", "dream", "llada_moe")

# model_type values that carry a Llama-style config (iLLaDA ships a remote class; the type string is not pinned).
LLAMA_STYLE_MODEL_TYPES = ("illada", "llama")
DREAM_MODEL_TYPES = ("Dream", "dream")
# LLaDA-MoE's config.json says model_type "llada" like dense LLaDA; its architecture tells them apart.
LLADA_MOE_ARCHITECTURES = ("LLaDAMoEModelLM", "LLaDAMoEModel")
SUPPORTED = ("LLaDA / LLaDA-1.5 (model_type 'llada'), iLLaDA (model_type 'illada' or 'llama'), "
             "Dream (model_type 'Dream'), LLaDA-MoE (model_type 'llada', architectures ['LLaDAMoEModelLM'])")


class ConfigError(ValueError):
    """A config.json field is missing, unknown or describes something this model cannot compute."""


@dataclass(frozen=True)
class ModelConfig:
    """Shape and numerics of a bidirectional (non-causal) pre-norm SwiGLU Transformer with RoPE.

    ``ffn_dim`` is the SwiGLU width; in a mixture-of-experts model (``n_experts > 0``) it is each expert's width,
    every layer's FFN is routed, and ``experts_per_token`` experts are mixed with their router probabilities.
    """

    vocab_size: int
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    ffn_dim: int
    head_dim: int = 0  # 0 means dim // n_heads
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    max_seq_len: int = 4096
    tie_embeddings: bool = False
    format: CheckpointFormat = "illada"  # checkpoint layout; it also names the family (``family``)
    qkv_bias: bool = False  # biases on the q/k/v projections (Dream)
    qk_norm: bool = False  # RMSNorm over each head of q and k before RoPE (LLaDA-MoE's qk_layernorm)
    # True when the checkpoint's head at position i predicts token i+1 (Dream, initialised from an AR model).
    # Transformer.forward shifts such logits back, so callers always see position i predicting token i.
    logits_shift: bool = False
    n_experts: int = 0  # 0: dense FFN
    experts_per_token: int = 0
    norm_topk_prob: bool = False  # renormalise the chosen experts' probabilities to sum to 1
    shared_expert_ffn_dim: int = 0  # width of an always-on shared expert added to the routed ones (0: none)
    # Special ids found in config.json; tokenizer files can supply or override them (see illada.tokenizer).
    mask_token_id: int | None = None
    eos_token_id: int | None = None
    pad_token_id: int | None = None
    bos_token_id: int | None = None

    def __post_init__(self) -> None:
        if self.head_dim == 0:
            object.__setattr__(self, "head_dim", self.dim // max(self.n_heads, 1))
        for name in ("vocab_size", "dim", "n_layers", "n_heads", "n_kv_heads", "ffn_dim", "head_dim", "max_seq_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ConfigError(f"ModelConfig.{name} must be a positive integer, got {value!r}")
        if self.n_heads % self.n_kv_heads:
            raise ConfigError(
                f"ModelConfig.n_heads={self.n_heads} must be a multiple of n_kv_heads={self.n_kv_heads} (GQA groups)"
            )
        if self.head_dim % 2:
            raise ConfigError(f"ModelConfig.head_dim={self.head_dim} must be even for rotate-half RoPE")
        if self.format not in FAMILIES:
            raise ConfigError(f"ModelConfig.format={self.format!r} is not a supported family; supported: {FAMILIES}")
        if self.n_experts < 0 or self.shared_expert_ffn_dim < 0:
            raise ConfigError(f"ModelConfig.n_experts={self.n_experts} and shared_expert_ffn_dim="
                              f"{self.shared_expert_ffn_dim} must not be negative")
        if self.n_experts and not 1 <= self.experts_per_token <= self.n_experts:
            raise ConfigError(f"ModelConfig.experts_per_token={self.experts_per_token} must be in [1, n_experts="
                              f"{self.n_experts}]")
        if not self.n_experts and (self.experts_per_token or self.shared_expert_ffn_dim):
            raise ConfigError(f"ModelConfig.experts_per_token={self.experts_per_token} / shared_expert_ffn_dim="
                              f"{self.shared_expert_ffn_dim} need n_experts > 0")

    @property
    def family(self) -> str:
        """The model family (one of ``FAMILIES``): samplers and scorers pick family defaults by it."""
        return self.format

    @property
    def is_moe(self) -> bool:
        return self.n_experts > 0

    # ------------------------------------------------------------------ config.json <-> ModelConfig
    @classmethod
    def from_hf_config(cls, hf: dict[str, Any], source: str = "config.json") -> "ModelConfig":
        """Build from a parsed ``config.json``; errors name ``source`` and the offending field."""
        if not isinstance(hf, dict):
            raise ConfigError(f"{source}: a JSON {type(hf).__name__}, not an object")
        model_type = hf.get("model_type")
        architectures = hf.get("architectures") or []
        if model_type == "lladamoe" or (model_type == "llada" and (
                any(a in LLADA_MOE_ARCHITECTURES for a in architectures) or "num_experts" in hf)):
            build = cls._from_llada_moe
        elif model_type == "llada":
            build = cls._from_llada
        elif model_type in LLAMA_STYLE_MODEL_TYPES:
            build = cls._from_llama_style
        elif model_type in DREAM_MODEL_TYPES:
            build = cls._from_dream
        else:
            raise ConfigError(f"{source}: unknown model_type={model_type!r}; supported families: {SUPPORTED}")
        try:
            return build(hf, source)
        except ConfigError as e:
            if str(e).startswith(f"{source}:"):
                raise
            # __post_init__ checks the combined fields and cannot know which file they came from
            raise ConfigError(f"{source}: {e}") from None
        except (TypeError, ValueError) as e:  # a field of the wrong type, e.g. "d_model": "4096"
            raise ConfigError(f"{source}: a field has the wrong type ({e})") from e

    @classmethod
    def from_json(cls, path: str | Path) -> "ModelConfig":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: config.json not found")
        try:
            hf = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: not valid JSON ({e})") from e
        return cls.from_hf_config(hf, source=str(path))

    @classmethod
    def _from_llada(cls, hf: dict[str, Any], source: str) -> "ModelConfig":
        _require_equal(hf, source, {
            "block_type": "llama", "layer_norm_type": "rms", "activation_type": "silu",
        })
        _require_false(hf, source, (
            "include_bias", "include_qkv_bias", "bias_for_layer_norm", "alibi", "attention_layer_norm",
            "scale_logits", "multi_query_attention",
        ))
        if hf.get("rope", True) is not True:
            raise ConfigError(f"{source}: field 'rope'={hf.get('rope')!r} is not supported (RoPE is required)")
        d_model = _require(hf, source, "d_model")
        n_heads = _require(hf, source, "n_heads")
        n_kv = hf.get("n_kv_heads") or n_heads
        ffn = hf.get("mlp_hidden_size") or int(_require(hf, source, "mlp_ratio") * d_model)
        return cls(
            # embedding_size may pad the vocabulary; tensors are stored with that many rows
            vocab_size=hf.get("embedding_size") or _require(hf, source, "vocab_size"),
            dim=d_model,
            n_layers=_require(hf, source, "n_layers"),
            n_heads=n_heads,
            n_kv_heads=n_kv,
            ffn_dim=ffn,
            norm_eps=float(hf.get("rms_norm_eps", 1e-5)),
            rope_theta=float(hf.get("rope_theta", 10000.0)),
            max_seq_len=hf.get("max_sequence_length", 4096),
            tie_embeddings=bool(hf.get("weight_tying", False)),
            format="llada",
            mask_token_id=hf.get("mask_token_id"),
            eos_token_id=hf.get("eos_token_id"),
            pad_token_id=hf.get("pad_token_id"),
            bos_token_id=hf.get("bos_token_id"),
        )

    @classmethod
    def _from_llama_style(cls, hf: dict[str, Any], source: str) -> "ModelConfig":
        _require_equal(hf, source, {"hidden_act": "silu"})
        _require_false(hf, source, ("attention_bias", "mlp_bias"))
        if hf.get("rope_scaling"):
            raise ConfigError(f"{source}: field 'rope_scaling'={hf['rope_scaling']!r} is not supported")
        return cls(**_llama_layout(hf, source, norm_eps=1e-6, max_seq_len=8192), head_dim=hf.get("head_dim") or 0,
                   format="illada")

    @classmethod
    def _from_dream(cls, hf: dict[str, Any], source: str) -> "ModelConfig":
        # Dream's modeling code (DreamAttention) always has q/k/v biases and head_dim = hidden_size / heads;
        # converted checkpoints that say attention_bias=false store no biases (Dream's code then zero-fills them).
        _require_equal(hf, source, {"hidden_act": "silu"})
        _require_false(hf, source, ("rope_scaling", "use_sliding_window"))
        _require_whole_heads(hf, source)
        return cls(**_llama_layout(hf, source, norm_eps=1e-6, max_seq_len=32768), format="dream",
                   qkv_bias=bool(hf.get("attention_bias", True)), logits_shift=True)

    @classmethod
    def _from_llada_moe(cls, hf: dict[str, Any], source: str) -> "ModelConfig":
        # Fields read as LLaDA-MoE's modeling code (modeling_lladamoe.py) reads them. Its sparse block hard-codes
        # norm_topk_prob=False and never reads routed_scaling_factor or the router group fields, so neither do we.
        _require_equal(hf, source, {"hidden_act": "silu"})
        _require_false(hf, source, ("attention_bias", "rope_scaling", "moe_router_enable_expert_bias", "clip_qkv"))
        if hf.get("moe_router_score_function") not in (None, "softmax"):
            raise ConfigError(f"{source}: field 'moe_router_score_function'={hf['moe_router_score_function']!r} "
                              "is not supported (only 'softmax')")
        if "partial_rotary_factor" not in hf:
            # its configuration class defaults the factor to -1, on which its RoPE table cannot be built
            raise ConfigError(f"{source}: field 'partial_rotary_factor' is missing (LLaDA-MoE's code then defaults "
                              "it to -1 and cannot build its RoPE; illada supports only 1.0)")
        if hf["partial_rotary_factor"] not in (1, 1.0):
            raise ConfigError(f"{source}: field 'partial_rotary_factor'={hf['partial_rotary_factor']!r} is not "
                              "supported (only 1.0: RoPE over the whole head)")
        freq = hf.get("moe_layer_freq") or []
        if not all(freq):
            raise ConfigError(f"{source}: field 'moe_layer_freq'={freq!r} is not supported (every layer must be MoE)")
        _require_whole_heads(hf, source)
        fields = _llama_layout(hf, source, norm_eps=1e-5, max_seq_len=4096, ffn_field="expert_intermediate_size")
        fields["rope_theta"] = float(_require(hf, source, "rope_theta"))  # its modeling code has no default
        return cls(**fields, format="llada_moe",
                   qk_norm=bool(hf.get("qk_layernorm", False)),
                   n_experts=_require(hf, source, "num_experts"),
                   experts_per_token=_require(hf, source, "num_experts_per_tok"),
                   norm_topk_prob=False,
                   shared_expert_ffn_dim=max(0, hf.get("shared_expert_intermediate_size") or 0))

    def to_hf_config(self) -> dict[str, Any]:
        """The ``config.json`` dictionary of this config in its own checkpoint format."""
        ids = {k: v for k, v in (
            ("mask_token_id", self.mask_token_id), ("eos_token_id", self.eos_token_id),
            ("pad_token_id", self.pad_token_id), ("bos_token_id", self.bos_token_id),
        ) if v is not None}
        if self.format == "llada":
            return {
                "architectures": ["LLaDAModelLM"], "model_type": "llada",
                "d_model": self.dim, "n_layers": self.n_layers, "n_heads": self.n_heads,
                "n_kv_heads": self.n_kv_heads, "mlp_hidden_size": self.ffn_dim,
                "mlp_ratio": max(1, self.ffn_dim // self.dim),
                "activation_type": "silu", "block_type": "llama", "layer_norm_type": "rms",
                "rms_norm_eps": self.norm_eps, "rope": True, "rope_full_precision": True,
                "rope_theta": self.rope_theta, "max_sequence_length": self.max_seq_len,
                "vocab_size": self.vocab_size, "embedding_size": self.vocab_size,
                "weight_tying": self.tie_embeddings, "include_bias": False, "include_qkv_bias": False,
                "bias_for_layer_norm": False, "scale_logits": False, "alibi": False,
                "attention_layer_norm": False, "flash_attention": False, "use_cache": False, **ids,
            }
        if self.format == "dream":
            return {
                "architectures": ["DreamModel"], "model_type": "Dream",
                "hidden_size": self.dim, "num_hidden_layers": self.n_layers,
                "num_attention_heads": self.n_heads, "num_key_value_heads": self.n_kv_heads,
                "intermediate_size": self.ffn_dim, "hidden_act": "silu", "rms_norm_eps": self.norm_eps,
                "rope_theta": self.rope_theta, "rope_scaling": None, "max_position_embeddings": self.max_seq_len,
                "vocab_size": self.vocab_size, "tie_word_embeddings": self.tie_embeddings,
                "attention_bias": self.qkv_bias, "use_sliding_window": False, "use_cache": False, **ids,
            }
        if self.format == "llada_moe":
            return {
                "architectures": ["LLaDAMoEModelLM"], "model_type": "llada",
                "hidden_size": self.dim, "num_hidden_layers": self.n_layers,
                "num_attention_heads": self.n_heads, "num_key_value_heads": self.n_kv_heads,
                "expert_intermediate_size": self.ffn_dim, "num_experts": self.n_experts,
                "num_experts_per_tok": self.experts_per_token,
                "shared_expert_intermediate_size": self.shared_expert_ffn_dim or None,
                "moe_layer_freq": [1] * self.n_layers, "moe_router_score_function": "softmax",
                "norm_topk_prob": self.norm_topk_prob, "qk_layernorm": self.qk_norm, "partial_rotary_factor": 1.0,
                "hidden_act": "silu", "rms_norm_eps": self.norm_eps, "rope_theta": self.rope_theta,
                "max_position_embeddings": self.max_seq_len, "vocab_size": self.vocab_size,
                "tie_word_embeddings": self.tie_embeddings, "attention_bias": False, "use_cache": False, **ids,
            }
        out = {
            "architectures": ["ILLaDAForCausalLM"], "model_type": "illada",
            "hidden_size": self.dim, "num_hidden_layers": self.n_layers,
            "num_attention_heads": self.n_heads, "num_key_value_heads": self.n_kv_heads,
            "intermediate_size": self.ffn_dim, "hidden_act": "silu", "rms_norm_eps": self.norm_eps,
            "rope_theta": self.rope_theta, "max_position_embeddings": self.max_seq_len,
            "vocab_size": self.vocab_size, "tie_word_embeddings": self.tie_embeddings,
            "attention_bias": False, "mlp_bias": False, **ids,
        }
        if self.head_dim != self.dim // self.n_heads:
            out["head_dim"] = self.head_dim
        return out

    def replace(self, **changes: Any) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    @property
    def num_parameters(self) -> int:
        attn = self.dim * self.head_dim * (2 * self.n_heads + 2 * self.n_kv_heads)
        attn += self.head_dim * (self.n_heads + 2 * self.n_kv_heads) if self.qkv_bias else 0
        attn += 2 * self.head_dim if self.qk_norm else 0
        if self.is_moe:
            ffn = self.n_experts * (3 * self.dim * self.ffn_dim + self.dim) + 3 * self.dim * self.shared_expert_ffn_dim
        else:
            ffn = 3 * self.dim * self.ffn_dim
        per_layer = attn + ffn + 2 * self.dim
        head = 0 if self.tie_embeddings else self.vocab_size * self.dim
        return self.vocab_size * self.dim + self.n_layers * per_layer + self.dim + head


# Real 8B shapes (the checkpoints' config.json files); used with random weights to measure latency.
PRESETS: dict[str, ModelConfig] = {
    "llada-8b": ModelConfig(
        vocab_size=126464, dim=4096, n_layers=32, n_heads=32, n_kv_heads=32, ffn_dim=12288,
        norm_eps=1e-5, rope_theta=500000.0, max_seq_len=4096, tie_embeddings=False, format="llada",
        mask_token_id=126336, eos_token_id=126081, pad_token_id=126081,
    ),
    "illada-8b": ModelConfig(
        # rope_theta / rms_norm_eps of iLLaDA are unverified in the reference; Llama-3 values are used.
        vocab_size=155136, dim=4096, n_layers=32, n_heads=32, n_kv_heads=8, ffn_dim=14336,
        norm_eps=1e-5, rope_theta=500000.0, max_seq_len=8192, tie_embeddings=True, format="illada",
        mask_token_id=5,
    ),
    # LLaDA-1.5 is LLaDA-8B-Instruct after preference optimisation: same architecture and format.
    "llada-1.5-8b": ModelConfig(
        vocab_size=126464, dim=4096, n_layers=32, n_heads=32, n_kv_heads=32, ffn_dim=12288,
        norm_eps=1e-5, rope_theta=500000.0, max_seq_len=4096, tie_embeddings=False, format="llada",
        mask_token_id=126336, eos_token_id=126081, pad_token_id=126081,
    ),
    # Dream-v0-7B (Base and Instruct): Qwen2.5-7B's shapes; <|mask|>=151666, <|endoftext|>=151643.
    "dream-7b": ModelConfig(
        vocab_size=152064, dim=3584, n_layers=28, n_heads=28, n_kv_heads=4, ffn_dim=18944,
        norm_eps=1e-6, rope_theta=1000000.0, max_seq_len=131072, tie_embeddings=False, format="dream",
        qkv_bias=True, logits_shift=True,
        mask_token_id=151666, eos_token_id=151643, pad_token_id=151643, bos_token_id=151643,
    ),
    # LLaDA-MoE-7B-A1B (Base and Instruct): 64 experts of width 1024, 8 per token, qk-norm, RoPE base 50000.
    # Mask 156895 and EOS 156892 are the ids its model card and dInfer pass; tie_word_embeddings is unverified.
    "llada-moe-7b-a1b": ModelConfig(
        vocab_size=157184, dim=2048, n_layers=16, n_heads=16, n_kv_heads=16, ffn_dim=1024,
        norm_eps=1e-5, rope_theta=50000.0, max_seq_len=8192, tie_embeddings=False, format="llada_moe",
        qk_norm=True, n_experts=64, experts_per_token=8,
        mask_token_id=156895, eos_token_id=156892,
    ),
}


def preset(name: str) -> ModelConfig:
    """The config of a named preset (``llada-8b``, ``illada-8b``, ``llada-1.5-8b``, ``dream-7b``,
    ``llada-moe-7b-a1b``)."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown model preset {name!r}; known presets: {sorted(PRESETS)}") from None


def _llama_layout(hf: dict[str, Any], source: str, norm_eps: float, max_seq_len: int,
                  ffn_field: str = "intermediate_size") -> dict[str, Any]:
    """The fields every Hugging Face Llama-layout config names alike (Llama/iLLaDA, Dream, LLaDA-MoE); defaults
    that differ by family are the caller's (the value its modeling code assumes when the field is absent)."""
    n_heads = _require(hf, source, "num_attention_heads")
    return dict(
        vocab_size=_require(hf, source, "vocab_size"),
        dim=_require(hf, source, "hidden_size"),
        n_layers=_require(hf, source, "num_hidden_layers"),
        n_heads=n_heads,
        n_kv_heads=hf.get("num_key_value_heads") or n_heads,
        ffn_dim=_require(hf, source, ffn_field),
        norm_eps=float(hf.get("rms_norm_eps", norm_eps)),
        rope_theta=float(hf.get("rope_theta", 10000.0)),
        max_seq_len=hf.get("max_position_embeddings", max_seq_len),
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        mask_token_id=hf.get("mask_token_id"),
        eos_token_id=_first_id(hf.get("eos_token_id")),
        pad_token_id=hf.get("pad_token_id"),
        bos_token_id=hf.get("bos_token_id"),
    )


def _require_whole_heads(hf: dict[str, Any], source: str) -> None:
    """head_dim = hidden_size / num_attention_heads (Dream's and LLaDA-MoE's code take it so)."""
    dim, n_heads = _require(hf, source, "hidden_size"), _require(hf, source, "num_attention_heads")
    if dim % n_heads:
        raise ConfigError(f"{source}: hidden_size={dim} is not a multiple of num_attention_heads={n_heads}")


def _require(hf: dict[str, Any], source: str, field: str) -> Any:
    if field not in hf or hf[field] is None:
        raise ConfigError(f"{source}: required field {field!r} is missing")
    return hf[field]


def _require_equal(hf: dict[str, Any], source: str, expected: dict[str, str]) -> None:
    for field, want in expected.items():
        if field in hf and hf[field] != want:
            raise ConfigError(f"{source}: field {field!r}={hf[field]!r} is not supported (only {want!r})")


def _require_false(hf: dict[str, Any], source: str, fields: tuple[str, ...]) -> None:
    for field in fields:
        if hf.get(field):
            raise ConfigError(f"{source}: field {field!r}={hf[field]!r} is not supported (must be false)")


def _first_id(value: Any) -> int | None:
    # Llama-style configs may list several EOS ids; the first is the canonical end of sequence.
    if isinstance(value, list):
        return value[0] if value else None
    return value
