"""One dataclass that describes every dense iLLaDA/LLaDA Transformer, built from a checkpoint's config.json.

Two on-disk families share the same computation and differ only in field and tensor names:

* ``llada``  -- OLMo-style ``config.json`` (``d_model``, ``n_layers`` ...), ``model_type: llada``.
* ``illada`` -- Llama-style ``config.json`` (``hidden_size``, ``num_hidden_layers`` ...).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

CheckpointFormat = Literal["llada", "illada"]

# model_type values that carry a Llama-style config (iLLaDA ships a remote class; the type string is not pinned).
LLAMA_STYLE_MODEL_TYPES = ("illada", "llama")


class ConfigError(ValueError):
    """A config.json field is missing, unknown or describes something this model cannot compute."""


@dataclass(frozen=True)
class ModelConfig:
    """Shape and numerics of a bidirectional (non-causal) pre-norm SwiGLU Transformer with RoPE."""

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
    format: CheckpointFormat = "illada"
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
        if self.format not in ("llada", "illada"):
            raise ConfigError(f"ModelConfig.format must be 'llada' or 'illada', got {self.format!r}")

    # ------------------------------------------------------------------ config.json <-> ModelConfig
    @classmethod
    def from_hf_config(cls, hf: dict[str, Any], source: str = "config.json") -> "ModelConfig":
        """Build from a parsed ``config.json``; errors name ``source`` and the offending field."""
        if not isinstance(hf, dict):
            raise ConfigError(f"{source}: a JSON {type(hf).__name__}, not an object")
        model_type = hf.get("model_type")
        if model_type == "llada":
            build = cls._from_llada
        elif model_type in LLAMA_STYLE_MODEL_TYPES:
            build = cls._from_llama_style
        else:
            raise ConfigError(
                f"{source}: unknown model_type={model_type!r}; expected 'llada' (LLaDA, OLMo-style) "
                f"or one of {LLAMA_STYLE_MODEL_TYPES} (iLLaDA, Llama-style)"
            )
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
        n_heads = _require(hf, source, "num_attention_heads")
        return cls(
            vocab_size=_require(hf, source, "vocab_size"),
            dim=_require(hf, source, "hidden_size"),
            n_layers=_require(hf, source, "num_hidden_layers"),
            n_heads=n_heads,
            n_kv_heads=hf.get("num_key_value_heads") or n_heads,
            ffn_dim=_require(hf, source, "intermediate_size"),
            head_dim=hf.get("head_dim") or 0,
            norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
            rope_theta=float(hf.get("rope_theta", 10000.0)),
            max_seq_len=hf.get("max_position_embeddings", 8192),
            tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
            format="illada",
            mask_token_id=hf.get("mask_token_id"),
            eos_token_id=_first_id(hf.get("eos_token_id")),
            pad_token_id=hf.get("pad_token_id"),
            bos_token_id=hf.get("bos_token_id"),
        )

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
        ffn = 3 * self.dim * self.ffn_dim
        per_layer = attn + ffn + 2 * self.dim
        head = 0 if self.tie_embeddings else self.vocab_size * self.dim
        return self.vocab_size * self.dim + self.n_layers * per_layer + self.dim + head


# Real 8B shapes (../shared/reference/dllm.md section 1); used with random weights to measure latency.
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
}


def preset(name: str) -> ModelConfig:
    """The config of a named preset (``llada-8b``, ``illada-8b``)."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown model preset {name!r}; known presets: {sorted(PRESETS)}") from None


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
