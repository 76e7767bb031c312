"""illada: sweep sampler and scoring settings of masked diffusion LMs and measure quality with latency.

The names below are imported on first use (module ``__getattr__``), so commands that only read results
(``illada-status``, analysis) never pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the submodule that defines it
_LAZY = {
    "PRESETS": "config", "ConfigError": "config", "ModelConfig": "config", "preset": "config",
    "LoadedModel": "loading", "load": "loading",
    "KVCache": "model", "Transformer": "model",
    "SpecialIds": "tokenizer", "Tokenizer": "tokenizer", "TokenizerError": "tokenizer",
}

__all__ = sorted(_LAZY)

if TYPE_CHECKING:
    from illada.config import PRESETS, ConfigError, ModelConfig, preset
    from illada.loading import LoadedModel, load
    from illada.model import KVCache, Transformer
    from illada.tokenizer import SpecialIds, Tokenizer, TokenizerError


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'illada' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"illada.{_LAZY[name]}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
