"""Paper-style figures of a sweep frame (see :mod:`analysis.load`), each returning a matplotlib Figure.

* :func:`frontier_plot` -- any cost vs accuracy, one panel per task (columns) and model (rows): hue by
  remasking rule (a multiple-choice point: its scorer), marker by block length, dominated points faded, the
  Pareto front drawn as a staircase with the 95% Wilson intervals of its points.
* :func:`heatmap_plot` -- steps x block length of the fixed schedule, one panel per task and model.
* :func:`ablation_plot` -- the scoring ablation: accuracies with CIs and the paired difference, beside the paper.

:func:`save_figure` writes PNG (200 dpi) and SVG.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from analysis.pareto import MAX, MIN, pareto_mask
from analysis.tables import MISSING, category_label

#: axis label (with unit) and the factor from the frame's unit to the plotted one
AXES: dict[str, tuple[str, float]] = {
    "accuracy": ("accuracy (%)", 100.0),
    "seconds_per_sample": ("latency per sample (ms)", 1e3),
    "latency_p50_s": ("median batch latency (ms)", 1e3),
    "latency_p95_s": ("p95 batch latency (ms)", 1e3),
    "nfe_per_sample": ("forward passes per sample (NFE)", 1.0),
    "tokens_per_forward": ("tokens decoded per forward pass", 1.0),
    "tokens_per_second": ("throughput (tokens/s)", 1.0),
    "peak_memory_bytes": ("peak memory (GiB)", 1 / 2**30),
    "sampler.steps": ("steps", 1.0),
    "sampler.block_length": ("block length (tokens)", 1.0),
}
LEGEND_TITLES = {"sampler.remasking": "remasking / scorer", "sampler.block_length": "block length",
                 "decoding": "decoding"}
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "<", ">", "h", "*", "p"]


def axis_label(column: str) -> str:
    return AXES.get(column, (column, 1.0))[0]


def scaled(values: pd.Series, column: str) -> pd.Series:
    return values.astype(float) * AXES.get(column, (column, 1.0))[1]


@contextlib.contextmanager
def paper_style() -> Iterator[None]:
    """Seaborn's paper context, white grid, colour-blind palette, editable SVG text; restored on exit."""
    rc = {"svg.fonttype": "none", "savefig.bbox": "tight", "axes.titleweight": "bold", "legend.frameon": False}
    with sns.axes_style("whitegrid"), sns.plotting_context("paper", font_scale=1.25), plt.rc_context(rc), \
            sns.color_palette("colorblind"):
        yield


def save_figure(fig: plt.Figure, out_dir: str | Path, name: str, formats: Sequence[str] = ("png", "svg"),
                dpi: int = 200) -> list[Path]:
    """Write ``fig`` as ``out_dir/name.{png,svg}``; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.{fmt}" for fmt in formats]
    for path in paths:
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return paths


# ------------------------------------------------------------------------------------------------- encodings
def _levels(labels: pd.Series) -> list[str]:
    """Category labels in order: numbers numerically, then the others (``n/a`` last)."""
    present = pd.Series(labels.dropna().unique(), dtype=object)
    numeric = pd.to_numeric(present, errors="coerce")
    numbers = [str(v) for _, v in sorted(zip(numeric[numeric.notna()], present[numeric.notna()]))]
    others = sorted(present[numeric.isna()], key=lambda v: (v == MISSING, v))
    return numbers + others


def _encode(data: pd.DataFrame, column: str | None, fallback: str | None) -> pd.Series:
    """A column as category labels; a missing value takes ``fallback``'s (e.g. a scorer name for an MC point)."""
    if column is None or column not in data:
        return pd.Series(MISSING, index=data.index) if fallback not in data else data[fallback].map(category_label)
    labels = data[column].map(category_label)
    if fallback in data:
        labels = labels.mask(data[column].isna(), data[fallback].map(category_label))
    return labels


def _heading(text: str) -> tuple[Line2D, str]:
    return Line2D([], [], linestyle="none"), f"$\\bf{{{text.replace(' ', '~')}}}$"


