"""Issue 15, sweep side: local jobs capped at cores // threads per job (item 3), an unnamed sweep in a directory
of its own with the command that resumes it (item 6), the front as a table at the end of a sweep (item 9)."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pandas as pd
import pytest
from optuna.trial import TrialState

import illada.launch
import illada.timing
from analysis.load import load_sweep
from illada.store import SweepStore
from sweeps.app import main, run
from sweeps.grid_sweeper import points_per_job_for
from tests.search_fixtures import ROOT, load_study, search_args, write_search
from tests.sweep_fixtures import points, tiny_model  # noqa: F401 -- fixture

SWEEP = ["task.limit=4", "sampler.gen_length=8", "sampler.block_length=8"]


def _sweep(capsys, *args: str) -> str:
    """Run ``illada-sweep -m ARGS`` in this process; what it printed."""
    main(["-m", *args, "hydra.sweeper.plot=false"])
    return capsys.readouterr().out


# ---------------------------------------------------------------------------- item 6: unnamed sweeps' directories
def test_unnamed_sweeps_get_their_own_directory_and_the_command_that_resumes_them(tiny_model, tmp_path, monkeypatch,
                                                                                   capsys):
    monkeypatch.setenv("ILLADA_SWEEP_ROOT", str(tmp_path))
    first = _sweep(capsys, f"model.path={tiny_model}", *SWEEP, "sampler.steps=8,4,2")
    second = _sweep(capsys, f"model.path={tiny_model}", *SWEEP, "sampler.steps=8,4", "task.limit=2")
    dirs = sorted((tmp_path / "adhoc").iterdir())
    assert len(dirs) == 2 and not (tmp_path / "default").exists()  # not one shared `default` store
    assert f"sweep without a name: its records go to {dirs[0]}" in first
    assert "3 points: 3 done" in first and "2 points: 2 done" in second and "superseded" not in second
    assert len(load_sweep(dirs[1]).points) == 2  # the plot and the table of the second sweep: its 2 points

    # the printed command resumes the sweep in its directory (here: nothing left to run)
    line = next(x for x in second.splitlines() if x.startswith("to resume this sweep"))
    command = shlex.split(line.split(": ", 1)[1])
    assert command[:2] == ["illada-sweep", "-m"] and f"sweep_dir={dirs[1]}" in command
    again = _sweep(capsys, *command[2:])
    assert "2 points already have a record; running 0" in again and "sweep without a name" not in again
    assert len(list((tmp_path / "adhoc").iterdir())) == 2


def test_a_named_sweep_keeps_its_directory_and_counts_only_the_current_plan(tiny_model, tmp_path, capsys):
    args = [f"model.path={tiny_model}", f"sweep_dir={tmp_path / 'sweep'}", *SWEEP]
    _sweep(capsys, *args, "sampler.steps=8,4,2,1")
    out = _sweep(capsys, *args, "sampler.steps=8,4", "task.limit=2")  # same dir: another plan, other item limit
    assert "\n2 points: 2 done" in out
    assert "4 superseded" in out and "to resume" not in out and not (tmp_path / "adhoc").exists()
    points = load_sweep(tmp_path / "sweep").points
    assert set(points["key"]) == set(SweepStore(tmp_path / "sweep").current_plan())
    assert set(points["limit"]) == {2}  # one front over one item limit


def test_interrupted_unnamed_sweep_names_its_resume_command(tiny_model, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ILLADA_SWEEP_ROOT", str(tmp_path))

    def ctrl_c(groups):
        raise KeyboardInterrupt

    monkeypatch.setattr("illada.runner.run_inprocess", ctrl_c)
    with pytest.raises(SystemExit) as stop:
        main(["-m", f"model.path={tiny_model}", *SWEEP, "sampler.steps=8,4"])
    assert stop.value.code == 130
    line = capsys.readouterr().err.strip().splitlines()[-1]
    (adhoc,) = (tmp_path / "adhoc").iterdir()
    assert line.startswith("interrupted: ") and "resume with: illada-sweep -m " in line
    assert line.endswith(f"sweep_dir={adhoc}")


# ------------------------------------------------------------------------------------- item 9: the front as a table
def test_a_sweep_ends_with_the_front_table_its_files_and_the_wall_time(tiny_model, tmp_path, capsys):
    main(["-m", f"model.path={tiny_model}", f"sweep_dir={tmp_path / 'sweep'}", *SWEEP, "sampler.steps=8,4,2"])
    last = capsys.readouterr().out.strip().splitlines()
    root = tmp_path / "sweep"
    assert last[-1].startswith("sweep wall time: ")
    assert last[-2] == (f"wrote: Pareto plot {root / 'pareto.png'}; front table {root / 'front.csv'}, "
                        f"{root / 'front.md'}")
    assert any(x.startswith("| ") and "latency" in x for x in last[:-2])  # the table itself, before them
    table = pd.read_csv(root / "front.csv")
    assert len(table) >= 1 and {"setting", "accuracy_pct", "latency_p50_ms", "throughput_items_per_s",
                                "nfe_per_sample"} <= set(table.columns)
    assert set(" ".join(table["keys"]).split()) <= set(SweepStore(root).current_plan())
    assert (root / "front.md").read_text().startswith("|")


# ------------------------------------------------------------------------------ item 3: local jobs at most cap
def test_points_are_grouped_into_at_most_the_cap_of_jobs(tiny_model):
    same = points(tiny_model, steps=(8, 4, 2, 1, 8, 4, 2), limit=3) + points(tiny_model, steps=(8, 4), limit=5)
    assert points_per_job_for(same, 1, 2) == 5  # 9 points of one model: 2 jobs
    assert points_per_job_for(same, 16, 2) == 16  # fits already: the setting stays
    assert points_per_job_for(same[:4], 1, 7) == 1


class _JobsAtOnce:
    """Counts, at each submission, the local jobs already submitted that are still running plus the new ones;
    and, from a thread watching the store, the jobs holding a running marker at the same time."""

    def __init__(self, monkeypatch, store_root: Path) -> None:
        self.jobs: list = []
        self.most = 0
        self.most_markers = 0
        real = illada.launch.submit

        def submit(executor, groups, max_array_size):
            running = [j for j in self.jobs if not j.done()]
            out = real(executor, groups, max_array_size)
            self.jobs += [s.job for s in out]
            self.most = max(self.most, len(running) + len(out))
            return out

        monkeypatch.setattr(illada.launch, "submit", submit)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, args=(SweepStore(store_root),), daemon=True)

    def _watch(self, store: SweepStore) -> None:
        while not self._stop.wait(0.05):
            held = set()
            for marker in store.running_dir.glob("*.json") if store.running_dir.is_dir() else ():
                info = store.running(marker.stem) or {}
                held.add(info.get("job_id"))
            self.most_markers = max(self.most_markers, len(held))

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


@pytest.mark.slow
def test_a_local_sweep_never_runs_more_jobs_than_cores_per_thread(tiny_model, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(illada.timing, "cpu_count", lambda: 2)  # a 2-core host, 1 thread per job: 2 at a time
    root = tmp_path / "sweep"
    args = [f"model.path={tiny_model}", f"sweep_dir={root}", *SWEEP, "sampler.steps=8,4,2,1",
            "sampler.remasking=low_confidence,random", "hydra/launcher=submitit_local",
            "hydra.sweeper.points_per_job=1", "hydra.sweeper.plot=false", "hydra.sweeper.poll_s=0.2"]
    with _JobsAtOnce(monkeypatch, root) as seen:
        store = run(args)
    out = capsys.readouterr().out
    assert "local jobs: at most 2 at a time (2 cores / 1 thread per job); hydra.sweeper.max_in_flight=N" in out
    assert "running 8 in 2 jobs (local)" in out and "points_per_job 4" in out
    assert len(store.status().done) == 8
    assert seen.most <= 2 and seen.most_markers <= 2 and len(seen.jobs) == 2


@pytest.mark.slow
def test_more_models_than_the_cap_run_in_waves(tiny_model, tmp_path, monkeypatch, capsys):
    other = tmp_path / "other_model"
    shutil.copytree(tiny_model, other)  # another checkpoint: another model, its own job
    monkeypatch.setattr(illada.timing, "cpu_count", lambda: 1)
    root = tmp_path / "sweep"
    args = [f"sweep_dir={root}", *SWEEP, f"model.path={tiny_model},{other}", "sampler.steps=8,4",
            "hydra/launcher=submitit_local", "hydra.sweeper.plot=false", "hydra.sweeper.poll_s=0.2"]
    with _JobsAtOnce(monkeypatch, root) as seen:
        store = run(args)
    out = capsys.readouterr().out
    assert "local jobs: at most 1 at a time (1 cores / 1 thread per job)" in out
    assert "(wave 2 of 2)" in out and len(store.status().done) == 4
    assert seen.most == 1 and seen.most_markers <= 1 and len(seen.jobs) == 2


def test_max_in_flight_sets_the_cap_and_says_when_it_oversubscribes(tiny_model, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(illada.timing, "cpu_count", lambda: 2)
    base = [f"model.path={tiny_model}", f"sweep_dir={tmp_path / 'sweep'}", *SWEEP, "sampler.steps=8,4,2,1",
            "hydra/launcher=submitit_local", "hydra.sweeper.points_per_job=1", "--dry-run"]
    from sweeps.app import grid_sweeper

    with grid_sweeper(base[:-1] + ["hydra.sweeper.max_in_flight=3"]) as (sweeper, _):
        assert sweeper.local_jobs(1) == 3
    assert "at most 3 at a time (hydra.sweeper.max_in_flight); more than the 2 that fit on 2 cores" in \
        capsys.readouterr().out
    with grid_sweeper(base[:-1] + ["threads=null"]) as (sweeper, _):
        assert sweeper.local_jobs(None) == 1  # torch's default threads: every core per job
    with pytest.raises(SystemExit, match=r"^error: hydra.sweeper.max_in_flight=0: must be a positive integer"):
        main(["-m", *base[:-1], "hydra.sweeper.max_in_flight=0", "hydra.sweeper.plot=false"])


@pytest.mark.slow
def test_a_local_search_runs_one_trial_at_a_time_on_one_core(tiny_model, tmp_path):
    conf = tmp_path / "conf"
    write_search(conf, n_trials=3, max_in_flight=None)
    args = search_args(tiny_model, tmp_path / "sweep", conf, "tiny", "hydra/launcher=submitit_local")
    out = subprocess.run(["taskset", "-c", "0", sys.executable, "-m", "sweeps.app", "-m", *args], cwd=ROOT,
                         capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert "local jobs: at most 1 at a time (1 cores / 1 thread per job)" in out.stdout + out.stderr
    trials = sorted((t for t in load_study(tmp_path / "sweep").trials if t.state == TrialState.COMPLETE
                     and not t.user_attrs.get("cache_hit")), key=lambda t: t.datetime_start)
    assert len(trials) >= 2
    for before, after in zip(trials, trials[1:]):
        assert after.datetime_start >= before.datetime_complete  # never two jobs at once
    last = (out.stdout.strip().splitlines() or [""])[-1]
    assert last.startswith("sweep wall time: ")
    assert (tmp_path / "sweep" / "front.csv").exists() and (tmp_path / "sweep" / "front.md").exists()


# ------------------------------------------------------------------------------------ a scoring ablation's end
@pytest.mark.parametrize("n_items, warned", [(12, True), (40, False)])
def test_scoring_ablation_ends_in_the_paired_comparison_not_a_front(n_items, warned, tmp_path, capsys):
    """Likelihood vs confidence on the same items: the paired table (with its too-few-items warning there),
    not a latency front whose hypervolume is 0."""
    from analysis.synthetic import write_scoring_sweep
    from sweeps.grid_sweeper import GridSweeper, GridSweeperConf

    root = write_scoring_sweep(tmp_path / "scoring", n_items=n_items)
    sweeper = GridSweeper(**{k: v for k, v in vars(GridSweeperConf()).items()})
    sweeper.root = root
    sweeper.report_end(0.0)
    out = capsys.readouterr().out
    assert "Scoring ablation: likelihood vs confidence" in out and "Δ conf − lik (pts) [95% CI]" in out
    assert "hypervolume" not in out and not (root / "front.md").exists()
    assert (root / "scoring_ablation.md").read_text() in out
    assert ("warning: too few items: 3 of 3 pairs have fewer than 30 paired items" in out) == warned, out
    assert f"scoring ablation {root / 'scoring_ablation.md'}" in out
