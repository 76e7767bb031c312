"""Analysis of sweep results: tidy frames, Pareto fronts, figures, and the scoring-ablation report.

    from analysis import load_sweeps, pool_replicates, pareto_front, front_table, frontier_plot
    sweeps = load_sweeps(["runs/sweeps/frontier"])   # .points (one row per finished point), .failures
    settings = pool_replicates(sweeps.points)        # replicates (seeds) pooled: one row per setting
    pareto_front(settings, x="latency_p50_s", y="accuracy")
    print(front_markdown(front_table(settings)))
    frontier_plot(settings).savefig("pareto.png")
"""

from analysis.ablation import PAPER, bootstrap_diff, mcnemar, scoring_ablation
from analysis.aup import aup, aups
from analysis.figures import ablation_plot, frontier_plot, heatmap_plot, paper_style, save_figure, sweeps_plot
from analysis.fronts import front_markdown, front_summary, front_table, sweep_deltas, write_front_table
from analysis.load import Sweeps, load_items, load_sweep, load_sweeps
from analysis.pareto import (best_under_budget, hypervolume, hypervolumes, knee_point, knee_points, pareto_front,
                             pareto_mask, reference_point)
from analysis.replicates import pool_replicates
from analysis.report import write_report

__all__ = [
    "PAPER", "Sweeps", "ablation_plot", "aup", "aups", "best_under_budget", "bootstrap_diff", "front_markdown",
    "front_summary", "front_table", "frontier_plot", "heatmap_plot", "hypervolume", "hypervolumes", "knee_point",
    "knee_points", "load_items", "load_sweep", "load_sweeps", "mcnemar", "pareto_front", "pareto_mask",
    "paper_style", "pool_replicates", "reference_point", "save_figure", "scoring_ablation", "sweep_deltas",
    "sweeps_plot", "write_front_table", "write_report",
]
