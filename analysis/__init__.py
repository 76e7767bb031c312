"""Analysis of sweep results: tidy frames, Pareto fronts, figures, and the scoring-ablation report.

    from analysis import load_sweeps, pareto_front, frontier_plot
    sweeps = load_sweeps(["runs/sweeps/frontier"])   # .points (one row per finished point), .failures
    pareto_front(sweeps.points, x="seconds_per_sample", y="accuracy")
    frontier_plot(sweeps.points).savefig("pareto.png")
"""

from analysis.ablation import PAPER, bootstrap_diff, mcnemar, scoring_ablation
from analysis.figures import ablation_plot, frontier_plot, heatmap_plot, paper_style, save_figure
from analysis.load import Sweeps, load_items, load_sweep, load_sweeps
from analysis.pareto import (best_under_budget, hypervolume, hypervolumes, knee_point, knee_points, pareto_front,
                             pareto_mask, reference_point)
from analysis.report import write_report

__all__ = [
    "PAPER", "Sweeps", "ablation_plot", "best_under_budget", "bootstrap_diff", "frontier_plot", "heatmap_plot",
    "hypervolume", "hypervolumes", "knee_point", "knee_points", "load_items", "load_sweep", "load_sweeps",
    "mcnemar", "pareto_front", "pareto_mask", "paper_style", "reference_point", "save_figure", "scoring_ablation",
    "write_report",
]
