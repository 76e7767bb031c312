"""The one typed, validated description of a generation run (every sweep axis of the samplers)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

Remasking = Literal["low_confidence", "random", "topk_margin", "entropy"]
CacheMode = Literal["none", "prefix", "dual", "dkv", "dllm", "d2cache"]
ConfidencePrecision = Literal["auto", "logits", "float64"]

REMASKING: tuple[str, ...] = ("low_confidence", "random", "topk_margin", "entropy")
CACHE_MODES: tuple[str, ...] = ("none", "prefix", "dual", "dkv", "dllm", "d2cache")
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
      the ``threshold``/``factor`` rules and the adaptive decoders, which end a block when it has no mask left.
    * ``threshold`` (tau in (0, 1]) / ``factor`` (f > 0): Fast-dLLM's parallel decoding rules (at most one).
    * ``cache``: ``prefix`` or ``dual`` KV cache, refreshed by a full forward at each block start; ``dkv``:
      dKV-Cache (illada/sampling/dkv_cache.py) refreshed every ``cache_steps`` steps, ``dkv_variant`` ``decode``
      (keys/values of decoded tokens cached one step late) or ``greedy`` (each block decoded in an order drawn at
      its start; only the tokens decoded last step, those decoded next and ``dkv_window`` masked neighbours of
      the latter are recomputed); ``dllm``: dLLM-Cache (illada/sampling/dllm_cache.py), prompt and
      response features refreshed every ``prompt_interval_steps`` / ``gen_interval_steps`` forwards, in between
      the ``transfer_ratio`` of response columns whose values changed most; ``d2cache``: d2Cache
      (illada/sampling/d2cache.py), one full forward, then only the ``current_k`` masked positions best by
      certainty prior (width ``cache_sigma``), the just-decoded ones and the ``rollout_p`` share of the attention
      rollout (gaps up to ``inflate_w`` filled). A cache's knobs are declared in :data:`CACHES`.
    * ``confidence_precision``: dtype of the softmax behind the confidence. ``auto`` follows the reference of the
      mode at hand: the logits' dtype for the LLaDA path, float64 whenever a Fast-dLLM rule or cache is on
      (and with dKV-Cache, as its reference; the fixed schedule with dLLM-Cache or d2Cache: the logits' dtype;
      a certainty prior or PC-Sampler's debias without those caches: the logits' dtype, as d2Cache's loop).
    * ``seed``: seeds a private generator (same stream as ``torch.manual_seed(seed)`` before the reference
      code); ``None`` draws from torch's global generator.
    * ``decoder``: the selection rule, a name of :data:`DECODERS` (e.g. ``llada``: fixed schedule / Fast-dLLM
      rules; ``eb_sampler`` / ``eb_sampler_sglang``: EB-Sampler as d2Cache / SGLang; ``hierarchy``: dInfer;
      ``klass``: KL-adaptive stability; ``credit``: dInfer's credit decoding; ``wino``: wide-in narrow-out;
      ``slow_fast``: SlowFast sampling).
      Its knobs (e.g. ``gamma``; ``threshold``/``low_threshold`` for ``hierarchy``) default to the reference's
      published values; a knob the selected decoder does not read is an error.
    * ``alg`` / ``alg_temp`` / ``top_p`` / ``top_k`` / ``eps``: decoder ``dream``, Dream's ``diffusion_generate``
      (``gen_length`` = its ``max_new_tokens``, ``steps`` = its ``steps``, one block: ``block_length = gen_length``).
    * ``sigma``: d2Cache's certainty prior (confidence times a Gaussian density of decoded neighbours).
    * ``debias`` / ``clip_alpha`` / ``pc_lambda`` / ``token_frequencies``: PC-Sampler's calibration
      ``exp(-pc_lambda * j) * min(-p(x0) log f(x0), clip_alpha)`` with token frequencies f from a file (None:
      the shipped ``illada/sampling/data/token_frequencies_default.json``).
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
    # ---- decoding strategy (illada/sampling/decoders.py) and its knobs; None = the decoder's published default
    decoder: str = "llada"
    gamma: float | None = None
    low_threshold: float | None = None
    # KLASS (klass.py), credit decoding (credit.py), WINO (wino.py), SlowFast (slow_fast.py)
    kl_threshold: float | None = None
    kl_history_length: int | None = None
    credit_alpha: float | None = None
    boost_gamma: float | None = None
    decay_beta: float | None = None
    wide_in_threshold: float | None = None
    narrow_out_threshold: float | None = None
    k_exploration_steps: int | None = None
    cycle_len_confidence_threshold: float | None = None
    cycle_length_stability_window: int | None = None
    cycle_length_stability_std_dev_threshold: float | None = None
    high_confidence_threshold: float | None = None
    max_sub_cycles_per_block: int | None = None
    # Dream's diffusion_generate (illada/sampling/dream.py): one canvas, no blocks
    alg: str | None = None
    alg_temp: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    eps: float | None = None
    # ---- confidence calibrations, for confidence-ranked decoders (DecoderSpec.calibrations)
    sigma: float | None = None
    debias: bool = False
    clip_alpha: float | None = None
    pc_lambda: float | None = None
    token_frequencies: str | None = None
    # ---- cache knobs (CACHES); None = the cache's published default
    cache_steps: int | None = None  # dKV-Cache (illada/sampling/dkv_cache.py)
    dkv_variant: str | None = None
    dkv_window: int | None = None
    prompt_interval_steps: int | None = None  # dLLM-Cache (illada/sampling/dllm_cache.py)
    gen_interval_steps: int | None = None
    transfer_ratio: float | None = None
    # d2Cache (illada/sampling/d2cache.py); cache_sigma is its certainty prior's width (``sigma`` is the decoder's)
    rollout_p: float | None = None
    current_k: int | None = None
    cache_sigma: float | None = None
    inflate_w: int | None = None

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
        self._resolve_decoder()
        self._resolve_cache()

    def _resolve_cache(self) -> None:
        """Reject knobs the selected cache does not read, fill in its published defaults, run its checks."""
        spec = CACHES[self.cache]
        for name in sorted(CACHE_KNOB_FIELDS - set(spec.knobs)):
            if getattr(self, name) is not None:
                users = [c for c, sp in CACHES.items() if name in sp.knobs]
                raise _bad(name, getattr(self, name), f"only used by cache {'|'.join(users)} (cache={self.cache!r})")
        for name, default in spec.knobs.items():
            if getattr(self, name) is None and default is not None:
                object.__setattr__(self, name, default)
        if spec.check is not None:
            spec.check(self)

    def _resolve_decoder(self) -> None:
        """Reject knobs the selected decoder does not read, fill in its published defaults, run its checks."""
        spec = DECODERS.get(self.decoder) if isinstance(self.decoder, str) else None
        if spec is None:
            raise _bad("decoder", self.decoder, f"unknown decoder; choose one of {list(DECODERS)}")
        allowed = set(spec.knobs) | (set(CALIBRATION_KNOBS) if spec.calibrations else set())
        for name in sorted(KNOB_FIELDS - allowed):
            value = getattr(self, name)
            if value is not None and value is not False:
                users = [d for d, sp in DECODERS.items()
                         if name in sp.knobs or (sp.calibrations and name in CALIBRATION_KNOBS)]
                raise _bad(name, value, f"only used by decoder {'|'.join(users)} (decoder={self.decoder!r})")
        for name, default in spec.knobs.items():
            if getattr(self, name) is None and default is not None:
                object.__setattr__(self, name, default)
        if spec.calibrations:
            _check_calibrations(self)
        if spec.check is not None:
            spec.check(self)

    @property
    def decoder_spec(self) -> "DecoderSpec":
        return DECODERS[self.decoder]

    # ------------------------------------------------------------------ derived
    @property
    def num_blocks(self) -> int:
        return self.gen_length // self.block_length

    @property
    def steps_per_block(self) -> int:
        return self.steps // self.num_blocks

    @property
    def is_fixed_schedule(self) -> bool:
        """True for LLaDA's uniform per-step transfer counts (decoder llada without Fast-dLLM threshold/factor)."""
        return self.decoder == "llada" and self.threshold is None and self.factor is None

    @property
    def draws_block_order(self) -> bool:
        """True when each block's unmasking order is drawn once, before its first forward (dKV-Cache-Greedy),
        instead of a fresh ``random`` score per step."""
        return self.cache == "dkv" and self.dkv_variant == "greedy"

    def check_batch(self, batch_size: int) -> None:
        """Reject a batch size these settings cannot run with (the rest is checked at construction)."""
        if self.cache == "dllm" and not self.is_fixed_schedule and batch_size > 1:
            # its refresh schedule counts the forwards of the whole call: in a batch, a row's schedule would
            # follow the slowest row's block lengths and the row would differ from its unbatched run
            raise ValueError(f"batch_size={batch_size}: SamplerSettings.cache='dllm' with an adaptive rule "
                             f"(decoder={self.decoder!r}, threshold={self.threshold}, factor={self.factor}) runs "
                             "one row at a time (batch size 1)")

    @property
    def stop_set(self) -> tuple[int, ...]:
        """Ids that end an answer: ``stop_ids`` plus ``eos_id``/``eot_id`` when set."""
        ids = list(self.stop_ids) + [i for i in (self.eos_id, self.eot_id) if i is not None]
        return tuple(dict.fromkeys(ids))

    @property
    def uses_float64_confidence(self) -> bool:
        if self.confidence_precision == "auto":
            # LLaDA's generate() takes the softmax in the logits' dtype; Fast-dLLM's rules take it in float64;
            # the other decoders' references (d2Cache, dInfer, SGLang) take it in the logits' dtype.
            if self.decoder != "llada":
                return self.decoder_spec.float64_confidence
            if self.cache == "dllm" and self.is_fixed_schedule:  # dLLM-Cache's generate(): the logits' dtype
                return False
            if self.cache == "d2cache":  # d2Cache's loop: the logits' dtype
                return False
            if (self.sigma is not None or self.debias) and self.cache in ("none", "prefix", "dual"):
                # the calibrations come from d2Cache's generate_step, which also runs them under the threshold
                # and factor rules and its prefix/dual caches: the softmax stays in the logits' dtype there
                return False
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


