"""Measurements you can compare (issue 15, analysis side): schema-1 records read as schema 2, one unit per
quantity with the per-request latency as the default axis, replicates pooled, two sweeps side by side, and
the front table a sweep ends with."""

from __future__ import annotations

import copy
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import figures, fronts, load_sweep, load_sweeps, pool_replicates
from analysis.pareto import hypervolume
from analysis.replicates import MAX_HALF_WIDTH, MIN_ITEMS, too_few
from analysis.report import main as report_main
from analysis.synthetic import write_generation_sweep
from illada.records import settings_key, write_record

ROOT = Path(__file__).resolve().parent.parent


def record(task="arithmetic", steps=8, block=8, sampler_seed=0, seed=0, outcomes=(1, 0, 1, 1), latency=0.2,
           batch=16, schema=2, oversubscribed=None, scorer=False, ids=None) -> tuple[dict, pd.DataFrame]:
    """A summary and its per-item table in the store's schema (1 or 2)."""
    outcomes = np.asarray(outcomes, dtype=bool)
    settings = {"model": "/m/tiny", "model_hash": None, "task": task, "split": "test", "limit": len(outcomes),
                "seed": seed, "num_fewshot": 0, "data_path": None, "chat": False, "dtype": "float32",
                "attn_backend": "sdpa", "batch_size": batch, "device": "cpu"}
    if scorer:
        settings.update(method="score", scorer={"name": "confidence", "mc_num": 1, "seed": 0})
    else:
        settings.update(method="generate", sampler={"steps": steps, "block_length": block, "gen_length": 8,
                                                    "remasking": "low_confidence", "seed": sampler_seed})
    n, k = len(outcomes), int(outcomes.sum())
    cost = {"nfe_per_sample": float(steps), "tokens_per_forward": 0.0 if scorer else 8 / steps,
            "eval_seconds": n * latency / batch, "latency_p50_s": latency, "latency_p95_s": 1.2 * latency}
    if schema == 1:
        cost.update(seconds_per_sample=latency / batch, tokens_per_second=0.0 if scorer else 8 * batch / latency)
    else:
        settings["threads"] = 1
        cost.update(throughput_items_per_s=batch / latency,
                    throughput_tokens_per_s=None if scorer else 8 * batch / latency)
    from illada.metrics import accuracy

    est = accuracy(outcomes)
    metric = "acc" if scorer else "exact_match"
    provenance = {"hostname": "h"} if oversubscribed is None else {"hostname": "h", "oversubscribed": oversubscribed}
    summary = {"schema": schema, "key": settings_key(settings), "status": "ok", "settings": settings,
               "quality": {"metric": metric, "value": k / n, "ci_low": est.lower, "ci_high": est.upper, "n": n},
               "cost": cost, "provenance": provenance, "error": None}
    items = pd.DataFrame({"id": ids or [f"{task}-{i}" for i in range(n)], metric: outcomes})
    return summary, items


def sweep(root: Path, *records) -> Path:
    for summary, items in records:
        write_record(root / "records", summary, items)
    return root


# ------------------------------------------------------------------------------------------- schema 1 -> 2
def test_schema1_records_map_to_the_schema2_columns(tmp_path):
    """Schema-1 records had seconds_per_sample (an inverse throughput named like a latency) and
    tokens_per_second (0.0 for a scorer); they read as throughput_items_per_s / throughput_tokens_per_s."""
    root = sweep(tmp_path / "old", record(schema=1, latency=0.4, batch=16),
                 record(schema=1, scorer=True, task="arithmetic_mc"), record(schema=2, steps=4, latency=0.1))
    pts = load_sweep(root, cache=False).points.set_index("schema")
    assert "seconds_per_sample" not in pts and "tokens_per_second" not in pts
    gen = pts[pts["method"] == "generate"]
    assert gen.loc[1, "throughput_items_per_s"] == pytest.approx(16 / 0.4)       # 1 / seconds_per_sample
    assert gen.loc[1, "throughput_tokens_per_s"] == pytest.approx(8 * 16 / 0.4)  # tokens_per_second
    assert np.isnan(pts.loc[pts["method"] == "score", "throughput_tokens_per_s"]).all()  # a scorer: null, not 0
    assert gen.loc[2, "throughput_items_per_s"] == pytest.approx(16 / 0.1)
    assert list(pts["threads"]) == [1, 1, 1] and list(pts["batch_size"]) == [16, 16, 16]


