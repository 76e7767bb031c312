"""Items as fidelity: rungs, bounds, the promotion / early-stop rule, and continuing a point on more items
(the completed record has the same content as a direct evaluation, cost fields aside)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from illada.evaluate import Point, evaluate, resolve
from illada.fidelity import (Evidence, check_rungs, could_be_on_front, evaluate_to, interval, ordered_items,
                             rung_sizes)
from illada.records import items_path, summary_path

COST_FIELDS = ("cost", "provenance")


def test_rungs_are_whole_batches_ending_with_every_item():
    assert rung_sizes(1319) == [83, 330, 1319]
    assert rung_sizes(1319, batch_size=16) == [96, 336, 1319]
    assert rung_sizes(10, (0.01, 0.02, 1.0)) == [2, 10]  # two batches at least; equal sizes merge
    for bad in ([0.5], [0.5, 0.25, 1], [0, 1], [0.5, 1.5], [], [True, 1]):
        with pytest.raises(ValueError, match="rungs="):
            check_rungs(bad)


def test_interval_narrows_with_items():
    lo, hi = interval(8, 10)
    lo2, hi2 = interval(80, 100)
    assert lo < lo2 < 0.8 < hi2 < hi
    assert interval(8, 10, 0.5)[1] < hi  # a lower confidence, a narrower interval


def test_a_point_is_stopped_only_when_a_lower_bound_beats_its_upper_bound_no_slower():
    fast_good = Evidence("a", 100, 100, 0.9, 0.85, 0.94, latency=1.0)
    slow_bad = Evidence("b", 10, 100, 0.5, 0.3, 0.7, latency=2.0)
    fast_bad = Evidence("c", 10, 100, 0.5, 0.3, 0.7, latency=0.5)
    unsure = Evidence("d", 10, 100, 0.7, 0.5, 0.88, latency=2.0)
    assert not could_be_on_front(slow_bad, [fast_good])  # 0.85 >= 0.7 at a better latency
    assert could_be_on_front(fast_bad, [fast_good])  # faster: it may be on the front
    assert could_be_on_front(unsure, [fast_good])  # its upper bound 0.88 is above 0.85
    assert could_be_on_front(fast_good, [fast_good])  # a point never dominates itself


def test_fidelity_order_is_whole_seeded_batches_with_the_short_one_last():
    from illada.evaluate import _load_task

    data = _load_task("arithmetic", None, 30, 0, 0, None)
    order = ordered_items(data, 8)
    assert sorted(order) == list(range(30)) and order[-6:] == list(range(24, 30))
    assert all(order[i:i + 8] == list(range(order[i], order[i] + 8)) for i in (0, 8, 16))  # whole batches
    assert sorted(order[0:24:8]) == [0, 8, 16]


def test_continued_point_has_the_same_record_content_as_a_direct_evaluation(tmp_path):
    import illada

    loaded = illada.load("default")
    # random remasking: outcomes depend on each batch's random draws, so only the same batches give the same rows
    point = resolve(Point(task="arithmetic", limit=30, batch_size=4,
                          sampler={"steps": 4, "gen_length": 8, "block_length": 8, "remasking": "random", "seed": 0}))
    evaluate(point, tmp_path / "direct", loaded=loaded, progress=False)
    seen = []
    for k in rung_sizes(30, (0.25, 0.5, 1.0), batch_size=4):
        rec = evaluate_to(point, tmp_path / "continued", k, loaded=loaded)
        seen.append((rec["quality"]["n"], rec.get("coverage")))
        evaluate_to(point, tmp_path / "continued", k, loaded=loaded)  # nothing left to run: the same record
    assert seen == [(8, {"items": 8, "of": 30, "order": "seeded batches"}),
                    (16, {"items": 16, "of": 30, "order": "seeded batches"}), (30, None)]
    direct, continued = (json.loads(summary_path(tmp_path / d, point.key).read_text()) for d in ("direct", "continued"))
    for rec in (direct, continued):
        for f in COST_FIELDS:
            rec.pop(f)
    assert continued == direct
    rows = [pd.read_parquet(items_path(tmp_path / d, point.key)) for d in ("direct", "continued")]
    assert rows[0]["exact_match"].nunique() == 2  # a point whose items differ, so the check means something
    pd.testing.assert_frame_equal(rows[0].drop(columns="latency_s"), rows[1].drop(columns="latency_s"))
