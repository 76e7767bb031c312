"""Hugging Face safetensors checkpoints of every format: tensor names, lazy loading, saving.

Loading builds the model on the meta device and fills each parameter straight from the memory-mapped file
in the target dtype and device, one tensor at a time, so the weights exist once in memory.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
import torch.nn as nn
from safetensors import safe_open
from safetensors.torch import save_file

from illada.atomic import atomic_target, atomic_write_text
from illada.config import ModelConfig
from illada.model import Transformer

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"

# internal name -> on-disk name, per format; "{i}" is the layer index.
_LAYER_NAMES = {
    "llada": {
        "attention_norm.weight": "model.transformer.blocks.{i}.attn_norm.weight",
        "attention.wq.weight": "model.transformer.blocks.{i}.q_proj.weight",
        "attention.wk.weight": "model.transformer.blocks.{i}.k_proj.weight",
        "attention.wv.weight": "model.transformer.blocks.{i}.v_proj.weight",
        "attention.wo.weight": "model.transformer.blocks.{i}.attn_out.weight",
        "ffn_norm.weight": "model.transformer.blocks.{i}.ff_norm.weight",
        "feed_forward.w1.weight": "model.transformer.blocks.{i}.ff_proj.weight",
        "feed_forward.w3.weight": "model.transformer.blocks.{i}.up_proj.weight",
        "feed_forward.w2.weight": "model.transformer.blocks.{i}.ff_out.weight",
    },
    "illada": {
        "attention_norm.weight": "model.layers.{i}.input_layernorm.weight",
        "attention.wq.weight": "model.layers.{i}.self_attn.q_proj.weight",
        "attention.wk.weight": "model.layers.{i}.self_attn.k_proj.weight",
        "attention.wv.weight": "model.layers.{i}.self_attn.v_proj.weight",
        "attention.wo.weight": "model.layers.{i}.self_attn.o_proj.weight",
        "ffn_norm.weight": "model.layers.{i}.post_attention_layernorm.weight",
        "feed_forward.w1.weight": "model.layers.{i}.mlp.gate_proj.weight",
        "feed_forward.w3.weight": "model.layers.{i}.mlp.up_proj.weight",
        "feed_forward.w2.weight": "model.layers.{i}.mlp.down_proj.weight",
    },
}
# Dream uses Qwen2's names, the same as iLLaDA's Llama names; LLaDA-MoE shares the attention and norm names
# and routes its FFN (names below).
_LAYER_NAMES["dream"] = dict(_LAYER_NAMES["illada"])
_LAYER_NAMES["llada_moe"] = {k: v for k, v in _LAYER_NAMES["illada"].items() if not k.startswith("feed_forward.")}
# Optional parts, present when the config switches them on (qkv_bias, qk_norm, experts, shared expert).
_QKV_BIAS_NAMES = {
    "attention.wq.bias": "model.layers.{i}.self_attn.q_proj.bias",
    "attention.wk.bias": "model.layers.{i}.self_attn.k_proj.bias",
    "attention.wv.bias": "model.layers.{i}.self_attn.v_proj.bias",
}
_QK_NORM_NAMES = {
    "attention.q_norm.weight": "model.layers.{i}.self_attn.q_norm.weight",
    "attention.k_norm.weight": "model.layers.{i}.self_attn.k_norm.weight",
}
_MOE_NAMES = {"feed_forward.gate.weight": "model.layers.{i}.mlp.gate.weight"}
_EXPERT_NAMES = {  # "{e}" is the expert index
    "feed_forward.experts.{e}.w1.weight": "model.layers.{i}.mlp.experts.{e}.gate_proj.weight",
    "feed_forward.experts.{e}.w3.weight": "model.layers.{i}.mlp.experts.{e}.up_proj.weight",
    "feed_forward.experts.{e}.w2.weight": "model.layers.{i}.mlp.experts.{e}.down_proj.weight",
}
_SHARED_EXPERT_NAMES = {  # LLaDA-MoE hangs the shared expert on the decoder layer, not on its mlp
    "feed_forward.shared_expert.w1.weight": "model.layers.{i}.shared_expert.gate_proj.weight",
    "feed_forward.shared_expert.w3.weight": "model.layers.{i}.shared_expert.up_proj.weight",
    "feed_forward.shared_expert.w2.weight": "model.layers.{i}.shared_expert.down_proj.weight",
}
_GLOBAL_NAMES = {
    "llada": {
        "tok_embeddings.weight": "model.transformer.wte.weight",
        "norm.weight": "model.transformer.ln_f.weight",
        "output.weight": "model.transformer.ff_out.weight",
    },
    "illada": {
        "tok_embeddings.weight": "model.embed_tokens.weight",
        "norm.weight": "model.norm.weight",
        "output.weight": "lm_head.weight",
    },
}
_GLOBAL_NAMES["dream"] = _GLOBAL_NAMES["llada_moe"] = _GLOBAL_NAMES["illada"]
# Tensors some exporters add that carry nothing the model needs (recomputed RoPE tables).
_IGNORED = re.compile(r".*rotary_emb\.inv_freq$")


class CheckpointError(ValueError):
    """A checkpoint file or tensor is missing, unreadable or does not fit the config."""


def tensor_names(cfg: ModelConfig) -> dict[str, str]:
    """Map every parameter of ``Transformer(cfg)`` to its name in ``cfg.format`` on disk."""
    names = {k: v for k, v in _GLOBAL_NAMES[cfg.format].items()}
    if cfg.tie_embeddings:
        del names["output.weight"]
    per_layer = dict(_LAYER_NAMES[cfg.format])
    if cfg.qkv_bias:
        if cfg.format == "llada":  # never built: the LLaDA reader rejects include_qkv_bias
            raise CheckpointError("qkv_bias is not supported in the llada format")
        per_layer.update(_QKV_BIAS_NAMES)
    if cfg.qk_norm:
        per_layer.update(_QK_NORM_NAMES)
    if cfg.is_moe:
        per_layer.update(_MOE_NAMES)
        for e in range(cfg.n_experts):
            per_layer.update({k.format(e=e): v.replace("{e}", str(e)) for k, v in _EXPERT_NAMES.items()})
        if cfg.shared_expert_ffn_dim:
            per_layer.update(_SHARED_EXPERT_NAMES)
    for i in range(cfg.n_layers):
        for internal, external in per_layer.items():
            names[f"layers.{i}.{internal}"] = external.format(i=i)
    return names


def shard_files(path: str | Path) -> list[Path]:
    """The safetensors files of a checkpoint directory (single file or index + shards), all checked to exist."""
    path = Path(path)
    single, index = path / SINGLE_FILE, path / INDEX_FILE
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError) as e:
            raise CheckpointError(f"{index}: not a valid safetensors index ({e!r})") from e
        files = [path / f for f in dict.fromkeys(weight_map.values())]
        for f in files:
            if not f.is_file():
                raise CheckpointError(f"{f}: shard listed in {index.name} is missing")
        return files
    if single.is_file():
        return [single]
    raise CheckpointError(f"{path}: no {SINGLE_FILE} or {INDEX_FILE} found")


def load_weights(model: Transformer, path: str | Path, device: torch.device | str, dtype: torch.dtype | None) -> None:
    """Fill the (meta) parameters of ``model`` from the checkpoint at ``path``; ``dtype=None`` keeps the file's."""
    cfg = model.config
    by_disk_name = {v: k for k, v in tensor_names(cfg).items()}
    tied_head = _GLOBAL_NAMES[cfg.format]["output.weight"] if cfg.tie_embeddings else None
    loaded: set[str] = set()
    for file in shard_files(path):
        try:
            handle = safe_open(str(file), framework="pt", device=str(device))
        except Exception as e:  # safetensors raises its own error type for truncated or corrupt headers
            raise CheckpointError(f"{file}: cannot read safetensors file, it may be truncated or corrupt ({e})") from e
        with handle as f:
            for disk_name in f.keys():
                internal = by_disk_name.get(disk_name)
                if internal is None:
                    if disk_name == tied_head or _IGNORED.match(disk_name):
                        continue  # a tied head saved anyway is the embedding again
                    raise CheckpointError(f"{file}: unexpected tensor {disk_name!r} for a {cfg.format} config")
                target = model.get_parameter(internal)
                shape = tuple(f.get_slice(disk_name).get_shape())
                if shape != tuple(target.shape):
                    raise CheckpointError(
                        f"{file}: tensor {disk_name!r} has shape {shape}, config.json implies {tuple(target.shape)}"
                    )
                try:
                    tensor = f.get_tensor(disk_name)
                except Exception as e:
                    raise CheckpointError(f"{file}: cannot read tensor {disk_name!r}, the file may be truncated ({e})") from e
                _set_parameter(model, internal, tensor.to(dtype) if dtype is not None else tensor)
                loaded.add(internal)
    missing = sorted(set(by_disk_name.values()) - loaded)
    if missing:
        names = tensor_names(cfg)
        shown = ", ".join(repr(names[m]) for m in missing[:5])
        raise CheckpointError(f"{path}: {len(missing)} tensor(s) missing from the checkpoint, e.g. {shown}")
    model.tie_weights()