def test_a_cache_of_the_previous_loader_is_rebuilt(tmp_path):
    import json

    import analysis.load as load_module

    root = sweep(tmp_path / "s", record(schema=1))
    load_sweep(root, cache=True)
    sig = tmp_path / "s" / load_module.CACHE_DIR / "signature.txt"
    old = json.loads(sig.read_text())
    assert old["version"] == load_module.CACHE_VERSION >= 3
    # a cache of the schema-1 loader (version 2) had seconds_per_sample: it must not be read back
    stale = load_sweep(root, cache=False).points.assign(seconds_per_sample=0.1)
    stale.to_parquet(tmp_path / "s" / load_module.CACHE_DIR / "points.parquet", index=False)
    sig.write_text(json.dumps({**old, "version": 2}))
    assert "seconds_per_sample" not in load_sweep(root, cache=True).points


def test_oversubscribed_points_are_named_in_one_warning_per_sweep(tmp_path):
    a = sweep(tmp_path / "a", record(oversubscribed=True), record(steps=4, oversubscribed=True),
              record(steps=2, oversubscribed=False))
    b = sweep(tmp_path / "b", record(oversubscribed=False))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_sweeps([a, b], cache=False)
    lines = [str(w.message) for w in caught if "oversubscribed" in str(w.message)]
    assert len(lines) == 1 and "2 of 3 points" in lines[0] and str(a) in lines[0]


# ------------------------------------------------------------------------------------------------ one unit
def test_default_latency_is_per_request_p50_in_ms_everywhere(tmp_path):
    import matplotlib.pyplot as plt

    root = sweep(tmp_path / "s", record(steps=8, latency=0.4, outcomes=[1] * 40),
                 record(steps=4, latency=0.2, outcomes=[1] * 30 + [0] * 10),
                 record(steps=2, latency=0.1, outcomes=[1] * 10 + [0] * 30))
    pts = load_sweep(root, cache=False).points
    fig = figures.frontier_plot(pts)
    assert fig.axes[0].get_xlabel() == "latency per request, p50 (ms), batch 16"
    plt.close(fig)
    table = fronts.front_table(pts)
    assert sorted(table["latency_p50_ms"]) == pytest.approx([100, 200, 400])
    summary = table.attrs["summary"][0]
    # hypervolume and its reference point in the table's units: accuracy % x ms, reference 1.1 x 400 ms
    assert summary["ref_x"] == pytest.approx(440) and summary["ref_y"] == 0
    by_hand = 25 * (200 - 100) + 75 * (400 - 200) + 100 * (440 - 400)  # staircase 100, 200, 400 ms -> 440 ms
    assert summary["hypervolume"] == pytest.approx(by_hand)
    assert hypervolume(fronts.display_units(pts, ["latency_p50_s", "accuracy"])) == pytest.approx(by_hand)
    assert "accuracy % × ms" in fronts.front_markdown(table)


def test_no_latency_per_sample_caption_is_left():
    """--latency latency_p50_s used to be captioned "latency per sample" (an inverse throughput's name)."""
    files = [*ROOT.glob("analysis/*.py"), *ROOT.glob("analysis/*.ipynb"), ROOT / "analysis" / "README.md"]
    offenders = [str(f) for f in files if re.search(r"latency per sample|seconds_per_sample\b(?!\")",
                                                      f.read_text(), re.I) and f.name != "load.py"]
    assert not offenders
    assert "latency per sample" not in " ".join(label for label, _ in figures.AXES.values())


@pytest.mark.parametrize("column, label", [("latency_p95_s", "latency per request, p95 (ms), batch 16"),
                                           ("throughput_items_per_s", "throughput (items/s), batch 16")])
def test_latency_option_labels_and_directions(tmp_path, column, label):
    """--latency takes the p95 and the throughput columns; throughput is maximised."""
    root = sweep(tmp_path / "s", record(steps=8, latency=0.4, outcomes=[1] * 40),
                 record(steps=2, latency=0.1, outcomes=[1] * 10 + [0] * 30),
                 record(steps=4, latency=0.5, outcomes=[1] * 20 + [0] * 20))   # slow and worse: dominated
    report_main([str(root), "--out", str(tmp_path / "out"), "--latency", column])
    md = (tmp_path / "out" / "report.md").read_text()
    assert f"Accuracy vs {label}" in md and "latency per sample" not in md
    front = pd.read_csv(tmp_path / "out" / "front.csv")
    assert sorted(front["latency_p50_ms"]) == pytest.approx([100, 400])  # the dominated point is left out


