"""The cost forecast: per-item times from earlier records (nearest settings first), an explicit
``cost_per_item_s``, jobs replayed on the launcher's slots; and the lines ``--dry-run`` and a real run print."""

from __future__ import annotations

import pytest

from illada.forecast import Pricer, forecast, makespan
from sweeps.app import main, run
from tests.sweep_fixtures import tiny_model  # noqa: F401 -- fixture


def _settings(steps=8, limit=10, device="cpu", model="m"):
    return {"model": model, "device": device, "dtype": "float32", "task": "arithmetic", "split": "test",
            "limit": limit, "seed": 0, "method": "generate", "batch_size": 16, "threads": 1,
            "sampler": {"decoder": "llada", "steps": steps, "gen_length": 8}}


def _record(steps, seconds_per_item, n=10, load=0.0, **kw):
    return {"status": "ok", "settings": _settings(steps, limit=n, **kw),
            "quality": {"n": n, "n_total": 1000}, "cost": {"eval_seconds": seconds_per_item * n, "load_seconds": load}}


def test_nearest_settings_price_a_point():
    records = [_record(8, 0.8), _record(8, 1.0), _record(4, 0.4), _record(2, 0.2, model="other")]
    pricer = Pricer(records)
    assert pricer.per_item(_settings(8)) == (pytest.approx(0.9), "2 earlier records of the same family, same settings")
    rate, source = pricer.per_item(_settings(4))
    assert rate == pytest.approx(0.4) and "same settings" in source
    rate, source = pricer.per_item({**_settings(4), "sampler": {"decoder": "llada", "steps": 4, "gen_length": 16}})
    assert rate == pytest.approx(0.4) and "nearest settings (1 knob differs)" in source
    rate, source = pricer.per_item({**_settings(4), "batch_size": 1})  # another family: the coarse guess
    assert rate == pytest.approx(0.8) and "other families (coarse)" in source
    rate, source = pricer.per_item(_settings(4, device="cuda"))
    assert rate is None and "hydra.sweeper.cost_per_item_s" in source
    assert Pricer(records, cost_per_item_s=2.0).per_item(_settings(8))[0] == 2.0  # the user's figure wins
    rate, source = Pricer(records[:2]).per_item(_settings(2))  # only 8 steps measured: time is linear in steps
    assert rate == pytest.approx(0.9 * 2 / 8) and source.endswith("(1 knob differs), scaled by steps")


def test_forecast_sums_jobs_and_replays_them_on_the_slots():
    records = [_record(8, 1.0, load=5.0), _record(4, 0.5)]
    jobs = [[_settings(8, limit=10), _settings(4, limit=10)], [_settings(8, limit=20)], [_settings(4, limit=2000)]]
    one = forecast(jobs, records, parallelism=1)
    # 10 x 1 + 10 x 0.5 + load 5; 20 x 1 + 5; the task has 1000 items (n_total), so limit 2000 is 1000: 500 + 5
    assert one.job_seconds == pytest.approx([20.0, 25.0, 505.0])
    assert one.wall_seconds == pytest.approx(550.0) and one.device_seconds == pytest.approx(550.0)
    two = forecast(jobs, records, parallelism=2, gpus_per_job=4)
    assert two.wall_seconds == pytest.approx(525.0) and two.device_seconds == pytest.approx(4 * 550.0)
    assert "GPU-hours" not in two.lines()[0] and "at 2 jobs at a time" in two.lines()[0]
    assert makespan([3, 1, 1, 1], 2) == 3 and makespan([], 4) == 0


def test_points_without_an_estimate_are_said_not_guessed():
    fc = forecast([[_settings(8, device="cuda")]], [_record(8, 1.0)], parallelism=1)
    assert fc.unpriced and fc.lines()[0] == "cost forecast: no estimate for any of the 1 points"
    assert "cost_per_item_s=SECONDS" in fc.lines()[1]


def _base(model, tmp_path):
    return [f"model.path={model}", f"sweep_dir={tmp_path / 'sweep'}", "task.limit=6", "hydra.sweeper.plot=false"]


def test_dry_run_and_real_run_print_the_forecast(tiny_model, tmp_path, capsys):
    main(["-m", *_base(tiny_model, tmp_path), "sampler.steps=8,4", "--dry-run"])
    assert "cost forecast: no estimate for any of the 2 points" in capsys.readouterr().out
    main(["-m", *_base(tiny_model, tmp_path), "sampler.steps=8,4", "--dry-run", "hydra.sweeper.cost_per_item_s=0.5"])
    out = capsys.readouterr().out
    assert "cost forecast: 0.00167 CPU-hours (job-hours) (6 s), wall time 6 s at 1 job at a time (1 jobs, 12 items)" \
        in out and "per-item time from: hydra.sweeper.cost_per_item_s=0.5" in out

    run(_base(tiny_model, tmp_path) + ["sampler.steps=8,4"])
    capsys.readouterr()
    main(["-m", *_base(tiny_model, tmp_path), "sampler.steps=8,4,2", "sampler.block_length=8,4"])
    out = capsys.readouterr().out
    assert out.index("cost forecast:") < out.index("points already have a record; running 4")  # before they run
    assert "earlier records of the same family" in out and "to load the model" in out


def test_a_bad_cost_per_item_is_one_line_before_anything_is_written(tiny_model, tmp_path):
    with pytest.raises(SystemExit) as err:
        main(["-m", *_base(tiny_model, tmp_path), "sampler.steps=8,4", "hydra.sweeper.cost_per_item_s=-1"])
    assert str(err.value).startswith("error: hydra.sweeper.cost_per_item_s=-1") and "\n" not in str(err.value)
    assert not (tmp_path / "sweep" / "points").exists()


def test_a_search_prints_the_cost_of_its_budget(tiny_model, tmp_path, capsys):
    main(["-m", "+ablation=search", f"model.path={tiny_model}", f"sweep_dir={tmp_path / 'search'}", "task.limit=4",
          "hydra.sweeper.n_trials=1", "hydra.sweeper.plot=false", "hydra.sweeper.cost_per_item_s=2"])
    out = capsys.readouterr().out
    assert "cost of a search of 1 points, each priced as the base point" in out
    assert "cost forecast: 0.00222 CPU-hours (job-hours) (8 s), wall time 8 s at 2 jobs at a time (1 jobs, 4 items)" \
        in out


def test_parallelism_of_each_launcher():
    from types import SimpleNamespace

    from sweeps.costs import parallelism

    slurm = SimpleNamespace(params={"array_parallelism": 16, "nodes": 2, "gpus_per_node": 4})
    assert parallelism("slurm", slurm) == (16, 8)
    assert parallelism("slurm", SimpleNamespace(params={"gpus_per_task": 2, "tasks_per_node": 2})) == (256, 4)
    assert parallelism("local", None, local_jobs=3) == (3, 1)
    assert parallelism("inprocess", None) == (1, 1)
