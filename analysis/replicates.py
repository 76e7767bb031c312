"""Replicates: points that differ only in a seed are one setting, pooled into one row.

A *replicate* differs from another point only in :data:`REPLICATE_COLUMNS` (the sampler's seed, the scorer's
seed, the seed of the item subsample ``seed``); every other setting (task, model, sweep, batch size, threads,
...) must agree. :func:`pool_replicates` gives one row per setting:

* **accuracy**: the mean outcome over every (replicate, item) pair;
* **CI (95%)**, where the replicates have their per-item rows (``records/{key}.items.parquet``): items are the
  unit of the interval, replicates nested in them. Outcomes are pooled per item id (shared items are paired:
  an item seen by three seeds is one cluster of three outcomes), and the interval is the normal one with the
  cluster-robust (items as clusters) standard error of the ratio estimate: p = S / M over the item sums s_i
  and counts m_i, var = k / (k - 1) * sum (s_i - p m_i)^2 / M^2 over the k items. When every outcome is the
  same (var = 0) the Wilson interval of k items is used instead, so a perfect score still has an interval;
* without per-item rows: the t interval of the replicates' accuracies (n - 1 degrees of freedom);
* one replicate: the record's own 95% Wilson interval;
* cost columns (latency, throughput, NFE, ...) and every other number: the mean over replicates.

Added columns: ``n_replicates``, ``n_items`` (distinct items), ``ci_method``, ``replicates`` (the seeds that
vary, e.g. ``sampler.seed 0, 1, 2``), ``keys`` (the record keys, space-separated; ``key`` is the first), and
``warning``: ``"too few items/replicates: ..."`` when the setting has fewer than :data:`MIN_ITEMS` items or
its CI half-width exceeds :data:`MAX_HALF_WIDTH` (10 percentage points): a front of such settings cannot tell
neighbouring points apart.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from analysis.load import load_items
from illada.metrics import wilson_interval

#: settings that make replicates of one setting
REPLICATE_COLUMNS = ("sampler.seed", "scorer.seed", "seed")
#: settings that identify a point (besides every ``sampler.*`` / ``scorer.*`` column)
SETTING_COLUMNS = ("sweep", "task", "model", "model_name", "model_hash", "split", "limit", "num_fewshot",
                   "data_path", "chat", "method", "decoding", "dtype", "attn_backend", "batch_size", "threads",
                   "device", "metric")
MIN_ITEMS = 30
MAX_HALF_WIDTH = 0.10
Z95 = 1.959963984540054


def setting_columns(points: pd.DataFrame) -> list[str]:
    """The columns that identify a setting, replicate seeds left out."""
    return [c for c in points.columns if (c in SETTING_COLUMNS or c.startswith(("sampler.", "scorer.")))
            and c not in REPLICATE_COLUMNS]


def pool_replicates(points: pd.DataFrame) -> pd.DataFrame:
    """One row per setting, replicates pooled (see the module docstring for the method and added columns)."""
    if points.empty or "accuracy" not in points:
        return points.assign(n_replicates=pd.Series(dtype=int), n_items=pd.Series(dtype=float), ci_method="",
                             replicates="", keys="", warning="")
    on = setting_columns(points)
    group_id = (points.groupby(on, dropna=False, sort=False).ngroup() if on
                else pd.Series(0, index=points.index)).rename("_setting")
    sizes = group_id.map(group_id.value_counts())
    single = points[sizes.eq(1)]
    n = pd.to_numeric(single["n"], errors="coerce") if "n" in single else np.nan
    parts = [single.assign(n_replicates=1, n_items=n, ci_method="Wilson (one run)", replicates="",
                           keys=single["key"].astype(str), _setting=group_id[single.index])]
    if (sizes > 1).any():
        parts.append(_pool_groups(points[sizes > 1], group_id[sizes > 1], on))
    pooled = pd.concat(parts).sort_values("_setting", kind="stable").drop(columns="_setting").reset_index(drop=True)
    pooled["n_replicates"] = pooled["n_replicates"].astype(int)
    pooled["warning"] = [too_few(n, low, high, acc) for n, low, high, acc in
                         zip(pooled["n_items"], pooled["ci_low"], pooled["ci_high"], pooled["accuracy"])]
    return pooled


def _pool_groups(points: pd.DataFrame, group_id: pd.Series, on: list[str]) -> pd.DataFrame:
    """The pooled rows of the settings with two or more replicates (vectorised but for the intervals)."""
    points = points.assign(_setting=group_id).sort_values(["_setting", "key"], kind="stable")
    groups = points.groupby("_setting", sort=False)
    out = groups.head(1).set_index("_setting")
    fixed = set(on) | set(REPLICATE_COLUMNS) | {"_setting"}
    numeric = [c for c in points.select_dtypes("number").columns if c not in fixed]
    out[numeric] = groups[numeric].mean()
    out["n_replicates"] = groups.size()
    out["keys"] = groups["key"].agg(lambda keys: " ".join(map(str, keys)))
    varying = [c for c in REPLICATE_COLUMNS if c in points]
    counts = groups[varying].nunique() if varying else pd.DataFrame(index=out.index)
    out["replicates"] = [
        "; ".join(f"{c} " + ", ".join(map(str, sorted(g[c].dropna().unique())))
                  for c in varying if counts.loc[sid, c] > 1) for sid, g in groups]
    for c in varying:  # a seed that varies has no single value
        out[c] = out[c].where(counts[c].le(1))
    stats_rows = {sid: (_cluster_ci(items) if (items := _items(g)) is not None
                        else {**_replicate_ci(g["accuracy"].astype(float).to_numpy()),
                              "n_items": float(g["n"].max()) if "n" in g else math.nan})
                  for sid, g in groups}
    stats_frame = pd.DataFrame.from_dict(stats_rows, orient="index")
    for col in stats_frame:
        out[col] = stats_frame[col]
    return out.reset_index()


def too_few(n_items, ci_low, ci_high, accuracy) -> str:
    """The warning of a setting whose front position means little ("" when it is fine)."""
    reasons = []
    if n_items != n_items or n_items < MIN_ITEMS:
        reasons.append(f"{'?' if n_items != n_items else int(n_items)} items (< {MIN_ITEMS})")
    half = max(accuracy - ci_low, ci_high - accuracy) if ci_low == ci_low and ci_high == ci_high else math.nan
    if half != half or half > MAX_HALF_WIDTH:
        reasons.append(f"CI ±{100 * half:.0f} pp (> {100 * MAX_HALF_WIDTH:.0f})" if half == half else "no CI")
    return "too few items/replicates: " + ", ".join(reasons) if reasons else ""


def _items(group: pd.DataFrame) -> pd.DataFrame | None:
    """Every replicate's per-item outcomes (columns id, outcome), or None where one has none."""
    metric = group["metric"].iloc[0] if "metric" in group else None
    if metric is None or "items_path" not in group:
        return None
    frames = []
    for _, row in group.iterrows():
        try:
            table = load_items(row, [metric])
        except (FileNotFoundError, KeyError, ValueError, OSError):
            return None
        frames.append(pd.DataFrame({"id": table.index, "outcome": table[metric].astype(float).to_numpy()}))
    return pd.concat(frames, ignore_index=True)