# --------------------------------------------------------------------------------------------------- frontier
def frontier_plot(df: pd.DataFrame, x: str = "seconds_per_sample", y: str = "accuracy",
                  directions: tuple[str, str] = (MIN, MAX), hue: str | None = "sampler.remasking",
                  style: str | None = "sampler.block_length", col: str = "task", row: str = "model_name",
                  log_x: bool | None = None, title: str | None = None) -> plt.Figure:
    """``y`` against ``x`` per task (columns) and model (rows), with each panel's Pareto front.

    ``log_x`` defaults to a log axis when ``x`` spans more than a factor of 20."""
    data = df.dropna(subset=[x, y]).copy()
    if data.empty:
        raise ValueError(f"no point has both {x!r} and {y!r}")
    data["_hue"] = _encode(data, hue, "decoding")
    data["_style"] = _encode(data, style, None)
    data["_front"] = pareto_mask(data, x, y, directions, by=[c for c in (col, row) if c in data])
    data["_x"], data["_y"] = scaled(data[x], x), scaled(data[y], y)
    hue_order, style_order = _levels(data["_hue"]), _levels(data["_style"])
    palette = dict(zip(hue_order, sns.color_palette("colorblind", len(hue_order))))
    markers = dict(zip(style_order, (MARKERS * 4)[:len(style_order)]))
    col, row, wrap = _facets(data, col, row)
    with paper_style():
        grid = sns.FacetGrid(data, col=col, row=row, col_wrap=wrap, sharex=False, sharey=False, height=3.2,
                             aspect=1.3, margin_titles=row is not None, despine=False)
        for (i, j, _), panel in grid.facet_data():
            _draw_frontier(grid.facet_axis(i, j), panel, x, y, directions, palette, markers, log_x)
        grid.set_axis_labels(axis_label(x), axis_label(y))
        for ax in grid.axes.flat:  # every panel has its own x scale, so every panel names it
            ax.set_xlabel(axis_label(x) if ax.has_data() else "")
        grid.set_titles(col_template="{col_name}", row_template="{row_name}", template="{col_name}")
        handles = [_heading(LEGEND_TITLES.get(hue, hue or "variant"))]
        handles += [(Line2D([], [], marker="o", ls="none", color=palette[h], markersize=7), h) for h in hue_order]
        if len(style_order) > 1 or style_order != [MISSING]:
            handles.append(_heading(LEGEND_TITLES.get(style, style or "")))
            handles += [(Line2D([], [], marker=markers[s], ls="none", color="0.35", markersize=7), s)
                        for s in style_order]
        handles += [_heading("points"),
                    (Line2D([], [], color="black", lw=1.4, marker="o", mfc="0.5", mec="black"), "Pareto front (95% CI)"),
                    (Line2D([], [], marker="o", ls="none", color="0.5", alpha=0.3), "dominated")]
        grid.figure.legend(*zip(*handles), loc="center left", bbox_to_anchor=(1.0, 0.5), handletextpad=0.4)
        if title:
            grid.figure.suptitle(title, y=1.02)
        grid.figure.tight_layout()
    return grid.figure


def _facets(data: pd.DataFrame, col: str, row: str) -> tuple[str, str | None, int | None]:
    """(col, row, col_wrap) for FacetGrid: a task x model grid when every task has every model; else one
    panel per (task, model) pair present, wrapped four to a line, so no panel is empty."""
    rows = data[row].nunique() if row in data else 1
    pairs = len(data[[col, row]].drop_duplicates()) if rows > 1 else data[col].nunique()
    if rows > 1 and pairs == data[col].nunique() * rows:
        return col, row, None
    if rows > 1:
        data["_panel"] = data[col].astype(str) + " · " + data[row].astype(str)
        col = "_panel"
    return col, None, (min(4, pairs) if pairs > 4 or rows > 1 else None)


def _draw_frontier(ax: plt.Axes, panel: pd.DataFrame, x: str, y: str, directions: tuple[str, str],
                   palette: dict, markers: dict, log_x: bool | None) -> None:
    if panel.empty:
        ax.set_axis_off()
        return
    front = panel[panel["_front"]].sort_values("_x")
    common = dict(x="_x", y="_y", hue="_hue", style="_style", palette=palette, markers=markers, legend=False, ax=ax)
    if not panel["_front"].all():
        sns.scatterplot(data=panel[~panel["_front"]], alpha=0.28, s=30, edgecolor="none", zorder=2, **common)
    if "ci_low" in front and y == "accuracy":
        err = [front["_y"] - scaled(front["ci_low"], y), scaled(front["ci_high"], y) - front["_y"]]
        ax.errorbar(front["_x"], front["_y"], yerr=err, fmt="none", ecolor="0.25", elinewidth=0.8, capsize=2.5,
                    zorder=3)
    # the front bounds the region its points dominate: each point covers the cheaper side of the next step
    ax.step(front["_x"], front["_y"], where="post" if directions[0] == MIN else "pre", color="black", lw=1.4,
            zorder=4)
    sns.scatterplot(data=front, s=62, edgecolor="black", linewidth=0.8, zorder=5, **common)
    xs = panel["_x"][panel["_x"] > 0]
    if log_x if log_x is not None else (len(xs) and xs.max() / xs.min() > 20):
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # 20, 50, 100 rather than 10^2
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("")
    ax.set_ylabel("")


