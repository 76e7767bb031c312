"""The block loop behind every sampler: LLaDA's fixed schedule, Fast-dLLM's threshold/factor rules and caches,
and iLLaDA's variable-length generation all run through :func:`generate`.

Per step (one forward): logits of the current block -> guidance -> EOS controls -> x0 -> confidence ->
calibrations (certainty prior, PC-Sampler) -> the decoder's selection (illada/sampling/decoders.py) -> commit.
Only a decoder that asks for it (StepOutput.remask) remasks committed tokens.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from illada.sampling import decoders, rules
from illada.sampling.d2cache import D2Cache
from illada.sampling.dkv_cache import DKVCache
from illada.sampling.dllm_cache import DLLMCache
from illada.sampling.guidance import combine_guided, with_unconditional_rows
from illada.sampling.settings import SamplerSettings
from illada.timing import synchronize


@dataclass
class GenerationResult:
    """Tokens and cost of one :func:`generate` call.

    ``tokens`` [B, P + G]: prompt (as given, padding included) then the generated canvas; in variable-length
    mode rows that stopped early are filled up to the longest row with their first stop id.
    """

    tokens: torch.Tensor
    prompt_length: int
    nfe: int  # forward evaluations of the batch, a guided forward counting 2 (its two rows per sample)
    row_nfe: torch.Tensor  # [B] forward evaluations each row took part in (differs per row in variable mode)
    tokens_per_step: torch.Tensor  # [steps, B] tokens committed per row at each step
    generated_tokens: torch.Tensor  # [B] canvas positions decoded per row
    answer_lengths: torch.Tensor  # [B] generated tokens before the first stop/EOS/EoT id
    wall_time_s: float

    @property
    def generated(self) -> torch.Tensor:
        return self.tokens[:, self.prompt_length:]

    @property
    def tokens_per_forward(self) -> float:
        """Decoded tokens per forward evaluation (G / NFE for a single row)."""
        return float(self.generated_tokens.sum()) / max(float(self.row_nfe.sum()), 1.0)

    @property
    def tokens_per_second(self) -> float:
        return float(self.generated_tokens.sum()) / max(self.wall_time_s, 1e-12)


# cache modes beyond Fast-dLLM's prefix/dual: name -> class(model, settings, attention_mask), called per step as
# (x, start, end, step) -> (logits, offset) (see illada/sampling/dkv_cache.py)
# A class with ``spans_blocks = True`` (d2Cache) is built once per generate() and kept across blocks; one with an
# ``after_step(x, window_start, commit)`` method sees each step's commits.
CACHE_CLASSES: dict[str, type] = {"dkv": DKVCache, "dllm": DLLMCache, "d2cache": D2Cache}


class _Forward:
    """Logits of the block window [start, end) of a canvas, through the chosen cache mode.

    Returns the model's logits over the span it was fed and that span's offset: the reference draws its random
    numbers over exactly that span, so the caller draws over it too and then slices the block out.
    """

    def __init__(self, model, settings: SamplerSettings, attention_mask: torch.Tensor | None,
                 prompt_index: torch.Tensor, mode=None) -> None:
        self.model, self.settings = model, settings
        self.attention_mask, self.prompt_index = attention_mask, prompt_index
        self.cache = None
        self.calls = 0
        # a cache with its own forward rule (dkv_cache.py): one object per block holds its state
        self.mode = mode if mode is not None else CACHE_CLASSES[settings.cache](model, settings, attention_mask) \
            if settings.cache in CACHE_CLASSES else None

    def __call__(self, x: torch.Tensor, start: int, end: int, step: int) -> tuple[torch.Tensor, int]:
        s = self.settings
        mask = self.attention_mask
        if s.cfg_scale > 0:
            x, mask = with_unconditional_rows(x, mask, self.prompt_index, s.mask_id)
        self.calls += 1
        if s.cache == "none":
            return self.model(x, mask), 0
        if self.mode is not None:
            return self.mode(x, start, end, step)
        if step == 0:  # block start: a full forward refreshes the whole cache
            self.cache = self.model.new_kv_cache(x.shape[0], x.shape[1])
            return self.model(x, mask, kv_cache=self.cache, cache_start=0), 0
        # prefix: recompute the block and everything after it; dual: only the block (stale suffix kept)
        stop = x.shape[1] if s.cache == "prefix" else end
        return self.model(x[:, start:stop], mask, kv_cache=self.cache, cache_start=start), start


class _Sampler:
    def __init__(self, model, settings: SamplerSettings, generator: torch.Generator | None,
                 frequencies: torch.Tensor | None = None) -> None:
        self.model, self.s, self.generator = model, settings, generator
        self.decoder = decoders.build(settings)
        self.spanning_mode = None  # a cache mode whose state spans the blocks (CACHE_CLASSES, spans_blocks)
        self.calibrate = decoders.Calibration(settings, frequencies)
        self.steps: list[torch.Tensor] = []  # committed counts per step, [B_active] each
        self.step_rows: list[torch.Tensor] = []  # row ids those counts belong to

    def denoise_block(self, x: torch.Tensor, attention_mask: torch.Tensor | None, prompt_index: torch.Tensor,
                      rows: torch.Tensor, first: int, start: int, end: int) -> int:
        """Unmask x[:, start:end] in place (``first`` = first generated column); returns the number of forwards."""
        s, decoder = self.s, self.decoder
        mode_class = CACHE_CLASSES.get(s.cache)
        if getattr(mode_class, "spans_blocks", False) and self.spanning_mode is None:
            self.spanning_mode = mode_class(self.model, s, attention_mask)
        forward = _Forward(self.model, s, attention_mask, prompt_index, self.spanning_mode)
        decoder.begin_block(x, start, end)
        lo = start
        if decoder.ranks_stale_prefix:
            # The LLaDA reference ranks every masked position left of the block end. Earlier blocks are normally
            # full, but a model that predicts the mask token itself "commits" it and leaves that position masked,
            # so it stays a candidate wherever the forward covers it (not in the cached prefix of Fast-dLLM's
            # later steps).
            stale = (x[:, first:start] == s.mask_id).any(dim=0).nonzero()
            lo = first + int(stale[0]) if len(stale) else start
        limit = decoder.max_steps(start, end)
        order = None
        if s.draws_block_order:  # dKV-Cache-Greedy: the block's order is drawn once, before its first forward
            order = forward.mode.order = self._block_order(x, start, end)
        step = 0
        while True:
            logits, offset = decoder.forward(forward, x, start, end, step)
            window_start = max(lo, offset)
            window = x[:, window_start:end]
            masked = window == s.mask_id
            logits, x0, confidence, noise = self._propose(logits, offset, window_start, end, order,
                                                          getattr(forward.mode, "drawn", None))
            if self.calibrate.active:
                confidence = self.calibrate(confidence, x0, x, first, window_start, start, end, logits.shape[-1])
            confidence = torch.where(masked, confidence, torch.full_like(confidence, rules.NEG_INF))
            out = decoder.select(decoders.StepInput(logits, x0, confidence, masked, x, window_start, start, end,
                                                    step, first, noise))
            if out.remask is not None:
                window[out.remask] = s.mask_id
            tokens = x0 if out.tokens is None else out.tokens
            window[out.commit] = tokens[out.commit]
            if hasattr(forward.mode, "after_step"):
                forward.mode.after_step(x, window_start, out.commit)
            self.steps.append(out.commit.sum(dim=-1))
            self.step_rows.append(rows)
            step += 1
            if decoder.finished(x, start, end, step):
                return forward.calls
            if limit is not None and step >= limit:
                # only a model that keeps predicting the mask token itself gets here (the reference would hang)
                raise RuntimeError(f"block [{start}, {end}) still has masks after {step} steps: the model keeps "
                                   f"predicting mask_id={s.mask_id}")

    def _propose(self, logits: torch.Tensor, offset: int, start: int, end: int, order: torch.Tensor | None = None,
                 drawn: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Window logits, x0, confidence and x0's uniforms (None at T=0), with the reference's guidance, EOS
        controls and random draws; ``order`` [B, T]: the block's ``random`` scores when drawn once per block;
        ``drawn`` [B, W]: the columns a gathered forward fed (dKV-Cache), the only ones its reference draws for."""
        s = self.s
        rows = logits.shape[0] // 2 if s.cfg_scale > 0 else logits.shape[0]
        span = (rows, logits.shape[1])
        noise = uniform = None
        if s.temperature > 0:
            noise = self._draw(span, logits.shape[2], torch.float64, logits.device, drawn)
            noise = noise[:, start - offset:end - offset]
        if order is not None:
            uniform = order[:, start:end]
        elif s.remasking == "random":
            uniform = self._draw(span, None, torch.float32, logits.device, drawn)[:, start - offset:end - offset]
        # contiguous: argmax/softmax over a strided slice are several times slower than the copy
        window = logits[:, start - offset:end - offset].contiguous()
        if s.cfg_scale > 0:
            window = combine_guided(window, s.cfg_scale)
        if s.logits_eos_inf:
            window = _forbid(window, [s.eos_id])
        x0 = rules.sample_tokens(window, s.temperature, noise)
        if s.confidence_eos_eot_inf:
            # The reference writes -inf to EOS in the *noised* logits and to EoT in the clean ones; at temperature
            # 0 both are the same tensor, so EOS and EoT both leave the confidence softmax (quirk kept).
            ids = [s.eot_id] + ([s.eos_id] if s.temperature == 0 else [])
            window = _forbid(window, [i for i in ids if i is not None])
        dtype = torch.float64 if s.uses_float64_confidence else window.dtype
        confidence = rules.CONFIDENCE_RULES[s.remasking](window, x0, uniform, dtype)
        return window, x0, confidence, noise

    def _block_order(self, x: torch.Tensor, start: int, end: int) -> torch.Tensor:
        """A U(0, 1) score per canvas column [B, T] (float32, as dKV-Cache-Greedy's ``x0_p``), -inf outside the
        block [start, end): the block is decoded from the highest score down."""
        order = self._rand(tuple(x.shape), torch.float32, x.device)
        order[:, :start] = rules.NEG_INF
        order[:, end:] = rules.NEG_INF
        return order

    def _draw(self, span: tuple[int, int], vocab: int | None, dtype: torch.dtype, device: torch.device,
              drawn: torch.Tensor | None) -> torch.Tensor:
        """U(0, 1) per column of ``span`` (and token, given ``vocab``), drawn as the reference draws them: over
        the span, or over the fed columns ``drawn`` only (the others get 0.5: nothing is committed there)."""
        tail = () if vocab is None else (vocab,)
        if drawn is None:
            return self._rand((*span, *tail), dtype, device)
        fed = self._rand((span[0], drawn.shape[1], *tail), dtype, device)
        index = drawn if vocab is None else drawn[..., None].expand_as(fed)
        return torch.full((*span, *tail), 0.5, dtype=dtype, device=device).scatter_(1, index, fed)

    def _rand(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        return torch.rand(shape, dtype=dtype, device=device, generator=self.generator)


def _forbid(logits: torch.Tensor, ids: list[int]) -> torch.Tensor:
    # In place, as the reference: these logits were produced for this step only.
    if ids:
        logits[..., ids] = float("-inf")
    return logits


# ------------------------------------------------------------------------------------------------- entry point
@torch.no_grad()
def generate(model, prompt_ids: torch.Tensor, settings: SamplerSettings,
             attention_mask: torch.Tensor | None = None) -> GenerationResult:
    """Generate continuations of left-padded ``prompt_ids`` [B, P] (``attention_mask`` [B, P], 1 = real token).

    ``model(input_ids, attention_mask) -> logits`` [B, T, V] (unshifted, bidirectional) is all the no-cache paths
    need; the ``prefix``/``dual`` caches also need ``model.new_kv_cache`` and the ``kv_cache``/``cache_start``
    keywords of :class:`illada.model.Transformer`. All checks run before the first forward.
    """
    _check_inputs(model, prompt_ids, settings, attention_mask)
    device = prompt_ids.device
    generator = None
    if settings.seed is not None:
        generator = torch.Generator(device=device).manual_seed(settings.seed)
    frequencies = None
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    if settings.debias and vocab is not None:  # a bad file fails here, before any forward
        from illada.sampling.token_frequencies import load_frequencies  # lazily: it is also a CLI module

        frequencies = load_frequencies(settings.token_frequencies, vocab)
    own_loop = decoders.DECODER_CLASSES[settings.decoder].own_loop
    if own_loop is not None:  # e.g. Dream's sampler (illada/sampling/dream.py)
        return own_loop(model, prompt_ids, settings, attention_mask, generator)
    sampler = _Sampler(model, settings, generator, frequencies)
    synchronize(device)
    t0 = time.perf_counter()
    if settings.variable_length:
        tokens, row_nfe, generated = _run_variable(sampler, prompt_ids, attention_mask)
    else:
        tokens, row_nfe, generated = _run_fixed(sampler, prompt_ids, attention_mask)
    synchronize(device)
    wall = time.perf_counter() - t0
    B, P = prompt_ids.shape
    per_step = torch.zeros(len(sampler.steps), B, dtype=torch.long, device=device)
    for i, (counts, rows) in enumerate(zip(sampler.steps, sampler.step_rows)):
        per_step[i, rows] = counts
    return GenerationResult(
        tokens=tokens, prompt_length=P, nfe=int(row_nfe.max()) if B else 0, row_nfe=row_nfe,
        tokens_per_step=per_step.cpu(), generated_tokens=generated,
        answer_lengths=_answer_lengths(tokens[:, P:], generated, settings.stop_set), wall_time_s=wall,
    )


def _run_fixed(sampler: _Sampler, prompt_ids: torch.Tensor, attention_mask: torch.Tensor | None):
    s = sampler.s
    B, P = prompt_ids.shape
    x = torch.cat([prompt_ids, prompt_ids.new_full((B, s.gen_length), s.mask_id)], dim=1)
    mask = _extend(attention_mask, s.gen_length)
    prompt_index = torch.zeros_like(x, dtype=torch.bool)
    prompt_index[:, :P] = True
    rows = torch.arange(B, device=x.device)
    calls = 0
    for b in range(s.num_blocks):
        calls += sampler.denoise_block(x, mask, prompt_index, rows, P, P + b * s.block_length,
                                       P + (b + 1) * s.block_length)
    row_nfe = torch.full((B,), calls * _rows_per_sample(s), dtype=torch.long)
    return x, row_nfe, torch.full((B,), s.gen_length, dtype=torch.long)


def _run_variable(sampler: _Sampler, prompt_ids: torch.Tensor, attention_mask: torch.Tensor | None):
    """iLLaDA: append one block of masks, denoise it, stop rows whose block holds a stop id, up to the budget.

    Finished rows leave the batch, so a row's cost follows its own answer length.
    """
    s = sampler.s
    B, P = prompt_ids.shape
    device = prompt_ids.device
    stop = torch.tensor(s.stop_set, device=device)
    out = prompt_ids.new_full((B, P + s.gen_length), s.stop_set[0])
    out[:, :P] = prompt_ids
    row_nfe = torch.zeros(B, dtype=torch.long)
    generated = torch.zeros(B, dtype=torch.long)
    rows = torch.arange(B, device=device)
    x, mask = prompt_ids, attention_mask
    for b in range(s.num_blocks):
        start, end = P + b * s.block_length, P + (b + 1) * s.block_length
        x = torch.cat([x, x.new_full((x.shape[0], s.block_length), s.mask_id)], dim=1)
        mask = _extend(mask, s.block_length)
        prompt_index = torch.zeros_like(x, dtype=torch.bool)
        prompt_index[:, :P] = True
        calls = sampler.denoise_block(x, mask, prompt_index, rows, P, start, end)
        row_nfe[rows.cpu()] += calls * _rows_per_sample(s)
        generated[rows.cpu()] = end - P
        out[rows, start:end] = x[:, start:end]
        done = torch.isin(x[:, start:end], stop).any(dim=-1)
        if bool(done.all()):
            break
        keep = ~done
        rows, x = rows[keep], x[keep]
        mask = None if mask is None else mask[keep]
    width = P + int(generated.max()) if B else P
    return out[:, :width], row_nfe, generated


def _rows_per_sample(s: SamplerSettings) -> int:
    return 2 if s.cfg_scale > 0 else 1


def _extend(attention_mask: torch.Tensor | None, n: int) -> torch.Tensor | None:
    if attention_mask is None:
        return None
    ones = torch.ones(attention_mask.shape[0], n, dtype=attention_mask.dtype, device=attention_mask.device)
    return torch.cat([attention_mask, ones], dim=1)


def _answer_lengths(generated: torch.Tensor, decoded: torch.Tensor, stop_ids: tuple[int, ...]) -> torch.Tensor:
    lengths = decoded.clone()
    if stop_ids and generated.shape[1]:
        hit = torch.isin(generated, torch.tensor(stop_ids, device=generated.device)).cpu()
        first = torch.where(hit.any(dim=1), hit.long().argmax(dim=1), lengths)
        lengths = torch.minimum(first, lengths)
    return lengths


def _check_inputs(model, prompt_ids: torch.Tensor, s: SamplerSettings, attention_mask: torch.Tensor | None) -> None:
    if not isinstance(s, SamplerSettings):
        raise TypeError(f"settings must be a SamplerSettings, got {type(s).__name__}")
    if not isinstance(prompt_ids, torch.Tensor) or prompt_ids.dim() != 2:
        shape = tuple(prompt_ids.shape) if isinstance(prompt_ids, torch.Tensor) else type(prompt_ids).__name__
        raise ValueError(f"prompt_ids must be a [batch, length] tensor, got {shape}")
    if prompt_ids.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"prompt_ids must hold integer token ids, got dtype {prompt_ids.dtype}")
    if attention_mask is not None and tuple(attention_mask.shape) != tuple(prompt_ids.shape):
        raise ValueError(f"attention_mask shape {tuple(attention_mask.shape)} must equal prompt_ids shape "
                         f"{tuple(prompt_ids.shape)}")
    hits = (prompt_ids == s.mask_id).nonzero()
    if len(hits):
        row, col = hits[0].tolist()
        raise ValueError(f"prompt_ids contains mask_id={s.mask_id} (row {row}, position {col}); prompts and their "
                         "padding must not use the mask token")
    config = getattr(model, "config", None)
    vocab = getattr(config, "vocab_size", None)
    if vocab is not None:
        for name, value in (("mask_id", s.mask_id), ("eos_id", s.eos_id), ("eot_id", s.eot_id)):
            if value is not None and value >= vocab:
                raise ValueError(f"SamplerSettings.{name}={value} is outside the model's vocabulary of {vocab}")
    max_len = getattr(config, "max_seq_len", None)
    if max_len is not None and prompt_ids.shape[1] + s.gen_length > max_len:
        what = "budget" if s.variable_length else "canvas"
        raise ValueError(f"SamplerSettings.gen_length={s.gen_length}: prompt length {prompt_ids.shape[1]} + "
                         f"{what} {s.gen_length} exceeds the model's max_seq_len={max_len}")
    if s.cache != "none" and not callable(getattr(model, "new_kv_cache", None)):
        raise ValueError(f"SamplerSettings.cache={s.cache!r} needs a model with a KV cache (new_kv_cache); "
                         f"{type(model).__name__} has none")
    s.check_batch(prompt_ids.shape[0])
    check_cache_logits(s.cache, getattr(config, "logits_shift", False))


def check_cache_logits(cache: str, logits_shift: bool, field: str = "SamplerSettings.cache") -> None:
    """Refuse a KV cache on a model whose head shifts its logits (``ModelConfig.logits_shift``, e.g. Dream);
    ``field`` names the setting in the error (a sweep names its override)."""
    if cache != "none" and logits_shift:
        # A shifted head reads each position's predecessor: the first column of a cached slice (and every column
        # of a scattered one) has none in its forward, so its logits would predict the wrong token. Fast-dLLM's
        # Dream code decodes those from the block-start forward; illada does not (yet), so it refuses.
        raise ValueError(f"{field}={cache!r} needs unshifted logits; this model shifts them "
                         "(logits_shift, e.g. Dream): use cache='none'")

