"""``illada-report SWEEP_DIR... [--out DIR]``: figures (PNG + SVG) and a Markdown + HTML summary of sweeps.

The summary has, per sweep, task and model, the Pareto front of accuracy vs per-request latency (p50 at the
point's batch size, in ms; replicates pooled), its settings as a table (front.csv), knee, hypervolume and
d3LLM's AUP; with two or more sweeps, their fronts on one figure and a table of deltas against the first
(hypervolumes against one shared reference point); the best point under an optional latency budget, the
scoring ablation where a sweep has both scorers, the failed points with their causes, and, apart, records
of superseded points (no longer in their sweep's plan) and files that could not be read.
"""

from __future__ import annotations

import argparse
import html
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import matplotlib.pyplot as plt
import pandas as pd

from analysis import figures, fronts
from analysis.ablation import ablation_markdown, scoring_ablation
from analysis.load import Sweeps, load_sweeps
from analysis.pareto import MIN, best_under_budget
from analysis.replicates import MAX_HALF_WIDTH, MIN_ITEMS, pool_replicates
from analysis.tables import category_label, markdown_table
from illada.atomic import os_error_text, unwritable_reason


# ------------------------------------------------------------------------------------------------ the document
@dataclass
class Document:
    """Report blocks rendered twice, as Markdown and as a standalone HTML page (figures linked, not inlined)."""

    title: str
    blocks: list[tuple[str, object]] = field(default_factory=list)

    def heading(self, text: str) -> None:
        self.blocks.append(("h2", text))

    def text(self, text: str) -> None:
        self.blocks.append(("p", text))

    def table(self, df: pd.DataFrame) -> None:
        self.blocks.append(("table", df))

    def markdown(self, text: str) -> None:
        """A block already in Markdown (the HTML page shows it preformatted)."""
        self.blocks.append(("md", text))

    def figure(self, path: Path, caption: str) -> None:
        self.blocks.append(("img", (path, caption)))

    def to_markdown(self) -> str:
        out = [f"# {self.title}\n"]
        for kind, value in self.blocks:
            if kind == "h2":
                out.append(f"## {value}\n")
            elif kind in ("p", "md"):
                out.append(f"{value}\n")
            elif kind == "table":
                out.append(markdown_table(value))
            else:
                path, caption = value
                out.append(f"![{caption}]({path.as_posix()})\n\n*{caption}* ([SVG]({path.with_suffix('.svg').as_posix()}))\n")
        return "\n".join(out)

    def to_html(self) -> str:
        body = [f"<h1>{html.escape(self.title)}</h1>"]
        for kind, value in self.blocks:
            if kind == "h2":
                body.append(f"<h2>{html.escape(value)}</h2>")
            elif kind == "p":
                body.append(f"<p>{html.escape(value)}</p>")
            elif kind == "md":
                body.append(f"<pre>{html.escape(value)}</pre>")
            elif kind == "table":
                body.append(value.to_html(index=False, border=0, classes="t", na_rep="—"))
            else:
                path, caption = value
                body.append(f'<figure><a href="{path.with_suffix(".svg").as_posix()}"><img src="{path.as_posix()}" '
                            f'alt="{html.escape(caption)}"></a><figcaption>{html.escape(caption)}</figcaption></figure>')
        style = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
                 "table.t{border-collapse:collapse;font-size:0.9em;margin:1em 0}"
                 "table.t td,table.t th{padding:3px 8px;border-bottom:1px solid #ddd;text-align:left}"
                 "img{max-width:100%}figcaption{font-style:italic;color:#555}pre{background:#f6f6f6;padding:1em}")
        return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>"
                f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")


# ---------------------------------------------------------------------------------------------------- sections
def summary_display(summary: pd.DataFrame, x: str) -> pd.DataFrame:
    """:func:`analysis.fronts.front_summary` with human headers in the displayed units."""
    x_unit = fronts.unit(x)
    shown = pd.DataFrame({
        **({"sweep": summary["sweep"]} if "sweep" in summary and summary["sweep"].nunique() > 1 else {}),
        "task": summary["task"], "model": summary["model"].map(lambda m: Path(str(m)).name),
        f"hypervolume (accuracy % × {x_unit})": summary["hypervolume"].map("{:.4g}".format),
        f"reference point ({x_unit}, %)": [f"({r.ref_x:.4g}, {r.ref_y:.4g})" for r in summary.itertuples()],
        "front / settings": [f"{r.front_points} / {r.points}" for r in summary.itertuples()],
        "best accuracy (%)": summary["best_accuracy_pct"].round(1),
        f"knee ({x_unit})": summary["knee_x"].map("{:.4g}".format),
        "AUP": summary["aup"].map(lambda v: "—" if v != v else f"{v:.2f}"),
    })
    return shown


