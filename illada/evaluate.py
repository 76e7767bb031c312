"""Evaluate one sweep point (model x task x sampler-or-scorer settings) and write its record.

    illada-eval --model default --task arithmetic --limit 200 --sampler steps=8 gen_length=8 block_length=8
    illada-eval --model default --task arithmetic_mc --scorer name=confidence

A generation task runs :func:`illada.sampling.generate`; a multiple-choice task runs a scorer from
:mod:`illada.scoring`. The record (see :mod:`illada.records`) holds settings, quality and cost together.

Cost definitions:
* ``nfe_per_sample``: generation -- forward evaluations each sample took part in (a CFG forward counts 2);
  scoring -- sequence forwards (rows) per question, i.e. the sum over its candidates.
* ``generated_tokens``: answer tokens before the first EOS/end-of-turn (no padding, no EOS).
  ``tokens_per_forward`` divides decoded canvas positions by NFE.
* ``latency_p50_s`` / ``latency_p95_s``: per-request latency at the point's ``batch_size`` -- an item's latency
  is the wall time of the batch it was in (encoding, forwards, decoding, scoring: what a caller waits for), so
  ``--batch-size 1`` measures one request alone.
* ``throughput_items_per_s`` = n / evaluation wall time; ``throughput_tokens_per_s`` = generated tokens /
  evaluation wall time (generation only, None for scorers). Model load time is kept apart.
* Every figure is taken at ``threads`` torch intra-op threads (``--threads``, default 1 as in sweeps), which is
  part of the point's key; the record notes the host's load, and ``illada-eval`` warns when the point ran on
  more runnable processes than CPUs (its times are then inflated).

A point whose model gives NaN or infinite logits fails with :class:`NonFiniteLogitsError` (checked once per
batch) instead of recording whatever the sampler made of them; ``illada-eval`` ends every expected failure
(bad or damaged files, a missing device, a full disk) with one line ``error: ...`` and a non-zero exit, and
writes the failure record where the record would have gone (``--out``, default ``runs/eval``; checked to be
writable before anything is evaluated). It prints the record's path; Ctrl-C ends it with one line, exit 130.
"""

from __future__ import annotations

import argparse
import errno
import functools
import json
import os
import statistics
import sys
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator, Mapping, NamedTuple, Sequence

import torch

from illada.atomic import os_error_text, unwritable_reason  # os_error_text: also imported from here by the sweeps
from illada.attention import check_backend_settings
from illada.loading import DeviceUnavailableError, LoadedModel, describe, load, parse_dtype, resolve_model
from illada.metrics import accuracy, gen_outcome, mc_outcome, outcomes_frame
from illada.records import (SCHEMA_VERSION, directory_hash, items_path, now, provenance, safely, settings_key,
                            summary_path, write_record)
from illada.sampling import SamplerSettings, generate
from illada.sampling.loop import check_cache_logits
from illada.scoring import SCORERS, ScoringSettings, check_scorer_settings
from illada.tasks import GENERATION, TASKS, MCItem, TaskData, get_task
from illada.timing import HostLoad, peak_memory, torch_threads, wall_time
from illada.tokenizer import SpecialIds, Tokenizer, pad_left

SCORER_FIELDS = {f.name for f in fields(ScoringSettings)} - {"mask_id"}
SAMPLER_FIELDS = {f.name for f in fields(SamplerSettings)} - {"mask_id", "eos_id", "eot_id"}


@dataclass(frozen=True)
class Point:
    """One sweep point. ``sampler`` holds :class:`SamplerSettings` fields (ids come from the model);
    ``scorer`` holds ``name`` (likelihood / confidence / ar_order) and :class:`ScoringSettings` fields."""

    model: str = "default"
    task: str = "arithmetic"
    split: str | None = None
    limit: int | None = None
    seed: int = 0
    num_fewshot: int = 0
    data_path: str | None = None
    sampler: Mapping[str, Any] = field(default_factory=dict)
    scorer: Mapping[str, Any] = field(default_factory=dict)
    chat: bool = False
    dtype: str = "float32"
    attn_backend: str = "sdpa"
    batch_size: int = 16
    device: str = "cpu"
    threads: int | None = 1  # torch intra-op threads the point runs with; None: torch's default here


