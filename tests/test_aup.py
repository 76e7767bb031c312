"""AUP (issue 15, item 7): d3LLM's Accuracy Under Parallelism, to its definition (hao-ai-lab/d3LLM,
AUP_leaderboard/aup_utils.py, get_aup), per task and model, shown beside the hypervolume.

The oracle, in words: sort the (tokens per forward, accuracy %) pairs by tokens per forward; keep the pairs at
most 5 points below the first pair's accuracy; AUP = first rho x first accuracy (unweighted) + the trapezoids
of the weighted accuracy y W(y) between consecutive pairs, W(y) = min(exp(-3 (1 - y / y_max)), 1), y_max the
best accuracy of the task over every method compared."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from analysis.aup import aup, aup_curve, aups, weight
from analysis.fronts import front_table
from analysis.report import main as report_main
from analysis.synthetic import write_generation_sweep, write_scoring_sweep


def w(y: float, y_max: float) -> float:
    return min(math.exp(-3 * (1 - y / y_max)), 1.0)


# d3LLM's AUP_leaderboard/data_llada.yaml, task GSM8K-CoT: the best accuracy over its methods is D2F's 74.98
GSM8K_Y_MAX = 74.98


def test_d3llm_example_gsm8k_cot():
    # d3LLM-LLaDA: (1.0, 74.02), (9.11, 73.09)
    expected = 1.0 * 74.02 + 0.5 * (9.11 - 1.0) * (73.09 * w(73.09, GSM8K_Y_MAX) + 74.02 * w(74.02, GSM8K_Y_MAX))
    assert aup([1.0, 9.11], [74.02, 73.09], GSM8K_Y_MAX) == pytest.approx(expected)
    assert aup([1.0, 9.11], [74.02, 73.09], GSM8K_Y_MAX) == pytest.approx(637.655, abs=1e-3)
    # Fast-dLLM-LLaDA: (1.0, 74.79), (2.77, 74.68)
    expected = 74.79 + 0.5 * 1.77 * (74.68 * w(74.68, GSM8K_Y_MAX) + 74.79 * w(74.79, GSM8K_Y_MAX))
    assert aup([2.77, 1.0], [74.68, 74.79], GSM8K_Y_MAX) == pytest.approx(expected)  # order does not matter
    # a method with one pair (LLaDA at 1 token per forward): its rectangle, unweighted
    assert aup([1.0], [72.55], GSM8K_Y_MAX) == pytest.approx(72.55)


def test_weight_is_capped_at_one_and_penalises_lost_accuracy():
    assert weight(80.0, 75.0) == 1.0 and weight(75.0, 75.0) == 1.0
    assert weight(60.0, 75.0) == pytest.approx(math.exp(-3 * 0.2))
    assert weight(0.0, 0.0) == 1.0  # every accuracy 0: no division by zero


def test_pairs_more_than_five_points_below_the_first_are_left_out():
    rho, y = [1.0, 2.0, 4.0], [80.0, 77.0, 60.0]
    value, left_out = aup_curve(rho, y, 80.0)
    assert left_out == 1
    assert value == pytest.approx(80.0 + 0.5 * 1.0 * (77.0 * w(77.0, 80.0) + 80.0))
    with pytest.raises(ValueError, match="more than 5"):  # what d3LLM's get_aup does (an assertion)
        aup(rho, y, 80.0, strict=True)


@pytest.mark.parametrize("rho, y", [([], []), ([0.0], [50.0]), ([1.0, 2.0], [50.0])])
def test_invalid_curves_are_refused(rho, y):
    with pytest.raises(ValueError, match="AUP"):
        aup(rho, y, 80.0)


def test_aups_per_task_and_model_on_the_tpf_front():
    rows = [  # task t: model a has a dominated point (2, .5); model b's best is the task's y_max
        ("t", "a", 1.0, 0.70), ("t", "a", 2.0, 0.68), ("t", "a", 2.0, 0.50), ("t", "a", 4.0, 0.66),
        ("t", "b", 1.0, 0.75), ("t", "b", 3.0, 0.72), ("t", "b", 0.0, 0.99),   # tpf 0: a scorer, ignored
    ]
    points = pd.DataFrame(rows, columns=["task", "model", "tokens_per_forward", "accuracy"])
    table = aups(points).set_index("model")
    y_max = 75.0
    a = 70.0 + 0.5 * 1 * (68 * w(68, y_max) + 70 * w(70, y_max)) + 0.5 * 2 * (66 * w(66, y_max) + 68 * w(68, y_max))
    b = 75.0 + 0.5 * 2 * (72 * w(72, y_max) + 75 * w(75, y_max))
    assert table.loc["a", "aup"] == pytest.approx(a) and table.loc["b", "aup"] == pytest.approx(b)
    assert table.loc["a", "aup_points"] == 3 and table.loc["a", "aup_y_max"] == pytest.approx(y_max)


def test_aup_beside_hypervolume_in_the_front_table_and_report(tmp_path):
    gen = write_generation_sweep(tmp_path / "gen", n_points=40, n_items=20, failures=0)
    score = write_scoring_sweep(tmp_path / "score", n_items=30)
    from analysis import load_sweeps

    points = load_sweeps([gen, score]).points
    summary = pd.DataFrame(front_table(points).attrs["summary"])
    generation = summary[summary["task"].isin(points.loc[points["method"] == "generate", "task"])]
    assert generation["aup"].notna().all() and generation["hypervolume"].gt(0).all()
    assert summary.loc[~summary.index.isin(generation.index), "aup"].isna().all()  # scorers: no AUP
    report_main([str(gen), str(score), "--out", str(tmp_path / "out")])
    md = (tmp_path / "out" / "report.md").read_text()
    assert "| AUP |" in md and "hypervolume (accuracy % × ms)" in md
    assert "AUP" in (tmp_path / "out" / "report.html").read_text()
