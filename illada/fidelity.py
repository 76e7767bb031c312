"""Items as fidelity: rungs, nested item subsets, confidence bounds, and the rule that stops a point early.

* **Nested subsets.** A point's items in its fidelity order (:func:`ordered_items`: its batches, as a direct
  evaluation forms them, in a seeded order): the first k items are the point's subset at k items, so a larger
  rung contains every smaller one and promotion only runs the items after the last one evaluated.
* **Rungs.** Item counts ``ceil(fraction x n)`` for fractions such as 1/16, 1/4, 1 (successive-halving style),
  rounded up to whole batches.
* **Bounds.** Wilson interval of the accuracy at the set confidence (95% by default).
* **Promotion / early stop.** A point can still be on the front while no other point's *lower* bound of quality
  is at least its *upper* bound at a latency no worse (better in one of the two): :func:`could_be_on_front`.
  The multi-fidelity search promotes on it; a grid point stops early on it.
* **Continuing a point.** :func:`evaluate_to` evaluates a point on its first k items, continuing the partial
  record it left before. A partial record has ``coverage: {"items": k, "of": n, "order": "seeded"}``; once
  every item is evaluated the record is written as a direct evaluation writes it (rows in the task's order,
  no ``coverage``), so its content is the same, cost fields (latencies, seconds, throughputs) aside.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

DEFAULT_RUNGS = (1 / 16, 1 / 4, 1.0)
DEFAULT_CONFIDENCE = 0.95
MIN_BATCHES = 2  # a point is judged on two batches at least: one batch's latency can be a lone spike
ORDER = "seeded batches"  # the point's batches in a seeded order (see ordered_items)


def check_rungs(fractions: Sequence[float], name: str = "rungs") -> tuple[float, ...]:
    """Rung fractions: increasing, in (0, 1], the last 1 (every point that gets there is fully measured)."""
    values = tuple(fractions)
    if (not values or any(isinstance(f, bool) or not isinstance(f, (int, float)) for f in values)
            or any(not 0 < f <= 1 for f in values) or list(values) != sorted(set(values)) or values[-1] != 1):
        raise ValueError(f"{name}={list(values)!r}: fractions of the items, increasing, in (0, 1], ending with 1 "
                         "(e.g. [0.0625, 0.25, 1])")
    return tuple(float(f) for f in values)


def check_confidence(confidence: float, name: str = "confidence") -> float:
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0.5 <= confidence < 1:
        raise ValueError(f"{name}={confidence!r}: a confidence level in [0.5, 1), e.g. 0.95")
    return float(confidence)


def rung_sizes(n_items: int, fractions: Sequence[float] = DEFAULT_RUNGS, batch_size: int = 1) -> list[int]:
    """Item counts of the rungs for a point of ``n_items`` items: whole batches (:data:`MIN_BATCHES` at least),
    increasing, the last ``n_items``."""
    sizes: list[int] = []
    for f in check_rungs(fractions):
        k = min(n_items, batch_size * max(MIN_BATCHES, math.ceil(math.ceil(f * n_items) / batch_size)))
        if not sizes or k > sizes[-1]:
            sizes.append(k)
    return sizes


def interval(successes: int, n: int, confidence: float = DEFAULT_CONFIDENCE) -> tuple[float, float]:
    """Wilson interval of a proportion at ``confidence``."""
    from illada.metrics import wilson_interval

    z = statistics.NormalDist().inv_cdf(0.5 + confidence / 2)
    return wilson_interval(successes, n, z)


@dataclass(frozen=True)
class Evidence:
    """What is known of a point after ``items`` of its ``of`` items: quality with its bounds, and latency."""

    key: str
    items: int
    of: int
    value: float
    low: float
    high: float
    latency: float

    @property
    def complete(self) -> bool:
        return self.items >= self.of


def evidence(key: str, hits: int, items: int, latency: float, of: int,
             confidence: float = DEFAULT_CONFIDENCE) -> Evidence:
    """Evidence from ``hits`` correct of ``items`` evaluated (of ``of``) and the latency measured on them."""
    low, high = interval(hits, items, confidence)
    return Evidence(key, items, of, hits / items, low, high, latency)


def partial_latency(latencies: Sequence[float]) -> float:
    """The latency a point not yet complete is judged at: its fastest batch so far. Latency from a few batches
    is noisy, and on a shared machine mostly upwards (a busy neighbour, a first batch warming caches up), so
    the point gets the benefit of the doubt; a complete point is judged at its record's p50."""
    return float(min(latencies))


