"""The iLLaDA scoring ablation: Monte-Carlo likelihood vs confidence scoring on the same items.

For each task (and model), the two scorers' points are paired on their common items (the per-item tables,
column ``acc``), and the report gives both accuracies, the paired difference confidence - likelihood with a
95% bootstrap interval (items resampled with replacement, seeded), and McNemar's test on the discordant items,
beside the numbers the paper reports for iLLaDA-Base.

McNemar: with b items right only under confidence and c only under likelihood, the exact test is the two-sided
binomial test of b out of b + c at p = 1/2; from :data:`EXACT_BELOW` discordant items on, the chi-squared
statistic with continuity correction, (|b - c| - 1)^2 / (b + c) on 1 degree of freedom, is used instead (the
usual rule: the normal approximation is fine once b + c >= 25).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from analysis.load import load_items
from analysis.tables import markdown_table
from illada.metrics import accuracy, paired

LIKELIHOOD, CONFIDENCE = "likelihood", "confidence"
EXACT_BELOW = 25
N_BOOTSTRAP = 10_000

#: iLLaDA-Base accuracy (%) with likelihood -> confidence scoring, as the paper reports them
PAPER = pd.DataFrame(
    [("piqa", 77.2, 78.5), ("arc_challenge", 60.2, 60.8), ("hellaswag", 74.3, 76.6)],
    columns=["task", "paper_likelihood", "paper_confidence"],
).assign(paper_diff=lambda d: (d.paper_confidence - d.paper_likelihood).round(1))

# settings that must agree for two points to be the same evaluation under another scorer
PAIR_ON = ["task", "model", "split", "limit", "seed", "num_fewshot", "data_path", "chat"]


def mcnemar(b: int, c: int) -> dict[str, float | str]:
    """McNemar's test of ``b`` vs ``c`` discordant items: ``statistic``, ``p_value``, ``method``."""
    n = b + c
    if n == 0:
        return {"statistic": 0.0, "p_value": 1.0, "method": "no discordant items"}
    if n < EXACT_BELOW:
        return {"statistic": float(min(b, c)), "p_value": float(stats.binomtest(b, n, 0.5).pvalue),
                "method": "exact binomial"}
    chi2 = (abs(b - c) - 1) ** 2 / n
    return {"statistic": float(chi2), "p_value": float(stats.chi2.sf(chi2, 1)), "method": "chi-squared (cc)"}