# ------------------------------------------------------------------------------------------------ decoders
@dataclass(frozen=True)
class DecoderSpec:
    """What a decoder reads from :class:`SamplerSettings` (torch-free; the implementation lives in
    ``illada/sampling/decoders.py`` under the same name).

    * ``knobs``: field name -> published default, filled in when the field is None (None: no default).
    * ``check``: extra validation of the resolved settings; raises ``_bad(field, value, why)``.
    * ``calibrations``: the decoder ranks by confidence, so ``sigma`` / ``debias`` may rewrite it.
    * ``float64_confidence``: ``confidence_precision="auto"`` takes the softmax in float64.
    """

    knobs: dict[str, Any] = field(default_factory=dict)
    check: Callable[["SamplerSettings"], None] | None = None
    calibrations: bool = False
    float64_confidence: bool = False


def _check_llada(s: SamplerSettings) -> None:
    if s.threshold is not None and s.factor is not None:
        raise _bad("factor", s.factor, f"cannot be combined with threshold={s.threshold}; set one")
    if s.threshold is not None and not (_finite(s.threshold) and 0 < s.threshold <= 1):
        raise _bad("threshold", s.threshold, "tau must lie in (0, 1]")
    if s.factor is not None and not (_finite(s.factor) and s.factor > 0):
        raise _bad("factor", s.factor, "must be a finite number > 0")