def deltas_display(deltas: pd.DataFrame, x: str) -> pd.DataFrame:
    x_unit = fronts.unit(x)
    return pd.DataFrame({
        "task": deltas["task"], "model": deltas["model"].map(lambda m: Path(str(m)).name),
        "sweep − baseline": deltas["sweep"] + " − " + deltas["vs"],
        f"Δ hypervolume (accuracy % × {x_unit})": deltas["d_hypervolume"].map("{:+.4g}".format),
        "Δ best accuracy (pp)": deltas["d_best_accuracy_pp"].map("{:+.1f}".format),
        f"Δ knee ({x_unit})": deltas["d_knee_x"].map("{:+.4g}".format),
        "Δ AUP": deltas["d_aup"].map(lambda v: "—" if v != v else f"{v:+.2f}"),
    })


def _best_within(points: pd.DataFrame, budget: float, x: str) -> pd.DataFrame:
    """Per task and model the most accurate point within ``budget`` (a ceiling on a cost, a floor on a
    throughput)."""
    if figures.direction(x) == MIN:
        return best_under_budget(points, budget, x)
    best = best_under_budget(points.assign(_cost=-points[x]), -budget, "_cost")
    return best.drop(columns="_cost")


def write_report(sweeps: Sweeps, out: str | Path, x: str = figures.LATENCY, budget: float | None = None,
                 title: str | None = None, order: Sequence[str] | None = None) -> Path:
    """Write figures and ``report.md`` / ``report.html`` (+ ``points.csv``, ``settings.csv`` (replicates
    pooled), ``front.csv``, ``failures.csv``, ``superseded.csv``, ``unreadable.csv``) into ``out``; returns the
    Markdown path. ``x``: the cost column of the front; ``budget`` in that column's stored unit (s for
    latency); ``order``: the sweeps, the first being the baseline of the deltas (default: loading order)."""
    out = Path(out)
    fig_dir = out / "figures"
    pts, fails = sweeps.points, sweeps.failures
    names = list(dict.fromkeys(pts["sweep"])) if "sweep" in pts else []
    order = [n for n in (order or names) if n in names] or names
    doc = Document(title or f"Sweep report: {', '.join(names) or 'no points'}")
    pooled = pool_replicates(pts) if len(pts) else pts
    doc.text(f"{len(pts)} finished points ({len(pooled)} settings once replicates are pooled) and {len(fails)} "
             f"failed points from {len(names)} sweep(s). Latency is per request at the point's batch size (the "
             "wall time of the batch the request was in; p50 unless stated), always in ms; throughput is items "
             "(or generated tokens) per second of evaluation. Accuracy intervals: 95% Wilson for a single run; "
             "replicates (points that differ only in a seed) are pooled per item with a cluster-robust 95% "
             "interval (analysis/replicates.py).")
    _warnings(doc, pts, pooled)
    out.mkdir(parents=True, exist_ok=True)
    pts.to_csv(out / "points.csv", index=False)
    pooled.to_csv(out / "settings.csv", index=False)
    fails.to_csv(out / "failures.csv", index=False)
    sweeps.superseded.to_csv(out / "superseded.csv", index=False)
    sweeps.unreadable.to_csv(out / "unreadable.csv", index=False)

    def figure(name: str, caption: str, make) -> None:
        try:
            fig = make()
        except ValueError as e:  # the data has nothing this figure shows (e.g. no generation points)
            doc.text(f"({caption}: not drawn, {e}.)")
            return
        png, _ = figures.save_figure(fig, fig_dir, name)
        plt.close(fig)
        doc.figure(png.relative_to(out), caption)

    if not pts.empty:
        x_label = figures.axis_label(x, pooled)
        doc.heading("Accuracy vs latency: Pareto fronts")
        figure("pareto_latency", f"Accuracy vs {x_label}; the staircase is the Pareto front (95% CIs), "
               "faded points are dominated; colour: decoding method, marker: block length.",
               lambda: figures.frontier_plot(pooled, x=x))
        if "batch_size" in pooled and pooled["batch_size"].nunique() > 1:  # e.g. batch 1 beside batch 16
            by_batch = pooled.assign(_panel=pooled["task"].astype(str) + ", batch "
                                     + pooled["batch_size"].map(category_label))
            figure("pareto_latency_by_batch", f"Accuracy vs {figures.AXES.get(x, (x,))[0]}, one panel per task "
                   "and batch size (a front each): what a request waits at each batch size.",
                   lambda: figures.frontier_plot(by_batch, x=x, col="_panel"))
        table = fronts.front_table(pooled, x)
        table.to_csv(out / "front.csv", index=False)
        if len(table):
            doc.table(fronts.front_display(table))
        doc.text("★ marks the knee: the front point farthest from the chord between the front's end points, both "
                 "axes scaled to [0, 1] (on a front with no bend, a linear or concave one, or 1-2 points: the most "
                 "accurate point). Hypervolume: area dominated by the front up to the reference point (accuracy "
                 f"0, 1.1 × the largest {x_label} of the task and model over every sweep), in accuracy % × "
                 f"{fronts.unit(x)}. AUP: d3LLM's accuracy under parallelism of the accuracy vs tokens-per-forward "
                 "front (analysis/aup.py).")
        summary = pd.DataFrame(table.attrs["summary"])
        if len(summary):
            doc.table(summary_display(summary, x))
        shared = [c for c in ("task", "model") if c in pooled]
        if len(names) > 1 and pooled.groupby(shared)["sweep"].nunique().max() > 1:
            doc.heading("Sweeps compared")
            figure("sweeps_compared", f"Accuracy vs {x_label}: the Pareto front of each sweep (colour and line "
                   "style: sweep; faint: its dominated settings).",
                   lambda: figures.sweeps_plot(pooled, x=x, order=order))
            deltas = fronts.sweep_deltas(summary, order)
            doc.text(f"Each sweep minus {order[0]} (hypervolumes against one reference point per task and model).")
            doc.table(deltas_display(deltas, x) if len(deltas)
                      else pd.DataFrame({"note": ["no task and model in more than one sweep"]}))
        if budget is not None:
            shown = f"{figures.scaled(pd.Series([budget]), x).iloc[0]:g} {fronts.unit(x)}"
            doc.heading(f"Best point within {shown} ({figures.AXES.get(x, (x,))[0]})")
            best = _best_within(pooled, budget, x)
            doc.table(pd.DataFrame({"task": best["task"], "model": best["model_name"],
                                    "setting": figures.point_labels(pooled).loc[best.index],
                                    "accuracy (%)": (100 * best["accuracy"]).round(1),
                                    x_label: figures.scaled(best[x], x).round(3)})
                      if len(best) else pd.DataFrame({"note": ["no point within the budget"]}))
        doc.heading("Accuracy vs forward passes")
        figure("pareto_nfe", "Accuracy vs forward passes per sample (NFE), with the Pareto front.",
               lambda: figures.frontier_plot(pooled, x="nfe_per_sample"))
        gen = pooled[pooled["method"].eq("generate")] if "method" in pooled else pooled.iloc[:0]
        doc.heading("Parallel decoding: tokens per forward vs accuracy")
        figure("tokens_per_forward", "Accuracy vs tokens decoded per forward pass (more is cheaper), with the "
               "Pareto front.", lambda: figures.frontier_plot(gen, x="tokens_per_forward"))
        doc.heading("Steps × block length")
        figure("heatmap_accuracy", "Accuracy of the fixed schedule by steps and block length.",
               lambda: figures.heatmap_plot(gen, "accuracy"))
        figure("heatmap_latency", f"{x_label[0].upper()}{x_label[1:]} of the fixed schedule by steps and block "
               "length.", lambda: figures.heatmap_plot(gen, x))
        table = scoring_ablation(pts)
        if not table.empty:
            doc.heading("Scoring ablation: likelihood vs confidence")
            doc.markdown(ablation_markdown(table))
            doc.text("Δ: paired difference on the common items, 95% percentile bootstrap over items (10,000 "
                     "resamples, seed 0); McNemar: exact binomial below 25 discordant items, else χ² with "
                     "continuity correction. Paper: iLLaDA-Base as reported.")
            figure("scoring_ablation", "Scoring ablation: accuracy by scorer (95% Wilson CIs; diamonds: the "
                   "paper's iLLaDA-Base) and the paired difference (95% bootstrap CI).",
                   lambda: figures.ablation_plot(table))
    doc.heading("Failures")
    if fails.empty:
        doc.text("No failed points.")
    else:
        cols = [c for c in ("sweep", "key", "task", "model_name", "label", "error.type", "error.message",
                            "error.log_path") if c in fails]
        doc.table(fails[cols].assign(**{"error.message": fails.get("error.message", "").astype(str).str[:160]}))
    _apart(doc, sweeps)
    md = out / "report.md"
    md.write_text(doc.to_markdown())
    (out / "report.html").write_text(doc.to_html())
    return md


