"""Pareto fronts of two objectives, their hypervolume, the best point under a budget, and the knee.

Objectives come with a direction, ``"min"`` (latency, NFE) or ``"max"`` (accuracy, tokens per forward). Every
function takes ``by`` (default ``("task", "model")``): fronts are never mixed across tasks or models.

* **Dominance**: a dominates b when a is at least as good on both objectives and strictly better on one. Points
  with identical values do not dominate each other, so both stay on the front.
* **Hypervolume** (2-D, exact): the area dominated by the front and bounded by a reference point r, in the
  objectives' units: pass a frame in the units you display (:func:`analysis.fronts.display_units`: accuracy
  in %, latency in ms), so the volume and its reference point are in those units too. Default r (:func:`reference_point`): 0 for a
  maximised objective that is never negative (accuracy: the worst possible score) and 1.1 x the largest
  observed value of a minimised one (10% slower than the slowest point, so that point still adds area). The
  default depends on the data: pass the same ``ref`` explicitly to compare hypervolumes of different sweeps.
* **Knee**: the front point farthest from the straight line through the front's two end points, on the side
  of the ideal point, both objectives min-max scaled to [0, 1] over the front (the "maximum distance to the
  chord" knee of Das, 1999; Kneedle, Satopaa et al. 2011, uses the same distance). It is where giving up a
  little of one objective stops buying much of the other. The rule for every front shape:

  - *convex* (bulging towards the ideal point): the point of largest distance; points whose distances tie
    (within :data:`TIE`) are split by the better ``y``, then the better ``x``;
  - *no bend*: a front of one or two points, a *linear* one (every point on the chord) and a *concave* one
    (bulging away from the ideal point: no point on the ideal side of the chord) has no knee in this sense;
    the knee is then its best point on ``y`` (the most accurate): it is an end point of the front, and the
    other end (the cheapest) is always available as ``pareto_front(...).iloc[0]``;
  - identical points (both on the front): the first in the frame's order.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

MIN, MAX = "min", "max"
BY = ("task", "model")
#: the default cost objective: per-request latency, median, at the point's batch size (seconds in the frame)
LATENCY = "latency_p50_s"
#: scaled distances closer than this count as a tie (floating-point noise of the min-max scaling)
TIE = 1e-9


def _groups(df: pd.DataFrame, by: Sequence[str]):
    by = [c for c in by if c in df]
    return df.groupby(by, dropna=False, sort=True) if by else [((), df)]


def _as_min(values: pd.Series, direction: str) -> pd.Series:
    if direction not in (MIN, MAX):
        raise ValueError(f"direction={direction!r}: use 'min' or 'max'")
    return values.astype(float) if direction == MIN else -values.astype(float)


def pareto_mask(df: pd.DataFrame, x: str = LATENCY, y: str = "accuracy",
                directions: tuple[str, str] = (MIN, MAX), by: Sequence[str] = BY) -> pd.Series:
    """True for the non-dominated points of each ``by`` group (NaN on either objective: never on the front)."""
    mask = pd.Series(False, index=df.index)
    for _, group in _groups(df, by):
        mask.loc[_front_index(group, x, y, directions)] = True
    return mask


def _front_index(group: pd.DataFrame, x: str, y: str, directions: tuple[str, str]) -> pd.Index:
    pts = pd.DataFrame({"x": _as_min(group[x], directions[0]), "y": _as_min(group[y], directions[1])}).dropna()
    # per x, only the best y can be on the front; of those, the ones better than every point with smaller x
    best = pts.groupby("x")["y"].min().sort_index()
    before = best.cummin().shift(fill_value=np.inf)
    front_x = best.index[best.to_numpy() < before.to_numpy()]
    on = pts["x"].isin(front_x) & pts["y"].eq(pts["x"].map(best))
    return pts.index[on]


def pareto_front(df: pd.DataFrame, x: str = LATENCY, y: str = "accuracy",
                 directions: tuple[str, str] = (MIN, MAX), by: Sequence[str] = BY) -> pd.DataFrame:
    """The non-dominated rows, sorted by group and then from best to worst ``x``."""
    front = df[pareto_mask(df, x, y, directions, by)]
    key = _as_min(front[x], directions[0]).rename("_x")
    by = [c for c in by if c in df]
    return front.assign(_x=key).sort_values([*by, "_x"], kind="stable").drop(columns="_x")


def reference_point(df: pd.DataFrame, x: str = LATENCY, y: str = "accuracy",
                    directions: tuple[str, str] = (MIN, MAX)) -> tuple[float, float]:
    """The default hypervolume reference (see the module docstring): worse than every point on both axes."""
    def worst(values: pd.Series, direction: str) -> float:
        if direction == MIN:
            return 1.1 * float(values.max())
        low = float(values.min())
        return 0.0 if low >= 0 else low - 0.1 * (float(values.max()) - low)
    return worst(df[x], directions[0]), worst(df[y], directions[1])


def hypervolume(df: pd.DataFrame, x: str = LATENCY, y: str = "accuracy",
                directions: tuple[str, str] = (MIN, MAX), ref: tuple[float, float] | None = None) -> float:
    """Exact 2-D hypervolume of the points of ``df`` (one group; see :func:`hypervolumes`) w.r.t. ``ref``.

    Points no better than ``ref`` on both objectives add nothing."""
    ref = reference_point(df, x, y, directions) if ref is None else ref
    rx, ry = _as_min(pd.Series([ref[0]]), directions[0])[0], _as_min(pd.Series([ref[1]]), directions[1])[0]
    front = df.loc[_front_index(df, x, y, directions)]
    px, py = _as_min(front[x], directions[0]), _as_min(front[y], directions[1])
    pts = pd.DataFrame({"x": px, "y": py}).query("x < @rx and y < @ry").drop_duplicates().sort_values("x")
    # minimisation staircase: each point owns the slab from its x to the next point's x (the last: to rx)
    widths = np.diff(np.append(pts["x"].to_numpy(), rx))
    return float(np.sum(widths * (ry - pts["y"].to_numpy())))


def hypervolumes(df: pd.DataFrame, x: str = LATENCY, y: str = "accuracy",
                 directions: tuple[str, str] = (MIN, MAX), by: Sequence[str] = BY,
                 ref: tuple[float, float] | None = None) -> pd.DataFrame:
    """Hypervolume per ``by`` group with the reference point used (``ref_x``, ``ref_y``) and the front size."""
    rows = []
    for keys, group in _groups(df, by):
        r = reference_point(group, x, y, directions) if ref is None else ref
        keys = keys if isinstance(keys, tuple) else (keys,)
        rows.append({**dict(zip([c for c in by if c in df], keys)), "hypervolume": hypervolume(group, x, y, directions, r),
                     "ref_x": r[0], "ref_y": r[1], "front_points": len(_front_index(group, x, y, directions)),
                     "points": len(group)})
    return pd.DataFrame(rows)


def best_under_budget(df: pd.DataFrame, budget: float, cost: str = LATENCY, y: str = "accuracy",
                      by: Sequence[str] = BY, direction: str = MAX) -> pd.DataFrame:
    """Per group, the point with the best ``y`` among those with ``cost <= budget`` (ties: the cheaper one).

    Groups with no point within the budget are left out."""
    within = df[df[cost] <= budget]
    if within.empty:
        return within
    order = within.assign(_y=_as_min(within[y], direction)).sort_values(["_y", cost], kind="stable")
    by = [c for c in by if c in df]
    best = order.groupby(by, dropna=False, sort=True).head(1) if by else order.head(1)
    return best.drop(columns="_y").sort_values(by) if by else best.drop(columns="_y")


def knee_point(df: pd.DataFrame, x: str = LATENCY, y: str = "accuracy",
               directions: tuple[str, str] = (MIN, MAX)) -> pd.Series | None:
    """The knee of the front of ``df`` (one group; see the module docstring), or None when ``df`` is empty."""
    if df.empty:
        return None
    front = df.loc[_front_index(df, x, y, directions)]
    if front.empty:
        return None
    px, py = _as_min(front[x], directions[0]), _as_min(front[y], directions[1])
    sx = (px - px.min()) / (px.max() - px.min() or 1.0)
    sy = (py - py.min()) / (py.max() - py.min() or 1.0)
    # signed distance, towards the ideal point (0, 0), to the chord from the first front point (0, 1) to the
    # last (1, 0): 0 at both ends, <= 0 everywhere on a linear or concave front (and on 1-2 points)
    distance = (1 - sx - sy) / np.sqrt(2)
    position = pd.Series(np.arange(len(front)), index=front.index)
    # lexsort: the last key is the primary one; ties on distance go to the better y, then the better x
    rank = pd.DataFrame({"d": -distance.round(int(-np.log10(TIE))), "y": py, "x": px, "pos": position})
    if rank["d"].min() >= 0:  # nothing on the ideal side of the chord: no bend, take the most accurate
        rank["d"] = 0.0
    return front.loc[rank.sort_values(["d", "y", "x", "pos"], kind="stable").index[0]]


def knee_points(df: pd.DataFrame, x: str = LATENCY, y: str = "accuracy",
                directions: tuple[str, str] = (MIN, MAX), by: Sequence[str] = BY) -> pd.DataFrame:
    """The knee of every ``by`` group's front, one row each."""
    knees = [knee_point(group, x, y, directions) for _, group in _groups(df, by)]
    return pd.DataFrame([k for k in knees if k is not None])
