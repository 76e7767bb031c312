"""The figure a sweep ends in: ``SWEEP_DIR/pareto.png``, accuracy vs latency per sample with the Pareto front,
drawn by :func:`analysis.figures.frontier_plot` (the report's figure: human point names, colour = decoding
method, marker = block length), one panel per task and model."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from illada.records import CorruptFileError
from illada.store import SweepStore


def records_frame(store: SweepStore) -> pd.DataFrame:
    """One row per finished point of the current plan (every point where the sweep has none): task, label (its
    sweep overrides), accuracy with CI, latency."""
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
                     "latency_s": c["seconds_per_sample"], "nfe_per_sample": c["nfe_per_sample"]})
    return pd.DataFrame(rows)


def pareto_plot(store: SweepStore, path: str | Path | None = None) -> Path | None:
    """Write the plot (default ``SWEEP/pareto.png``, 200 dpi); None when no point has finished."""
    import matplotlib

    matplotlib.use("Agg")  # a file only, also where a display is configured
    import matplotlib.pyplot as plt

    from analysis.figures import LATENCY, frontier_plot
    from analysis.load import load_sweep

    points = load_sweep(store.root, cache="auto").points
    if points.empty or "accuracy" not in points:
        return None
    fig = frontier_plot(points, x=LATENCY, title=f"{store.root.name}: {len(points)} points")
    out = Path(path) if path else store.root / "pareto.png"
    fig.savefig(out, dpi=200, bbox_inches="tight")
    plt.close(fig)
    return out