def _warnings(doc: Document, points: pd.DataFrame, pooled: pd.DataFrame) -> None:
    """Say when the measurements mean less than they seem: an oversubscribed host, too few items/replicates."""
    if "provenance.oversubscribed" in points:
        busy = points["provenance.oversubscribed"].fillna(False).astype(bool)
        if busy.any():
            doc.text(f"Warning: {int(busy.sum())} of {len(points)} points ran on an oversubscribed host (load "
                     "average above the CPU count): their latency and throughput are inflated.")
    if "warning" in pooled and len(pooled):
        weak = pooled["warning"].fillna("").ne("")
        if weak.any():
            doc.text(f"Warning: {int(weak.sum())} of {len(pooled)} settings have too few items/replicates (fewer "
                     f"than {MIN_ITEMS} items, or a 95% CI wider than ±{100 * MAX_HALF_WIDTH:.0f} percentage "
                     "points): fronts made of them cannot tell neighbouring settings apart. See the warning column.")


def _apart(doc: Document, sweeps: Sweeps) -> None:
    """What the figures and tables above leave out: superseded records and unreadable files."""
    old = sweeps.superseded
    if len(old):
        failed = int(old["status"].ne("ok").sum())
        doc.heading("Superseded points")
        doc.text(f"{len(old)} records ({len(old) - failed} ok, {failed} failed) belong to points that are no longer "
                 "in their sweep's current plan (e.g. a checkpoint replaced since: its hash, hence the point, "
                 "changed). They are kept in the sweep directory and left out above; see superseded.csv.")
    bad = sweeps.unreadable
    if len(bad):
        doc.heading("Unreadable files")
        doc.text(f"{len(bad)} files could not be read (cut short or damaged, e.g. by a node that crashed while "
                 "writing) and are left out above. A damaged record's point runs again with the next illada-sweep, "
                 "which moves the file to archive/.")
        doc.table(bad[[c for c in ("sweep", "kind", "path", "reason") if c in bad]])