def _check_gamma(s: SamplerSettings) -> None:
    if not _finite(s.gamma) or s.gamma < 0:
        raise _bad("gamma", s.gamma, "the entropy budget must be a finite number >= 0")


def _check_sglang_eb(s: SamplerSettings) -> None:
    _check_gamma(s)
    if s.temperature != 0:
        raise _bad("temperature", s.temperature, "decoder eb_sampler_sglang is greedy (SGLang's EBSampling); use 0")
    if s.remasking != "low_confidence":
        raise _bad("remasking", s.remasking, "decoder eb_sampler_sglang ranks by entropy and reads no remasking rule")
    if s.confidence_eos_eot_inf:
        raise _bad("confidence_eos_eot_inf", True, "decoder eb_sampler_sglang reads no confidence; "
                   "use logits_eos_inf")


def _check_hierarchy(s: SamplerSettings) -> None:
    if s.remasking != "low_confidence":
        raise _bad("remasking", s.remasking, "decoder hierarchy ranks by p(x0) (dInfer); use 'low_confidence'")
    # None is "off" for threshold only: it is also the knob's default (HierarchyDecoder's), while a None
    # low_threshold is filled with its default 0.4; 0 switches that one off (p(x0) >= 1/V is always above it)
    if s.threshold is not None and not (_finite(s.threshold) and 0 <= s.threshold <= 1):
        raise _bad("threshold", s.threshold, "must lie in [0, 1] or be None (off)")
    if not (_finite(s.low_threshold) and 0 <= s.low_threshold <= 1):
        raise _bad("low_threshold", s.low_threshold, "must lie in [0, 1] (0: off)")


