"""Analysis of sweep results: tidy frames, Pareto fronts, figures, and the scoring-ablation report.

    from analysis import load_sweeps, pool_replicates, pareto_front, front_table, frontier_plot
    sweeps = load_sweeps(["runs/sweeps/frontier"])   # .points (one row per finished point), .failures
    settings = pool_replicates(sweeps.points)        # replicates (seeds) pooled: one row per setting
    pareto_front(settings, x="latency_p50_s", y="accuracy")
    print(front_markdown(front_table(settings)))
    frontier_plot(settings).savefig("pareto.png")
"""

from importlib import import_module
from typing import Any

# name -> its module, imported on first use: loading a sweep (illada-status, load_sweeps) need not import
# matplotlib and scipy (about 100 MB and 1.5 s)
_MODULES = {
    "ablation": ["PAPER", "bootstrap_diff", "mcnemar", "scoring_ablation"],
    "aup": ["aup", "aups"],
    "figures": ["ablation_plot", "frontier_plot", "heatmap_plot", "paper_style", "save_figure", "sweeps_plot"],
    "fronts": ["front_markdown", "front_summary", "front_table", "sweep_deltas", "write_front_table"],
    "load": ["Sweeps", "load_items", "load_sweep", "load_sweeps"],
    "pareto": ["best_under_budget", "hypervolume", "hypervolumes", "knee_point", "knee_points", "pareto_front",
               "pareto_mask", "reference_point"],
    "replicates": ["pool_replicates"],
    "report": ["write_report"],
}
_WHERE = {name: module for module, names in _MODULES.items() for name in names}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'analysis' has no attribute {name!r}")
    return getattr(import_module(f"analysis.{_WHERE[name]}"), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])


__all__ = [
    "PAPER", "Sweeps", "ablation_plot", "aup", "aups", "best_under_budget", "bootstrap_diff", "front_markdown",
    "front_summary", "front_table", "frontier_plot", "heatmap_plot", "hypervolume", "hypervolumes", "knee_point",
    "knee_points", "load_items", "load_sweep", "load_sweeps", "mcnemar", "pareto_front", "pareto_mask",
    "paper_style", "pool_replicates", "reference_point", "save_figure", "scoring_ablation", "sweep_deltas",
    "sweeps_plot", "write_front_table", "write_report",
]