# ---------------------------------------------------------------------------------------------------- heatmap
def heatmap_plot(df: pd.DataFrame, value: str = "accuracy", index: str = "sampler.steps",
                 columns: str = "sampler.block_length", col: str = "task", row: str = "model_name",
                 cmap: str | None = None) -> plt.Figure:
    """Mean ``value`` per (steps, block length) cell of the fixed schedule (threshold / factor points ignore
    ``steps``, so they are left out), one panel per task and model, one shared colour scale."""
    missing = [c for c in (index, columns, value) if c not in df]
    if missing:  # e.g. a scoring-only sweep has no sampler columns
        raise ValueError(f"no {missing} column: the sweep has no fixed-schedule generation points")
    data = df[df.get("decoding", pd.Series("fixed", index=df.index)).str.startswith("fixed")]
    data = data.dropna(subset=[index, columns, value])
    if data.empty:
        raise ValueError(f"no fixed-schedule point has {index!r}, {columns!r} and {value!r}")
    data = data.assign(_v=scaled(data[value], value))
    panels = list(data.groupby([c for c in (row, col) if c in data], sort=True))
    n_cols = data[col].nunique()
    n_rows = -(-len(panels) // n_cols)
    vmin, vmax = data.groupby([row, col, index, columns])["_v"].mean().agg(["min", "max"])
    cmap = cmap or ("viridis" if value == "accuracy" else "rocket_r")
    with paper_style():
        fig, axes = plt.subplots(n_rows, n_cols, figsize=(3.6 * n_cols + 0.8, 3.0 * n_rows), squeeze=False)
        for ax, (keys, panel) in zip(axes.flat, panels):
            table = panel.pivot_table(index=index, columns=columns, values="_v", aggfunc="mean")
            table.index = [category_label(v) for v in table.index]
            table.columns = [category_label(v) for v in table.columns]
            sns.heatmap(table, ax=ax, cmap=cmap, vmin=vmin, vmax=vmax, annot=True, fmt=".1f", cbar=False,
                        linewidths=0.5, linecolor="white", annot_kws={"fontsize": 9})
            ax.set(xlabel=axis_label(columns), ylabel=axis_label(index), title=" · ".join(map(str, keys)))
            ax.invert_yaxis()  # more steps upwards, as on a y axis
            ax.grid(False)
        for ax in axes.flat[len(panels):]:
            ax.set_axis_off()
        fig.tight_layout()
        mappable = plt.cm.ScalarMappable(norm=plt.Normalize(vmin, vmax), cmap=cmap)
        fig.colorbar(mappable, ax=axes.ravel().tolist(), label=axis_label(value) + ", mean over other settings",
                     shrink=0.9, pad=0.02)
    return fig


# ------------------------------------------------------------------------------------------- scoring ablation
def ablation_plot(table: pd.DataFrame) -> plt.Figure:
    """Left: likelihood vs confidence accuracy per task (95% Wilson intervals) with the paper's numbers as
    diamonds. Right: the paired difference confidence - likelihood (95% bootstrap interval) and the paper's."""
    if table.empty:
        raise ValueError("the ablation table is empty: no likelihood/confidence pair of points")
    t = table.reset_index(drop=True)
    names = t["task"] if t["model_name"].nunique() == 1 else t["task"] + "\n" + t["model_name"]
    pos = np.arange(len(t))
    width = 0.38
    with paper_style():
        colors = sns.color_palette("colorblind", 2)
        fig, (left, right) = plt.subplots(1, 2, figsize=(4.2 + 1.4 * len(t), 3.8),
                                          gridspec_kw={"width_ratios": [1.6, 1]})
        for i, (scorer, color) in enumerate(zip(("likelihood", "confidence"), colors)):
            x = pos + (i - 0.5) * width
            err = [t[scorer] - t[f"{scorer}_ci_low"], t[f"{scorer}_ci_high"] - t[scorer]]
            left.bar(x, t[scorer], width, yerr=err, color=color, label=scorer, capsize=3,
                     error_kw={"elinewidth": 1, "ecolor": "0.2"})
            if f"paper_{scorer}" in t:
                left.scatter(x, t[f"paper_{scorer}"], marker="D", s=36, color="white", edgecolor="black", zorder=4,
                             label="paper (iLLaDA-Base)" if i == 0 else None)
        left.set(xticks=pos, xticklabels=names, ylabel="accuracy (%)", ylim=(0, 100),
                 title="accuracy by scorer")
        right.errorbar(t["diff"], pos, xerr=[t["diff"] - t["diff_ci_low"], t["diff_ci_high"] - t["diff"]],
                       fmt="o", color="black", ecolor="0.2", capsize=3, label="paired difference (95% bootstrap CI)")
        if "paper_diff" in t:
            right.scatter(t["paper_diff"], pos, marker="D", s=36, color="white", edgecolor="black", zorder=4)
        right.axvline(0, color="0.4", lw=0.8, ls="--")
        right.set(yticks=pos, yticklabels=names, xlabel="confidence − likelihood (points)",
                  title="paired difference", ylim=(len(t) - 0.5, -0.5))
        fig.tight_layout()
        handles = left.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
        fig.legend(handles=handles, loc="upper center", ncols=len(handles), bbox_to_anchor=(0.5, 0.02))
    return fig
