"""``illada-report SWEEP_DIR... [--out DIR]``: figures (PNG + SVG) and a Markdown + HTML summary of sweeps.

The summary has, per task and model, the Pareto front of accuracy vs latency per sample (its points, knee and
hypervolume), the best point under an optional latency budget, the scoring ablation where a sweep has both
scorers, the failed points with their causes, and, apart, records of superseded points (no longer in their
sweep's plan) and files that could not be read.
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

from analysis import figures
from analysis.ablation import ablation_markdown, scoring_ablation
from analysis.load import Sweeps, load_sweeps
from analysis.pareto import MAX, MIN, best_under_budget, hypervolumes, knee_points, pareto_front
from analysis.tables import markdown_table


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
def front_table(points: pd.DataFrame, x: str = figures.LATENCY) -> pd.DataFrame:
    """The Pareto-front points of every task and model, knees starred, in the units of the figures."""
    front = pareto_front(points, x, "accuracy", (MIN, MAX))
    knees = set(knee_points(points, x, "accuracy", (MIN, MAX))["key"]) if len(points) else set()
    return pd.DataFrame({
        "task": front["task"], "model": front["model_name"], "setting": figures.point_labels(points).loc[front.index],
        "accuracy (%)": [f"{100 * r.accuracy:.1f} [{100 * r.ci_low:.1f}, {100 * r.ci_high:.1f}]"
                         for r in front.itertuples()],
        figures.axis_label(x): figures.scaled(front[x], x).round(3),
        "NFE / sample": front["nfe_per_sample"].round(1),
        "knee": ["★" if k in knees else "" for k in front["key"]],
    })


def write_report(sweeps: Sweeps, out: str | Path, x: str = figures.LATENCY, budget: float | None = None,
                 title: str | None = None) -> Path:
    """Write figures and ``report.md`` / ``report.html`` (+ ``points.csv``, ``failures.csv``,
    ``superseded.csv``, ``unreadable.csv``) into ``out``; returns the Markdown path."""
    out = Path(out)
    fig_dir = out / "figures"
    pts, fails = sweeps.points, sweeps.failures
    names = sorted(pts["sweep"].unique()) if "sweep" in pts else []
    doc = Document(title or f"Sweep report: {', '.join(names) or 'no points'}")
    doc.text(f"{len(pts)} finished points and {len(fails)} failed points from {len(names)} sweep(s). "
             f"Accuracy intervals are 95% Wilson intervals; latency is evaluation wall time per sample.")
    out.mkdir(parents=True, exist_ok=True)
    pts.to_csv(out / "points.csv", index=False)
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
        doc.heading("Accuracy vs latency: Pareto fronts")
        figure("pareto_latency", f"Accuracy vs {figures.axis_label(x)}; the staircase is the Pareto front (95% CIs), "
               "faded points are dominated; colour: decoding method, marker: block length.",
               lambda: figures.frontier_plot(pts, x=x))
        doc.table(front_table(pts, x))
        doc.text("★ marks the knee: the front point farthest from the chord between the front's end points, both "
                 "axes scaled to [0, 1]. Hypervolume: area dominated by the front up to the reference point "
                 "(accuracy 0, 1.1 × the slowest point's latency), in accuracy × seconds.")
        volumes = hypervolumes(pts, x, "accuracy").round(6)
        doc.table(volumes.assign(model=volumes["model"].map(lambda m: Path(str(m)).name)))
        if budget is not None:
            doc.heading(f"Best point within {budget * 1e3:g} ms per sample")
            best = best_under_budget(pts, budget, x)
            doc.table(pd.DataFrame({"task": best["task"], "model": best["model_name"],
                                    "setting": figures.point_labels(pts).loc[best.index],
                                    "accuracy (%)": (100 * best["accuracy"]).round(1),
                                    figures.axis_label(x): figures.scaled(best[x], x).round(3)})
                      if len(best) else pd.DataFrame({"note": ["no point within the budget"]}))
        doc.heading("Accuracy vs forward passes")
        figure("pareto_nfe", "Accuracy vs forward passes per sample (NFE), with the Pareto front.",
               lambda: figures.frontier_plot(pts, x="nfe_per_sample"))
        gen = pts[pts["method"].eq("generate")] if "method" in pts else pts.iloc[:0]
        doc.heading("Parallel decoding: tokens per forward vs accuracy")
        figure("tokens_per_forward", "Accuracy vs tokens decoded per forward pass (more is cheaper), with the "
               "Pareto front.", lambda: figures.frontier_plot(gen, x="tokens_per_forward", directions=(MAX, MAX)))
        doc.heading("Steps × block length")
        figure("heatmap_accuracy", "Accuracy of the fixed schedule by steps and block length.",
               lambda: figures.heatmap_plot(gen, "accuracy"))
        figure("heatmap_latency", "Latency per sample of the fixed schedule by steps and block length.",
               lambda: figures.heatmap_plot(gen, x))
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
                        help=f"cost column on the x axis of the latency front: {', '.join(figures.COST_COLUMNS)} "
                             f"(default: {figures.LATENCY})")
    parser.add_argument("--budget", type=float, help="latency budget in seconds: report the best point within it")
    parser.add_argument("--no-cache", action="store_true", help="do not read or write analysis_cache/")
    args = parser.parse_args(argv)
    plt.switch_backend("Agg")  # files only, even where a display is configured
    missing = [str(d) for d in args.sweep_dirs if not d.is_dir()]
    if missing:
        raise SystemExit(f"error: not a directory: {', '.join(missing)}")
    with warnings.catch_warnings():  # unreadable files: said once below, in words, not as a Python warning
        warnings.simplefilter("ignore")
        sweeps = load_sweeps(args.sweep_dirs, cache=False if args.no_cache else "auto")
    if args.latency not in figures.COST_COLUMNS or (len(sweeps.points) and args.latency not in sweeps.points):
        valid = [c for c in figures.COST_COLUMNS if c in sweeps.points] or list(figures.COST_COLUMNS)
        raise SystemExit(f"error: --latency {args.latency!r} is not a cost column of these points; "
                         f"valid columns: {', '.join(valid)}")
    md = write_report(sweeps, args.out or args.sweep_dirs[0] / "report", x=args.latency, budget=args.budget)
    extra = f", {len(sweeps.superseded)} superseded records left out" if len(sweeps.superseded) else ""
    print(f"{len(sweeps.points)} points, {len(sweeps.failures)} failures{extra} -> {md} and {md.with_suffix('.html')}")
    for row in sweeps.unreadable.itertuples():
        print(f"warning: unreadable {row.kind} file left out: {row.path} ({row.reason})", file=sys.stderr)


if __name__ == "__main__":
    main()
