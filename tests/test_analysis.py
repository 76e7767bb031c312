"""analysis/: loading sweeps, Pareto fronts, the scoring ablation's statistics, figures and the report."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest

import analysis.load as load_module
from analysis import (best_under_budget, bootstrap_diff, frontier_plot, hypervolume, knee_point, load_sweep,
                      load_sweeps, mcnemar, pareto_front, pareto_mask, scoring_ablation)
from analysis.pareto import MAX, hypervolumes, reference_point
from analysis.report import main as report_main
from analysis.synthetic import SCORING, write_generation_sweep, write_scoring_sweep
from illada.records import write_record
from tests.analysis_sweeps import GRID, real_sweep  # noqa: F401 -- fixture


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    return write_generation_sweep(root / "gen", n_points=24, n_items=20, failures=2), \
        write_scoring_sweep(root / "score", n_items=120)


# ------------------------------------------------------------------------------------------------------ loading
def test_load_tidy_frame_keeps_failures_apart(synthetic):
    gen, score = synthetic
    sweeps = load_sweeps([gen, score], cache=False)
    pts, fails = sweeps.points, sweeps.failures
    assert len(pts) == 24 + 6 and len(fails) == 2
    assert set(pts["sweep"]) == {"gen", "score"} and set(fails["sweep"]) == {"gen"}
    for col in ("task", "model", "sampler.steps", "sampler.block_length", "sampler.remasking", "scorer.name",
                "accuracy", "ci_low", "ci_high", "n", "nfe_per_sample", "tokens_per_forward", "throughput_tokens_per_s",
                "throughput_items_per_s", "latency_p50_s", "batch_size", "threads", "label", "items_path"):
        assert col in pts, col
    assert pts["n"].dtype.kind == "i"  # failures' missing numbers do not make the points' counts floats
    assert (fails["error.type"] == "OutOfMemoryError").all() and "accuracy" not in fails
    assert not set(fails["key"]) & set(pts["key"])
    assert pts.loc[pts["scorer.name"].notna(), "decoding"].isin(["likelihood", "confidence"]).all()


def test_load_flat_directory_with_optuna_section(tmp_path):
    """Records outside records/ (illada-eval --out), carrying an extra section, next to non-record JSON."""
    gen = write_generation_sweep(tmp_path / "grid", n_points=3, failures=0)
    for i, path in enumerate(sorted((gen / "records").glob("*.json"))):
        rec = json.loads(path.read_text())
        rec["optuna"] = {"study": "frontier", "trial": i}
        write_record(tmp_path / "flat" / "nested", rec)
    (tmp_path / "flat" / "study.json").write_text(json.dumps({"study": "frontier"}))
    (tmp_path / "flat" / "journal.log").write_text("{}\n")
    pts = load_sweep(tmp_path / "flat", cache=False).points
    assert len(pts) == 3 and sorted(pts["optuna.trial"]) == [0, 1, 2]


def test_cache_is_used_and_invalidated(tmp_path, monkeypatch):
    sweep = write_generation_sweep(tmp_path / "s", n_points=5, failures=1)
    first = load_sweep(sweep, cache=True)
    assert (sweep / "analysis_cache" / "points.parquet").exists()

    def no_build(root):
        raise AssertionError("the cache should have been read")

    with monkeypatch.context() as m:
        m.setattr(load_module, "_build", no_build)
        cached = load_sweep(sweep, cache=True)
    pd.testing.assert_frame_equal(cached.points, first.points, check_dtype=False)
    assert len(cached.failures) == 1

    # a new record invalidates it
    rec = json.loads(next((sweep / "records").glob("*.json")).read_text())
    write_record(sweep / "records", {**rec, "key": "f" * 16})
    assert len(load_sweep(sweep, cache=True).points) == 6
    # so does a record rewritten in place (same count, newer mtime)
    path = sweep / "records" / ("f" * 16 + ".json")
    changed = json.loads(path.read_text())
    changed["quality"]["value"] = 0.123
    path.write_text(json.dumps(changed))
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    reloaded = load_sweep(sweep, cache=True).points
    assert reloaded.loc[reloaded["key"] == "f" * 16, "accuracy"].item() == 0.123


# ------------------------------------------------------------------------------------------------------ pareto
def frame(rows, task="t", model="m"):
    return pd.DataFrame([{"key": k, "task": task, "model": model, "latency_p50_s": x, "accuracy": y}
                         for k, x, y in rows])


# A(1,.5) and its twin F, B(2,.7); C is beaten by B (same latency), D by B (same accuracy, slower); E(4,.9)
POINTS = [("A", 1, .5), ("B", 2, .7), ("C", 2, .6), ("D", 3, .7), ("E", 4, .9), ("F", 1, .5)]


def test_pareto_front_by_hand():
    df = pd.concat([frame(POINTS), frame([("G", 9, .1)], task="other")], ignore_index=True)
    assert set(df.loc[pareto_mask(df), "key"]) == {"A", "B", "E", "F", "G"}
    assert list(pareto_front(df)["key"]) == ["G", "A", "F", "B", "E"]  # by task, then from fastest
    # both maximised (tokens per forward vs accuracy): only E(4, .9) is best on both
    assert set(df[pareto_mask(df, directions=(MAX, MAX), by=["task"])]["key"]) == {"E", "G"}
    # a NaN objective is never on the front
    nan = frame([("N", np.nan, 1.0), ("A", 1, .5)])
    assert list(nan.loc[pareto_mask(nan), "key"]) == ["A"]


def test_hypervolume_by_hand():
    df = frame(POINTS)
    assert hypervolume(df, ref=(5, 0)) == pytest.approx(1 * .5 + 2 * .7 + 1 * .9)   # 2.8
    assert reference_point(df) == (pytest.approx(4.4), 0.0)
    assert hypervolume(df) == pytest.approx(1 * .5 + 2 * .7 + 0.4 * .9)             # ref (4.4, 0)
    assert hypervolume(df, ref=(3, 0)) == pytest.approx(.5 + .7)                     # E lies beyond the ref
    table = hypervolumes(pd.concat([df, frame([("G", 1, .5)], task="u")]), ref=(5, 0))
    assert list(table["hypervolume"]) == pytest.approx([2.8, 2.0])
    assert list(table["front_points"]) == [4, 1]


def test_best_under_budget_and_knee():
    df = frame(POINTS)
    assert best_under_budget(df, 2.5)["key"].tolist() == ["B"]
    assert best_under_budget(df, 1.0)["key"].tolist() == ["A"]  # A and F tie: the first of equals
    assert best_under_budget(df, 0.5).empty
    # scaled front: (0, 1), (.25, .2), (.5, .1), (1, 0) -> distances to the chord 0, .55, .4, 0 (x sqrt 2)
    knee = frame([("P", 0, 0.0), ("Q", 1, .8), ("R", 2, .9), ("S", 4, 1.0), ("T", 3, .5)])
    assert knee_point(knee)["key"] == "Q"
    assert knee_point(frame([("P", 1, .2), ("Q", 2, .3)]))["key"] == "Q"  # no bend: the most accurate
    assert knee_point(frame([])) is None


# the knee for every front shape (issue 15, item 8): was idxmax of the chord distance, which on a concave or
# linear front (every distance <= 0, both ends 0) took the first point, the fastest and least accurate
@pytest.mark.parametrize("rows, knee", [
    ([("P", 0, 0.0), ("Q", 1, .8), ("R", 2, .9), ("S", 4, 1.0)], "Q"),                 # convex: the bend
    ([("P", 0, 0.0), ("Q", 1, .1), ("R", 2, .3), ("S", 3, 1.0)], "S"),                 # concave: most accurate
    ([("P", 0, 0.0), ("Q", 1, .5), ("R", 2, 1.0)], "R"),                               # linear: most accurate
    ([("P", 0, 0.0), ("Q", .2, .6), ("R", .4, .8), ("S", 1, 1.0)], "R"),               # tie: the better y
    ([("P", 0, 0.0), ("Q", 1, .8), ("Q2", 1, .8), ("S", 4, 1.0)], "Q"),                # twins: the first
    ([("P", 1, .5)], "P"),                                                              # one point
    ([("P", 1, .2), ("Q", 2, .3), ("D", 3, .1)], "Q"),                                  # two on the front
], ids=["convex", "concave", "linear", "tie", "identical", "one", "two"])
def test_knee_for_every_front_shape(rows, knee):
    assert knee_point(frame(rows))["key"] == knee
    # the rule does not depend on the order of the rows (identical points aside)
    if "Q2" not in {k for k, _, _ in rows}:
        assert knee_point(frame(rows[::-1]))["key"] == knee


def test_knee_follows_the_directions():
    # tokens per forward (max) vs accuracy (max): a concave front's knee is still its most accurate point
    rows = frame([("P", 1, 1.0), ("Q", 2, .3), ("R", 3, 0.0)]).rename(columns={"latency_p50_s": "tpf"})
    assert knee_point(rows, "tpf", "accuracy", (MAX, MAX))["key"] == "P"
    convex = frame([("P", 1, 1.0), ("Q", 2, .95), ("R", 3, 0.0)]).rename(columns={"latency_p50_s": "tpf"})
    assert knee_point(convex, "tpf", "accuracy", (MAX, MAX))["key"] == "Q"


# ------------------------------------------------------------------------------------------------ statistics
def test_mcnemar_known_values():
    exact = mcnemar(1, 7)
    assert exact["p_value"] == pytest.approx(18 / 256) and exact["method"] == "exact binomial"  # 2 * (1 + 8) / 2^8
    assert mcnemar(7, 1)["p_value"] == exact["p_value"]
    chi = mcnemar(40, 20)  # (|40 - 20| - 1)^2 / 60 = 6.0167 on 1 df
    assert chi["statistic"] == pytest.approx(6.016667, abs=1e-6)
    assert chi["p_value"] == pytest.approx(0.0141714, abs=1e-6)
    assert mcnemar(0, 0)["p_value"] == 1.0


def test_bootstrap_diff():
    a = np.array([1, 0, 1, 1, 0] * 20)
    assert bootstrap_diff(a, a) == (0.0, 0.0)
    assert bootstrap_diff(np.zeros(10), np.ones(10)) == (1.0, 1.0)
    # 100 items gained, 50 lost of 1000: the interval of a mean difference of 0.05, close to the normal one
    before = np.r_[np.zeros(100), np.ones(50), np.ones(400), np.zeros(450)]
    after = np.r_[np.ones(100), np.zeros(50), np.ones(400), np.zeros(450)]
    low, high = bootstrap_diff(before, after, seed=1)
    se = np.sqrt((0.15 - 0.05**2) / 1000)
    assert low == pytest.approx(0.05 - 1.96 * se, abs=0.003) and high == pytest.approx(0.05 + 1.96 * se, abs=0.003)
    assert bootstrap_diff(before, after, seed=1) == (low, high)  # seeded


def test_scoring_ablation_against_per_item_rows(synthetic):
    _, score = synthetic
    pts = load_sweep(score, cache=False).points
    table = scoring_ablation(pts, n_resamples=2000)
    assert sorted(table["task"]) == sorted(SCORING)
    row = table.set_index("task").loc["piqa"]
    items = {name: pd.read_parquet(pts.loc[(pts["task"] == "piqa") & (pts["scorer.name"] == name), "items_path"].item())
             .set_index("id")["acc"] for name in ("likelihood", "confidence")}
    lik, con = items["likelihood"], items["confidence"]
    assert row["likelihood"] == pytest.approx(100 * lik.mean()) and row["confidence"] == pytest.approx(100 * con.mean())
    assert row["only_confidence"] == int((con & ~lik).sum()) and row["only_likelihood"] == int((lik & ~con).sum())
    assert row["mcnemar_p"] == pytest.approx(mcnemar(row["only_confidence"], row["only_likelihood"])["p_value"])
    assert row["diff_ci_low"] <= row["diff"] <= row["diff_ci_high"]
    assert (row["paper_likelihood"], row["paper_confidence"]) == (77.2, 78.5)


# ----------------------------------------------------------------------------------------- figures and report
def test_frontier_plot_marks_the_front(synthetic):
    import matplotlib.pyplot as plt

    pts = load_sweep(synthetic[0], cache=False).points
    fig = frontier_plot(pts)
    panels = [ax for ax in fig.axes if ax.has_data()]
    assert len(panels) == pts.groupby(["task", "model"]).ngroups
    assert any("Pareto front" in t.get_text() for t in fig.legends[0].get_texts())
    assert all(ax.get_xlabel() == "latency per request, p50 (ms), batch 16" for ax in panels)
    plt.close(fig)


def test_report_on_synthetic_sweeps(synthetic, tmp_path):
    report_main([str(p) for p in synthetic] + ["--out", str(tmp_path), "--budget", "0.05"])
    md = (tmp_path / "report.md").read_text()
    for name in ("pareto_latency", "pareto_nfe", "tokens_per_forward", "heatmap_accuracy", "scoring_ablation"):
        assert (tmp_path / "figures" / f"{name}.png").stat().st_size > 10_000
        assert (tmp_path / "figures" / f"{name}.svg").exists()
        assert f"figures/{name}.png" in md
    assert "77.2 → 78.5" in md and "OutOfMemoryError" in md and "Best point within 50 ms" in md
    assert "<table" in (tmp_path / "report.html").read_text()


def test_report_on_a_real_tiny_sweep(real_sweep, tmp_path):
    """A sweep produced by illada.evaluate on a random tiny model, through the command."""
    report_main([str(real_sweep), "--out", str(tmp_path)])
    sweeps = load_sweeps([real_sweep])
    assert len(sweeps.points) == len(GRID) + 1 + 2 and len(sweeps.failures) == 1
    md = (tmp_path / "report.md").read_text()
    assert "arithmetic_mc" in md and "Scoring ablation" in md and "CUDA out of memory" in md
    assert (tmp_path / "figures" / "pareto_latency.png").exists()
    assert (tmp_path / "figures" / "heatmap_accuracy.svg").exists()


def test_report_on_a_scoring_only_sweep(tmp_path):
    # no generation points: the steps x block-length heat maps are skipped, the ablation is still reported
    sweep = write_scoring_sweep(tmp_path / "scoring", n_items=50)
    report_main([str(sweep), "--out", str(tmp_path / "out")])
    md = (tmp_path / "out" / "report.md").read_text()
    assert "heat" not in " ".join(p.name for p in (tmp_path / "out" / "figures").iterdir())
    assert "not drawn" in md and "figures/scoring_ablation.png" in md
