"""What a sweep ends in: ``SWEEP_DIR/pareto.png``, accuracy vs per-request latency (p50, at the points' batch
size) with the Pareto front, drawn by :func:`analysis.figures.frontier_plot` (the report's figure: human point
names, colour = decoding method, marker = block length), one panel per task and model; and the front as a table
(:func:`analysis.fronts.front_table`), printed and written to ``SWEEP_DIR/front.csv`` and ``front.md``."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from illada.records import CorruptFileError
from illada.store import SweepStore

LATENCY = "latency_p50_s"  # the latency axis and table column: per-request latency at the point's batch size


def records_frame(store: SweepStore) -> pd.DataFrame:
    """One row per finished point of the current plan (every point where the sweep has none): task, label (its
    sweep overrides), accuracy with CI, per-request latency p50 (s), throughput (items/s), NFE per sample."""
    try:
        current = store.current_plan()
    except CorruptFileError:  # illada-status reports it; plot every point meanwhile
        current = None
    keep = None if current is None else set(current)
    rows = []
    for rec in store.records("ok"):
        if keep is not None and rec["key"] not in keep:
            continue
        label = " ".join(store.plan_of(rec["key"]).get("overrides", []))
        q, c = rec["quality"], rec["cost"]
        rows.append({"key": rec["key"], "task": rec["settings"]["task"], "label": label or rec["key"],
                     "metric": q["metric"], "accuracy": q["value"], "ci_low": q["ci_low"], "ci_high": q["ci_high"],
                     LATENCY: c.get(LATENCY), "throughput_items_per_s": throughput_items_per_s(c),
                     "nfe_per_sample": c["nfe_per_sample"]})
    return pd.DataFrame(rows)


def throughput_items_per_s(cost: dict) -> float | None:
    """Items per second of a record's cost (schema 2), or 1 / seconds_per_sample of a schema-1 record."""
    if cost.get("throughput_items_per_s") is not None:
        return cost["throughput_items_per_s"]
    old = cost.get("seconds_per_sample")
    return 1.0 / old if old else None


def finished_points(root: str | Path) -> pd.DataFrame:
    """The finished points of the sweep's current plan (:func:`analysis.load.load_sweep`); what the loader
    warns about (e.g. points measured on an oversubscribed host) is printed as ``warning: ...`` lines."""
    import warnings

    from analysis.load import load_sweep

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        points = load_sweep(Path(root), cache="auto").points
    for message in dict.fromkeys(str(w.message) for w in caught):
        print(f"warning: {message}")
    return points


def pareto_plot(store: SweepStore, path: str | Path | None = None, points: pd.DataFrame | None = None) -> Path | None:
    """Write the plot (default ``SWEEP/pareto.png``, 200 dpi) of ``points`` (default: the sweep's finished
    points); None when no point has finished."""
    import matplotlib

    matplotlib.use("Agg")  # a file only, also where a display is configured
    import matplotlib.pyplot as plt

    from analysis.figures import frontier_plot

    points = finished_points(store.root) if points is None else points
    if points.empty or "accuracy" not in points:
        return None
    fig = frontier_plot(points, x=LATENCY, title=f"{store.root.name}: {len(points)} points")
    out = Path(path) if path else store.root / "pareto.png"
    fig.savefig(out, dpi=200, bbox_inches="tight")
    plt.close(fig)
    return out


def front_report(root: str | Path, points: pd.DataFrame | None = None) -> tuple[str, tuple[Path, Path]] | None:
    """The Pareto front of ``points`` (default: the sweep's finished points of the current plan) as a Markdown
    table, written to ``ROOT/front.csv`` and ``ROOT/front.md``: ``(table text, (csv path, md path))``; None when
    no point has finished. A table that cannot be made is a printed line, never a failed sweep (the records
    are saved)."""
    try:
        from analysis.fronts import front_markdown, front_table, write_front_table

        points = finished_points(root) if points is None else points
        if points.empty or "accuracy" not in points:
            return None
        table = front_table(points, latency=LATENCY)
        if table.empty:
            return None
        return front_markdown(table), tuple(write_front_table(table, Path(root)))
    except Exception as e:  # noqa: BLE001 -- records are saved; a table is not worth failing the sweep for
        print(f"no front table: {type(e).__name__}: {e}")
        return None


def ablation_report(root: str | Path, points: pd.DataFrame) -> tuple[str, Path, bool] | None:
    """The scoring ablation of ``points`` (likelihood vs confidence on the same items, paired): ``(table text,
    path of ROOT/scoring_ablation.md, whether every point is in a pair)``; None without a pair. The text ends
    with a warning when a pair has fewer paired items than a difference can be read from. A table that cannot
    be made is a printed line, never a failed sweep."""
    try:
        from analysis.ablation import ablation_markdown, scoring_ablation, scoring_pairs
        from analysis.replicates import MIN_ITEMS
        from illada.atomic import atomic_write_text

        pairs = scoring_pairs(points)
        if pairs.empty:
            return None
        table = scoring_ablation(points)
        if table.empty:
            return None
        text = "Scoring ablation: likelihood vs confidence on the same items\n\n" + ablation_markdown(table)
        few = table[table["n"] < MIN_ITEMS]
        if len(few):
            text += (f"\nwarning: too few items: {len(few)} of {len(table)} pairs have fewer than {MIN_ITEMS} paired "
                     f"items ({', '.join(f'{r.task} n={r.n}' for r in few.itertuples())}); the difference's CI "
                     "cannot tell the scorers apart (task.limit=100 or more for a reading)\n")
        path = Path(root) / "scoring_ablation.md"
        atomic_write_text(path, text)
        paired = set(pairs["key_likelihood"]) | set(pairs["key_confidence"])
        return text, path, set(points["key"]) <= paired
    except Exception as e:  # noqa: BLE001 -- records are saved; a table is not worth failing the sweep for
        print(f"no scoring ablation table: {type(e).__name__}: {e}")
        return None