def _cluster_ci(items: pd.DataFrame) -> dict:
    per_item = items.groupby("id")["outcome"].agg(["sum", "count"])
    k, total, count = len(per_item), per_item["sum"].sum(), per_item["count"].sum()
    p = total / count
    var = k / (k - 1) * ((per_item["sum"] - p * per_item["count"]) ** 2).sum() / count**2 if k > 1 else 0.0
    if var > 0:
        low, high = max(0.0, p - Z95 * math.sqrt(var)), min(1.0, p + Z95 * math.sqrt(var))
        method = "items pooled over replicates, cluster-robust normal"
    else:  # every outcome the same: Wilson on the distinct items
        low, high = wilson_interval(round(p * k), k)
        method = "items pooled over replicates, Wilson on distinct items"
    return {"accuracy": p, "ci_low": low, "ci_high": high, "n": int(count), "n_items": float(k), "ci_method": method}


def _replicate_ci(accuracies: np.ndarray) -> dict:
    n, mean = len(accuracies), float(accuracies.mean())
    half = stats.t.ppf(0.975, n - 1) * accuracies.std(ddof=1) / math.sqrt(n)
    return {"accuracy": mean, "ci_low": max(0.0, mean - half), "ci_high": min(1.0, mean + half),
            "ci_method": "t over replicates (no per-item rows)"}
