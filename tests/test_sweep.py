"""``illada-sweep -m`` with the illada_grid sweeper: expansion, validation before anything runs, ablation files,
a local sweep end to end (``plan_sweep``/``run`` set the sweeper up as Hydra does; ``main`` is the command)."""

from __future__ import annotations

import re

import pytest

from illada.store import SweepStore
from sweeps.app import main, plan_sweep, run
from sweeps.expand import ABLATIONS_DIR, SweepError
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


@pytest.mark.parametrize("name", sorted(p.stem for p in ABLATIONS_DIR.glob("*.yaml")
                                       if "illada_pareto" not in p.read_text()))  # searches have no grid
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
    (["sweep_dir=a,b"], "one launcher and one store"),
    (["sampler.temperature=interval(0,1)"], "intervals need an optimizer"),
    (["hydra.sweeper.points_per_job=0"], "hydra.sweeper.points_per_job=0: must be a positive integer"),
    (["hydra.sweeper.on_invalid=ignore"], "hydra.sweeper.on_invalid='ignore'"),
    (["hydra/launcher=nope"], "hydra/launcher/nope"),
])
def test_config_errors_name_the_override(overrides, message, tiny_model, tmp_path):
    with pytest.raises(SweepError, match=message):
        plan_sweep(_base(tiny_model, tmp_path) + overrides)


def test_sweeper_reads_the_submitit_launcher(tiny_model, tmp_path):
    """Queue settings come from hydra.launcher.* (hydra-submitit-launcher's schema), site profiles included."""
    from sweeps.app import grid_sweeper
    from sweeps.launchers import submitit_executor

    args = _base(tiny_model, tmp_path) + ["hydra/launcher=submitit_slurm", "hydra.launcher.partition=gpu",
                                          "hydra.launcher.max_num_timeout=3", "hydra.launcher.timeout_min=7"]
    with grid_sweeper(args) as (sweeper, _):
        assert sweeper.cluster == "slurm"
        executor = submitit_executor(sweeper.launcher)
    assert executor.cluster == "slurm" and executor._executor.max_num_timeout == 3
    params = executor._executor.parameters
    assert params["partition"] == "gpu" and params["time"] == 7
    with grid_sweeper(_base(tiny_model, tmp_path) + ["hydra/launcher=example_site"]) as (sweeper, _):
        assert sweeper.launcher.params["constraint"] == "a100" and sweeper.launcher.params["max_num_timeout"] == 3
    with pytest.raises(SweepError, match="no_such_field"):
        plan_sweep(_base(tiny_model, tmp_path) + ["hydra/launcher=submitit_slurm", "hydra.launcher.no_such_field=1"])
    with grid_sweeper(_base(tiny_model, tmp_path) + ["hydra/launcher=submitit_local", "+hydra.launcher.qos=x"]) as (
            sweeper, _):
        with pytest.raises(SweepError, match="hydra.launcher: .*qos"):
            sweeper.executor()


def test_local_sweep_resume_and_rerun_failed(tiny_model, tmp_path, capsys):
    sweep = ["sampler.steps=8,4", "sampler.block_length=8,4", "hydra.sweeper.points_per_job=2"]
    store = run(_base(tiny_model, tmp_path) + sweep)
    st = store.status()
    assert len(st.done) == 4 and not st.missing and st.jobs == 2
    assert (store.root / "pareto.png").stat().st_size > 0
    assert (store.root / "multirun.yaml").exists()  # as Hydra's launchers leave it in the sweep dir

    # a point that failed is kept as finished, unless --rerun-failed
    victim = st.done[0]
    (store.records_dir / f"{victim}.json").unlink()
    (store.records_dir / f"{victim}.items.parquet").unlink()
    main(["-m", *_base(tiny_model, tmp_path), *sweep, "--no-plot"])
    assert "3 points already have a record; running 1 in 1 jobs" in capsys.readouterr().out
    assert len(SweepStore(store.root).status().done) == 4
    main(["-m", *_base(tiny_model, tmp_path), *sweep, "--rerun-failed", "--no-plot"])
    assert "4 points already have a record; running 0" in capsys.readouterr().out


def test_dry_run_writes_nothing(tiny_model, tmp_path, capsys):
    main(["-m", *_base(tiny_model, tmp_path), "sampler.steps=8,4", "--dry-run"])
    assert "2 valid points" in capsys.readouterr().out
    assert not (tmp_path / "sweep").exists()


@pytest.mark.parametrize("args, line", [
    (["-m", "sampler.stepz=4"], "error: override 'sampler.stepz=4': unknown setting 'stepz' of 'sampler'; did "
                                "you mean 'steps'?"),                                # Hydra composing the sweep
    (["sampler.steps=8,4"], "error: Ambiguous value for argument 'sampler.steps=8,4'"),  # a sweep needs -m
    (["-m", "sampler.steps=8,3", "sampler.block_length=4"], "error: 1 of 2 points are invalid, caused by 'sampler.st"),
    (["sampler.steps=3", "sampler.block_length=4"], "error: the point is invalid, caused by 'sampler.steps=3'"),
    (["-m", "hydra/launcher=nope"], "error: In 'hydra/config': Could not find 'hydra/launcher/nope'"),
    (["-m", "sampler.steps=4,8", "--cfg", "job"], "error: --cfg shows one job's config, -m runs a sweep"),
])
def test_command_errors_are_one_line(args, line, tiny_model, tmp_path):
    with pytest.raises(SystemExit) as err:
        main([*_base(tiny_model, tmp_path), *args])
    assert str(err.value).startswith(line) and "\n" not in str(err.value)
    assert not (tmp_path / "sweep" / "records").exists() and not (tmp_path / "sweep" / "points").exists()


def test_one_point_without_m_records_it_and_a_failure_is_one_line(tiny_model, tmp_path):
    """No -m: a Hydra run of one point into the store; a point that fails keeps its failure record and the
    command ends with one error line."""
    import shutil

    main([*_base(tiny_model, tmp_path), "sampler.steps=4"])
    (rec,) = SweepStore(tmp_path / "sweep").records()
    assert rec["settings"]["sampler"]["steps"] == 4
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # the config reads, the weights do not load
    with pytest.raises(SystemExit) as err:
        main([f"model.path={broken}", f"sweep_dir={tmp_path / 'b'}", "task.limit=4"])
    assert str(err.value).startswith("error: point ") and " failed: " in str(err.value) and "\n" not in str(err.value)
    assert SweepStore(tmp_path / "b").records(status="failed")


def test_one_point_prints_a_rounded_line_with_its_record_path(tiny_model, tmp_path, capsys):
    main([*_base(tiny_model, tmp_path), "sampler.steps=4"])
    out = capsys.readouterr().out
    (rec,) = SweepStore(tmp_path / "sweep").records()
    line = [line for line in out.splitlines() if line.startswith("point ")][-1]
    assert line.startswith(f"point {rec['key']}: exact_match ") and " % (95% CI " in line and " ms, " in line
    assert line.endswith(f"record {tmp_path / 'sweep' / 'records' / (rec['key'] + '.json')}"), line
    assert "{'key'" not in out and not re.search(r"\d\.\d{5,}", line)  # no raw dict, no unrounded floats
