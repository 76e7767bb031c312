"""Sweeps at scale: the plan of a large grid is built without one Hydra composition per point, and still holds
exactly the points Hydra composes; the columnar summary of a sweep's records; the search controller's cost."""

from __future__ import annotations

import random

import pandas as pd
import pytest
from hydra import compose

from illada.evaluate import Point, resolve
from sweeps.app import grid_sweeper
from sweeps.expand import SweepError, to_point
from tests.sweep_fixtures import tiny_model  # noqa: F401 -- fixture

# group choices (task=, scorer=), nested values (sampler.*), top-level values (seed, batch_size) and a value that
# is an interpolation (task.limit=${batch_size}: it takes the full composition path)
GRID = ["task=arithmetic,piqa", "scorer=likelihood,confidence", "sampler.steps=8,4",
        "sampler.remasking=low_confidence,random", "seed=0,1,2", "batch_size=16,8", "task.limit=4,${batch_size}"]


def test_planned_points_are_what_hydra_composes(tiny_model, tmp_path):
    fixed = [f"model.path={tiny_model}", f"sweep_dir={tmp_path / 'sweep'}"]
    with grid_sweeper(fixed + GRID) as (sweeper, arguments):
        plan = sweeper.plan(arguments)
        # each distinct set of group choices composed once (task x scorer, and the sweep's base), not per point
        assert len(sweeper._composed) <= 5
        assert len(plan.points) == 2 * 2 * 3 * 2 * 2 + 2 * 3 * 2 * 2  # sampler.* duplicates of piqa dropped
        for p in random.Random(0).sample(plan.points, 40):
            cfg = compose("config", overrides=plan.fixed + p.overrides)  # a full Hydra composition of the point
            expected = resolve(to_point(cfg))
            assert p.resolved.settings == expected.settings, p.overrides
            assert p.resolved.key == expected.key
            assert p.resolved.point == expected.point


def test_unknown_key_is_refused_on_the_fast_path_too(tiny_model, tmp_path):
    with grid_sweeper([f"model.path={tiny_model}", f"sweep_dir={tmp_path / 'sweep'}", "sampler.stepz=8,4"]) as (
            sweeper, arguments):
        with pytest.raises(SweepError, match="unknown setting 'stepz' of 'sampler'; did you mean 'steps'"):
            sweeper.plan(arguments)


def test_sampler_validation_memo_keeps_types_apart():
    """Settings are validated once per distinct value set; 1 and True (equal in Python) are not one set."""
    base = Point(sampler={"steps": 8, "gen_length": 8, "block_length": 8})
    assert resolve(base).sampler is resolve(Point(sampler=dict(base.sampler), seed=3)).sampler  # validated once
    assert resolve(Point(sampler={**base.sampler, "debias": True})).settings["sampler"]["debias"] is True
    with pytest.raises(ValueError, match="debias=1: must be true or false"):
        resolve(Point(sampler={**base.sampler, "debias": 1}))


# ------------------------------------------------------------------------------------ the records' summary
def _write(path, data) -> None:
    import json

    path.write_text(json.dumps(data))


def test_summary_follows_the_records_and_is_never_trusted_when_damaged(tmp_path):
    import os

    from illada.summary import summarise, summary_path

    records = tmp_path / "records"
    records.mkdir()
    for i in range(3):
        _write(records / f"k{i}.json", {"key": f"k{i}", "status": "ok"})
    first = summarise(tmp_path, "records")
    assert first.read == 3 and summary_path(tmp_path, "records").is_file()
    assert summarise(tmp_path, "records").read == 0  # up to date: no record read again

    _write(records / "k3.json", {"key": "k3", "status": "ok"})  # a record lands
    _write(records / "k0.json", {"key": "k0", "status": "failed", "error": {"type": "OOM"}})  # rewritten
    os.utime(records / "k0.json", ns=(1, 1))
    (records / "k1.json").unlink()  # set aside
    (records / "k2.json").write_text('{"key": "k2", "sta')  # cut short by a crash
    s = summarise(tmp_path, "records")
    assert s.read == 2 and s.statuses == {"k0.json": "failed", "k3.json": "ok"}
    assert [e.path.name for e in s.unreadable] == ["k2.json"]
    assert [e.path.name for e in summarise(tmp_path, "records").unreadable] == ["k2.json"]  # reported again

    summary_path(tmp_path, "records").write_bytes(b"PAR1 not parquet")  # a damaged summary: rebuilt
    again = summarise(tmp_path, "records")
    assert again.read == 2 and again.statuses == s.statuses and again.objects()["k0.json"]["error"] == {"type": "OOM"}


