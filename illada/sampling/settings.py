"""The one typed, validated description of a generation run (every sweep axis of the samplers)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

Remasking = Literal["low_confidence", "random", "topk_margin", "entropy"]
CacheMode = Literal["none", "prefix", "dual"]
ConfidencePrecision = Literal["auto", "logits", "float64"]

REMASKING: tuple[str, ...] = ("low_confidence", "random", "topk_margin", "entropy")
CACHE_MODES: tuple[str, ...] = ("none", "prefix", "dual")
CONFIDENCE_PRECISIONS: tuple[str, ...] = ("auto", "logits", "float64")


def _bad(name: str, value: Any, why: str) -> ValueError:
    return ValueError(f"SamplerSettings.{name}={value!r}: {why}")


@dataclass(frozen=True)
class SamplerSettings:
    """Knobs of LLaDA's ``generate()``, Fast-dLLM's parallel decoding / caches and iLLaDA's variable length.

    Special ids are explicit fields (``mask_id`` is required; ``eos_id``/``eot_id`` are needed only by the EOS
    controls and by variable-length stopping) so no model's ids are baked into the algorithm.

    * ``gen_length``: canvas length (fixed mode) or token budget (``variable_length``).
    * ``steps``: total steps of the fixed schedule, ``steps / (gen_length / block_length)`` per block. Ignored by
      the ``threshold``/``factor`` rules, which end a block when it has no mask left.
    * ``threshold`` (tau in (0, 1]) / ``factor`` (f > 0): Fast-dLLM's parallel decoding rules (at most one).
    * ``cache``: ``prefix`` or ``dual`` KV cache, refreshed by a full forward at each block start.
    * ``confidence_precision``: dtype of the softmax behind the confidence. ``auto`` follows the reference of the
      mode at hand: the logits' dtype for the LLaDA path, float64 whenever a Fast-dLLM rule or cache is on.
    * ``seed``: seeds a private generator (same stream as ``torch.manual_seed(seed)`` before the reference
      code); ``None`` draws from torch's global generator.
    """

    mask_id: int
    gen_length: int = 128
    steps: int = 128
    block_length: int = 128
    temperature: float = 0.0
    cfg_scale: float = 0.0
    remasking: Remasking = "low_confidence"
    threshold: float | None = None
    factor: float | None = None
    cache: CacheMode = "none"
    variable_length: bool = False
    stop_ids: tuple[int, ...] = ()
    eos_id: int | None = None
    eot_id: int | None = None
    logits_eos_inf: bool = False
    confidence_eos_eot_inf: bool = False
    confidence_precision: ConfidencePrecision = "auto"
    seed: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.stop_ids, list):
            object.__setattr__(self, "stop_ids", tuple(self.stop_ids))
        for name in ("mask_id", "gen_length", "steps", "block_length"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise _bad(name, value, "must be an integer")
        if self.mask_id < 0:
            raise _bad("mask_id", self.mask_id, "must be a token id >= 0")
        for name in ("gen_length", "steps", "block_length"):
            if getattr(self, name) < 1:
                raise _bad(name, getattr(self, name), "must be >= 1")
        if self.gen_length % self.block_length:
            raise _bad("block_length", self.block_length, f"must divide gen_length={self.gen_length}")
        if self.is_fixed_schedule and self.steps % self.num_blocks:
            raise _bad("steps", self.steps,
                       f"must be divisible by the number of blocks gen_length/block_length={self.num_blocks} "
                       "(fixed schedule)")
        if not _finite(self.temperature) or self.temperature < 0:
            raise _bad("temperature", self.temperature, "must be a finite number >= 0")
        if not _finite(self.cfg_scale) or self.cfg_scale < 0:
            raise _bad("cfg_scale", self.cfg_scale, "must be a finite number >= 0")
        if self.remasking not in REMASKING:
            raise _bad("remasking", self.remasking, f"unknown rule; choose one of {list(REMASKING)}")
        if self.threshold is not None and self.factor is not None:
            raise _bad("factor", self.factor, f"cannot be combined with threshold={self.threshold}; set one")
        if self.threshold is not None and not (_finite(self.threshold) and 0 < self.threshold <= 1):
            raise _bad("threshold", self.threshold, "tau must lie in (0, 1]")
        if self.factor is not None and not (_finite(self.factor) and self.factor > 0):
            raise _bad("factor", self.factor, "must be a finite number > 0")
        if self.cache not in CACHE_MODES:
            raise _bad("cache", self.cache, f"unknown cache mode; choose one of {list(CACHE_MODES)}")
        if self.confidence_precision not in CONFIDENCE_PRECISIONS:
            raise _bad("confidence_precision", self.confidence_precision,
                       f"choose one of {list(CONFIDENCE_PRECISIONS)}")
        for name in ("eos_id", "eot_id"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise _bad(name, value, "must be a token id >= 0 or None")
        if any(isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in self.stop_ids):
            raise _bad("stop_ids", self.stop_ids, "must be token ids >= 0")
        special = {"eos_id": self.eos_id, "eot_id": self.eot_id}
        for name, value in [*special.items(), *(("stop_ids", i) for i in self.stop_ids)]:
            if value == self.mask_id:
                raise _bad(name, value, f"equals mask_id={self.mask_id}")
        if self.logits_eos_inf and self.eos_id is None:
            raise _bad("logits_eos_inf", True, "needs eos_id (the EOS id of the model at hand)")
        if self.confidence_eos_eot_inf and self.eos_id is None and self.eot_id is None:
            raise _bad("confidence_eos_eot_inf", True, "needs eos_id and/or eot_id (ids of the model at hand)")
        if self.variable_length and not self.stop_set:
            raise _bad("variable_length", True, "needs stop_ids or eos_id to know when an answer ends")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise _bad("seed", self.seed, "must be an integer or None")

    # ------------------------------------------------------------------ derived
    @property
    def num_blocks(self) -> int:
        return self.gen_length // self.block_length

    @property
    def steps_per_block(self) -> int:
        return self.steps // self.num_blocks

    @property
    def is_fixed_schedule(self) -> bool:
        """True for LLaDA's uniform per-step transfer counts (no Fast-dLLM threshold/factor)."""
        return self.threshold is None and self.factor is None

    @property
    def stop_set(self) -> tuple[int, ...]:
        """Ids that end an answer: ``stop_ids`` plus ``eos_id``/``eot_id`` when set."""
        ids = list(self.stop_ids) + [i for i in (self.eos_id, self.eot_id) if i is not None]
        return tuple(dict.fromkeys(ids))

    @property
    def uses_float64_confidence(self) -> bool:
        if self.confidence_precision == "auto":
            # LLaDA's generate() takes the softmax in the logits' dtype; Fast-dLLM's rules take it in float64.
            return not self.is_fixed_schedule or self.cache != "none"
        return self.confidence_precision == "float64"

    def replace(self, **changes: Any) -> "SamplerSettings":
        return dataclasses.replace(self, **changes)

    @classmethod
    def for_model(cls, config: Any, **kwargs: Any) -> "SamplerSettings":
        """Settings with ``mask_id``/``eos_id`` taken from a :class:`~illada.config.ModelConfig` unless given."""
        if "mask_id" not in kwargs:
            if getattr(config, "mask_token_id", None) is None:
                raise ValueError("SamplerSettings.mask_id=None: the model config has no mask_token_id; pass mask_id")
            kwargs["mask_id"] = config.mask_token_id
        if "eos_id" not in kwargs and getattr(config, "eos_token_id", None) is not None:
            kwargs["eos_id"] = config.eos_token_id
        return cls(**kwargs)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
