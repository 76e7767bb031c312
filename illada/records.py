"""Evaluation records: one JSON summary and one Parquet table of per-item rows per sweep point.

A record is keyed by a content hash of its resolved settings, so the same point always lands in the same
file and a finished point is recognised by its summary's presence. The per-item table is written first and
the summary last, each atomically, so a summary never points at a missing or partial table.

Summary schema (``SCHEMA_VERSION`` 2; schema-1 records stay readable, see below)::

    {"schema": 2, "key": <settings hash>, "status": "ok" | "failed",
     "settings": {model, model_hash, task, split, limit, seed, num_fewshot, data_path, chat, method,
                  sampler | scorer, dtype, attn_backend, batch_size, threads, device},
     "quality":  {"metric", "value", "ci_low", "ci_high", "n", ...},
     "cost":     {"nfe_total", "nfe_per_sample", "tokens_per_forward", "generated_tokens", "eval_seconds",
                  "latency_p50_s", "latency_p95_s", "throughput_items_per_s", "throughput_tokens_per_s",
                  "load_seconds", "peak_memory_bytes", "peak_memory_kind"},
     "provenance": {device, device_name, torch, cuda, illada, git_commit, hostname, slurm_job_id, python,
                    started_at, finished_at, load_avg_1m, cpu_count, oversubscribed},
     "error": null | {"type", "message", "log_path", "traceback"}}

Cost, all at the point's own conditions (``settings.batch_size``, ``settings.threads``, device, dtype):

* ``latency_p50_s`` / ``latency_p95_s``: per-request latency -- each item's latency is the wall time of the
  batch it was in (encoding, forwards, decoding, scoring), so at ``batch_size`` 1 it is one request's latency
  and at 16 what a request waits for when served 16 at a time.
* ``throughput_items_per_s`` = n / ``eval_seconds``; ``throughput_tokens_per_s`` = generated answer tokens /
  ``eval_seconds`` (generation only; None for a scorer, which generates none). Model load time is kept apart.

Provenance records the host's load while the point ran: ``load_avg_1m`` (the larger of the 1-minute load
average at start and end), ``cpu_count`` (CPUs this process may use) and ``oversubscribed`` (load > CPUs:
the point shared its cores, its times are inflated).

Schema 1 (before issue 15) had no ``settings.threads`` (points ran at 1 thread in sweeps, torch's default in
``illada-eval``), no load figures, and ``cost.seconds_per_sample`` (eval_seconds / n, an inverse throughput)
and ``cost.tokens_per_second`` (0.0 for scorers) instead of the two throughputs.

A point's key is :func:`settings_key` of its settings. A field added after schema 1 is left out of the hash
while it has its neutral value (:data:`KEY_NEUTRAL`), so a schema-1 record keeps its key and only points that
use a new field get new keys; every other condition (threads other than 1, device, dtype, batch size,
attention backend) is part of the key.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import socket
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from illada.atomic import atomic_target, atomic_write_text

if TYPE_CHECKING:  # torch is imported where it is used: reading records (illada-status, analysis) needs none
    import torch

SCHEMA_VERSION = 2

#: settings added after schema 1 and their neutral value (dotted paths for nested settings): left out of a
#: point's key while they have it, so that a point that does not use them keeps the key it had before. A new
#: setting goes here with the value that means "as before" (its default).
KEY_NEUTRAL: dict[str, Any] = {
    "threads": 1,  # issue 15: sweeps ran at 1 thread
    # issue 16: decoding strategies (SamplerSettings); "llada" is the one decoder schema 1 had
    "sampler.decoder": "llada", "sampler.debias": False,
    **{f"sampler.{name}": None for name in (
        "gamma", "low_threshold", "kl_threshold", "kl_history_length", "credit_alpha", "boost_gamma", "decay_beta",
        "wide_in_threshold", "narrow_out_threshold", "k_exploration_steps", "cycle_len_confidence_threshold",
        "cycle_length_stability_window", "cycle_length_stability_std_dev_threshold", "high_confidence_threshold",
        "max_sub_cycles_per_block", "sigma", "clip_alpha", "pc_lambda", "token_frequencies")},
    # issue 18: Dream's sampler knobs and likelihood variants; issue 17: the caches' knobs
    **{f"sampler.{name}": None for name in (
        "alg", "alg_temp", "top_p", "top_k", "eps", "cache_steps", "dkv_variant", "dkv_window", "prompt_interval_steps", "gen_interval_steps",
        "transfer_ratio", "rollout_p", "current_k", "cache_sigma", "inflate_w")},
    **{f"scorer.{name}": None for name in ("nll_type", "log_type", "sampling_eps")},
}


def settings_key(settings: dict[str, Any]) -> str:
    """Content hash of resolved settings (canonical JSON, sorted keys): the identity of a sweep point.
    Fields of :data:`KEY_NEUTRAL` at their neutral value are left out; a point whose method's results changed
    after records of it were written also hashes that method's revision (:func:`revisions`)."""
    keyed = _without_neutral(settings)
    changed = revisions(settings)
    if changed:
        keyed = {**keyed, "revisions": changed}
    canonical = json.dumps(keyed, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def revisions(settings: dict[str, Any]) -> dict[str, int]:
    """The revisions of the methods a point uses whose tokens changed, with no setting changing, after records
    of them were written: such a point gets a new key, so a resumed sweep measures it again instead of reusing a
    record of the old behaviour. Revision 2 of ``d2cache``: the query search follows the block mask the original
    narrows in place. Revision 2 of ``calibrated_threshold`` (a certainty prior or PC-Sampler's debias with LLaDA's
    decoder under the threshold or factor rules or a prefix/dual cache, ``confidence_precision=auto``): the softmax
    in the logits' dtype, as d2Cache's ``generate_step``, where it was float64."""
    sampler = settings.get("sampler")
    if not isinstance(sampler, dict):
        return {}
    out = {}
    if sampler.get("cache") == "d2cache":
        out["d2cache"] = 2
    calibrated = sampler.get("sigma") is not None or bool(sampler.get("debias"))
    rule = sampler.get("threshold") is not None or sampler.get("factor") is not None
    cache = sampler.get("cache", "none")
    auto = sampler.get("confidence_precision", "auto") == "auto"
    if calibrated and auto and sampler.get("decoder", "llada") == "llada" and (
            cache in ("prefix", "dual") or (cache == "none" and rule)):  # float64 before, the logits' dtype now
        out["calibrated_threshold"] = 2
    return out


def _without_neutral(settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` less the :data:`KEY_NEUTRAL` fields that have their neutral value (the input is left
    intact: only the dictionaries on a removed field's path are copied)."""
    return _drop_neutral(settings, _neutral_tree())


_TREE: list[Any] = [None, None]  # (the KEY_NEUTRAL it was built from, the tree)


def _neutral_tree() -> dict[str, Any]:
    """:data:`KEY_NEUTRAL` as nested dictionaries (one walk of the settings drops every neutral field);
    a leaf is wrapped in a tuple, so that a neutral value that is itself a dict is not taken for a branch.
    Rebuilt when ``KEY_NEUTRAL`` is replaced."""
    if _TREE[0] is KEY_NEUTRAL:
        return _TREE[1]
    tree: dict[str, Any] = {}
    for path, neutral in KEY_NEUTRAL.items():
        *parents, leaf = path.split(".")
        node = tree
        for name in parents:
            node = node.setdefault(name, {})
        node[leaf] = (neutral,)
    _TREE[:] = [KEY_NEUTRAL, tree]
    return tree


def _drop_neutral(settings: dict[str, Any], tree: dict[str, Any]) -> dict[str, Any]:
    out = None
    for name, sub in tree.items():
        if name not in settings:
            continue
        value = settings[name]
        if isinstance(sub, tuple):
            new = _ABSENT if _same(value, sub[0]) else value
        elif isinstance(value, dict):
            new = _drop_neutral(value, sub)
        else:
            continue
        if new is value:
            continue
        if out is None:
            out = dict(settings)
        if new is _ABSENT:
            del out[name]
        else:
            out[name] = new
    return settings if out is None else out


_ABSENT = object()


def _same(value: Any, neutral: Any) -> bool:
    # True == 1 in Python, but a bool is not a thread count: compare types too
    return type(value) is type(neutral) and value == neutral


def summary_path(directory: str | Path, key: str) -> Path:
    return Path(directory) / f"{key}.json"


def items_path(directory: str | Path, key: str) -> Path:
    return Path(directory) / f"{key}.items.parquet"


def write_record(directory: str | Path, summary: dict[str, Any], items: Any | None = None) -> Path:
    """Write ``items`` (a pandas DataFrame) then ``summary`` atomically; returns the summary path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    key = summary["key"]
    if items is not None:
        with atomic_target(items_path(directory, key)) as tmp:
            items.to_parquet(tmp, index=False)
    target = summary_path(directory, key)
    atomic_write_text(target, json.dumps(summary, indent=2, default=str))
    return target


class CorruptFileError(ValueError):
    """A store file that exists but cannot be read as what it should be (cut short, zero-filled, not JSON)."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: unreadable ({reason})")
        self.path, self.reason = Path(path), reason


def read_json(path: str | Path) -> dict[str, Any]:
    """A JSON object from ``path``; :class:`CorruptFileError` (naming the file) when it is not one,
    ``FileNotFoundError`` when it does not exist."""
    path = Path(path)
    try:
        data = json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
        raise CorruptFileError(path, f"{type(e).__name__}: {e}") from None
    if not isinstance(data, dict):
        raise CorruptFileError(path, f"a JSON {type(data).__name__}, not an object")
    return data


def read_summary(path: str | Path) -> dict[str, Any]:
    """A record summary; :class:`CorruptFileError` when the file is not a record (e.g. a truncated write)."""
    summary = read_json(path)
    if not isinstance(summary.get("status"), str):
        raise CorruptFileError(path, "no 'status' field")
    return summary


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def safely(get: Callable[[], Any], fallback: Callable[[Exception], Any] = lambda e: None) -> Any:
    """``get()``, or ``fallback(error)`` when it raises: provenance and failure records are informative and
    building them must never fail."""
    try:
        return get()
    except Exception as e:  # noqa: BLE001
        return fallback(e)


def _torch() -> Any:
    import torch

    return torch


def provenance(device: torch.device | str) -> dict[str, Any]:
    """Where and with what a record was computed (never raises; a field that cannot be found is None)."""
    import illada

    return {
        "device": str(device), "device_name": device_name(device), "torch": safely(lambda: _torch().__version__),
        "cuda": safely(lambda: _torch().version.cuda), "illada": illada.__version__, "git_commit": safely(git_commit),
        "hostname": safely(socket.gethostname), "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "slurm_array_task_id": os.environ.get("SLURM_ARRAY_TASK_ID"), "python": platform.python_version(),
    }


def device_name(device: torch.device | str) -> str:
    """The GPU's marketing name, or the CPU's processor name; never raises (e.g. ``"cuda"`` on a machine
    without CUDA gives ``"cuda (no name: ...)"``)."""
    try:
        import torch

        dev = torch.device(device)
        if dev.type == "cuda":
            return torch.cuda.get_device_name(dev)
    except Exception as e:  # no CUDA, a bad index, a broken driver: the record still gets written
        return f"{device} (no name: {type(e).__name__}: {str(e)[:80]})"
    return platform.processor() or platform.machine() or str(device)


@functools.lru_cache(maxsize=1)  # one subprocess per process, not per record
def git_commit() -> str | None:
    """The commit of the illada source tree, if it is a git checkout."""
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def directory_hash(path: str | Path, sample_bytes: int = 1 << 20) -> str:
    """A short content hash of a checkpoint directory, cheap enough for 16 GB checkpoints.

    Hashes every JSON file whole and, of every other file, its size plus its first and last ``sample_bytes``
    (a safetensors header and weights at both ends), so re-saved or swapped weights change the hash.
    """
    path = Path(path)
    h = hashlib.sha256()
    for f in sorted(p for p in path.iterdir() if p.is_file()):
        size = f.stat().st_size
        h.update(f"{f.name}:{size}\n".encode())
        with f.open("rb") as fh:
            if f.suffix == ".json" or size <= 2 * sample_bytes:
                h.update(fh.read())
            else:
                h.update(fh.read(sample_bytes))
                fh.seek(size - sample_bytes)
                h.update(fh.read(sample_bytes))
    return h.hexdigest()[:16]
