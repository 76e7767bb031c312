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