def could_be_on_front(point: Evidence, others: Iterable[Evidence]) -> bool:
    """True while no other point's lower bound of quality is at least ``point``'s upper bound at a latency no
    worse, better in one of them: the point could still be on the front (promote it; do not stop it)."""
    for o in others:
        if o.key == point.key:
            continue
        if o.low >= point.high and o.latency <= point.latency and (o.low > point.high or o.latency < point.latency):
            return False
    return True


# ---------------------------------------------------------------------------------------- continuing a point
def ordered_items(data, batch_size: int) -> list[int]:
    """Positions of ``data.items`` in the point's fidelity order: its batches (``batch_size`` consecutive items,
    exactly as a direct evaluation forms them) in the seeded order of their first items, a short last batch
    last. Every prefix of whole batches is then a seeded subset made of the very batches a direct evaluation
    runs, so a sampler's per-batch random draws, and so its outcomes, are the same."""
    from illada.tasks.base import seeded_order

    n = len(data.items)
    batches = [list(range(i, min(i + batch_size, n))) for i in range(0, n, batch_size)]
    short = [batches.pop()] if batches and len(batches[-1]) < batch_size else []
    ranked = seeded_order([data.items[b[0]].id for b in batches], data.seed)
    return [i for b in [batches[j] for j in ranked] + short for i in b]


def covered(record: Mapping[str, Any] | None) -> int:
    """Items a record covers: its ``coverage.items`` (a partial record), else its ``quality.n``."""
    if not record:
        return 0
    cov = record.get("coverage")
    return int(cov["items"]) if isinstance(cov, Mapping) else int((record.get("quality") or {}).get("n") or 0)


def evaluate_to(resolved, records_dir: str | Path, upto: int, loaded=None, progress: bool = False) -> dict[str, Any]:
    """Evaluate ``resolved`` on the first ``upto`` items of its seeded order into ``records_dir``, continuing
    the record it has there (only the items after those it covers run). Returns the record's summary.

    A record that covers every item is written as :func:`illada.evaluate.evaluate` writes it; a partial one
    has ``coverage``. A record that is not a continuable one of this point (another key's settings, rows that
    are not the seeded prefix) is replaced by a fresh evaluation."""
    import pandas as pd

    from illada.evaluate import _load_task, evaluate, is_lm_eval, quality_of
    from illada.records import items_path, read_summary, summary_path, write_record

    p = resolved.point
    if is_lm_eval(p.task):
        raise ValueError(f"task={p.task!r}: lm-eval tasks own their items; a multi-fidelity evaluation needs an "
                         "illada task")
    data = _load_task(p.task, p.split, p.limit, p.seed, p.num_fewshot, p.data_path)
    bs = p.batch_size
    order = ordered_items(data, bs)
    upto = min(bs * math.ceil(upto / bs), len(order))  # whole batches
    records_dir = Path(records_dir)
    prev, prev_rows = _previous(resolved, records_dir, data, order)
    done = len(prev_rows) if prev_rows is not None else 0
    if prev is not None and done >= upto:
        return prev
    part = replace(data, items=tuple(data.items[i] for i in order[done:upto]))
    scratch = records_dir / ".partial"
    new = evaluate(resolved, scratch, loaded=loaded, progress=progress, data=part)
    new_rows = pd.read_parquet(items_path(scratch, resolved.key))
    for f in (summary_path(scratch, resolved.key), items_path(scratch, resolved.key)):
        f.unlink(missing_ok=True)
    rows = new_rows if prev_rows is None else pd.concat([prev_rows, new_rows], ignore_index=True)
    if upto == len(order):  # complete: the task's own order, as a direct evaluation writes it
        position = {item.id: i for i, item in enumerate(data.items)}
        rows = rows.sort_values("id", key=lambda ids: ids.map(position)).reset_index(drop=True)
        subset = data
    else:
        subset = replace(data, items=tuple(data.items[i] for i in order[:upto]))
    summary = dict(new)
    summary["quality"] = quality_of(resolved, rows.to_dict("records"), subset)
    summary["cost"] = _merged_cost(prev, new, rows)
    if prev is not None:
        summary["provenance"] = {**new["provenance"], "started_at": prev["provenance"].get("started_at")}
    if upto < len(order):
        summary["coverage"] = {"items": upto, "of": len(order), "order": ORDER}
    else:
        summary.pop("coverage", None)
    write_record(records_dir, summary, rows)
    return read_summary(summary_path(records_dir, resolved.key))