def _check_calibrations(s: SamplerSettings) -> None:
    if s.sigma is not None and not (_finite(s.sigma) and s.sigma > 0):
        raise _bad("sigma", s.sigma, "the certainty prior's kernel width must be a finite number > 0")
    if not isinstance(s.debias, bool):
        raise _bad("debias", s.debias, "must be true or false")
    if s.debias:
        # clip alpha 10: both references' default; no position decay unless asked (d2Cache's debias has none,
        # NEUIR/PC-Sampler's scripts use 0.25: sweeps/conf/sampler/pc_sampler.yaml)
        object.__setattr__(s, "clip_alpha", 10.0 if s.clip_alpha is None else s.clip_alpha)
        object.__setattr__(s, "pc_lambda", 0.0 if s.pc_lambda is None else s.pc_lambda)
        if not (_finite(s.clip_alpha) and s.clip_alpha > 0):
            raise _bad("clip_alpha", s.clip_alpha, "must be a finite number > 0")
        if not (_finite(s.pc_lambda) and s.pc_lambda >= 0):
            raise _bad("pc_lambda", s.pc_lambda, "the position decay must be a finite number >= 0")
        if s.remasking != "low_confidence":
            raise _bad("debias", True, f"calibrates p(x0): needs remasking='low_confidence', got {s.remasking!r}")
        if s.token_frequencies is not None and not isinstance(s.token_frequencies, str):
            raise _bad("token_frequencies", s.token_frequencies, "must be a file path or None (shipped file)")
    else:
        for name in ("clip_alpha", "pc_lambda", "token_frequencies"):
            if getattr(s, name) is not None:
                raise _bad(name, getattr(s, name), "is a PC-Sampler knob: needs debias=true")


def _check_klass(s: SamplerSettings) -> None:
    if not (_finite(s.threshold) and 0 <= s.threshold <= 1):
        raise _bad("threshold", s.threshold, "KLASS's confidence threshold must lie in [0, 1]")
    if not (_finite(s.kl_threshold) and s.kl_threshold > 0):
        raise _bad("kl_threshold", s.kl_threshold, "must be a finite number > 0")
    if isinstance(s.kl_history_length, bool) or not isinstance(s.kl_history_length, int) or s.kl_history_length < 1:
        raise _bad("kl_history_length", s.kl_history_length, "must be an integer >= 1")
    if s.steps != s.gen_length:
        raise _bad("steps", s.steps, f"decoder klass falls back to one token per step: needs steps == gen_length="
                   f"{s.gen_length} (with fewer steps the reference leaves masks in the answer)")
    _no_confidence_rewrites(s, "klass", "ranks by the float64 p(x0) of its KL-tracked distribution")
    _fixed_precision(s, "klass", "float64, as its reference")
    if s.cfg_scale > 0:
        raise _bad("cfg_scale", s.cfg_scale, "decoder klass has no guidance in its reference; use 0")


