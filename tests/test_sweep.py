"""``illada-sweep``: expansion, validation before anything runs, ablation files, a local sweep end to end."""

from __future__ import annotations

import pytest

from illada.store import SweepStore
from sweeps.app import main, run
from sweeps.expand import ABLATIONS_DIR, SweepError, plan_sweep
from sweeps.launchers import launcher_from_config
from tests.sweep_fixtures import tiny_model  # noqa: F401 -- fixture


def _base(model, tmp_path):
    return [f"model.path={model}", f"sweep_dir={tmp_path / 'sweep'}", "task.limit=4"]


def test_expansion_and_ablation_grid(tiny_model, tmp_path):
    plan = plan_sweep(_base(tiny_model, tmp_path) + ["sampler.steps=8,4", "sampler.remasking=low_confidence,random"])
    assert len(plan.points) == 4
    assert {tuple(p.overrides) for p in plan.points} >= {("sampler.steps=4", "sampler.remasking=random")}

    plan = plan_sweep(_base(tiny_model, tmp_path) + ["+ablation=steps_blocks"])
    assert plan.base.name == "steps_blocks"
    assert len(plan.points) == 8 and len(plan.invalid) == 1  # steps=2 with 4 blocks is undefined: skipped
    assert "SamplerSettings.steps=2" in plan.invalid[0]

    # the command line replaces an ablation's axis
    plan = plan_sweep(_base(tiny_model, tmp_path) + ["+ablation=steps_blocks", "sampler.steps=8"])
    assert len(plan.points) == 3


@pytest.mark.parametrize("name", sorted(p.stem for p in ABLATIONS_DIR.glob("*.yaml")))
def test_every_ablation_validates(name, tiny_model, tmp_path):
    plan = plan_sweep(_base(tiny_model, tmp_path) + [f"+ablation={name}"])
    assert plan.base.name == name and len(plan.points) >= 2


def test_scoring_ablation_points(tiny_model, tmp_path):
    plan = plan_sweep(_base(tiny_model, tmp_path) + ["+ablation=scoring"])
    got = {(p.resolved.settings["task"], p.resolved.settings["scorer"]["name"]) for p in plan.points}
    assert got == {(t, s) for t in ("piqa", "arc_challenge", "hellaswag") for s in ("likelihood", "confidence")}


@pytest.mark.parametrize("overrides, culprit", [
    (["sampler.block_length=4", "sampler.steps=8,3"], "'sampler.steps=3'"),  # a sampler rule
    (["sampler=fixed,threshold", "sampler.factor=1.0"], "'sampler.factor=1.0'"),  # point [sampler=threshold]
    (["task.name=arithmetic,nope"], "'task.name=nope'"),              # unknown task
    (["task=arithmetic", "task.limit=0"], "'task.limit=0'"),
    (["model.dtype=float32,float8"], "'model.dtype=float8'"),
])
def test_invalid_points_name_their_override(overrides, culprit, tiny_model, tmp_path):
    with pytest.raises(SweepError, match="nothing was run") as err:
        run(_base(tiny_model, tmp_path) + overrides)
    assert f"caused by {culprit}" in str(err.value)
    assert not (tmp_path / "sweep").exists()  # validated before anything was written or submitted


def test_missing_checkpoint_names_the_model_override(tmp_path, monkeypatch):
    monkeypatch.setenv("ILLADA_CKPT_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(SweepError, match="caused by 'model=llada-8b-base'.*nowhere/LLaDA-8B-Base"):
        plan_sweep(["model=llada-8b-base", f"sweep_dir={tmp_path}"])


@pytest.mark.parametrize("overrides, message", [
    (["sampler.stepz=4"], "sampler.stepz"),
    (["sampler=nope"], "sampler/nope"),
    (["launcher=slurm", "launcher=slurm,local"], "one launcher"),
    (["sampler.temperature=interval(0,1)"], "intervals need an optimizer"),
])
def test_config_errors_name_the_override(overrides, message, tiny_model, tmp_path):
    with pytest.raises(SweepError, match=message):
        plan_sweep(_base(tiny_model, tmp_path) + overrides)


def test_launcher_validation(tiny_model, tmp_path):
    base = plan_sweep(_base(tiny_model, tmp_path) + ["launcher=slurm", "launcher.partition=gpu"]).base
    launcher = launcher_from_config(base.launcher)
    assert launcher.cluster == "slurm" and launcher.points_per_job == 16 and launcher.threads == 8
    assert launcher.queue["partition"] == "gpu" and launcher.queue["max_num_timeout"] == 3
    bad = plan_sweep(_base(tiny_model, tmp_path) + ["launcher=slurm", "+launcher.no_such_field=1"]).base
    with pytest.raises(SweepError, match="launcher.no_such_field"):
        launcher_from_config(bad.launcher)
    site = plan_sweep(_base(tiny_model, tmp_path) + ["launcher=example_site"]).base
    assert launcher_from_config(site.launcher).queue["constraint"] == "a100"


def test_local_sweep_resume_and_rerun_failed(tiny_model, tmp_path, capsys):
    sweep = ["sampler.steps=8,4", "sampler.block_length=8,4", "launcher.points_per_job=2"]
    store = run(_base(tiny_model, tmp_path) + sweep)
    st = store.status()
    assert len(st.done) == 4 and not st.missing and st.jobs == 2
    assert (store.root / "pareto.png").stat().st_size > 0

    # a point that failed is kept as finished, unless --rerun-failed
    victim = st.done[0]
    (store.records_dir / f"{victim}.json").unlink()
    (store.records_dir / f"{victim}.items.parquet").unlink()
    main(_base(tiny_model, tmp_path) + sweep + ["--no-plot"])
    assert "3 points already have a record; running 1 in 1 jobs" in capsys.readouterr().out
    assert len(SweepStore(store.root).status().done) == 4
    main(_base(tiny_model, tmp_path) + sweep + ["--rerun-failed", "--no-plot"])
    assert "4 points already have a record; running 0" in capsys.readouterr().out


def test_dry_run_writes_nothing(tiny_model, tmp_path, capsys):
    main(_base(tiny_model, tmp_path) + ["sampler.steps=8,4", "--dry-run"])
    assert "2 valid points" in capsys.readouterr().out
    assert not (tmp_path / "sweep").exists()