def _previous(resolved, records_dir: Path, data, order: list[int]):
    """The point's earlier record and rows when they are a seeded prefix of its items; else (None, None)."""
    import pandas as pd

    from illada.records import CorruptFileError, items_path, read_summary, summary_path

    try:
        prev = read_summary(summary_path(records_dir, resolved.key))
        rows = pd.read_parquet(items_path(records_dir, resolved.key))
    except (FileNotFoundError, CorruptFileError, OSError, ValueError):
        return None, None
    if prev.get("status") != "ok" or prev.get("settings") != resolved.settings:
        return None, None
    ids = [data.items[i].id for i in order]
    k = len(rows)
    if k > len(ids) or sorted(map(str, rows["id"])) != sorted(ids[:k]):
        return None, None
    if "coverage" not in prev:  # a complete record (rows in the task's order)
        return prev, rows
    position = {item_id: i for i, item_id in enumerate(ids)}
    return prev, rows.sort_values("id", key=lambda s: s.map(position)).reset_index(drop=True)


def _merged_cost(prev: Mapping[str, Any] | None, new: Mapping[str, Any], rows) -> dict[str, Any]:
    """Cost of a continued record: sums over its parts, latencies over all its rows."""
    cost = dict(new["cost"])
    if prev is None:
        return cost
    a, b = prev["cost"], new["cost"]
    na, nb = covered(prev), int(new["quality"]["n"])
    n = na + nb
    seconds = a["eval_seconds"] + b["eval_seconds"]
    row_nfe = a["nfe_per_sample"] * na + b["nfe_per_sample"] * nb
    latencies = sorted(rows["latency_s"])
    cost.update({
        "nfe_total": a["nfe_total"] + b["nfe_total"], "nfe_per_sample": row_nfe / n,
        "generated_tokens": a["generated_tokens"] + b["generated_tokens"], "eval_seconds": seconds,
        "latency_p50_s": statistics.median(latencies), "latency_p95_s": _quantile(latencies, 0.95),
        "throughput_items_per_s": n / seconds, "load_seconds": a["load_seconds"] + b["load_seconds"],
    })
    if a.get("tokens_per_forward") is not None and b.get("tokens_per_forward") is not None and row_nfe:
        decoded = (a["tokens_per_forward"] * a["nfe_per_sample"] * na
                   + b["tokens_per_forward"] * b["nfe_per_sample"] * nb)
        cost["tokens_per_forward"] = decoded / row_nfe
    if b.get("throughput_tokens_per_s") is not None:
        cost["throughput_tokens_per_s"] = cost["generated_tokens"] / seconds
    peaks = [x for x in (a.get("peak_memory_bytes"), b.get("peak_memory_bytes")) if x is not None]
    cost["peak_memory_bytes"] = max(peaks) if peaks else None
    return cost


def _quantile(values: Sequence[float], q: float) -> float:
    from illada.evaluate import _quantile as quantile

    return quantile(values, q)


# ------------------------------------------------------------------------------------- early stop in a grid
PARTIAL_DIR = "partial"  # under a sweep root: records of points being measured batch by batch


def record_evidence(rec: Mapping[str, Any], confidence: float = DEFAULT_CONFIDENCE) -> Evidence:
    """A record's evidence: its accuracy over the items it covers, with bounds, and its latency p50."""
    n = covered(rec)
    of = (rec.get("coverage") or {}).get("of", n)
    hits = round(rec["quality"]["value"] * n)
    return evidence(rec["key"], hits, n, float(rec["cost"]["latency_p50_s"]), of, confidence)