def _check_credit(s: SamplerSettings) -> None:
    if not (_finite(s.threshold) and 0 < s.threshold <= 1):
        raise _bad("threshold", s.threshold, "must lie in (0, 1]")
    for name in ("credit_alpha", "boost_gamma"):
        if not (_finite(getattr(s, name)) and getattr(s, name) >= 0):
            raise _bad(name, getattr(s, name), "must be a finite number >= 0")
    if not (_finite(s.decay_beta) and 0 <= s.decay_beta <= 1):
        raise _bad("decay_beta", s.decay_beta, "the credit's decay per forward must lie in [0, 1]")
    _no_confidence_rewrites(s, "credit", "ranks by p(x0) of its credit-boosted logits (dInfer)")


def _check_wino(s: SamplerSettings) -> None:
    for name in ("wide_in_threshold", "narrow_out_threshold"):
        if not (_finite(getattr(s, name)) and 0 <= getattr(s, name) <= 1):
            raise _bad(name, getattr(s, name), "must lie in [0, 1]")
    if s.cache != "none":
        raise _bad("cache", s.cache, "decoder wino feeds the whole canvas plus its shadow block to every forward; "
                   "use 'none'")
    if s.cfg_scale > 0:
        raise _bad("cfg_scale", s.cfg_scale, "decoder wino has no guidance in its reference; use 0")
    _no_confidence_rewrites(s, "wino", "ranks by the float64 p(x0) of the block and of its shadow")
    _fixed_precision(s, "wino", "float64, as its reference")


def _fixed_precision(s: SamplerSettings, name: str, what: str) -> None:
    if s.confidence_precision != "auto":
        raise _bad("confidence_precision", s.confidence_precision, f"decoder {name} takes its softmax in {what}; "
                   "use 'auto'")


def _no_confidence_rewrites(s: SamplerSettings, name: str, why: str) -> None:
    if s.remasking != "low_confidence":
        raise _bad("remasking", s.remasking, f"decoder {name} {why}; use 'low_confidence'")
    if s.confidence_eos_eot_inf:
        raise _bad("confidence_eos_eot_inf", True, f"decoder {name} {why}; use logits_eos_inf")