# ---------------------------------------------------------------------------------------------- replicates
def test_pool_replicates_pairs_items_across_seeds(tmp_path):
    # three sampler seeds of one setting on the same 40 items, and another setting run once
    rng = np.random.default_rng(0)
    base = rng.random(200) < 0.6
    flips = [base ^ (rng.random(200) < 0.1) for _ in range(3)]
    root = sweep(tmp_path / "s",
                 *(record(sampler_seed=s, outcomes=o, latency=0.2 + 0.01 * s) for s, o in enumerate(flips)),
                 record(steps=4, outcomes=base))
    pts = load_sweep(root, cache=False).points
    pooled = pool_replicates(pts).set_index("n_replicates")
    three = pooled.loc[3]
    assert three["accuracy"] == pytest.approx(np.mean(flips))
    assert three["latency_p50_s"] == pytest.approx(0.21) and three["n_items"] == 200
    assert three["replicates"] == "sampler.seed 0, 1, 2" and len(three["keys"].split()) == 3
    # the interval by hand: items are clusters of 3 outcomes each
    s, m = np.sum(flips, axis=0), 3
    p = s.sum() / 600
    se = np.sqrt(200 / 199 * ((s - p * m) ** 2).sum() / 600**2)
    assert (three["ci_low"], three["ci_high"]) == pytest.approx((p - 1.959964 * se, p + 1.959964 * se), abs=1e-6)
    assert "cluster" in three["ci_method"] and three["warning"] == ""
    one = pooled.loc[1]
    assert one["ci_method"] == "Wilson (one run)" and one["accuracy"] == pytest.approx(base.mean())


def test_item_subsample_seeds_pool_on_their_items(tmp_path):
    # seed (the item subsample) 0 and 1 drew partly different items: shared ones are one cluster
    a = record(seed=0, outcomes=[1] * 20 + [0] * 20, ids=[f"i{i}" for i in range(40)])
    b = record(seed=1, outcomes=[1] * 40, ids=[f"i{i}" for i in range(20, 60)])
    pooled = pool_replicates(load_sweep(sweep(tmp_path / "s", a, b), cache=False).points)
    assert len(pooled) == 1 and pooled.loc[0, "n_items"] == 60 and pooled.loc[0, "n_replicates"] == 2
    assert pooled.loc[0, "accuracy"] == pytest.approx(60 / 80)


def test_replicates_without_item_rows_use_a_t_interval():
    points = pd.DataFrame({"key": ["a", "b", "c"], "task": "t", "model": "m", "sampler.steps": 8,
                           "sampler.seed": [0, 1, 2], "accuracy": [0.5, 0.6, 0.7], "ci_low": 0.0, "ci_high": 1.0,
                           "n": 100, "items_path": None, "metric": "exact_match"})
    row = pool_replicates(points).iloc[0]
    half = 4.302653 * 0.1 / np.sqrt(3)  # t(0.975, 2) x sd / sqrt(n)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((0.6 - half, 0.6 + half), abs=1e-5)
    assert row["ci_method"].startswith("t over replicates") and row["n_items"] == 100


def test_a_front_of_two_items_is_flagged(tmp_path, capsys):
    """The report called one seed=22 point at limit=2 "the front", CI [34, 100], without a warning."""
    root = sweep(tmp_path / "s", record(sampler_seed=22, outcomes=[1, 1]))
    pooled = pool_replicates(load_sweep(root, cache=False).points)
    warning = pooled.loc[0, "warning"]
    assert warning.startswith("too few items/replicates") and f"< {MIN_ITEMS}" in warning
    report_main([str(root), "--out", str(tmp_path / "out")])
    md = (tmp_path / "out" / "report.md").read_text()
    assert "Warning: 1 of 1 settings have too few items/replicates" in md
    assert "too few items/replicates" in pd.read_csv(tmp_path / "out" / "front.csv")["warning"][0]
    # a wide CI alone is flagged too
    assert "CI ±" in too_few(100, 0.3, 0.6, 0.45)
    assert MAX_HALF_WIDTH == 0.10


# ------------------------------------------------------------------------------------------ sweeps compared
def test_two_sweeps_compared_in_one_report(tmp_path):
    a = write_generation_sweep(tmp_path / "A", n_points=40, n_items=30, failures=0, seed=0)
    b = write_generation_sweep(tmp_path / "B", n_points=40, n_items=30, failures=0, seed=1)
    report_main([str(b), str(a), "--out", str(tmp_path / "out")])   # B first: the baseline of the deltas
    md = (tmp_path / "out" / "report.md").read_text()
    assert "## Sweeps compared" in md and "figures/sweeps_compared.png" in md and "A − B" in md
    assert (tmp_path / "out" / "figures" / "sweeps_compared.svg").exists()
    summary = pd.DataFrame(fronts.front_table(load_sweeps([b, a]).points).attrs["summary"])
    for _, group in summary.groupby(["task", "model"]):
        assert set(group["sweep"]) == {"A", "B"}
        assert group["ref_x"].nunique() == 1  # one shared reference point per task and model
    deltas = fronts.sweep_deltas(summary, ["B", "A"])
    row = deltas.iloc[0]
    pair = summary[(summary["task"] == row["task"]) & (summary["model"] == row["model"])].set_index("sweep")
    assert row["d_hypervolume"] == pytest.approx(pair.loc["A", "hypervolume"] - pair.loc["B", "hypervolume"])
    assert row["d_aup"] == pytest.approx(pair.loc["A", "aup"] - pair.loc["B", "aup"])


