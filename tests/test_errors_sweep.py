"""Expected failures of ``illada-sweep`` / ``illada-search`` are one line, never a traceback (issue 14, item 5),
and the dry run summarises instead of listing thousands of points (item 7): Ctrl-C, a checkpoint that is not
there, a search config the search cannot use, a Slurm host that is not one, a sweep dir that cannot be written."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from illada.store import SweepStore
from sweeps.app import main
from tests.search_fixtures import ROOT, load_study, search_args, write_search
from tests.sweep_fixtures import tiny_model  # noqa: F401 -- fixture


def _error(args: list[str], capsys) -> str:
    """The one ``error:`` line ``illada-sweep ARGS`` exits with (a failure if it is not one line)."""
    with pytest.raises(SystemExit) as e:
        main(args)
    message = e.value.code
    assert isinstance(message, str) and message.startswith("error: ") and "\n" not in message, message
    assert "Traceback" not in capsys.readouterr().err
    return message


# ------------------------------------------------------------------------------------------------------ Ctrl-C
def _default_sigint() -> None:
    # A shell starts background jobs with SIGINT ignored and Python then installs no KeyboardInterrupt handler;
    # give the child the disposition a terminal's Ctrl-C meets, whatever started this test run.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _interrupt(cmd: list[str], records: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Start ``cmd``, send it SIGINT (as Ctrl-C does) once a first record is written, return how it ended."""
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_default_sigint,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **(env or {})})
    end = time.time() + 180
    while time.time() < end and proc.poll() is None:
        if records.is_dir() and any(p.suffix == ".json" for p in records.iterdir()):
            break
        time.sleep(0.1)
    assert proc.poll() is None, "the command ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


@pytest.mark.slow
def test_ctrl_c_of_a_grid_sweep_is_one_line_and_the_same_command_resumes(tmp_path):
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "sweeps.app", "-m", f"sweep_dir={sweep}", "task.limit=40",
           "sampler.steps=8,16,32,64", "hydra.sweeper.points_per_job=1", "hydra.sweeper.plot=false"]
    out = _interrupt(cmd, sweep / "records")
    assert out.returncode == 130, out.stderr[-3000:]
    assert "Traceback" not in out.stderr and "KeyboardInterrupt" not in out.stderr, out.stderr[-3000:]
    line = out.stderr.strip().splitlines()[-1]
    assert line.startswith("interrupted: ") and "of 4 points done" in line and "resume with the same command" in line
    store = SweepStore(sweep)
    done = [r["key"] for r in store.records()]
    assert done and not list((sweep / "running").glob("*.json"))  # records kept; no marker left to wait for
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                           env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"{len(done)} points already have a record; running {4 - len(done)}" in again.stdout
    assert len(store.records()) == 4


@pytest.mark.slow
def test_ctrl_c_of_illada_search_is_one_line_and_the_search_resumes(tiny_model, tmp_path):
    conf, sweep = tmp_path / "conf", tmp_path / "sweep"
    write_search(conf, n_trials=8, max_in_flight=1)
    args = search_args(tiny_model, sweep, conf, "tiny", "task.limit=100", "batch_size=1")
    cmd = [sys.executable, "-m", "sweeps.search", *args]  # the deprecated alias runs the same app
    out = _interrupt(cmd, sweep / "records")
    assert out.returncode == 130, out.stderr[-3000:]
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    line = out.stderr.strip().splitlines()[-1]
    assert line.startswith("interrupted: ") and "resume with the same command" in line, line
    kept = len(SweepStore(sweep).records())
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                           env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(load_study(sweep).trials) == 8 and len(SweepStore(sweep).records()) >= kept


