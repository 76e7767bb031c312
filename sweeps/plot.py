"""A simple Pareto plot of a sweep: accuracy vs per-sample latency, one panel per task (analysis/ does more)."""

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


def pareto_mask(df: pd.DataFrame, x: str = "latency_s", y: str = "accuracy") -> pd.Series:
    """True for points no other point beats on both (lower ``x``, higher ``y``)."""
    order = df.sort_values([x, y], ascending=[True, False])
    best, front = float("-inf"), []
    for idx, value in order[y].items():
        if value > best:
            best = value
            front.append(idx)
    return df.index.isin(front)


def pareto_plot(store: SweepStore, path: str | Path | None = None) -> Path | None:
    """Write the plot (default ``SWEEP/pareto.png``); None when no point has finished."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = records_frame(store)
    if df.empty:
        return None
    tasks = sorted(df["task"].unique())
    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4.5), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        sub = df[df["task"] == task]
        front = sub[pareto_mask(sub)].sort_values("latency_s")
        ax.errorbar(sub["latency_s"] * 1e3, sub["accuracy"],
                    # clipped: a Wilson bound equals the estimate at 0 or 1 up to rounding (-1e-17)
                    yerr=[(sub["accuracy"] - sub["ci_low"]).clip(lower=0),
                          (sub["ci_high"] - sub["accuracy"]).clip(lower=0)],
                    fmt="o", color="0.6", alpha=0.7, label="points (95% CI)")
        ax.step(front["latency_s"] * 1e3, front["accuracy"], where="post", color="C3", label="Pareto front")
        ax.plot(front["latency_s"] * 1e3, front["accuracy"], "o", color="C3")
        for _, r in front.iterrows():
            ax.annotate(r["label"], (r["latency_s"] * 1e3, r["accuracy"]), fontsize=6, xytext=(3, 3),
                        textcoords="offset points")
        ax.set(xscale="log", xlabel="latency per sample (ms, log)", ylabel=sub["metric"].iloc[0], title=task)
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(f"{store.root.name}: {len(df)} points")
    out = Path(path) if path else store.root / "pareto.png"
    fig.savefig(out, dpi=120, bbox_inches="tight")  # room for the labels
    plt.close(fig)
    return out
