"""Early-stopped points in grid sweeps (``hydra.sweeper.early_stop``): a point beaten after a batch is recorded
as stopped (items, interval, reason), ``--rerun-failed`` leaves it, ``--finish-stopped`` runs it to the end
keeping its items."""

from __future__ import annotations

import json

import pytest

from illada.evaluate import evaluate
from illada.records import summary_path, write_record
from illada.store import SweepStore
from sweeps.app import main, plan_sweep, run
from tests.sweep_fixtures import tiny_model  # noqa: F401 -- fixture


def _base(model, tmp_path):
    return [f"model.path={model}", f"sweep_dir={tmp_path / 'sweep'}", "task.limit=32", "batch_size=8",
            "sampler.steps=8", "hydra.sweeper.plot=false"]


def _perfect_finished_point(store: SweepStore, settings: dict) -> str:
    """A finished point on the same items that is always right and instant: every other point is beaten by it
    as soon as its upper bound drops below 1 (the tiny random model gets nothing right)."""
    key = "0" * 16
    write_record(store.records_dir, {
        "schema": 2, "key": key, "status": "ok", "settings": {**settings, "sampler": {"decoder": "perfect"}},
        "quality": {"metric": "exact_match", "value": 1.0, "n": 32}, "cost": {"latency_p50_s": 1e-9}})
    return key


def test_a_beaten_point_stops_is_kept_and_can_be_finished(tiny_model, tmp_path, capsys):
    plan = plan_sweep(_base(tiny_model, tmp_path))
    point = plan.points[0].resolved
    store = SweepStore(tmp_path / "sweep")
    perfect = _perfect_finished_point(store, point.settings)

    run(_base(tiny_model, tmp_path) + ["hydra.sweeper.early_stop=true"])
    rec = store.record(point.key)
    assert rec["coverage"] == {"items": 16, "of": 32, "order": "seeded batches"} and rec["quality"]["n"] == 16
    stop = rec["early_stop"]  # judged from its second batch on
    assert stop["items"] == 16 and stop["of"] == 32 and stop["beaten_by"] == perfect and stop["confidence"] == 0.95
    assert stop["interval"][0] == 0.0 and 0 < stop["interval"][1] < 0.5
    assert f"upper bound 0.194 at 95% after 16 of 32 items is below the lower bound 0.893 of point {perfect}" \
        in stop["reason"]

    capsys.readouterr()
    main(["-m", *_base(tiny_model, tmp_path), "--rerun-failed"])
    assert "1 points already have a record; running 0" in capsys.readouterr().out
    assert store.record(point.key)["early_stop"]["items"] == 16

    main(["-m", *_base(tiny_model, tmp_path), "--finish-stopped"])
    assert "--finish-stopped: running 1 early-stopped points to the end" in capsys.readouterr().out
    finished = json.loads(summary_path(store.records_dir, point.key).read_text())
    assert "early_stop" not in finished and "coverage" not in finished and finished["quality"]["n"] == 32
    direct = evaluate(point, tmp_path / "direct", progress=False)
    direct = json.loads(summary_path(tmp_path / "direct", point.key).read_text())
    for rec in (finished, direct):
        rec.pop("cost"), rec.pop("provenance")
    assert finished == direct  # the 16 items kept and the 16 run after them make the direct record


def test_a_point_never_beaten_is_recorded_as_a_direct_evaluation(tiny_model, tmp_path):
    store = run(_base(tiny_model, tmp_path) + ["hydra.sweeper.early_stop=0.9"])
    (rec,) = store.records()
    assert rec["quality"]["n"] == 32 and "coverage" not in rec and "early_stop" not in rec
    assert not list((store.root / "partial").glob("*.json"))


@pytest.mark.parametrize("value", ["1.5", "'often'"])
def test_a_bad_early_stop_is_one_line(value, tiny_model, tmp_path):
    with pytest.raises(SystemExit) as err:
        main(["-m", *_base(tiny_model, tmp_path), f"hydra.sweeper.early_stop={value}"])
    assert str(err.value).startswith("error: hydra.sweeper.early_stop=") and "\n" not in str(err.value)
