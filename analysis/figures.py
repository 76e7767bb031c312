"""Paper-style figures of a sweep frame (see :mod:`analysis.load`), each returning a matplotlib Figure.

One encoding everywhere (``illada-sweep``'s ``pareto.png``, ``illada-report``, the notebooks): colour = the
decoding method (:func:`decoding_colour`: fixed / threshold / factor or a multiple-choice scorer, shaded by KV
cache), marker = the block length (:func:`block_marker`), points named by :func:`point_labels`
(``threshold 0.9 + dual cache``, ``fixed, 8 steps, block 4``), axes labelled with units by :func:`axis_label`.

* :func:`frontier_plot` -- any cost vs accuracy, one panel per task (columns) and model (rows): the Pareto
  front as a staircase whose points carry their 95% Wilson intervals and names, dominated points small and
  faint, the legend below the panels.
* :func:`heatmap_plot` -- steps x block length of the fixed schedule, one panel per task and model (not drawn
  below 2 x 2 cells; no colour bar when every cell is equal).
* :func:`ablation_plot` -- the scoring ablation: accuracies with CIs and the paired difference, beside the paper.

:func:`save_figure` writes PNG (200 dpi) and SVG.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator, Sequence

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from analysis.pareto import LATENCY, MAX, MIN, pareto_mask
from analysis.tables import category_label

#: axis label (with unit) and the factor from the frame's unit to the displayed one: ONE unit per quantity in
#: every figure, table, hypervolume and reference point (latency stored in s, always shown in ms)
AXES: dict[str, tuple[str, float]] = {
    "accuracy": ("accuracy (%)", 100.0),
    "latency_p50_s": ("latency per request, p50 (ms)", 1e3),
    "latency_p95_s": ("latency per request, p95 (ms)", 1e3),
    "throughput_items_per_s": ("throughput (items/s)", 1.0),
    "throughput_tokens_per_s": ("throughput (generated tokens/s)", 1.0),
    "nfe_per_sample": ("forward passes per sample (NFE)", 1.0),
    "tokens_per_forward": ("tokens decoded per forward pass", 1.0),
    "peak_memory_bytes": ("peak memory (GiB)", 1 / 2**30),
    "sampler.steps": ("steps", 1.0),
    "sampler.block_length": ("block length (tokens)", 1.0),
}
#: the columns a frontier can put on its x axis (``illada-report --latency`` takes one of them)
COST_COLUMNS = ("latency_p50_s", "latency_p95_s", "throughput_items_per_s", "throughput_tokens_per_s",
                "nfe_per_sample", "tokens_per_forward", "peak_memory_bytes")
#: objectives where more is better; every other cost is minimised
HIGHER_IS_BETTER = {"accuracy", "throughput_items_per_s", "throughput_tokens_per_s", "tokens_per_forward"}
#: costs measured at the point's batch size: their label names it
PER_BATCH = {"latency_p50_s", "latency_p95_s", "throughput_items_per_s", "throughput_tokens_per_s"}


def direction(column: str) -> str:
    """``"max"`` for accuracy, throughput and tokens per forward, ``"min"`` for latency and every other cost."""
    return MAX if column in HIGHER_IS_BETTER else MIN
#: how a task's quality metric reads in an axis label ("accuracy (exact match, %)")
METRIC_NAMES = {"exact_match": "exact match", "acc_norm": "length-normalised"}
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "h", "<", ">", "p"]


def axis_label(column: str, data: pd.DataFrame | None = None) -> str:
    """The label (with unit) of ``column``; accuracy names the task's metric when ``data`` has a single one, and
    latency / throughput the batch size they were measured at (``latency per request, p50 (ms), batch 16``)."""
    label = AXES.get(column, (column, 1.0))[0]
    if column in PER_BATCH and data is not None and "batch_size" in data:
        batches = data["batch_size"].dropna().unique()
        if len(batches) == 1:
            label += f", batch {category_label(batches[0])}"
        elif len(batches) > 1:  # the point names carry each one's batch size
            label += ", at each point's batch size"
    if column == "accuracy" and data is not None and "metric" in data:
        metrics = data["metric"].dropna().unique()
        if len(metrics) == 1 and metrics[0] in METRIC_NAMES:
            label = f"accuracy ({METRIC_NAMES[metrics[0]]}, %)"
    return label


def scaled(values: pd.Series, column: str) -> pd.Series:
    return values.astype(float) * AXES.get(column, (column, 1.0))[1]


#: a figure's latency axis is in the first unit whose numbers stay short: ms below 10 s, s below 10 min, then min
LATENCY_UNITS = (("ms", 1e3, 10.0), ("s", 1.0, 600.0), ("min", 1 / 60, float("inf")))


def figure_axis(column: str, data: pd.DataFrame) -> tuple[str, pd.Series]:
    """A figure axis of ``column`` over ``data``: its label and values, a latency in the unit its largest value
    calls for (:data:`LATENCY_UNITS`; tables keep ms); other columns as :func:`axis_label` and :func:`scaled`."""
    label = axis_label(column, data)
    if column not in ("latency_p50_s", "latency_p95_s"):
        return label, scaled(data[column], column)
    seconds = data[column].astype(float)
    top = seconds.abs().max() if len(seconds) else 0.0
    unit, factor = next((u, f) for u, f, below in LATENCY_UNITS if not top >= below)
    return label.replace("(ms)", f"({unit})"), seconds * factor


def _readable_ticks(axis) -> None:
    """At most ~5 plain-number major ticks on a linear axis (long latencies must not run together)."""
    axis.set_major_locator(MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10]))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))


# ------------------------------------------------------------------------------- encodings shared by all figures
#: decoding families and their colour-blind-safe base colours (seaborn's "colorblind" palette)
_FAMILIES = {"fixed": 0, "threshold": 1, "factor": 2, "confidence": 4, "likelihood": 5, "ar_order": 7}
#: a KV cache keeps its family's hue, each cache mode its own shade (> 0 lighter, < 0 darker): a front point's
#: cache can be told from its colour
_CACHE_SHADE = {"": 0.0, "prefix": 0.45, "dual": -0.4, "dkv": 0.25, "dkv greedy": -0.2, "dllm": 0.65,
                "d2cache": -0.6}
#: how each cache mode (``sampler.cache``, ``dkv greedy`` for dKV-Cache-Greedy) is named in figures: its paper's name
CACHE_NAMES = {"prefix": "prefix cache", "dual": "dual cache", "dkv": "dKV-Cache", "dkv greedy": "dKV-Cache-Greedy",
               "dllm": "dLLM-Cache", "d2cache": "d2Cache"}


def decoding_parts(decoding: str) -> tuple[str, str]:
    """``threshold+dual cache`` (the frame's ``decoding`` column) -> ``("threshold", "dual")``: the rule and the
    cache mode (``""`` without a cache)."""
    family, _, cache = str(decoding).partition("+")
    return family.strip(), cache.strip().removesuffix(" cache").strip()


def cache_name(mode: str) -> str:
    """A cache mode as figures name it: ``d2cache`` -> ``d2Cache``, ``dual`` -> ``dual cache``."""
    return CACHE_NAMES.get(mode, f"{mode} cache")


def decoding_label(decoding: str) -> str:
    """``threshold+dual cache`` -> ``threshold + dual cache``, ``fixed+d2cache cache`` -> ``fixed + d2Cache``."""
    family, cache = decoding_parts(decoding)
    return f"{family} + {cache_name(cache)}" if cache else family


def decoding_colour(decoding: str) -> tuple[float, float, float]:
    """One colour per decoding method, the same in every figure: hue = rule (fixed / threshold / factor, or a
    multiple-choice scorer), shade = KV cache mode (:data:`_CACHE_SHADE`). Takes the frame's ``decoding`` or its
    :func:`decoding_label`."""
    family, cache = decoding_parts(decoding)
    cache = next((mode for mode, name in CACHE_NAMES.items() if name == cache), cache)  # a label's cache name
    base = sns.color_palette("colorblind", 10)
    colour = np.array(base[_FAMILIES[family]] if family in _FAMILIES
                      else base[(3, 6, 8, 9)[sum(map(ord, family)) % 4]])  # stable for a name
    shade = _CACHE_SHADE.get(cache, 0.0)
    colour = colour + (1 - colour) * shade if shade > 0 else colour * (1 + shade)
    return tuple(float(c) for c in colour)


def block_marker(block_length) -> str:
    """One marker per block length, the same in every figure and report (1 o, 2 s, 4 ^, 8 D, 16 v, ...)."""
    if block_length is None or block_length != block_length:
        return "o"
    value = int(block_length)
    index = value.bit_length() - 1 if value > 0 and value & (value - 1) == 0 else value
    return MARKERS[index % len(MARKERS)]


#: the knob that names a point of each decoding strategy of illada/sampling (its main knob in ablations/decoders.yaml)
DECODER_KNOB = {"eb_sampler": "gamma", "eb_sampler_sglang": "gamma", "hierarchy": "low_threshold",
                "klass": "kl_threshold", "credit": "credit_alpha", "wino": "wide_in_threshold",
                "slow_fast": "k_exploration_steps", "dream": "alg"}


#: how a setting that varies across a figure's points is named in their labels ("{}": its value)
SETTING_LABELS = {"remasking": "{} remasking", "gen_length": "{} tokens", "mc_num": "{} MC samples",
                  "batch_size": "batch {}", "threads": "{} threads"}

#: the knob that names a point of each cache mode where it varies (its main knob in ablations/caches.yaml)
CACHE_KNOB = {"dkv": "cache_steps", "dkv greedy": "cache_steps", "dllm": "gen_interval_steps",
              "d2cache": "current_k"}


def point_labels(df: pd.DataFrame) -> pd.Series:
    """A short human name per point from its settings: ``fixed, 8 steps, block 4``, ``threshold 0.9 + dual
    cache``, ``confidence``. Steps and block length always name a fixed-schedule point; other settings appear
    only where they vary across ``df`` (``threshold 0.9, block 32``, ``fixed, ..., random remasking``)."""
    if df.empty:
        return pd.Series(dtype=str, index=df.index)

    def varies(column: str, rows: pd.DataFrame = df) -> bool:
        return column in rows and rows[column].dropna().astype(str).nunique() > 1

    extras = [c for c in ("sampler.gen_length", "sampler.remasking", "sampler.temperature", "sampler.cfg_scale",
                          "scorer.mc_num", "batch_size", "threads") if varies(c)]
    # a fixed-schedule point always names its block; a threshold / factor point only if theirs differ
    rules = df[df["decoding"].astype(str).str.startswith(("threshold", "factor"))] if "decoding" in df else df
    block_varies = varies("sampler.block_length", rules)

    def label(row: pd.Series) -> str:
        family, mode = decoding_parts(row.get("decoding", "fixed"))
        cache = cache_name(mode) if mode else ""
        parts = [family]
        if family == "fixed":
            steps, block = category_label(row.get("sampler.steps")), category_label(row.get("sampler.block_length"))
            parts = [f"fixed, {steps} steps, block {block}"]
        elif family in ("threshold", "factor"):
            parts = [f"{family} {category_label(row.get(f'sampler.{family}'))}"]
            if block_varies:
                parts.append(f"block {category_label(row.get('sampler.block_length'))}")
        elif family in DECODER_KNOB:  # a decoding strategy by its name and main knob: "eb sampler, gamma 0.001"
            knob = DECODER_KNOB[family]
            value = row.get(f"sampler.{knob}")
            parts = [family.replace("_", " ")] + ([] if value is None or value != value
                                                  else [f"{knob.replace('_', ' ')} {category_label(value)}"])
        for column in extras:
            value = row.get(column)
            if value is None or value != value:
                continue
            name = column.split(".", 1)[-1]
            text = str(value).replace("_", " ") if name == "remasking" else category_label(value)
            parts.append(SETTING_LABELS.get(name, name.replace("_", " ") + " {}").format(text))
        knob = CACHE_KNOB.get(mode)
        if knob and varies(f"sampler.{knob}"):  # "+ dKV-Cache (cache steps 4)"
            cache += f" ({knob.replace('_', ' ')} {category_label(row.get(f'sampler.{knob}'))})"
        return ", ".join(parts) + (f" + {cache}" if cache else "")

    return df.apply(label, axis=1)


def _plain_log_axis(axis) -> None:
    """A log axis with plain numbers (2, 5, 10, 20 ms rather than 2x10^0), minor ticks unlabelled."""
    axis.set_major_locator(LogLocator(subs=(1, 2, 5)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


@contextlib.contextmanager
def paper_style() -> Iterator[None]:
    """Seaborn's paper context, white grid, colour-blind palette, editable SVG text; restored on exit."""
    # IPython's inline backend, chosen when the first figure is drawn, turns interactive mode on; were that
    # inside this context, leaving it would turn it off again and the notebook would show no later figure
    interactive = matplotlib.is_interactive()
    rc = {"svg.fonttype": "none", "savefig.bbox": "tight", "axes.titleweight": "bold", "legend.frameon": False}
    try:
        with sns.axes_style("whitegrid"), sns.plotting_context("paper", font_scale=1.25), plt.rc_context(rc), \
                sns.color_palette("colorblind"):
            yield
            interactive = matplotlib.is_interactive()
    finally:
        matplotlib.interactive(interactive)


def save_figure(fig: plt.Figure, out_dir: str | Path, name: str, formats: Sequence[str] = ("png", "svg"),
                dpi: int = 200) -> list[Path]:
    """Write ``fig`` as ``out_dir/name.{png,svg}``; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.{fmt}" for fmt in formats]
    for path in paths:
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return paths


# --------------------------------------------------------------------------------------------------- frontier
#: at most this many front points are named on the plot (the report's front table names them all)
MAX_FRONT_LABELS = 8


def frontier_plot(df: pd.DataFrame, x: str = LATENCY, y: str = "accuracy",
                  directions: tuple[str, str] | None = None, col: str = "task", row: str = "model_name",
                  log_x: bool | None = None, title: str | None = None) -> plt.Figure:
    """``y`` against ``x`` per task (columns) and model (rows), with each panel's Pareto front.

    Colour: the decoding method (:func:`decoding_colour`); marker: the block length (:func:`block_marker`).
    The front is a staircase whose points carry their 95% Wilson interval; on a figure of one panel also their
    names (:func:`point_labels`; many small panels have no room for them: the report's front table names them).
    Dominated points are small and faint. ``log_x`` defaults to a log axis when ``x`` spans more than a
    factor of 5. ``directions`` default: :func:`direction` of each column (throughput is maximised)."""
    directions = directions or (direction(x), direction(y))
    data = df.dropna(subset=[x, y]).copy()
    if data.empty:
        raise ValueError(f"no point has both {x!r} and {y!r}")
    data["_decoding"] = (data["decoding"] if "decoding" in data else pd.Series("fixed", index=data.index)
                         ).map(decoding_label)
    blocks = data["sampler.block_length"] if "sampler.block_length" in data else pd.Series(np.nan, index=data.index)
    data["_block"] = blocks
    data["_label"] = point_labels(data)
    data["_front"] = pareto_mask(data, x, y, directions, by=[c for c in (col, row) if c in data])
    data["_x"], data["_y"] = scaled(data[x], x), scaled(data[y], y)
    col, row, wrap = _facets(data, col, row)
    n_cols = wrap or (data[col].nunique() if col in data else 1)
    single = n_cols == 1 and row is None
    with paper_style():
        # one panel: 7 x ~4.5 in with the legend below; more: a grid of smaller panels
        grid = sns.FacetGrid(data, col=col, row=row, col_wrap=wrap, sharex=False, sharey=False,
                             height=3.7 if single else 3.2, aspect=1.85 if single else 1.35,
                             margin_titles=row is not None, despine=False)
        for (i, j, _), panel in grid.facet_data():
            ax = grid.facet_axis(i, j)
            # every panel has its own scales (and its task its metric), so every panel names them
            x_label, panel_x = figure_axis(x, panel) if len(panel) else ("", panel["_x"])
            _draw_frontier(ax, panel.assign(_x=panel_x), y, directions, log_x, name_front=single)
            ax.set_xlabel(x_label)
            ax.set_ylabel(axis_label(y, panel) if len(panel) else "")
        grid.set_titles(col_template="{col_name}", row_template="{row_name}", template="{col_name}")
        handles = _legend_handles(data)
        if title:
            grid.figure.suptitle(title)
        grid.figure.tight_layout()
        # below the panels, a few entries a row: it never takes the width of the plot
        grid.figure.legend(*zip(*handles), loc="upper center", bbox_to_anchor=(0.5, 0.0),
                           ncols=min(len(handles), 4 if single else 3 * n_cols + 1), handletextpad=0.3,
                           columnspacing=1.2, fontsize="small")
    return grid.figure


def _legend_handles(data: pd.DataFrame) -> list[tuple[Line2D, str]]:
    """Decoding methods (colour), block lengths (marker, where more than one), front and dominated points."""
    handles = [(Line2D([], [], marker="o", ls="none", color=decoding_colour(d), markersize=7), d)
               for d in sorted(data["_decoding"].unique(), key=lambda d: (_FAMILIES.get(d.partition(" + ")[0], 99), d))]
    blocks = sorted(data["_block"].dropna().unique())
    if len(blocks) > 1:
        handles += [(Line2D([], [], marker=block_marker(b), ls="none", color="0.35", markersize=7),
                     f"block {category_label(b)}") for b in blocks]
    handles += [(Line2D([], [], color="black", lw=1.4, marker="o", mfc="0.6", mec="black"), "Pareto front (95% CI)"),
                (Line2D([], [], marker="o", ls="none", color="0.5", alpha=0.35, markersize=5), "dominated")]
    return handles


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


def _scatter(ax: plt.Axes, points: pd.DataFrame, **style) -> None:
    """One scatter call per (decoding, block length): colours and markers from the shared encodings."""
    for (decoding, block), group in points.groupby(["_decoding", points["_block"].fillna(-1)], sort=False):
        ax.scatter(group["_x"], group["_y"], color=decoding_colour(decoding), marker=block_marker(
            None if block == -1 else block), **style)


def _draw_frontier(ax: plt.Axes, panel: pd.DataFrame, y: str, directions: tuple[str, str],
                   log_x: bool | None, name_front: bool) -> None:
    if panel.empty:
        ax.set_axis_off()
        return
    front = panel[panel["_front"]].sort_values("_x")
    dominated = panel[~panel["_front"]]
    if len(dominated):  # many points: smaller and fainter, so the front stays readable
        many = len(dominated) > 200
        _scatter(ax, dominated, s=10 if many else 24, alpha=0.2 if many else 0.45, linewidths=0, zorder=2)
    if y == "accuracy" and {"ci_low", "ci_high"} <= set(front.columns):
        # clipped: a Wilson bound equals the estimate at 0 or 1 up to rounding (-1e-17)
        err = [(front["_y"] - scaled(front["ci_low"], y)).clip(lower=0),
               (scaled(front["ci_high"], y) - front["_y"]).clip(lower=0)]
        ax.errorbar(front["_x"], front["_y"], yerr=err, fmt="none", ecolor="0.3", elinewidth=0.8, capsize=2.5,
                    zorder=3)
    # the front bounds the region its points dominate: each point covers the cheaper side of the next step
    ax.step(front["_x"], front["_y"], where="post" if directions[0] == MIN else "pre", color="black", lw=1.2,
            zorder=4)
    _scatter(ax, front, s=55, edgecolors="black", linewidths=0.8, zorder=5)
    xs = panel["_x"][panel["_x"] > 0]
    if log_x if log_x is not None else (len(xs) and xs.max() / xs.min() > 5):
        ax.set_xscale("log")
        _plain_log_axis(ax.xaxis)
    else:
        _readable_ticks(ax.xaxis)
    _front_to_the_edge(ax, front, directions[0])
    if name_front:
        _name_front(ax, front, directions)


def _front_to_the_edge(ax: plt.Axes, front: pd.DataFrame, x_direction: str) -> None:
    """Carry the staircase on from its costliest point to the edge of the axes (the region it still dominates),
    so a front of one point is a line too; the axis keeps a margin, so its end points stay inside."""
    ax.margins(x=0.06)
    ax.autoscale_view()
    lo, hi = ax.get_xlim()
    end = front.iloc[-1] if x_direction == MIN else front.iloc[0]
    edge = hi if x_direction == MIN else lo
    ax.plot([end["_x"], edge], [end["_y"], end["_y"]], color="black", lw=1.2, zorder=4, scalex=False, scaley=False)
    ax.set_xlim(lo, hi)


def _name_front(ax: plt.Axes, front: pd.DataFrame, directions: tuple[str, str]) -> None:
    """Name the front points beside them, on the side no point can be (better on both axes); a name that would
    leave the axes goes to the other side, and names that would overlap are moved apart vertically."""
    if len(front) > MAX_FRONT_LABELS:  # name the ends and evenly spaced points between
        front = front.iloc[np.unique(np.linspace(0, len(front) - 1, MAX_FRONT_LABELS).round().astype(int))]
    ax.margins(y=0.12)  # room above the best point's name
    left = directions[0] == MIN
    texts = [ax.annotate(label, (px, py), xytext=(-6 if left else 6, 4), textcoords="offset points",
                         ha="right" if left else "left", va="bottom", fontsize="x-small", color="0.15", zorder=6,
                         bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8})
             for label, px, py in zip(front["_label"], front["_x"], front["_y"])]
    renderer = ax.figure.canvas.get_renderer()
    box = ax.get_window_extent(renderer)
    for text in texts:
        extent = text.get_window_extent(renderer)
        if extent.x0 < box.x0 or extent.x1 > box.x1:  # flip to the other side of its point
            text.set_horizontalalignment("left" if left else "right")
            text.set_position((6 if left else -6, -4))
            text.set_verticalalignment("top")
    placed: list = []
    points_per_pixel = 72 / ax.figure.dpi
    for text in sorted(texts, key=lambda t: t.xy[1]):
        extent = text.get_window_extent(renderer)
        for other in placed:
            if extent.overlaps(other):  # lift it just above the one it hits
                dx, dy = text.get_position()
                text.set_position((dx, dy + (other.y1 - extent.y0 + 1) * points_per_pixel))
                extent = text.get_window_extent(renderer)
        placed.append(extent)


# ------------------------------------------------------------------------------------------- sweeps compared
#: line styles of the sweeps' fronts (with the colour, so a grey-scale print still tells them apart)
SWEEP_LINES = ["-", "--", ":", "-."]


def sweeps_plot(df: pd.DataFrame, x: str = LATENCY, y: str = "accuracy", sweep: str = "sweep",
                order: Sequence[str] | None = None, title: str | None = None) -> plt.Figure:
    """The fronts of several sweeps on one figure: one panel per task and model, one staircase per sweep
    (colour and line style by sweep, its points filled, the sweep's dominated points faint)."""
    directions = (direction(x), direction(y))
    data = df.dropna(subset=[x, y]).copy()
    if data.empty:
        raise ValueError(f"no point has both {x!r} and {y!r}")
    names = list(order or dict.fromkeys(data[sweep]))
    colours = dict(zip(names, sns.color_palette("colorblind", max(len(names), 3))))
    data["_x"], data["_y"] = scaled(data[x], x), scaled(data[y], y)
    by = [c for c in ("task", "model_name") if c in data]
    data["_front"] = pareto_mask(data, x, y, directions, by=[*by, sweep])
    panels = list(data.groupby(by, sort=True)) if by else [((), data)]
    n_cols = min(3, len(panels))
    n_rows = -(-len(panels) // n_cols)
    with paper_style():
        fig, axes = plt.subplots(n_rows, n_cols, figsize=(5.2 * n_cols, 3.8 * n_rows), squeeze=False)
        for ax, (keys, panel) in zip(axes.flat, panels):
            x_label, panel_x = figure_axis(x, panel)
            panel = panel.assign(_x=panel_x)
            for i, name in enumerate(names):
                points = panel[panel[sweep] == name]
                if points.empty:
                    continue
                front = points[points["_front"]].sort_values("_x")
                ax.scatter(points.loc[~points["_front"], "_x"], points.loc[~points["_front"], "_y"],
                           color=colours[name], s=14, alpha=0.3, linewidths=0)
                ax.step(front["_x"], front["_y"], where="post" if directions[0] == MIN else "pre",
                        color=colours[name], ls=SWEEP_LINES[i % len(SWEEP_LINES)], lw=1.4)
                ax.scatter(front["_x"], front["_y"], color=colours[name], s=36, edgecolors="black",
                           linewidths=0.6, zorder=3)
            keys = keys if isinstance(keys, tuple) else (keys,)
            ax.set_title(" · ".join(map(str, keys)))
            ax.set_xlabel(x_label)
            ax.set_ylabel(axis_label(y, panel))
            xs = panel["_x"][panel["_x"] > 0]
            if len(xs) and xs.max() / xs.min() > 5:
                ax.set_xscale("log")
                _plain_log_axis(ax.xaxis)
            else:
                _readable_ticks(ax.xaxis)
        for ax in axes.flat[len(panels):]:
            fig.delaxes(ax)
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        handles = [Line2D([], [], color=colours[n], ls=SWEEP_LINES[i % len(SWEEP_LINES)], marker="o", mec="black")
                   for i, n in enumerate(names)]
        fig.legend(handles, [f"{n} (front)" for n in names], loc="upper center", bbox_to_anchor=(0.5, 0.0),
                   ncols=min(len(names), 4), fontsize="small")
    return fig


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
    shape = max(((p[index].nunique(), p[columns].nunique()) for _, p in panels), key=min)
    if min(shape) < 2:  # a row or a column of cells shows no interaction: the front table says it better
        raise ValueError(f"only {shape[0]} {axis_label(index)} x {shape[1]} {axis_label(columns)} value(s): "
                         "a heat map needs at least 2 x 2 cells")
    means = data.groupby([c for c in (row, col) if c in data] + [index, columns])["_v"].mean()
    vmin, vmax = means.min(), means.max()
    constant = np.isclose(vmin, vmax)
    cmap = cmap or ("viridis" if value == "accuracy" else "rocket_r")
    n_cols = data[col].nunique()
    n_rows = -(-len(panels) // n_cols)
    empty = False  # a cell without a point: explained below the panels
    with paper_style():
        fig, axes = plt.subplots(n_rows, n_cols, figsize=(3.6 * n_cols + 0.8, 3.0 * n_rows + 0.3), squeeze=False)
        for ax, (keys, panel) in zip(axes.flat, panels):
            table = panel.pivot_table(index=index, columns=columns, values="_v", aggfunc="mean")
            table.index = [category_label(v) for v in table.index]
            table.columns = [category_label(v) for v in table.columns]
            # every cell equal: no colour scale to read, so the cells stay neutral and only the numbers speak
            sns.heatmap(table, ax=ax, cmap=["0.92"] if constant else cmap, vmin=vmin, vmax=vmax, annot=True,
                        fmt=".1f", cbar=False, linewidths=0.5, linecolor="white",
                        annot_kws={"fontsize": 9, **({"color": "black"} if constant else {})})
            for r, c in zip(*np.nonzero(table.isna().to_numpy())):  # a blank cell would read as a drawing fault
                ax.text(c + 0.5, r + 0.5, "×", ha="center", va="center", color="0.45", fontsize=11)
                empty = True
            keys = keys if isinstance(keys, tuple) else (keys,)
            ax.set(xlabel=axis_label(columns), ylabel=axis_label(index), title=" · ".join(map(str, keys)))
            ax.invert_yaxis()  # more steps upwards, as on a y axis
            ax.grid(False)
        for ax in axes.flat[len(panels):]:
            ax.set_axis_off()
        fig.tight_layout()
        if empty:
            fig.text(0.5, 0.0, "× no result: the setting is invalid (steps not a multiple of the number of blocks) "
                     "or its point failed", ha="center", va="top", fontsize="small", color="0.3")
        if constant:
            fig.suptitle(f"every cell: {axis_label(value, data)} = {vmin:.1f}", y=1.02, fontsize="medium")
        else:
            mappable = plt.cm.ScalarMappable(norm=plt.Normalize(vmin, vmax), cmap=cmap)
            fig.colorbar(mappable, ax=axes.ravel().tolist(), shrink=0.9, pad=0.02,
                         label=axis_label(value, data) + "\nmean over other settings")
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
        colors = [decoding_colour(scorer) for scorer in ("likelihood", "confidence")]  # as in the frontiers
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
        right.set(yticks=pos, yticklabels=names, xlabel="confidence − likelihood (percentage points)",
                  title="paired difference", ylim=(len(t) - 0.5, -0.5))
        fig.tight_layout()
        handles = left.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
        fig.legend(handles=handles, loc="upper center", ncols=len(handles), bbox_to_anchor=(0.5, 0.02))
    return fig