@dataclass(frozen=True)
class ResolvedPoint:
    """A validated point: what runs, and the settings dictionary that identifies it."""

    point: Point
    kind: str
    sampler: SamplerSettings | None
    scorer_name: str | None
    scorer: ScoringSettings | None
    settings: dict[str, Any]

    @functools.cached_property
    def key(self) -> str:
        """The content hash of ``settings`` (:func:`illada.records.settings_key`), computed once."""
        return settings_key(self.settings)


def resolve(point: Point, special_ids: SpecialIds | None = None, max_seq_len: int | None = None,
            logits_shift: bool | None = None) -> ResolvedPoint:
    """Validate every setting of ``point`` without loading weights; errors name the field and its value.
    ``special_ids``, ``max_seq_len`` and ``logits_shift`` (a :class:`ModelLimits`) spare reading the model's
    files again; what only the job's host can tell (its GPU, flash-attn) is :func:`~illada.loading.check_host`'s."""
    model = resolve_model(point.model)
    if special_ids is None or max_seq_len is None or logits_shift is None:
        special_ids, max_seq_len, logits_shift = model_limits(model)
    if is_lm_eval(point.task):
        # lm-eval owns its splits and data; num_fewshot None = the task's own default
        for name in ("split", "data_path"):
            if getattr(point, name) is not None:
                raise ValueError(f"{name}={getattr(point, name)!r}: an lm-eval task ({point.task!r}) reads its own "
                                 "splits and data; leave it null")
        task_name, kind, split = point.task, task_kind(point.task), None
    else:
        task = get_task(point.task)
        if point.split is not None and point.split not in task.splits:
            raise ValueError(f"split={point.split!r}: task {task.name!r} has the splits {list(task.splits)}")
        task_name, kind, split = task.name, task.kind, point.split or task.default_split
    if point.limit is not None and (isinstance(point.limit, bool) or not isinstance(point.limit, int) or point.limit < 1):
        raise ValueError(f"limit={point.limit!r}: must be a positive integer or None")
    if isinstance(point.batch_size, bool) or not isinstance(point.batch_size, int) or point.batch_size < 1:
        raise ValueError(f"batch_size={point.batch_size!r}: must be a positive integer")
    threads = point.threads
    if threads is None:  # torch's default on this machine: recorded as the number it is, so the key says it
        threads = torch.get_num_threads()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads={point.threads!r}: must be a positive integer (torch threads) or None")
    dtype = parse_dtype(point.dtype)
    try:
        torch.device(point.device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device={point.device!r}: not a torch device ({str(e).splitlines()[0]})") from None
    try:
        check_backend_settings(point.attn_backend, point.device, dtype)
    except ValueError as e:
        raise ValueError(f"attn_backend={point.attn_backend!r}: {e}") from None
    settings: dict[str, Any] = {
        "model": model, "model_hash": _model_hash(model, point.model) if Path(model).is_dir() else None,
        "task": task_name, "split": split, "limit": point.limit, "seed": point.seed,
        "num_fewshot": point.num_fewshot, "data_path": point.data_path, "chat": point.chat, "dtype": point.dtype,
        "attn_backend": point.attn_backend, "batch_size": point.batch_size, "threads": threads,
        "device": point.device,
    }
    if is_lm_eval(point.task):
        from illada.harness import LM_EVAL_PIN

        settings["lm_eval"] = LM_EVAL_PIN
    if kind == GENERATION:
        _reject_unknown("sampler", point.sampler, SAMPLER_FIELDS)
        if point.scorer:
            raise ValueError(f"scorer={dict(point.scorer)!r}: task {task_name!r} is a generation task; use sampler")
        sampler = sampler_settings(point.sampler, special_ids, max_seq_len)
        sampler.check_batch(point.batch_size)
        check_cache_logits(sampler.cache, logits_shift, field="sampler.cache")
        settings.update(method="generate", sampler=_flat_fields(sampler))
        return ResolvedPoint(point, kind, sampler, None, None, settings)
    if point.sampler:
        raise ValueError(f"sampler={dict(point.sampler)!r}: task {task_name!r} is multiple choice; use scorer")
    name, scoring = scorer_settings(point.scorer, special_ids)
    settings.update(method="score", scorer={"name": name, **_flat_fields(scoring)})
    return ResolvedPoint(point, kind, None, name, scoring, settings)


def _flat_fields(settings: SamplerSettings | ScoringSettings) -> dict[str, Any]:
    """``asdict`` of a settings object whose fields are scalars, enums and tuples, without its deep copy
    (a sweep resolves tens of thousands of points)."""
    return {f.name: getattr(settings, f.name) for f in fields(settings)}


LM_EVAL_PREFIX = "lm_eval:"


def is_lm_eval(task: str) -> bool:
    """Whether ``task`` names an lm-evaluation-harness task (``lm_eval:NAME``, run by :mod:`illada.harness`)."""
    return isinstance(task, str) and task.startswith(LM_EVAL_PREFIX)


def task_kind(task: str) -> str:
    """``generation`` or ``multiple_choice``: what an illada task is, or what an lm-eval task's requests ask for."""
    if is_lm_eval(task):
        try:
            from illada.harness import lm_eval_kind
        except ImportError as e:
            raise ValueError(f"task={task!r}: lm-eval tasks need the extra: pip install 'illada[lm-eval]' ({e})") from None
        return lm_eval_kind(task[len(LM_EVAL_PREFIX):])
    return get_task(task).kind


def sampler_settings(values: Mapping[str, Any], special_ids: SpecialIds, max_seq_len: int) -> SamplerSettings:
    """The :class:`SamplerSettings` of a point's ``sampler`` values (ids from the model); errors name the field.
    Each distinct set of values is validated once (the settings are frozen): a sweep's seeds, tasks and
    models share a few sampler settings among thousands of points."""
    items = tuple((k, type(v), v) for k, v in sorted(values.items()))  # typed: True == 1 == 1.0 as keys
    try:
        hash(items)
    except TypeError:  # a list or dict value: validated every time
        return _sampler_settings(items, special_ids, max_seq_len)
    return _sampler_settings_once(items, special_ids, max_seq_len)


def _sampler_settings(items: tuple, special_ids: SpecialIds, max_seq_len: int) -> SamplerSettings:
    values = {k: v for k, _, v in items}
    _reject_unknown("sampler", values, SAMPLER_FIELDS)
    sampler = SamplerSettings(mask_id=special_ids.mask, eos_id=special_ids.eos, eot_id=special_ids.eot, **dict(values))
    if sampler.gen_length > max_seq_len:
        raise ValueError(f"sampler.gen_length={sampler.gen_length}: beyond the model's maximum length {max_seq_len}")
    return sampler


_sampler_settings_once = functools.lru_cache(maxsize=65536)(_sampler_settings)  # errors are not cached


def scorer_settings(values: Mapping[str, Any], special_ids: SpecialIds) -> tuple[str, ScoringSettings]:
    """The scorer name (default ``confidence``) and :class:`ScoringSettings` of a point's ``scorer`` values."""
    scorer = dict(values)
    name = scorer.pop("name", "confidence")
    if name not in SCORERS:
        raise ValueError(f"scorer.name={name!r}: unknown scorer; choose one of {list(SCORERS)}")
    _reject_unknown("scorer", scorer, SCORER_FIELDS)
    scoring = ScoringSettings(mask_id=special_ids.mask, **scorer)
    check_scorer_settings(name, scoring)
    return name, scoring


def _reject_unknown(group: str, values: Mapping[str, Any], known: set[str]) -> None:
    unknown = sorted(set(values) - known - ({"name"} if group == "scorer" else set()))
    if unknown:
        raise ValueError(f"{group}.{unknown[0]}={values[unknown[0]]!r}: unknown {group} setting; known: {sorted(known)}")


class ModelLimits(NamedTuple):
    """What validating a point needs to know of its model (read from its config and tokenizer files)."""

    special_ids: SpecialIds
    max_seq_len: int
    logits_shift: bool  # a shifted head (Dream): no KV cache


def model_limits(model: str) -> ModelLimits:
    """Special ids, maximum length and logit shift of a resolved model (config and tokenizer files, no weights).

    Errors start with ``model=...`` (the point's field, so a sweep can name the override) and keep the name of
    the file at fault."""
    try:
        cfg, _, ids = describe(model)
    except (ValueError, OSError) as e:  # ConfigError, TokenizerError, a missing or unreadable file
        raise ValueError(f"model={model!r}: {e}") from e
    return ModelLimits(ids, cfg.max_seq_len, cfg.logits_shift)


_HASHES: dict[str, str] = {}


def _model_hash(path: str, name: str) -> str:
    if path not in _HASHES:
        try:
            _HASHES[path] = directory_hash(path)
        except OSError as e:
            raise ValueError(f"model={name!r}: cannot read {e.filename or path} ({e.strerror or e})") from e
    return _HASHES[path]


def evaluate(point: Point | ResolvedPoint, out_dir: str | Path | None = None, loaded: LoadedModel | None = None,
             progress: bool = True, data: TaskData | None = None) -> dict[str, Any]:
    """Run one point and return its summary; with ``out_dir``, also write the record there atomically.

    Pass ``loaded`` to reuse a model across points (a sweep job loads its model once). The point runs with
    its ``settings["threads"]`` torch threads (restored afterwards). ``data`` replaces the point's items (a
    subset of them: :func:`illada.fidelity.evaluate_to` continues a point on the items it has not run yet).
    """
    resolved = point if isinstance(point, ResolvedPoint) else resolve(point)
    # .get: a point resolved before settings had threads (a pickled job of an older sweep) runs as it did
    with torch_threads(resolved.settings.get("threads")):
        return _evaluate(resolved, out_dir, loaded, progress, data)


def _evaluate(resolved: ResolvedPoint, out_dir: str | Path | None, loaded: LoadedModel | None,
              progress: bool, data: TaskData | None = None) -> dict[str, Any]:
    started, host = now(), HostLoad()
    p = resolved.point
    device = torch.device(p.device)
    load_seconds = 0.0
    if loaded is None:
        loaded = load(resolved.settings["model"], device=device, dtype=p.dtype, attn_backend=p.attn_backend)
        load_seconds = loaded.load_seconds
    else:
        loaded.model.attn_backend = p.attn_backend
    if loaded.tokenizer is None:
        raise ValueError(f"model={p.model!r} has no tokenizer.json: tasks need text (presets are for latency only)")
    if is_lm_eval(p.task):
        from illada.harness import evaluate_point as run_lm_eval

        run = lambda: run_lm_eval(resolved, loaded)  # noqa: E731
    else:
        data = data or _load_task(p.task, p.split, p.limit, p.seed, p.num_fewshot, p.data_path)
        run = lambda: _run_task(resolved, loaded, data, progress)  # noqa: E731
    with peak_memory(device) as peak, wall_time(device) as wall:
        rows, quality, cost = run()
    eval_seconds = wall.seconds
    latencies = [r["latency_s"] for r in rows]
    cost.update({
        "eval_seconds": eval_seconds,
        "latency_p50_s": statistics.median(latencies), "latency_p95_s": _quantile(latencies, 0.95),
        "throughput_items_per_s": len(rows) / eval_seconds,
        "throughput_tokens_per_s": cost["generated_tokens"] / eval_seconds if resolved.kind == GENERATION else None,
        "load_seconds": load_seconds, "peak_memory_bytes": peak.value,
        "peak_memory_kind": "cuda_max_allocated" if device.type == "cuda" else "process_rss",
    })
    summary = {"schema": SCHEMA_VERSION, "key": resolved.key, "status": "ok", "settings": resolved.settings,
               "quality": quality, "cost": cost,
               "provenance": {**provenance(device), "started_at": started, "finished_at": now(), **host.finish()},
               "error": None}
    if out_dir is not None:
        write_record(out_dir, summary, outcomes_frame(rows).reset_index())
    return summary


def _run_task(resolved: ResolvedPoint, loaded: LoadedModel, data: TaskData, progress: bool):
    """Per-item rows, quality and cost of an illada task."""
    run = _run_generation if resolved.kind == GENERATION else _run_scoring
    rows, cost = run(resolved, loaded, data, progress)
    return rows, quality_of(resolved, rows, data), cost


def quality_of(resolved: ResolvedPoint, rows: Sequence[Mapping[str, Any]], data: TaskData) -> dict[str, Any]:
    """The record's ``quality`` block from an illada task's per-item rows (``data`` says where they came from)."""
    metric = "exact_match" if resolved.kind == GENERATION else "acc"
    est = accuracy(r[metric] for r in rows)
    quality = {"metric": metric, "value": est.value, "ci_low": est.lower, "ci_high": est.upper, "n": est.n,
               "confidence": est.confidence, "data_source": data.source, "n_total": data.n_total}
    if resolved.kind != GENERATION:
        for extra in ("acc_norm", "acc_per_token"):
            e = accuracy(r[extra] for r in rows)
            quality[extra] = {"value": e.value, "ci_low": e.lower, "ci_high": e.upper}
    return quality


@functools.lru_cache(maxsize=16)
def _load_task(task: str, split: str | None, limit: int | None, seed: int, num_fewshot: int,
               data_path: str | None) -> TaskData:
    # points of a sweep share their items; loading and subsampling them once per process keeps the
    # per-point overhead small (items are frozen, so sharing them is safe)
    return get_task(task).load(split, limit=limit, seed=seed, num_fewshot=num_fewshot, data_path=data_path)


def failure_summary(resolved: ResolvedPoint, error: BaseException, log_path: str | None = None,
                    started: str | None = None) -> dict[str, Any]:
    """The record of a point that failed: its settings, the cause, and where the log is.

    Never raises: a part that cannot be found (provenance on a broken device, an error whose ``str`` fails)
    is recorded as what went wrong with it, so the failure itself is never lost."""
    device = getattr(resolved.point, "device", None)
    return {"schema": SCHEMA_VERSION, "key": resolved.key, "status": "failed", "settings": resolved.settings,
            "quality": None, "cost": None,
            "provenance": {**safely(lambda: provenance(device), lambda e: {"device": str(device),
                                                                           "provenance_error": _describe_error(e)}),
                           "started_at": started, "finished_at": now()},
            "error": {"type": type(error).__name__, "message": safely(lambda: str(error), _describe_error),
                      "log_path": log_path,
                      "traceback": safely(lambda: "".join(traceback.format_exception(error))[-4000:],
                                           _describe_error)}}


def _describe_error(e: BaseException) -> str:
    try:
        return f"{type(e).__name__}: {e}"
    except Exception:  # noqa: BLE001 -- an exception whose __str__ raises
        return type(e).__name__


def _quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _batches(items: Sequence, size: int):
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _progress(iterable, total: int, enabled: bool, desc: str):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="batch", leave=False)