def test_status_and_load_of_a_large_sweep_match_reading_every_record(tmp_path, monkeypatch):
    import analysis.load as load
    import illada.store as store
    from analysis.synthetic import write_generation_records
    from illada.store import SweepStore

    root = write_generation_records(tmp_path / "sweep", n_points=230, failures=5)
    (root / "records" / f"{SweepStore(root).planned()[0]}.json").write_text("{")  # one damaged record
    with pytest.warns(UserWarning, match="1 unreadable files"):
        fast_status, fast = SweepStore(root).status(), load.load_sweep(root, cache=False)
    assert (root / "summary" / "records.parquet").is_file() and (root / "summary" / "points.parquet").is_file()
    monkeypatch.setattr(store, "SUMMARY_MIN_RECORDS", 10**9)
    monkeypatch.setattr(load, "SUMMARY_MIN_RECORDS", 10**9)
    with pytest.warns(UserWarning, match="1 unreadable files"):
        slow_status, slow = SweepStore(root).status(), load.load_sweep(root, cache=False)
    assert fast_status.line() == slow_status.line() and len(fast_status.corrupt) == 1
    assert [str(e.path) for e in fast_status.unreadable] == [str(e.path) for e in slow_status.unreadable]
    for part in ("points", "failures", "superseded", "unreadable"):
        pd.testing.assert_frame_equal(getattr(fast, part), getattr(slow, part))
    assert len(fast.points) == 229 and len(fast.failures) == 5


def test_summary_frames_equal_every_record_read_with_mixed_absent_and_null_fields(tmp_path, monkeypatch):
    """Fields the summary cannot type simply (lists, strings next to numbers, booleans next to numbers, ints
    next to floats), fields absent in some records and null in others, and fields of one status only give the
    frames that reading every record gives; the summary holds typed columns, not the records' text."""
    import json

    import pyarrow.parquet as pq

    import analysis.load as load
    from illada.summary import summarise, summary_path

    records = tmp_path / "records"
    records.mkdir()
    for i in range(240):
        sampler = {"steps": 8 if i % 3 else 4.5, "stop_ids": [1, 2] if i % 2 else [], "tag": i if i % 5 else "x",
                   "flag": True if i % 7 else 1}
        if i % 4:
            sampler["threshold"] = None  # null here, absent in every fourth record
        rec = {"schema": 2, "key": f"k{i:03d}", "status": "ok" if i % 11 else "failed",
               "settings": {"model": "m", "task": "t", "sampler": sampler},
               "quality": {"metric": "exact_match", "value": i / 240, "n": 10} if i % 11 else None,
               "cost": {"nfe_per_sample": i, "latency_p50_s": 0.1} if i % 11 else None,
               "error": None if i % 11 else {"type": "OOM", "message": "out of memory"}}
        (records / f"k{i:03d}.json").write_text(json.dumps(rec))
    fast = load.load_sweep(tmp_path, cache=False)
    table = pq.read_table(summary_path(tmp_path, "records"))
    assert "text" not in table.column_names and table.schema.field("v:cost.nfe_per_sample").type == "int64"
    assert {f"settings.sampler.{f}" for f in ("stop_ids", "tag", "flag")} <= summarise(tmp_path, "records").json_fields
    monkeypatch.setattr(load, "SUMMARY_MIN_RECORDS", 10**9)
    slow = load.load_sweep(tmp_path, cache=False)
    for part in ("points", "failures", "superseded", "unreadable"):
        pd.testing.assert_frame_equal(getattr(fast, part), getattr(slow, part))
    assert len(fast.failures) == 22 and "error.type" not in fast.points and "sampler.threshold" in fast.points
    assert summarise(tmp_path, "records").objects()["k001.json"]["settings"]["sampler"] == {
        "steps": 8, "stop_ids": [1, 2], "tag": 1, "flag": True, "threshold": None}


def test_loading_a_sweep_imports_no_plotting_library():
    import subprocess
    import sys

    code = "import sys, analysis.load; print(sorted(m for m in ('matplotlib', 'scipy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