def bootstrap_diff(a: np.ndarray, b: np.ndarray, n_resamples: int = N_BOOTSTRAP, seed: int = 0,
                   confidence: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of mean(b) - mean(a) over paired items (0/1 outcomes, same order).

    Resampling n items with replacement only changes how many items of each outcome pair are drawn, which
    is multinomial: drawing those counts is the same bootstrap as drawing item indices, without an
    n_resamples x n matrix (10,000 x 10,042 for HellaSwag)."""
    d = np.asarray(b, dtype=int) - np.asarray(a, dtype=int)
    n = len(d)
    if n == 0:
        raise ValueError("bootstrap_diff needs at least one paired item")
    values = np.array([-1, 0, 1])
    probs = np.array([(d == v).mean() for v in values])
    counts = np.random.default_rng(seed).multinomial(n, probs, size=n_resamples)
    means = counts @ values / n
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(low), float(high)


def scoring_pairs(points: pd.DataFrame) -> pd.DataFrame:
    """Pairs of (likelihood, confidence) points that share every :data:`PAIR_ON` setting: one row per pair,
    columns ``task``, ``model_name``, ``mc_num``, ``key_likelihood``, ``key_confidence``, ``items_*``."""
    if "scorer.name" not in points:
        return pd.DataFrame()
    scored = points[points["scorer.name"].isin([LIKELIHOOD, CONFIDENCE])]
    on = [c for c in PAIR_ON if c in scored]
    cols = [*on, "model_name", "key", "items_path", "sweep", "scorer.mc_num"]
    lik = scored[scored["scorer.name"] == LIKELIHOOD][cols]
    con = scored[scored["scorer.name"] == CONFIDENCE][[*on, "key", "items_path"]]
    return lik.merge(con, on=on, suffixes=("_likelihood", "_confidence")).rename(columns={"scorer.mc_num": "mc_num"})


def scoring_ablation(points: pd.DataFrame, metric: str = "acc", n_resamples: int = N_BOOTSTRAP,
                     seed: int = 0) -> pd.DataFrame:
    """The ablation table: per pair of points, accuracies (%) with 95% Wilson intervals, paired difference with its 95% bootstrap CI
    (percentage points), discordant counts, McNemar's p, and the paper's numbers where it reports the task."""
    rows = []
    for _, pair in scoring_pairs(points).iterrows():
        lik = load_items({"key": pair["key_likelihood"], "items_path": pair["items_path_likelihood"]}, [metric])
        con = load_items({"key": pair["key_confidence"], "items_path": pair["items_path_confidence"]}, [metric])
        # illada.metrics.paired aligns the two runs on their common item ids
        counts = paired(lik.reset_index().to_dict("records"), con.reset_index().to_dict("records"), metric)
        common = lik.index.intersection(con.index)
        a, b = lik.loc[common, metric].astype(bool).to_numpy(), con.loc[common, metric].astype(bool).to_numpy()
        low, high = bootstrap_diff(a, b, n_resamples, seed)
        test = mcnemar(counts["only_b"], counts["only_a"])
        est_a, est_b = accuracy(a), accuracy(b)
        rows.append({
            "task": pair["task"], "model_name": pair["model_name"], "mc_num": pair["mc_num"], "n": counts["n"],
            "likelihood": 100 * est_a.value, "likelihood_ci_low": 100 * est_a.lower,
            "likelihood_ci_high": 100 * est_a.upper, "confidence": 100 * est_b.value,
            "confidence_ci_low": 100 * est_b.lower, "confidence_ci_high": 100 * est_b.upper,
            "diff": 100 * (est_b.value - est_a.value),
            "diff_ci_low": 100 * low, "diff_ci_high": 100 * high,
            "only_confidence": counts["only_b"], "only_likelihood": counts["only_a"],
            "mcnemar_p": test["p_value"], "mcnemar_method": test["method"],
            "key_likelihood": pair["key_likelihood"], "key_confidence": pair["key_confidence"],
        })
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    return table.merge(PAPER, on="task", how="left").sort_values(["task", "model_name"], ignore_index=True)


def ablation_markdown(table: pd.DataFrame) -> str:
    """The ablation table as Markdown: accuracies in %, difference in points with its CI, McNemar's p."""
    if table.empty:
        return "_No likelihood/confidence pair of points with per-item rows._\n"

    def paper(r: pd.Series) -> str:
        if pd.isna(r.get("paper_likelihood")):
            return "—"
        return f"{r.paper_likelihood:.1f} → {r.paper_confidence:.1f} ({r.paper_diff:+.1f})"

    shown = pd.DataFrame({
        "task": table["task"], "model": table["model_name"], "n": table["n"],
        "likelihood (%)": table["likelihood"].map("{:.1f}".format),
        "confidence (%)": table["confidence"].map("{:.1f}".format),
        "Δ conf − lik (pts) [95% CI]": [f"{r.diff:+.1f} [{r.diff_ci_low:+.1f}, {r.diff_ci_high:+.1f}]"
                                         for r in table.itertuples()],
        "discordant (conf / lik)": [f"{r.only_confidence} / {r.only_likelihood}" for r in table.itertuples()],
        "McNemar p": [f"{r.mcnemar_p:.3g} ({r.mcnemar_method})" for r in table.itertuples()],
        "paper iLLaDA-Base lik → conf": table.apply(paper, axis=1),
    })
    return markdown_table(shown)