def _run_generation(resolved: ResolvedPoint, loaded: LoadedModel, data: TaskData, show: bool):
    p, tok, ids = resolved.point, loaded.tokenizer, loaded.special_ids
    device = torch.device(p.device)
    pad = ids.pad if ids.pad is not None else ids.eos
    model = _ForwardMonitor(loaded.model)
    rows: list[dict] = []
    nfe_total = generated = decoded = row_nfe = 0
    n_batches = -(-len(data) // p.batch_size)
    for batch in _progress(_batches(data.items, p.batch_size), n_batches, show, f"{p.task} generate"):
        with wall_time(device) as wall:  # a request's latency: from its text in to its answer scored
            prompts = [_encode_prompt(tok, item.prompt, p.chat) for item in batch]
            input_ids, mask = pad_left(prompts, pad)
            with model.checking(resolved, batch):
                res = generate(model, input_ids.to(device), resolved.sampler, mask.to(device))
            batch_rows = []
            for i, item in enumerate(batch):
                completion = tok.decode(res.generated[i].tolist(), skip_special_tokens=True)
                row = gen_outcome(item.id, completion, item.reference, item.score(completion))
                row.update(nfe=int(res.row_nfe[i]), answer_tokens=int(res.answer_lengths[i]))
                batch_rows.append(row)
        nfe_total += res.nfe
        generated += int(res.answer_lengths.sum())
        decoded += int(res.generated_tokens.sum())
        row_nfe += int(res.row_nfe.sum())
        rows.extend({**row, "latency_s": wall.seconds} for row in batch_rows)
    cost = {"nfe_total": nfe_total, "nfe_per_sample": row_nfe / len(rows), "generated_tokens": generated,
            "tokens_per_forward": decoded / max(row_nfe, 1)}
    return rows, cost


def _encode_prompt(tok: Tokenizer, text: str, chat: bool) -> list[int]:
    if chat:
        # the template already carries BOS and role headers, so no special tokens are added on top
        return tok.encode(tok.apply_chat_template([{"role": "user", "content": text}]), add_special_tokens=False)
    return tok.encode(text, add_special_tokens=True)


def encode_pair(tok: Tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """lm-eval's ``_encode_pair``: trailing spaces of the context move into the continuation, and the pair is
    tokenized jointly so the continuation's ids are those it has after this context."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
    whole = tok.encode(context + continuation, add_special_tokens=True)
    ctx = tok.encode(context, add_special_tokens=True)
    return whole[:len(ctx)], whole[len(ctx):]


class NonFiniteLogitsError(FloatingPointError):
    """The model produced NaN or infinite logits: its weights hold NaN/inf or overflow in the chosen dtype, so
    whatever the sampler or scorer made of them is not a result."""


class _ForwardMonitor:
    """Counts forward calls and rows of a model and watches its logits, delegating everything else to it.

    Every sampler and scorer forward of :func:`evaluate` passes here. The finiteness test is one min/max
    reduction per forward, kept on the device (NaN propagates through both, an infinity shows in one), and
    read once per batch by :meth:`checking`, so the hot path gains no host synchronisation.
    """

    def __init__(self, model) -> None:
        self.model, self.calls, self.rows = model, 0, 0
        self._finite: torch.Tensor | None = None

    def __call__(self, input_ids, *args, **kwargs):
        self.calls += 1
        self.rows += input_ids.shape[0]
        logits = self.model(input_ids, *args, **kwargs)
        if logits.numel():  # aminmax refuses an empty tensor
            low, high = torch.aminmax(logits)
            finite = torch.isfinite(low) & torch.isfinite(high)
            self._finite = finite if self._finite is None else self._finite & finite
        return logits

    def __getattr__(self, name: str):
        return getattr(self.model, name)

    @contextmanager
    def checking(self, resolved: ResolvedPoint, batch: Sequence) -> Iterator[None]:
        """Raise :class:`NonFiniteLogitsError` after the block if any forward so far gave non-finite logits,
        also when the block failed (garbage logits can make a sampler fail in ways that hide the cause)."""
        try:
            yield
        except Exception as exc:
            if self._saw_non_finite(exc):
                raise self._error(resolved, batch) from exc
            raise
        if self._saw_non_finite():
            raise self._error(resolved, batch)

    def _saw_non_finite(self, failure: Exception | None = None) -> bool:
        if self._finite is None:
            return False
        if failure is None:
            return not bool(self._finite)  # the one host synchronisation, once per batch
        try:  # after a failure (a CUDA error may be sticky) reading the flag must not hide the original
            return not bool(self._finite)
        except Exception:  # noqa: BLE001
            return False

    @staticmethod
    def _error(resolved: ResolvedPoint, batch: Sequence) -> NonFiniteLogitsError:
        s = resolved.settings
        first = getattr(batch[0], "id", "?") if len(batch) else "?"
        return NonFiniteLogitsError(
            f"model={s['model']!r} ({s['dtype']}) produced NaN or infinite logits in a batch of {len(batch)} items "
            f"(the first {first!r}): its weights hold NaN/inf or overflow in {s['dtype']}; this point has no result")


def _run_scoring(resolved: ResolvedPoint, loaded: LoadedModel, data: TaskData, show: bool):
    p, tok = resolved.point, loaded.tokenizer
    scorer = SCORERS[resolved.scorer_name]
    counter = _ForwardMonitor(loaded.model)
    rows: list[dict] = []
    n_batches = -(-len(data) // p.batch_size)
    for batch in _progress(_batches(data.items, p.batch_size), n_batches, show, f"{p.task} {resolved.scorer_name}"):
        with wall_time(p.device) as wall:  # as for generation: the request's text in, its choice out
            pairs = [[encode_pair(tok, ctx, cont) for ctx, cont in item.pairs()] for item in batch]
            flat = [pair for item_pairs in pairs for pair in item_pairs]
            with counter.checking(resolved, batch):
                totals = scorer(counter, flat, resolved.scorer).tolist()
            batch_rows, i = [], 0
            for item, item_pairs in zip(batch, pairs):
                scores = totals[i:i + len(item_pairs)]
                i += len(item_pairs)
                batch_rows.append(mc_outcome(item.id, scores, item.gold, n_chars=item.choice_chars,
                                             n_tokens=[len(cont) for _, cont in item_pairs]))
        rows.extend({**row, "latency_s": wall.seconds} for row in batch_rows)
    cost = {"nfe_total": counter.calls, "nfe_per_sample": counter.rows / len(rows), "generated_tokens": 0,
            "tokens_per_forward": 0.0, "forward_rows": counter.rows}
    return rows, cost


# ------------------------------------------------------------------------------------------------- command
# What a point can fail with that is not a bug of illada: bad or damaged files (ConfigError and CheckpointError
# are ValueErrors), a full or read-only disk, a device that is not there, broken weights, too little memory.
EXPECTED_FAILURES = (ValueError, OSError, DeviceUnavailableError, NonFiniteLogitsError, torch.cuda.OutOfMemoryError)


def _one_line(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return os_error_text(e)
    return " ".join(str(e).splitlines()) or type(e).__name__

def _parse_assignments(pairs: Sequence[str], flag: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise SystemExit(f"{flag} {pair!r}: expected KEY=VALUE")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


DEFAULT_OUT = Path("runs/eval")


def _summary_line(summary: dict[str, Any], kind: str) -> dict[str, Any]:
    """What the command prints of a record: quality, and the cost figures that mean something for its kind
    (a scorer generates no tokens, so it has no tokens/s), with the conditions they were taken at."""
    q, c, s = summary["quality"], summary["cost"], summary["settings"]
    line = {"key": summary["key"], q["metric"]: round(q["value"], 4),
            "ci95": [round(q["ci_low"], 4), round(q["ci_high"], 4)], "n": q["n"],
            "nfe_per_sample": round(c["nfe_per_sample"], 2), "latency_p50_s": round(c["latency_p50_s"], 4),
            "latency_p95_s": round(c["latency_p95_s"], 4),
            "throughput_items_per_s": round(c["throughput_items_per_s"], 2)}
    if kind == GENERATION:
        line["throughput_tokens_per_s"] = round(c["throughput_tokens_per_s"], 1)
    line.update({"batch_size": s["batch_size"], "threads": s["threads"], "load_seconds": round(c["load_seconds"], 3)})
    return line


def oversubscription_warning(summary: dict[str, Any]) -> str | None:
    """One line when the point ran on a host with more runnable processes than CPUs, else None."""
    prov = summary.get("provenance") or {}
    if not prov.get("oversubscribed"):
        return None
    return (f"warning: the host was oversubscribed while this point ran (load average {prov['load_avg_1m']} > "
            f"{prov['cpu_count']} CPUs): its latency and throughput are inflated; measure again on a quiet "
            "machine to compare them")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default",
                        help="'default' (the embedded model), a preset name, or a checkpoint directory")
    parser.add_argument("--task", default="arithmetic",
                        help=f"task: {', '.join(TASKS)} (default: arithmetic); a generation task takes "
                             "--sampler, a multiple-choice one --scorer")
    parser.add_argument("--split", help="dataset split (default: the task's evaluation split)")
    parser.add_argument("--limit", type=int, help="evaluate this many items (a seeded sample; default: all)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the item sample (default: 0)")
    parser.add_argument("--num-fewshot", type=int, default=0, help="in-context examples per prompt (default: 0)")
    parser.add_argument("--data-path", help="local file or folder of the task's data (default: the task's own)")
    parser.add_argument("--sampler", nargs="*", default=[], metavar="KEY=VALUE",
                        help="sampler settings for a generation task, e.g. steps=8 gen_length=8 block_length=8")
    parser.add_argument("--scorer", nargs="*", default=[], metavar="KEY=VALUE",
                        help="scorer for a multiple-choice task: name=likelihood|confidence|ar_order, plus its "
                             "settings, e.g. mc_num=32")
    parser.add_argument("--chat", action="store_true", help="wrap prompts in the model's chat template")
    parser.add_argument("--dtype", default="float32", help="float32, bfloat16 or float16 (default: float32)")
    parser.add_argument("--attn-backend", default="sdpa", help="eager, sdpa or flash_attn (default: sdpa)")
    parser.add_argument("--batch-size", type=int, default=16,
                        help="items per forward batch; latency is per request at this batch size (default: 16; "
                             "1 measures a lone request)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads the point runs with; part of the point's key (default: 1, as "
                             "in sweeps, so the same key means the same conditions)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="cpu, cuda or cuda:N (default: cuda when present, else cpu)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"directory for the record: KEY.json summary + KEY.items.parquet (default: {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    point = Point(model=args.model, task=args.task, split=args.split, limit=args.limit, seed=args.seed,
                  num_fewshot=args.num_fewshot, data_path=args.data_path,
                  sampler=_parse_assignments(args.sampler, "--sampler"),
                  scorer=_parse_assignments(args.scorer, "--scorer"), chat=args.chat, dtype=args.dtype,
                  attn_backend=args.attn_backend, batch_size=args.batch_size, device=args.device,
                  threads=args.threads)
    try:
        _run(point, args.out)
    except KeyboardInterrupt:  # Ctrl-C: nothing half-written to explain, no traceback to read
        print("\ninterrupted: no record written; run the same command again to evaluate the point", file=sys.stderr)
        raise SystemExit(130) from None


def _run(point: Point, out: Path) -> None:
    """Validate, check ``out`` is writable, evaluate, write and print; expected failures end in one line."""
    try:
        resolved = resolve(point)
    except (ValueError, OSError) as e:
        raise SystemExit(f"error: {_one_line(e)}") from None
    reason = unwritable_reason(out)
    if reason is not None:  # found out now, not after the evaluation
        raise SystemExit(f"error: --out {out}: cannot write the record there: {reason}; "
                         "choose another --out DIR (nothing was evaluated)")
    started = now()
    try:
        summary = evaluate(resolved, out)
    except EXPECTED_FAILURES as e:
        # the failure is a result too: record it where the result would have gone
        try:
            where = f" (failure record: {write_record(out, failure_summary(resolved, e, started=started))})"
        except OSError as w:
            where = f" (no failure record: {_one_line(w)})"
        raise SystemExit(f"error: {_one_line(e)}{where}") from None
    print(json.dumps(_summary_line(summary, resolved.kind)))
    warning = oversubscription_warning(summary)
    if warning:
        print(warning, file=sys.stderr)
    print(f"record: {summary_path(out, summary['key'])} (+ per-item table {items_path(out, summary['key']).name})",
          file=sys.stderr)


if __name__ == "__main__":
    main()