def main(argv: Sequence[str] | None = None) -> None:
    """``illada-report SWEEP_DIR... [--out DIR]``."""
    parser = argparse.ArgumentParser(prog="illada-report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep_dirs", nargs="+", type=Path, metavar="SWEEP_DIR")
    parser.add_argument("--out", type=Path, help="output directory (default: SWEEP_DIR/report of the first)")
    parser.add_argument("--latency", default=figures.LATENCY, metavar="COLUMN",
                        help=f"cost column on the x axis of the front: {', '.join(figures.COST_COLUMNS)} "
                             f"(default: {figures.LATENCY}; throughput columns are maximised)")
    parser.add_argument("--budget", type=float, help="budget in the column's stored unit (seconds for latency; a "
                                                     "floor for throughput): report the best point within it")
    parser.add_argument("--no-cache", action="store_true", help="do not read or write analysis_cache/")
    args = parser.parse_args(argv)
    plt.switch_backend("Agg")  # files only, even where a display is configured
    missing = [str(d) for d in args.sweep_dirs if not d.is_dir()]
    if missing:
        raise SystemExit(f"error: not a directory: {', '.join(missing)}")
    out = args.out or args.sweep_dirs[0] / "report"
    reason = unwritable_reason(out)
    if reason is not None:  # before the sweeps are loaded and drawn
        raise SystemExit(f"error: --out={out}: cannot write the report there: {reason}; give another --out DIR")
    with warnings.catch_warnings():  # unreadable files: said once below, in words, not as a Python warning
        warnings.simplefilter("ignore")
        sweeps = load_sweeps(args.sweep_dirs, cache=False if args.no_cache else "auto")
    if args.latency not in figures.COST_COLUMNS or (len(sweeps.points) and args.latency not in sweeps.points):
        valid = [c for c in figures.COST_COLUMNS if c in sweeps.points] or list(figures.COST_COLUMNS)
        raise SystemExit(f"error: --latency {args.latency!r} is not a cost column of these points; "
                         f"valid columns: {', '.join(valid)}")
    names = list(dict.fromkeys(sweeps.points["sweep"])) if "sweep" in sweeps.points else None
    try:
        md = write_report(sweeps, out, x=args.latency, budget=args.budget, order=names)
    except OSError as e:  # a disk that fills up while writing
        raise SystemExit(f"error: --out={out}: {os_error_text(e)}") from None
    extra = f", {len(sweeps.superseded)} superseded records left out" if len(sweeps.superseded) else ""
    print(f"{len(sweeps.points)} points, {len(sweeps.failures)} failures{extra} -> {md} and {md.with_suffix('.html')}")
    busy = sweeps.points.get("provenance.oversubscribed", pd.Series(dtype=bool)).fillna(False).astype(bool)
    if busy.any():
        print(f"warning: {int(busy.sum())} points ran on an oversubscribed host: latency and throughput inflated "
              "(see the report)", file=sys.stderr)
    for row in sweeps.unreadable.itertuples():
        print(f"warning: unreadable {row.kind} file left out: {row.path} ({row.reason})", file=sys.stderr)


if __name__ == "__main__":
    main()