# ------------------------------------------------------------------------------------------- model, search
def test_preset_without_its_checkpoint_says_how_to_give_it(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("ILLADA_CKPT_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    for args in (["model=llada-8b-base"], ["-m", "model=llada-8b-base", "sampler.steps=2,4"]):
        line = _error([*args, f"sweep_dir={tmp_path / 'sweep'}", "model.device=cpu"], capsys)
        assert "model=llada-8b-base" in line and "$ILLADA_CKPT_DIR" in line and "model.path=" in line, line


@pytest.mark.parametrize("sweeper, named", [
    ({"space": {"sampler.steps": [1, 2]}}, "hydra.sweeper.space.sampler.steps=[1, 2]: give {choices: [1, 2]}"),
    ({"space": {"sampler.steps": {"chioces": [1, 2]}}}, "hydra.sweeper.space.sampler.steps.chioces: unknown key"),
    ({"space": {"sampler.steps": {"type": "int", "low": 1, "high": "x"}}},
     "hydra.sweeper.space.sampler.steps.high='x': must be a number"),
    ({"enqueue": [{"sampler.stepz": 1}]}, "hydra.sweeper.enqueue[0].sampler.stepz: not a parameter"),
    ({"storage": "postgres://x"}, "hydra.sweeper.storage='postgres://x'"),
])
def test_search_config_errors_are_one_line_naming_the_key(sweeper, named, tiny_model, tmp_path, capsys):
    write_search(tmp_path / "conf", **sweeper)
    line = _error(["-m", *search_args(tiny_model, tmp_path / "sweep", tmp_path / "conf")], capsys)
    assert named in line, line
    assert not (tmp_path / "sweep" / "records").exists()


# ------------------------------------------------------------------------------- settings that cannot run
def test_kv_cache_on_a_shifted_logits_model_is_refused_before_any_job(tmp_path, capsys):
    """A Dream-format model (logits_shift) cannot use a KV cache: said while validating, naming the override."""
    line = _error(["-m", "model.path=dream-7b", "sampler.cache=prefix", "sampler.steps=2,4",
                   f"sweep_dir={tmp_path / 's'}", "--dry-run"], capsys)
    assert line.startswith("error: all 2 of 2 points are invalid, caused by 'sampler.cache=prefix': "
                           "sampler.cache='prefix' needs unshifted logits"), line
    main(["-m", "model.path=dream-7b", "sampler.cache=none,dual", f"sweep_dir={tmp_path / 's'}", "--dry-run",
          "hydra.sweeper.on_invalid=skip"])
    out = capsys.readouterr().out
    assert "1 valid points" in out and "caused by 'sampler.cache=dual': sampler.cache='dual' needs unshifted" in out


def test_attention_backend_that_cannot_run_is_refused_before_any_job(tiny_model, tmp_path, monkeypatch, capsys):
    """flash_attn off CUDA is refused by the settings alone; on a host without flash-attn, in process."""
    args = ["-m", f"model.path={tiny_model}", f"sweep_dir={tmp_path / 's'}", "sampler.steps=2,4"]
    line = _error([*args, "model.attn_backend=flash_attn"], capsys)
    assert "caused by 'model.attn_backend=flash_attn'" in line and "runs on CUDA only" in line, line
    line = _error([*args, "model.attn_backend=flash_cattn"], capsys)
    assert "attention backend 'flash_cattn' is unknown" in line, line
    import illada.attention
    import illada.loading

    monkeypatch.setattr(illada.loading, "check_device", lambda device: None)  # a GPU is here, flash-attn is not
    monkeypatch.setattr(illada.attention, "flash_attn_available", lambda: False)
    line = _error([*args, "model.attn_backend=flash_attn", "model.device=cuda", "model.dtype=bfloat16"], capsys)
    assert "caused by 'model.attn_backend=flash_attn'" in line and "needs CUDA and the flash-attn package" in line
    assert not (tmp_path / "s" / "records").exists()


# ------------------------------------------------------------------------------------------------------ hints
@pytest.mark.parametrize("args", [["-m", "sampler.stesp=4,8"], ["-m", "sampler.stesp=4"], ["sampler.stesp=4"]])
def test_a_misspelt_setting_names_the_one_meant(args, tiny_model, tmp_path, capsys):
    line = _error([*args, f"model.path={tiny_model}", f"sweep_dir={tmp_path / 's'}", "--dry-run"], capsys)
    assert "unknown setting 'stesp' of 'sampler'; did you mean 'steps'?" in line, line
    assert "on_invalid" not in line and "the defaults" not in line and "+sampler" not in line


def test_slurm_setting_without_the_slurm_launcher_says_which_launcher(tiny_model, tmp_path, capsys):
    line = _error(["-m", "sampler.steps=4,8", "hydra.launcher.partition=gpu", f"model.path={tiny_model}",
                   f"sweep_dir={tmp_path / 's'}", "--dry-run"], capsys)
    assert line.startswith("error: hydra.launcher.partition: a Slurm setting") and \
        "choose hydra/launcher=submitit_slurm" in line and "+hydra" not in line, line


def test_skipping_invalid_points_is_suggested_only_where_some_are_valid(tiny_model, tmp_path, capsys):
    args = ["-m", f"model.path={tiny_model}", f"sweep_dir={tmp_path / 's'}", "sampler.block_length=4", "--dry-run"]
    some = _error([*args, "sampler.steps=3,4"], capsys)
    assert "1 of 2 points are invalid" in some and "on_invalid=skip" in some, some
    every = _error([*args, "sampler.steps=3", "sampler.seed=1,2"], capsys)  # one cause: one line, no hint
    assert "all 2 of 2 points are invalid" in every and "on_invalid" not in every, every


def test_a_scorer_swept_on_a_generation_task_is_said_to_be_unused(tiny_model, tmp_path, capsys):
    main(["-m", "scorer=likelihood,confidence", f"model.path={tiny_model}", f"sweep_dir={tmp_path / 's'}",
          "--dry-run"])
    out = capsys.readouterr().out
    assert "1 duplicates dropped (scorer settings are unused by the generation task 'arithmetic')" in out, out


# ------------------------------------------------------------------------------------------------- dry run
def test_dry_run_of_many_points_prints_totals_and_twenty_points(tiny_model, tmp_path, capsys):
    args = ["-m", f"model.path={tiny_model}", f"sweep_dir={tmp_path / 'sweep'}", "task.limit=4",
            "sampler.steps=1,2,4,8", "sampler.seed=range(0,10)", "--dry-run"]
    main(args)
    out = capsys.readouterr().out
    assert "dry run: 40 valid points (40 missing), 0 invalid; would run 40 in 3 jobs (inprocess)" in out, out
    assert out.count("  missing  sampler.steps=") == 20 and "  ... and 20 more" in out
    assert not (tmp_path / "sweep").exists()
    main([*args, "--verbose"])
    assert capsys.readouterr().out.count("  missing  sampler.steps=") == 40


def test_skipped_invalid_points_say_how_many_more(tiny_model, tmp_path, capsys):
    main(["-m", f"model.path={tiny_model}", f"sweep_dir={tmp_path / 'sweep'}", "task.limit=4", "--dry-run",
          "sampler.block_length=4", "sampler.steps=range(1,25)", "hydra.sweeper.on_invalid=skip"])
    out = capsys.readouterr().out
    assert "12 invalid grid cells left out as hydra.sweeper.on_invalid=skip asks (no failure)" in out, out
    assert "  ... and 7 more" in out, out


def test_dry_run_checks_the_sweep_dir_is_writable(tiny_model, tmp_path, capsys):
    (tmp_path / "file").write_text("")
    line = _error(["-m", f"model.path={tiny_model}", f"sweep_dir={tmp_path / 'file' / 'sweep'}", "--dry-run",
                   "sampler.steps=1,2"], capsys)
    assert f"sweep_dir={tmp_path / 'file' / 'sweep'}: cannot write" in line, line


def test_slurm_launcher_on_a_host_without_slurm_is_one_line(tiny_model, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch, no srun
    line = _error(["-m", f"model.path={tiny_model}", f"sweep_dir={tmp_path / 'sweep'}", "sampler.steps=1,2",
                   "hydra/launcher=submitit_slurm", "--dry-run"], capsys)
    assert "hydra/launcher=submitit_slurm: sbatch/srun are not installed" in line, line


@pytest.mark.parametrize("refusal, named", [
    ("sbatch: error: invalid partition specified: nope", "hydra.launcher.partition=nope"),
    ("sbatch: error: Batch job submission failed: Invalid account or account/partition combination specified",
     "hydra.launcher.account=proj"),
    ("sbatch: error: Batch job submission failed: Invalid qos specification", "hydra.launcher.qos=high"),
])
def test_queue_setting_slurm_refuses_is_named(refusal, named, tiny_model, tmp_path, monkeypatch, capsys):
    """What ``sbatch --test-only`` says (a stand-in sbatch here; the real cluster: tests/slurm/) becomes one line
    naming the launcher field, before anything is written or submitted."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(f"#!/bin/sh\ncat > /dev/null\necho '{refusal}' >&2\nexit 1\n")
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    for tool in ("sbatch", "srun"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    line = _error(["-m", f"model.path={tiny_model}", f"sweep_dir={tmp_path / 'sweep'}", "sampler.steps=1,2",
                   "hydra/launcher=submitit_slurm", "hydra.launcher.partition=nope", "hydra.launcher.account=proj",
                   "hydra.launcher.qos=high"], capsys)
    assert line.startswith(f"error: {named}: Slurm would refuse the job: ") and refusal.split("error: ")[1] in line
    assert not (tmp_path / "sweep").exists()