def _set_parameter(model: nn.Module, name: str, tensor: torch.Tensor) -> None:
    module_name, _, attr = name.rpartition(".")
    module = model.get_submodule(module_name)
    module._parameters[attr] = nn.Parameter(tensor, requires_grad=False)


def save_checkpoint(model: Transformer, path: str | Path, max_shard_bytes: int | None = None,
                    extra_config: dict | None = None) -> Path:
    """Write ``config.json`` and safetensors (sharded with an index when ``max_shard_bytes`` is set).

    Files are written under temporary names and renamed, so a crash never leaves a half-written checkpoint
    that looks complete.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    cfg = model.config
    params = dict(model.named_parameters())
    tensors = {disk: params[internal].detach().contiguous().cpu() for internal, disk in tensor_names(cfg).items()}
    hf = {**cfg.to_hf_config(), "torch_dtype": str(model.dtype).removeprefix("torch."), **(extra_config or {})}
    shards = _plan_shards(tensors, max_shard_bytes)
    if len(shards) == 1:
        _atomic_save(shards[0], path / SINGLE_FILE)
        (path / INDEX_FILE).unlink(missing_ok=True)
    else:
        weight_map = {}
        for n, shard in enumerate(shards, start=1):
            fname = f"model-{n:05d}-of-{len(shards):05d}.safetensors"
            _atomic_save(shard, path / fname)
            weight_map.update({name: fname for name in shard})
        total = sum(t.numel() * t.element_size() for t in tensors.values())
        atomic_write_text(path / INDEX_FILE, json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
        (path / SINGLE_FILE).unlink(missing_ok=True)
    atomic_write_text(path / "config.json", json.dumps(hf, indent=2))
    return path


def _plan_shards(tensors: dict[str, torch.Tensor], max_shard_bytes: int | None) -> list[dict[str, torch.Tensor]]:
    if not max_shard_bytes:
        return [tensors]
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, t in tensors.items():
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = t
        size += nbytes
    return shards


def _atomic_save(tensors: dict[str, torch.Tensor], target: Path) -> None:
    with atomic_target(target) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
