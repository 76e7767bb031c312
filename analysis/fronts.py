"""The front as a table, one number per front (hypervolume, AUP, knee), and sweeps compared side by side.

Every quantity has ONE unit wherever it is shown: accuracy in %, latency in ms (stored in s), throughput in
items/s or generated tokens/s. Hypervolumes are computed on the displayed units, so a hypervolume, its
reference point and the front table agree (``accuracy % x ms`` for the default pair).

* :func:`front_table` -- the Pareto-front settings of every sweep, task and model (replicates pooled first,
  :func:`analysis.replicates.pool_replicates`), numbers only (CSV-friendly), the per-front summary in
  ``table.attrs["summary"]``; :func:`front_markdown` / :func:`write_front_table` show and write it.
* :func:`front_summary` -- per sweep, task and model: hypervolume against a reference point shared by every
  sweep of that task and model (so the sweeps' volumes compare), best accuracy, the knee's latency, AUP.
* :func:`sweep_deltas` -- each sweep minus the first one, per task and model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from analysis import figures
from analysis.aup import aups
from analysis.pareto import BY, LATENCY, MAX, _groups, hypervolume, knee_point, pareto_front, reference_point
from analysis.replicates import pool_replicates
from analysis.tables import markdown_table

GROUP = ("sweep", "task", "model")
#: the columns of :func:`front_table`, in order
COLUMNS = ["sweep", "task", "model", "setting", "batch_size", "threads", "accuracy_pct", "ci_low_pct", "ci_high_pct",
           "n_items", "n_replicates", "latency_p50_ms", "latency_p95_ms", "throughput_items_per_s",
           "throughput_tokens_per_s", "nfe_per_sample", "tokens_per_forward", "knee", "warning", "keys"]


def unit(column: str) -> str:
    """The displayed unit of a column (``ms``, ``%``, ``items/s``, ...) from its axis label."""
    label = figures.AXES.get(column, (column, 1.0))[0]
    return label[label.rfind("(") + 1:label.rfind(")")] if "(" in label else column


def display_units(points: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """``points`` with ``columns`` in their displayed units (accuracy %, latency ms, ...)."""
    return points.assign(**{c: figures.scaled(points[c], c) for c in columns if c in points})


def pooled(points: pd.DataFrame) -> pd.DataFrame:
    """``points`` with replicates pooled, unless they already are."""
    return points if "n_replicates" in points else pool_replicates(points)


def front_summary(points: pd.DataFrame, latency: str = LATENCY, by: Sequence[str] = GROUP) -> pd.DataFrame:
    """Per ``by`` group (default sweep, task, model): hypervolume (accuracy % x the latency's unit) against a
    reference point shared by all sweeps of the same task and model (:func:`analysis.pareto.reference_point`
    of their points pooled), best accuracy (%), the knee's accuracy and latency, AUP (:mod:`analysis.aup`),
    and how many front settings carry a warning."""
    points = pooled(points)
    cols = [*[c for c in by if c in points], "hypervolume", "ref_x", "ref_y", "front_points", "points",
            "best_accuracy_pct", "knee_accuracy_pct", "knee_x", "aup", "aup_y_max", "aup_points", "aup_left_out",
            "front_warnings"]
    data = display_units(points.dropna(subset=[latency, "accuracy"]), [latency, "accuracy"])
    if data.empty:
        return pd.DataFrame(columns=cols)
    dirs = (figures.direction(latency), MAX)
    shared, by = [c for c in BY if c in data], [c for c in by if c in data]
    rows = []
    for _, task_model in _groups(data, shared):
        ref = reference_point(task_model, latency, "accuracy", dirs)  # one per task and model: sweeps compare
        for keys, group in _groups(task_model, by):
            keys = keys if isinstance(keys, tuple) else (keys,)
            front = pareto_front(group, latency, "accuracy", dirs, by=[])
            knee = knee_point(group, latency, "accuracy", dirs)
            rows.append({**dict(zip(by, keys)), "hypervolume": hypervolume(group, latency, "accuracy", dirs, ref),
                         "ref_x": ref[0], "ref_y": ref[1], "front_points": len(front), "points": len(group),
                         "best_accuracy_pct": group["accuracy"].max(), "knee_accuracy_pct": knee["accuracy"],
                         "knee_x": knee[latency],
                         "front_warnings": int(front["warning"].ne("").sum()) if "warning" in front else 0})
    summary = pd.DataFrame(rows)
    aup = aups(points, by)
    summary = summary.merge(aup, on=by, how="left") if by else pd.concat([summary, aup], axis=1)
    return summary.reindex(columns=cols)


def sweep_deltas(summary: pd.DataFrame, order: Sequence[str] | None = None) -> pd.DataFrame:
    """Each sweep minus the first (``order``, default the summary's order) per task and model: Δ hypervolume,
    Δ best accuracy (pp), Δ knee latency (the latency's unit), Δ AUP."""
    cols = ["task", "model", "sweep", "vs", "d_hypervolume", "d_best_accuracy_pp", "d_knee_x", "d_aup"]
    if summary.empty or "sweep" not in summary or summary["sweep"].nunique() < 2:
        return pd.DataFrame(columns=cols)
    order = list(order or dict.fromkeys(summary["sweep"]))
    rows = []
    for keys, group in _groups(summary, [c for c in BY if c in summary]):
        keys = keys if isinstance(keys, tuple) else (keys,)
        group = group.set_index("sweep")
        present = [s for s in order if s in group.index]
        if len(present) < 2:
            continue
        base = group.loc[present[0]]
        for name in present[1:]:
            other = group.loc[name]
            rows.append({**dict(zip([c for c in BY if c in summary], keys)), "sweep": name, "vs": present[0],
                         "d_hypervolume": other["hypervolume"] - base["hypervolume"],
                         "d_best_accuracy_pp": other["best_accuracy_pct"] - base["best_accuracy_pct"],
                         "d_knee_x": other["knee_x"] - base["knee_x"], "d_aup": other["aup"] - base["aup"]})
    return pd.DataFrame(rows, columns=cols)


def front_table(points: pd.DataFrame, latency: str = LATENCY, pool: bool = True) -> pd.DataFrame:
    """The Pareto-front settings (accuracy vs ``latency``) of every sweep, task and model, as numbers.

    Replicates are pooled first (``pool``). Columns: :data:`COLUMNS` (units in the names; NaN where the
    records have no such field). ``table.attrs``: ``latency`` (the front's cost column) and ``summary``
    (:func:`front_summary` as a list of dicts: hypervolume, reference point, AUP, knee)."""
    empty = pd.DataFrame(columns=COLUMNS)
    empty.attrs.update(latency=latency, summary=[])
    if points.empty or "accuracy" not in points or latency not in points:
        return empty
    data = pooled(points) if pool else points.assign(n_replicates=1, n_items=points.get("n"), warning="",
                                                     keys=points["key"])
    data = data.dropna(subset=[latency, "accuracy"])
    if data.empty:
        return empty
    dirs = (figures.direction(latency), MAX)
    by = [c for c in GROUP if c in data]
    front = pareto_front(data, latency, "accuracy", dirs, by=by)
    knees = {knee_point(g, latency, "accuracy", dirs)["key"] for _, g in _groups(data, by)}
    labels = figures.point_labels(data).loc[front.index]

    def col(name: str, factor: float = 1.0) -> pd.Series:
        return front[name].astype(float) * factor if name in front else pd.Series(float("nan"), index=front.index)

    table = pd.DataFrame({
        "sweep": front.get("sweep", ""), "task": front.get("task", ""),
        "model": front["model_name"] if "model_name" in front else front.get("model", ""), "setting": labels,
        "batch_size": col("batch_size"), "threads": col("threads"),
        "accuracy_pct": col("accuracy", 100), "ci_low_pct": col("ci_low", 100), "ci_high_pct": col("ci_high", 100),
        "n_items": col("n_items"), "n_replicates": col("n_replicates"),
        "latency_p50_ms": col("latency_p50_s", 1e3), "latency_p95_ms": col("latency_p95_s", 1e3),
        "throughput_items_per_s": col("throughput_items_per_s"),
        "throughput_tokens_per_s": col("throughput_tokens_per_s"),
        "nfe_per_sample": col("nfe_per_sample"), "tokens_per_forward": col("tokens_per_forward"),
        "knee": front["key"].isin(knees), "warning": front.get("warning", ""), "keys": front.get("keys", front["key"]),
    }, columns=COLUMNS).reset_index(drop=True)
    table.attrs.update(latency=latency, summary=front_summary(data, latency).to_dict("records"))
    return table


def _number(value, digits: int = 4) -> str:
    if value is None or value != value:
        return "—"
    if float(value).is_integer() or abs(value) >= 10 ** (digits - 1):  # no exponent for large numbers
        return f"{value:.0f}"
    return f"{value:.{digits}g}"


def front_display(table: pd.DataFrame) -> pd.DataFrame:
    """The front table with human headers and units, numbers rounded (``sweep`` only where it varies)."""
    return pd.DataFrame({
        **({"sweep": table["sweep"]} if table["sweep"].nunique() > 1 else {}),
        "task": table["task"], "model": table["model"], "setting": table["setting"],
        "batch": table["batch_size"].map(_number), "threads": table["threads"].map(_number),
        "accuracy (%) [95% CI]": [f"{r.accuracy_pct:.1f} [{r.ci_low_pct:.1f}, {r.ci_high_pct:.1f}]"
                                  for r in table.itertuples()],
        "items × replicates": [f"{_number(r.n_items)} × {_number(r.n_replicates)}" for r in table.itertuples()],
        "latency per request, p50 (ms)": table["latency_p50_ms"].map(_number),
        "latency per request, p95 (ms)": table["latency_p95_ms"].map(_number),
        "throughput (items/s)": table["throughput_items_per_s"].map(_number),
        "throughput (generated tokens/s)": table["throughput_tokens_per_s"].map(_number),
        "NFE / sample": table["nfe_per_sample"].map(_number),
        "knee": table["knee"].map({True: "★", False: ""}),
        "warning": table["warning"].fillna(""),
    })


def front_footer(table: pd.DataFrame) -> list[str]:
    """One line per front: hypervolume with its reference point (in the displayed units), AUP, warnings."""
    x_unit = unit(table.attrs.get("latency", LATENCY))
    lines = []
    for s in table.attrs.get("summary", []):
        name = " · ".join(Path(str(s[c])).name if c == "model" else str(s[c]) for c in GROUP if c in s)
        aup = "—" if s.get("aup") is None or s.get("aup") != s.get("aup") else f"{s['aup']:.2f}"
        warned = s.get("front_warnings") or 0
        lines.append(f"{name}: hypervolume {s['hypervolume']:.4g} (accuracy % × {x_unit}; reference point "
                     f"{_number(s['ref_x'])} {x_unit}, {_number(s['ref_y'])} %), AUP {aup}"
                     + (f"; {warned} front setting(s) with too few items/replicates" if warned else ""))
    return lines


def front_markdown(table: pd.DataFrame) -> str:
    """The front table as Markdown (:func:`front_display`), then :func:`front_footer` as a list."""
    if table.empty:
        return "_No finished point with accuracy and latency: no front._\n"
    return markdown_table(front_display(table)) + "\n" + "".join(f"- {line}\n" for line in front_footer(table))


def write_front_table(table: pd.DataFrame, out_dir: str | Path, name: str = "front") -> tuple[Path, Path]:
    """Write ``out_dir/{name}.csv`` (numbers) and ``out_dir/{name}.md`` (:func:`front_markdown`)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv, md = out / f"{name}.csv", out / f"{name}.md"
    table.to_csv(csv, index=False)
    md.write_text(front_markdown(table))
    return csv, md