def test_sweeps_plot_draws_one_front_per_sweep():
    import matplotlib.pyplot as plt

    rows = [{"sweep": s, "task": "t", "model_name": "m", "key": f"{s}{i}", "latency_p50_s": 0.1 * (i + 1),
             "accuracy": 0.2 * i + (0.1 if s == "B" else 0)} for s in ("A", "B") for i in range(3)]
    fig = figures.sweeps_plot(pd.DataFrame(rows))
    ax = fig.axes[0]
    styles = {line.get_linestyle() for line in ax.get_lines()}
    assert len(ax.get_lines()) == 2 and len(styles) == 2  # a staircase per sweep, told apart without colour
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["A (front)", "B (front)"]
    plt.close(fig)


# -------------------------------------------------------------------------------------------- front table
def test_front_table_interface(tmp_path):
    root = sweep(tmp_path / "s", record(steps=8, latency=0.4, outcomes=[1] * 40),
                 *(record(steps=2, latency=0.1, sampler_seed=s, outcomes=[1] * 10 + [0] * 30) for s in range(2)),
                 record(steps=4, latency=0.5, outcomes=[0] * 40))
    table = fronts.front_table(load_sweep(root, cache=False).points)
    assert list(table.columns) == fronts.COLUMNS and len(table) == 2
    assert list(table["setting"]) == ["fixed, 2 steps, block 8", "fixed, 8 steps, block 8"]
    assert list(table["n_replicates"]) == [2, 1] and table["knee"].sum() == 1
    assert table.loc[0, "throughput_items_per_s"] == pytest.approx(160) and table.loc[0, "nfe_per_sample"] == 2
    csv, md = fronts.write_front_table(table, tmp_path / "out")
    assert pd.read_csv(csv).shape == table.shape
    text = md.read_text()
    assert "latency per request, p50 (ms)" in text and "hypervolume" in text and "AUP" in text
    empty = fronts.front_table(pd.DataFrame())
    assert list(empty.columns) == fronts.COLUMNS and empty.empty and "no front" in fronts.front_markdown(empty)


def test_setting_labels_duplicate_is_gone():
    import analysis.tables as tables

    assert not hasattr(tables, "setting_labels")  # figures.point_labels names points everywhere


def test_pooling_keeps_unpooled_points_unchanged(tmp_path):
    root = sweep(tmp_path / "s", record(steps=8), record(steps=4))
    pts = load_sweep(root, cache=False).points
    pooled = pool_replicates(copy.deepcopy(pts))
    assert len(pooled) == 2 and list(pooled["n_replicates"]) == [1, 1]
    pd.testing.assert_series_equal(pooled["accuracy"], pts["accuracy"], check_names=False)


def test_batch_1_and_batch_16_side_by_side(tmp_path):
    """One sweep run at batch 1 and batch 16: a front per batch size on one figure, each axis naming its batch."""
    import matplotlib.pyplot as plt

    rows = [record(steps=s, batch=b, latency=lat, outcomes=[1] * k + [0] * (40 - k))
            for b, scale in ((1, 0.05), (16, 0.4)) for s, k, lat in ((2, 10, scale), (8, 30, 4 * scale))]
    root = sweep(tmp_path / "s", *rows)
    pts = pool_replicates(load_sweep(root, cache=False).points)
    assert len(pts) == 4  # batch size is part of the setting: never pooled across
    report_main([str(root), "--out", str(tmp_path / "out")])
    md = (tmp_path / "out" / "report.md").read_text()
    assert "figures/pareto_latency_by_batch.png" in md
    front = pd.read_csv(tmp_path / "out" / "front.csv")
    assert set(front["batch_size"]) == {1}  # same accuracy, shorter wait: batch 1 dominates per request
    by_batch = pts.assign(_panel="arithmetic, batch " + pts["batch_size"].astype(str))
    fig = figures.frontier_plot(by_batch, col="_panel")
    labels = sorted(ax.get_xlabel() for ax in fig.axes if ax.has_data())
    assert labels == ["latency per request, p50 (ms), batch 1", "latency per request, p50 (ms), batch 16"]
    assert figures.axis_label("latency_p50_s", pts) == "latency per request, p50 (ms), at each point's batch size"
    plt.close(fig)
