"""illada: sweep sampler and scoring settings of masked diffusion LMs and measure quality with latency."""

from illada.config import PRESETS, ConfigError, ModelConfig, preset
from illada.loading import LoadedModel, load
from illada.model import KVCache, Transformer
from illada.tokenizer import SpecialIds, Tokenizer, TokenizerError

__version__ = "0.1.0"

__all__ = [
    "PRESETS", "ConfigError", "KVCache", "LoadedModel", "ModelConfig", "SpecialIds", "Tokenizer",
    "TokenizerError", "Transformer", "load", "preset",
]