def _check_slow_fast(s: SamplerSettings) -> None:
    for name in ("k_exploration_steps", "cycle_length_stability_window", "max_sub_cycles_per_block"):
        value = getattr(s, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise _bad(name, value, "must be an integer >= 1")
    for name in ("cycle_len_confidence_threshold", "high_confidence_threshold"):
        if not (_finite(getattr(s, name)) and 0 <= getattr(s, name) <= 1):
            raise _bad(name, getattr(s, name), "must lie in [0, 1]")
    if not (_finite(s.cycle_length_stability_std_dev_threshold) and s.cycle_length_stability_std_dev_threshold > 0):
        raise _bad("cycle_length_stability_std_dev_threshold", s.cycle_length_stability_std_dev_threshold,
                   "must be a finite number > 0")
    if s.temperature != 0:
        raise _bad("temperature", s.temperature, "decoder slow_fast follows its reference at temperature 0 only "
                   "(the reference's float32 noise over its own spans); use 0")
    if s.cache != "none":
        raise _bad("cache", s.cache, "decoder slow_fast chooses each forward's span itself; use 'none'")
    if s.cfg_scale > 0:
        raise _bad("cfg_scale", s.cfg_scale, "decoder slow_fast is supported without guidance; use 0")
    _no_confidence_rewrites(s, "slow_fast", "ranks by p(x0) (SlowFast's certainty rule)")
    _fixed_precision(s, "slow_fast", "the logits' dtype, as its reference")


# SlowFast sampling's knobs, named as in its reference (LiangrunFlora/Slow-Fast-Sampling)
SLOW_FAST_KNOBS: dict[str, Any] = {
    "k_exploration_steps": 6, "cycle_len_confidence_threshold": 0.3, "cycle_length_stability_window": 2,
    "cycle_length_stability_std_dev_threshold": 1.0, "high_confidence_threshold": 0.9,
    "max_sub_cycles_per_block": 256,
}

# ------------------------------------------------------------------------------------------------ caches
@dataclass(frozen=True)
class CacheSpec:
    """What a cache mode reads from :class:`SamplerSettings` (torch-free; the implementation is dispatched by
    ``illada/sampling/loop.py`` ``_Forward``). ``knobs``: field -> published default; ``check``: raises
    ``_bad(field, value, why)`` for a bad value or a combination the cache does not support."""

    knobs: dict[str, Any] = field(default_factory=dict)
    check: Callable[["SamplerSettings"], None] | None = None


DKV_VARIANTS: tuple[str, ...] = ("decode", "greedy")


def _check_dkv(s: SamplerSettings) -> None:
    if s.dkv_variant not in DKV_VARIANTS:
        raise _bad("dkv_variant", s.dkv_variant, f"choose one of {list(DKV_VARIANTS)}")
    greedy = s.dkv_variant == "greedy"
    # published defaults per variant: Decode cache_reloading_step=8 (the README's LLaDA example), Greedy
    # --cache-steps 2 --window-size 4 (the README's llada_generate.py command)
    if s.cache_steps is None:
        object.__setattr__(s, "cache_steps", 2 if greedy else 8)
    if isinstance(s.cache_steps, bool) or not isinstance(s.cache_steps, int) or s.cache_steps < 1:
        raise _bad("cache_steps", s.cache_steps, "the refresh interval must be an integer >= 1 (1: every step)")
    if s.cfg_scale > 0:
        raise _bad("cfg_scale", s.cfg_scale, "cache 'dkv' has no guidance in its reference (dKV-Cache raises "
                   "for cfg_scale > 0 with the cache); use 0")
    if not greedy:
        if s.dkv_window is not None:
            raise _bad("dkv_window", s.dkv_window, "only used by dkv_variant 'greedy' (dkv_variant='decode')")
        return
    if s.dkv_window is None:
        object.__setattr__(s, "dkv_window", 4)
    if isinstance(s.dkv_window, bool) or not isinstance(s.dkv_window, int) or s.dkv_window < 0:
        raise _bad("dkv_window", s.dkv_window, "masked neighbours recomputed per next token: an integer >= 0")
    if s.remasking != "random":
        raise _bad("remasking", s.remasking, "dkv_variant 'greedy' decodes each block in an order drawn at its "
                   "start (its reference supports remasking='random' only); use 'random'")
    for name, value, default in (("decoder", s.decoder, "llada"), ("threshold", s.threshold, None),
                                 ("factor", s.factor, None)):
        if value != default:
            raise _bad(name, value, "dkv_variant 'greedy' needs LLaDA's fixed schedule: it recomputes the tokens "
                       f"it decodes next, so it must know them a step ahead; leave {name} at {default!r}")
    for name in ("sigma", "debias"):
        if getattr(s, name):
            raise _bad(name, getattr(s, name), "dkv_variant 'greedy' fixes each block's order at its start; a "
                       "confidence calibration has nothing to rank")


def _check_dllm(s: SamplerSettings) -> None:
    for name in ("prompt_interval_steps", "gen_interval_steps"):
        value = getattr(s, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise _bad(name, value, "the refresh interval in forwards must be an integer >= 1 (1: every forward)")
    if not (_finite(s.transfer_ratio) and 0 <= s.transfer_ratio <= 1):
        raise _bad("transfer_ratio", s.transfer_ratio, "the share of response columns refreshed must lie in [0, 1]")
    if s.cfg_scale > 0:
        raise _bad("cfg_scale", s.cfg_scale, "cache 'dllm' is supported without guidance (dLLM-Cache's guidance "
                   "cache is another mechanism); use 0")
    if s.variable_length:
        raise _bad("variable_length", True, "cache 'dllm' keeps features of a fixed canvas across blocks; use a "
                   "fixed gen_length")


def _check_d2cache(s: SamplerSettings) -> None:
    if not (_finite(s.rollout_p) and 0 <= s.rollout_p <= 1):
        raise _bad("rollout_p", s.rollout_p, "the attention-rollout share must lie in [0, 1]")
    for name, low in (("current_k", 1), ("inflate_w", 0)):
        value = getattr(s, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise _bad(name, value, f"must be an integer >= {low}")
    if not (_finite(s.cache_sigma) and s.cache_sigma > 0):
        raise _bad("cache_sigma", s.cache_sigma, "the certainty prior's kernel width must be a finite number > 0")
    if s.decoder not in ("llada", "eb_sampler"):
        raise _bad("decoder", s.decoder, "cache 'd2cache' runs with d2Cache's own decoding (decoder llada: fixed "
                   "schedule / threshold / factor, or eb_sampler)")
    unsupported = {"cfg_scale": (s.cfg_scale, 0.0), "variable_length": (s.variable_length, False),
                   "remasking": (s.remasking, "low_confidence"), "debias": (s.debias, False),
                   "logits_eos_inf": (s.logits_eos_inf, False),
                   "confidence_eos_eot_inf": (s.confidence_eos_eot_inf, False)}
    for name, (value, default) in unsupported.items():
        if value != default:
            raise _bad(name, value, f"cache 'd2cache' ranks its queries by the first forward's plain p(x0) over a "
                       f"fixed canvas; leave {name} at {default!r}")


CACHES: dict[str, CacheSpec] = {
    "none": CacheSpec(),
    "prefix": CacheSpec(),  # Fast-dLLM's prefix cache: refreshed at each block start
    "dual": CacheSpec(),  # Fast-dLLM's dual cache
    # dKV-Cache (horseee/dKV-Cache): variant decode or greedy; cache_steps / dkv_window defaults per variant
    # are filled in by _check_dkv
    "dkv": CacheSpec(knobs={"dkv_variant": "decode", "cache_steps": None, "dkv_window": None}, check=_check_dkv),
    # dLLM-Cache (maomaocun/dLLM-Cache scripts/run_LLaDA_gsm8k_Instruct.sh: Kp 50, Kr 7, rho 0.25)
    "dllm": CacheSpec(knobs={"prompt_interval_steps": 50, "gen_interval_steps": 7, "transfer_ratio": 0.25},
                      check=_check_dllm),
    # d2Cache (Kamichanw/d2Cache configs/cache/d2cache.yaml; cache_sigma = its sigma)
    "d2cache": CacheSpec(knobs={"rollout_p": 0.1, "current_k": 32, "cache_sigma": 10.0, "inflate_w": 0},
                         check=_check_d2cache),
}
CACHE_KNOB_FIELDS = frozenset({"cache_steps", "dkv_variant", "dkv_window", "prompt_interval_steps", "gen_interval_steps", "transfer_ratio",
                               "rollout_p", "current_k", "cache_sigma", "inflate_w"})

# ---- Dream (illada/sampling/dream.py)
DREAM_ALGS: tuple[str, ...] = ("origin", "maskgit_plus", "topk_margin", "entropy")


def _check_dream(s: SamplerSettings) -> None:
    if s.alg not in DREAM_ALGS:
        raise _bad("alg", s.alg, f"unknown Dream alg; choose one of {list(DREAM_ALGS)}")
    if s.alg_temp is not None:
        if not _finite(s.alg_temp) or s.alg_temp < 0:
            raise _bad("alg_temp", s.alg_temp, "must be a finite number >= 0 or None (top-k by confidence)")
        if s.alg == "origin":
            raise _bad("alg_temp", s.alg_temp, "alg 'origin' unmasks at random and reads no alg_temp")
    if s.top_p is not None and not (_finite(s.top_p) and 0 < s.top_p <= 1):
        raise _bad("top_p", s.top_p, "must lie in (0, 1] or be None (off)")
    if s.top_k is not None and (isinstance(s.top_k, bool) or not isinstance(s.top_k, int) or s.top_k < 1):
        raise _bad("top_k", s.top_k, "must be an integer >= 1 or None (off)")
    if not (_finite(s.eps) and 0 <= s.eps < 1):
        raise _bad("eps", s.eps, "the final timestep must lie in [0, 1)")
    if s.block_length != s.gen_length:
        raise _bad("block_length", s.block_length,
                   f"decoder dream denoises one canvas; set block_length = gen_length = {s.gen_length}")
    unsupported = {"remasking": (s.remasking, "low_confidence"), "cfg_scale": (s.cfg_scale, 0.0),
                   "cache": (s.cache, "none"), "variable_length": (s.variable_length, False),
                   "logits_eos_inf": (s.logits_eos_inf, False),
                   "confidence_eos_eot_inf": (s.confidence_eos_eot_inf, False)}
    for name, (value, default) in unsupported.items():
        if value != default:
            raise _bad(name, value, f"decoder dream (Dream's diffusion_generate) has no such option; "
                       f"leave it at {default!r} (alg chooses the unmasking order)")
    if s.confidence_precision == "float64":
        raise _bad("confidence_precision", "float64", "decoder dream takes the softmax in the logits' dtype, as "
                   "Dream's sampler; use 'auto'")


# Knobs a decoder may own (all default to None/False; set only when the decoder reads them).
KNOB_FIELDS = frozenset({"threshold", "factor", "gamma", "low_threshold", "sigma", "debias", "clip_alpha",
                         "pc_lambda", "token_frequencies",
                         "kl_threshold", "kl_history_length", "credit_alpha", "boost_gamma", "decay_beta",
                         "wide_in_threshold", "narrow_out_threshold",
                         *SLOW_FAST_KNOBS, *("alg", "alg_temp", "top_p", "top_k", "eps")})
CALIBRATION_KNOBS: tuple[str, ...] = ("sigma", "debias", "clip_alpha", "pc_lambda", "token_frequencies")

DECODERS: dict[str, DecoderSpec] = {
    # LLaDA's fixed schedule, or Fast-dLLM's threshold / factor rule when one is set
    "llada": DecoderSpec(knobs={"threshold": None, "factor": None}, check=_check_llada, calibrations=True),
    # EB-Sampler as d2Cache's confidence_unmasking (gamma: d2Cache configs/generation/eb_sampler.yaml)
    "eb_sampler": DecoderSpec(knobs={"gamma": 0.001}, check=_check_gamma, calibrations=True),
    # EB-Sampler as SGLang's EBSampling (gamma: its default)
    "eb_sampler_sglang": DecoderSpec(knobs={"gamma": 0.15}, check=_check_sglang_eb),
    # dInfer HierarchyDecoder (its constructor's defaults: threshold None = off, low_threshold 0.4; dInfer's
    # benchmark scripts pass 0.9 / 0.3: sweeps/conf/sampler/hierarchy.yaml)
    "hierarchy": DecoderSpec(knobs={"threshold": None, "low_threshold": 0.4}, check=_check_hierarchy),
    # KLASS as the authors' code (shkim0116/KLASS src/llada_evaluation.py defaults; threshold = conf_threshold)
    "klass": DecoderSpec(knobs={"threshold": 0.9, "kl_threshold": 0.01, "kl_history_length": 2},
                         check=_check_klass),
    # dInfer CreditThresholdParallelDecoder (its constructor defaults; threshold: benchmarks/benchmark.py)
    "credit": DecoderSpec(knobs={"threshold": 0.9, "credit_alpha": 0.7, "boost_gamma": 0.2, "decay_beta": 0.8},
                          check=_check_credit),
    # WINO as the authors' decoding_wino (Feng-Hong/WINO-DLLM: its defaults, also LLaDA/configs/gsm8k.yaml)
    "wino": DecoderSpec(knobs={"wide_in_threshold": 0.6, "narrow_out_threshold": 0.9}, check=_check_wino),
    # SlowFast sampling as the authors' generate_slow_fast_sampling (its signature's defaults)
    "slow_fast": DecoderSpec(knobs=dict(SLOW_FAST_KNOBS), check=_check_slow_fast),
    # Dream's diffusion_generate (DreamGenerationConfig's defaults); runs its own loop: illada/sampling/dream.py
    "dream": DecoderSpec(knobs={"alg": "origin", "alg_temp": None, "top_p": None, "top_k": None, "eps": 1e-3},
                         check=_check_dream),
}


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
