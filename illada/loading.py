"""The one call users and notebooks use: a checkpoint path or preset name in; model, tokenizer, ids out."""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from illada.attention import get_backend
from illada.checkpoint import load_weights
from illada.config import PRESETS, ModelConfig, preset
from illada.model import Transformer
from illada.timing import synchronize
from illada.tokenizer import SpecialIds, Tokenizer, resolve_special_ids

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


@dataclass
class LoadedModel:
    """What :func:`load` returns. ``tokenizer`` is None for presets (random weights, no vocabulary files)."""

    model: Transformer
    tokenizer: Tokenizer | None
    special_ids: SpecialIds
    source: str
    load_seconds: float

    @property
    def config(self) -> ModelConfig:
        return self.model.config


def parse_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """``"bf16"``/``"bfloat16"``/``torch.bfloat16`` -> ``torch.bfloat16``; errors name the value."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    try:
        return DTYPES[dtype]
    except KeyError:
        raise ValueError(f"dtype {dtype!r} is unknown; choose one of {sorted(DTYPES)}") from None


class DeviceUnavailableError(RuntimeError):
    """The device a model should run on does not exist in this process (e.g. a job without the GPU it asked for)."""


def check_device(device: str | torch.device) -> None:
    """Raise :class:`DeviceUnavailableError` naming the device, the host and ``CUDA_VISIBLE_DEVICES`` unless
    ``device`` can hold tensors here.

    Called before any weight is read, so a job that got no GPU fails with this cause instead of an error from
    deep inside the loader (``pin_memory``, ``safe_open``).
    """
    device = torch.device(device)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (device.index is not None and device.index >= count):
            what = "no CUDA device" if count == 0 else f"only {count} CUDA device(s)"
            build = "" if torch.version.cuda else f", torch {torch.__version__} built without CUDA"
            visible = os.environ.get("CUDA_VISIBLE_DEVICES", "unset")
            raise DeviceUnavailableError(f"device={str(device)!r}: {what} in this job (CUDA_VISIBLE_DEVICES={visible}, "
                                         f"host {socket.gethostname()}{build})")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceUnavailableError(f"device={str(device)!r}: MPS is not available on host {socket.gethostname()}")


def check_host(device: str | torch.device, attn_backend: str = "sdpa", dtype: str | torch.dtype | None = None) -> None:
    """Raise :class:`DeviceUnavailableError` naming the setting unless this host can run a point with these
    settings: its device exists here (:func:`check_device`) and its attention backend's package and device
    are here (flash-attn). What a point's settings alone decide is :func:`illada.evaluate.resolve`'s.

    Checked where the point runs, before any weight is read: in the sweep driver for in-process points, once
    per job (and setting) on a job's node."""
    check_device(device)
    try:
        get_backend(attn_backend, device, parse_dtype(dtype))
    except ValueError as e:
        raise DeviceUnavailableError(f"attn_backend={attn_backend!r}: {e} (host {socket.gethostname()})") from None


EMBEDDED_DEFAULT = Path(__file__).parent / "embedded" / "default"


def resolve_model(path_or_preset: str | Path) -> str:
    """``"default"`` -> the embedded model's directory; a preset name stays; a path becomes absolute."""
    name = str(path_or_preset)
    if name == "default":
        return str(EMBEDDED_DEFAULT)
    if name in PRESETS and not Path(name).exists():
        return name
    path = Path(name).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(
            f"model {name!r} is neither a checkpoint directory, 'default', nor a preset ({sorted(PRESETS)}){_hint()}"
        )
    return str(path.resolve())


def _hint() -> str:
    """What to do about a checkpoint directory that is not there: the model presets of the sweeps look under
    ``$ILLADA_CKPT_DIR`` (``sweeps/conf/model/*.yaml``), any directory can be given instead."""
    where = os.environ.get("ILLADA_CKPT_DIR")
    now = f"now {where!r}" if where else "unset, so ./checkpoints is used"
    return (f": download the checkpoint and set $ILLADA_CKPT_DIR to the folder holding it ({now}), or give its "
            "directory (model.path=DIR in illada-sweep, --model DIR in illada-eval)")


def describe(path_or_preset: str | Path, **special_id_overrides: int | None
             ) -> tuple[ModelConfig, Tokenizer | None, SpecialIds]:
    """Config, tokenizer and special ids without reading any weights (to validate settings up front)."""
    name = resolve_model(path_or_preset)
    if name in PRESETS:
        cfg, tokenizer = preset(name), None
    else:
        path = Path(name)
        cfg = ModelConfig.from_json(path / "config.json")
        tokenizer = Tokenizer.from_dir(path) if Tokenizer.files_present(path) else None
    return cfg, tokenizer, resolve_special_ids(cfg, tokenizer, **special_id_overrides)


def load(
    path_or_preset: str | Path,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype | None = None,
    attn_backend: str = "sdpa",
    seed: int = 0,
    **special_id_overrides: int | None,
) -> LoadedModel:
    """Load a local Hugging Face checkpoint directory (any family in ``illada.config.FAMILIES``), a preset
    (``llada-8b``, ``illada-8b``, ``llada-1.5-8b``, ``dream-7b``, ``llada-moe-7b-a1b``), or ``"default"`` (the
    embedded model).

    A checkpoint keeps its stored dtype unless ``dtype`` is given; a preset gets random weights in ``dtype``
    (default bfloat16 on CUDA, float32 otherwise) generated in place. ``special_id_overrides`` take the
    fields of :class:`SpecialIds` (``mask=...``, ``eos=...``) and win over what the files say.
    """
    start = time.perf_counter()
    device = torch.device(device)
    check_device(device)
    dtype = parse_dtype(dtype)
    name = resolve_model(path_or_preset)
    cfg, tokenizer, ids = describe(name, **special_id_overrides)
    if name in PRESETS:
        dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
        model = Transformer.random(cfg, device=device, dtype=dtype, attn_backend=attn_backend, seed=seed)
    else:
        with torch.device("meta"):
            model = Transformer(cfg, attn_backend=attn_backend)
        load_weights(model, name, device=device, dtype=dtype)
    model.eval().requires_grad_(False)
    synchronize(device)  # load_seconds covers the copies to the device
    return LoadedModel(model, tokenizer, ids, name, time.perf_counter() - start)
