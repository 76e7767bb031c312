"""AUP, Accuracy Under Parallelism: d3LLM's single number for the accuracy vs tokens-per-forward trade-off.

The definition of hao-ai-lab/d3LLM (``AUP_leaderboard/aup_utils.py``, ``get_aup``), restated:

* the curve is a set of (rho, y) pairs: rho = tokens per forward pass (TPF, > 0), y = accuracy in percent;
  ``y_max`` is the best accuracy on the task over every method compared (d3LLM: all methods of a task table);
* the pairs are sorted by rho; y_1 is the accuracy of the smallest rho, and only pairs with y >= y_1 - 5
  (``y_min_offset``, percentage points) count;
* W(y) = min(exp(-alpha (1 - y / y_max)), 1) with alpha = 3 weights down accuracy below the best one;
* AUP = rho_1 y_1 + sum over i >= 2 of (rho_i - rho_{i-1}) (y_i W(y_i) + y_{i-1} W(y_{i-1})) / 2: the
  first pair's rectangle from rho = 0 (unweighted), then the trapezoids of the weighted accuracy.

d3LLM's function refuses (an assertion) a curve whose largest-rho accuracy lies more than 5 points below y_1;
:func:`aup` does so with ``strict=True`` and otherwise applies d3LLM's own filter (the pairs below y_1 - 5
are left out; on a Pareto front that cuts the curve after its last pair within 5 points) and says how many
it left out.

Here the curve of a task and model is its Pareto front of accuracy vs ``tokens_per_forward`` (both maximised)
over the generation points (a scorer decodes no tokens); ``y_max`` is the task's best accuracy in the frame
(every model and sweep), so the AUPs of one task are comparable.
"""

from __future__ import annotations

import math
from typing import Sequence

import pandas as pd

from analysis.pareto import BY, MAX, _groups, pareto_front

ALPHA = 3.0
Y_MIN_OFFSET = 5.0
RHO = "tokens_per_forward"


def weight(y: float, y_max: float, alpha: float = ALPHA) -> float:
    """d3LLM's quality weight W(y) = min(exp(-alpha (1 - y / y_max)), 1)."""
    if y_max <= 0:  # every accuracy is 0: the weighted terms are 0 whatever the weight
        return 1.0
    return min(math.exp(-alpha * (1 - y / y_max)), 1.0)


def aup_curve(rho: Sequence[float], y: Sequence[float], y_max: float, alpha: float = ALPHA,
              y_min_offset: float = Y_MIN_OFFSET, strict: bool = False) -> tuple[float, int]:
    """(AUP, number of pairs left out below y_1 - ``y_min_offset``) of one curve; ``y`` in percent.

    ``ValueError`` for an empty curve, rho <= 0, unequal lengths, or (``strict``) a curve d3LLM refuses."""
    if len(rho) != len(y):
        raise ValueError(f"AUP: {len(rho)} rho values but {len(y)} accuracies")
    if not len(rho):
        raise ValueError("AUP: no (rho, accuracy) pair")
    if any(r <= 0 for r in rho):
        raise ValueError(f"AUP: tokens per forward must be positive, got {min(rho)}")
    pairs = sorted(zip(map(float, rho), map(float, y)), key=lambda p: p[0])  # stable: ties keep their order
    y_1 = pairs[0][1]
    if strict and y_1 - pairs[-1][1] > y_min_offset:
        raise ValueError(f"AUP: accuracy falls {y_1 - pairs[-1][1]:.2f} points along the curve, more than "
                         f"{y_min_offset:g} (d3LLM's get_aup refuses such a curve)")
    kept = [p for p in pairs if p[1] >= y_1 - y_min_offset]
    total = kept[0][0] * kept[0][1]
    for (r0, y0), (r1, y1) in zip(kept, kept[1:]):
        total += 0.5 * (r1 - r0) * (y1 * weight(y1, y_max, alpha) + y0 * weight(y0, y_max, alpha))
    return total, len(pairs) - len(kept)


def aup(rho: Sequence[float], y: Sequence[float], y_max: float, alpha: float = ALPHA,
        y_min_offset: float = Y_MIN_OFFSET, strict: bool = False) -> float:
    """AUP of one curve (see the module docstring); ``y`` and ``y_max`` in percent."""
    return aup_curve(rho, y, y_max, alpha, y_min_offset, strict)[0]


def aups(points: pd.DataFrame, by: Sequence[str] = BY, y_max: dict | None = None) -> pd.DataFrame:
    """AUP per ``by`` group (default task and model) of its accuracy vs tokens-per-forward front.

    Columns: the ``by`` columns, ``aup``, ``aup_y_max`` (%), ``aup_points`` (front pairs used),
    ``aup_left_out`` (front pairs more than 5 points below the lowest-TPF accuracy). ``y_max``: per task (%),
    default the best accuracy of each task in ``points``. Groups without a generation point are left out."""
    by = [c for c in by if c in points]
    columns = [*by, "aup", "aup_y_max", "aup_points", "aup_left_out"]
    if RHO not in points or "accuracy" not in points:
        return pd.DataFrame(columns=columns)
    gen = points[pd.to_numeric(points[RHO], errors="coerce") > 0].dropna(subset=["accuracy"])
    if gen.empty:
        return pd.DataFrame(columns=columns)
    best = ((100 * gen.groupby("task")["accuracy"].max()).to_dict() if "task" in gen
            else {None: 100 * gen["accuracy"].max()})
    best.update(y_max or {})
    rows = []
    for keys, group in _groups(gen, by):
        keys = keys if isinstance(keys, tuple) else (keys,)
        front = pareto_front(group, RHO, "accuracy", (MAX, MAX), by=[])
        task_max = best[group["task"].iloc[0] if "task" in group else None]
        value, left_out = aup_curve(front[RHO].tolist(), (100 * front["accuracy"]).tolist(), task_max)
        rows.append({**dict(zip(by, keys)), "aup": value, "aup_y_max": task_max,
                     "aup_points": len(front) - left_out, "aup_left_out": left_out})
    return pd.DataFrame(rows, columns=columns)