def comparable(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Records whose qualities measure the same thing: the same task, split, items (limit, seed) and shots."""
    return all(a.get(f) == b.get(f) for f in ("task", "split", "limit", "seed", "num_fewshot", "data_path"))


def evaluate_early_stopped(resolved, store, loaded=None, confidence: float | None = DEFAULT_CONFIDENCE
                           ) -> dict[str, Any]:
    """Evaluate a grid point batch by batch (its fidelity order); after each batch, stop it once a finished
    point of the store (a complete record of the same items) beats its upper bound with its lower bound at a
    latency no worse (:func:`could_be_on_front`). The point's record is then written with ``coverage`` and
    ``early_stop`` (items, interval, the point that beat it); a point never beaten is recorded as a direct
    evaluation records it. Batches in progress live in ``SWEEP_DIR/partial/`` (a stopped point continued by
    ``hydra.sweeper.finish_stopped`` starts from there, see :func:`reopen_stopped`). ``confidence`` None: no
    stopping, the point is run to its end (continuing what ``partial/`` holds of it)."""
    import pandas as pd

    from illada.evaluate import _load_task
    from illada.records import items_path, write_record

    p = resolved.point
    scratch = store.root / PARTIAL_DIR
    n = len(_load_task(p.task, p.split, p.limit, p.seed, p.num_fewshot, p.data_path).items)
    k = 0
    while True:
        step = p.batch_size if confidence is not None else n
        rec = evaluate_to(resolved, scratch, covered_in(scratch, resolved.key) + step, loaded=loaded)
        k = covered(rec)
        ev = record_evidence(rec, confidence or DEFAULT_CONFIDENCE)
        if k < n:
            ev = replace(ev, latency=partial_latency(pd.read_parquet(items_path(scratch, resolved.key))["latency_s"]))
        beaten = None
        if MIN_BATCHES * p.batch_size <= k < n and confidence is not None:
            finished = [record_evidence(r, confidence) for r in store.records("ok")
                        if "coverage" not in r and r["key"] != resolved.key
                        and comparable(r["settings"], resolved.settings)]
            beaten = next((o for o in finished if not could_be_on_front(ev, [o])), None)
        if k >= n or beaten is not None:
            break
    rows = pd.read_parquet(items_path(scratch, resolved.key))
    if beaten is not None and confidence is not None:
        rec["early_stop"] = {
            "items": k, "of": n, "confidence": confidence, "interval": [ev.low, ev.high], "beaten_by": beaten.key,
            "reason": f"upper bound {ev.high:.3f} at {confidence:.0%} after {k} of {n} items is below the lower "
                      f"bound {beaten.low:.3f} of point {beaten.key} at latency {beaten.latency:.4g} s "
                      f"(this point: {ev.latency:.4g} s)"}
    write_record(store.records_dir, rec, rows)
    for f in (scratch / f"{resolved.key}.json", items_path(scratch, resolved.key)):
        f.unlink(missing_ok=True)
    return rec


def covered_in(directory: Path, key: str) -> int:
    """Items the record of ``key`` in ``directory`` covers (0 without a readable one)."""
    from illada.records import CorruptFileError, read_summary, summary_path

    try:
        return covered(read_summary(summary_path(directory, key)))
    except (FileNotFoundError, CorruptFileError):
        return 0


def reopen_stopped(store, keys: Iterable[str]) -> list[str]:
    """Move the records of early-stopped points among ``keys`` back to ``SWEEP_DIR/partial/`` so that they are
    run to the end (their items are kept: only the rest run). Returns the keys reopened."""
    import os

    from illada.records import items_path, summary_path

    out = []
    for key in keys:
        rec = store.record(key)
        if not rec or "early_stop" not in rec:
            continue
        scratch = store.root / PARTIAL_DIR
        scratch.mkdir(parents=True, exist_ok=True)
        # items first, then the summary: the point is missing (to run) only once both are in partial/
        os.replace(items_path(store.records_dir, key), items_path(scratch, key))
        os.replace(summary_path(store.records_dir, key), summary_path(scratch, key))
        out.append(key)
    return out
