"""Synthetic sweep directories with the real record schema, for tests, benchmarks and notebook demos.

Accuracy falls with tokens decoded per step and with random remasking, latency grows with forward passes, and
per-item outcomes share one latent difficulty per item (common random numbers), so paired comparisons of two
settings look like real ones: most items agree, a few flip.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from illada.records import SCHEMA_VERSION, settings_key, write_record
from illada.sampling import SamplerSettings
from illada.scoring import ScoringSettings
from illada.store import SweepStore

MASK_ID = 126336
GEN_LENGTH = 256
BASE = {("gsm8k", "illada-8b"): 0.78, ("gsm8k", "llada-8b"): 0.70, ("arithmetic", "illada-8b"): 0.92,
        ("arithmetic", "llada-8b"): 0.88}
#: scorer accuracies of the synthetic scoring sweep: the paper's iLLaDA-Base numbers
SCORING = {"piqa": (0.772, 0.785), "arc_challenge": (0.602, 0.608), "hellaswag": (0.743, 0.766)}
PROVENANCE = {"device": "cuda:0", "device_name": "NVIDIA H100 80GB HBM3", "torch": "2.13.0", "cuda": "12.8",
              "illada": "0.1.0", "git_commit": None, "hostname": "synthetic", "slurm_job_id": None,
              "slurm_array_task_id": None, "python": "3.11", "started_at": None, "finished_at": None,
              "load_avg_1m": 0.5, "cpu_count": 32, "oversubscribed": False}


def _settings(task: str, model: str, limit: int, method: dict) -> dict:
    return {"model": model, "model_hash": None, "task": task, "split": "test", "limit": limit, "seed": 0,
            "num_fewshot": 0, "data_path": None, "chat": False, "dtype": "bfloat16", "attn_backend": "sdpa",
            "batch_size": 16, "threads": 1, "device": "cuda", **method}


def _summary(settings: dict, outcomes: np.ndarray, cost: dict, metric: str) -> dict:
    from illada.metrics import accuracy

    est = accuracy(outcomes)
    quality = {"metric": metric, "value": est.value, "ci_low": est.lower, "ci_high": est.upper, "n": est.n,
               "confidence": 0.95, "data_source": "synthetic", "n_total": len(outcomes)}
    return {"schema": SCHEMA_VERSION, "key": settings_key(settings), "status": "ok", "settings": settings,
            "quality": quality, "cost": cost, "provenance": PROVENANCE, "error": None}


def generation_grid(n_points: int) -> Iterator[tuple[str, str, dict]]:
    """(task, model, sampler settings) of a steps x block length x remasking grid plus Fast-dLLM threshold
    points, repeated over sampler seeds until ``n_points``."""
    powers = [8, 16, 32, 64, 128, 256]
    fixed = [{"steps": s, "block_length": b, "remasking": r}
             for s, b, r in itertools.product(powers, powers, ["low_confidence", "random"])
             if s % (GEN_LENGTH // b) == 0]
    threshold = [{"steps": GEN_LENGTH, "block_length": b, "threshold": t, "cache": c}
                 for b, t, c in itertools.product([32, 64], [0.5, 0.7, 0.8, 0.9, 0.95], ["none", "dual"])]
    combos = [(task, model, s) for (task, model) in BASE for s in fixed + threshold]
    for i in range(n_points):
        task, model, sampler = combos[i % len(combos)]
        yield task, model, {**sampler, "seed": i // len(combos)}


def _generation_point(task: str, model: str, sampler: dict, latent: np.ndarray, rng: np.random.Generator,
                      items: bool = True):
    s = SamplerSettings(mask_id=MASK_ID, gen_length=GEN_LENGTH, **sampler)
    if s.threshold is not None:
        nfe = GEN_LENGTH * (1.1 - s.threshold) / 2.5 + GEN_LENGTH / s.block_length
        acc = BASE[task, model] - 0.02 - 0.5 * (1 - s.threshold) ** 1.5 - (0.01 if s.cache == "dual" else 0.0)
    else:
        nfe = s.steps
        acc = (BASE[task, model] - 0.045 * np.log2(GEN_LENGTH / s.steps) ** 1.4
               - (0.08 if s.remasking == "random" else 0.0) - 0.01 * abs(np.log2(s.block_length / 32)))
    acc = float(np.clip(acc + rng.normal(0, 0.01), 0.01, 0.99))
    per_forward = 0.021 if s.cache == "none" else 0.014
    seconds = (0.05 + per_forward * nfe) / 16 * rng.lognormal(0, 0.03)  # batch of 16
    outcomes = latent < acc
    cost = {"nfe_total": int(nfe * len(latent) / 16), "nfe_per_sample": float(nfe), "generated_tokens": 180 * len(latent),
            "tokens_per_forward": GEN_LENGTH / nfe, "eval_seconds": seconds * len(latent),
            "throughput_items_per_s": 1 / seconds, "throughput_tokens_per_s": 180 / seconds,
            "latency_p50_s": 16 * seconds, "latency_p95_s": 17 * seconds,
            "load_seconds": 12.0, "peak_memory_bytes": int(17.5 * 2**30), "peak_memory_kind": "cuda_max_allocated"}
    settings = _settings(task, model, len(latent), {"method": "generate", "sampler": asdict(s)})
    table = None if not items else pd.DataFrame({
        "id": [f"{task}-{i}" for i in range(len(latent))], "completion": "", "reference": "",
        "exact_match": outcomes, "nfe": int(nfe), "answer_tokens": 180, "latency_s": 16 * seconds})
    return _summary(settings, outcomes, cost, "exact_match"), table


def write_generation_sweep(root: str | Path, n_points: int = 200, n_items: int = 50, seed: int = 0,
                           items: bool = True, failures: int = 2) -> Path:
    """A grid sweep of ``n_points`` generation points plus ``failures`` failed ones (the grid's next points,
    out of memory) in the layout of :mod:`illada.store`."""
    store = SweepStore(root)
    rng = np.random.default_rng(seed)
    latent = rng.random(n_items)
    for i, (task, model, sampler) in enumerate(generation_grid(n_points + failures)):
        summary, table = _generation_point(task, model, sampler, latent, rng)
        overrides = [f"task={task}", f"model={model}"] + [f"sampler.{k}={v}" for k, v in sampler.items()]
        store.plan(summary["key"], summary["settings"], overrides)
        if i >= n_points:
            summary.update(status="failed", quality=None, cost=None, error={
                "type": "OutOfMemoryError", "message": "CUDA out of memory. Tried to allocate 2.00 GiB",
                "log_path": str(Path(root) / "logs" / f"{i}_0_log.err"), "traceback": "..."})
            table = None
        write_record(store.records_dir, summary, table if items else None)
    return Path(root)


def write_generation_records(root: str | Path, n_points: int, failures: int = 0, n_items: int = 50,
                             seed: int = 0) -> Path:
    """The records, planned points and current plan of :func:`write_generation_sweep` (no per-item tables),
    written as plain files: no atomic rename and no fsync per file, so that a benchmark can write 50,000
    records in seconds. Not for anything a crash must not damage."""
    import json

    root = Path(root)
    for folder in ("records", "points"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    latent = rng.random(n_items)
    keys = []
    for i, (task, model, sampler) in enumerate(generation_grid(n_points + failures)):
        summary, _ = _generation_point(task, model, sampler, latent, rng, items=False)
        key = summary["key"]
        overrides = [f"task={task}", f"model={model}"] + [f"sampler.{k}={v}" for k, v in sampler.items()]
        if i >= n_points:
            summary.update(status="failed", quality=None, cost=None, error={
                "type": "OutOfMemoryError", "message": "CUDA out of memory. Tried to allocate 2.00 GiB",
                "log_path": str(root / "logs" / f"{i}_0_log.err"), "traceback": "..."})
        (root / "points" / f"{key}.json").write_text(json.dumps(
            {"key": key, "overrides": overrides, "fixed": [], "settings": summary["settings"]}, indent=2))
        (root / "records" / f"{key}.json").write_text(json.dumps(summary, indent=2, default=str))
        keys.append(key)
    SweepStore(root).set_current_plan(keys)
    return root


def write_scoring_sweep(root: str | Path, n_items: int = 300, seed: int = 0, model: str = "illada-8b-base") -> Path:
    """The scoring ablation on PIQA / ARC-C / HellaSwag, with the paper's accuracies as the true ones."""
    store = SweepStore(root)
    rng = np.random.default_rng(seed)
    for task, accs in SCORING.items():
        latent = rng.random(n_items)
        for name, acc, nfe in zip(("likelihood", "confidence"), accs, (128 * 2, 2 * 24)):
            scorer = {"name": name, **asdict(ScoringSettings(mask_id=MASK_ID, mc_num=128, batch_size=16))}
            # flip a few items per scorer so the two runs disagree on some items, as real runs do
            outcomes = (latent + rng.normal(0, 0.05, n_items)) < acc
            seconds = nfe * 0.004 / 16
            cost = {"nfe_total": nfe * n_items // 16, "nfe_per_sample": float(nfe), "generated_tokens": 0,
                    "tokens_per_forward": 0.0, "eval_seconds": seconds * n_items,
                    "throughput_items_per_s": 1 / seconds, "throughput_tokens_per_s": None,
                    "latency_p50_s": 16 * seconds, "latency_p95_s": 16 * seconds,
                    "load_seconds": 12.0, "peak_memory_bytes": int(17 * 2**30), "peak_memory_kind": "cuda_max_allocated"}
            settings = _settings(task, model, n_items, {"method": "score", "scorer": scorer})
            summary = _summary(settings, outcomes, cost, "acc")
            table = pd.DataFrame({"id": [f"{task}-{i}" for i in range(n_items)], "gold": 0,
                                  "pred_acc": np.where(outcomes, 0, 1), "acc": outcomes, "latency_s": 16 * seconds})
            store.plan(summary["key"], settings, [f"task={task}", f"scorer={name}"])
            write_record(store.records_dir, summary, table)
    return Path(root)
