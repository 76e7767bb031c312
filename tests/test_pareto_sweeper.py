"""The Pareto search (``illada-sweep -m +ablation=NAME``, hydra/sweeper=illada_pareto) end to end on the tiny
random model, as a real Hydra app."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from optuna.trial import TrialState

from illada.store import SweepStore
from sweeps.pareto_sweeper import override
from tests.search_fixtures import ROOT, load_study, run_search, search_args, write_search
from tests.sweep_fixtures import tiny_model  # noqa: F401 -- fixture


@pytest.fixture
def conf(tmp_path) -> Path:
    return tmp_path / "conf"


def test_override_grammar():
    assert override("sampler.threshold", None) == "sampler.threshold=null"
    assert override("model.chat", True) == "model.chat=true"
    assert override("sampler.threshold", 0.85) == "sampler.threshold=0.85"
    assert override("model.path", "/a/b c") == "model.path='/a/b c'"


@pytest.mark.slow
def test_search_in_process_end_to_end_and_resume(tiny_model, tmp_path, conf):
    write_search(conf, enqueue=[{"sampler.steps": 8, "sampler.remasking": "low_confidence"}])
    args = search_args(tiny_model, tmp_path / "sweep", conf)
    run_search(args)
    study = load_study(tmp_path / "sweep")
    assert study.metric_names == ["accuracy", "nfe_per_sample"]
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 6
    assert study.trials[0].params == {"sampler.steps": 8, "sampler.remasking": "low_confidence"}  # enqueued first
    store = SweepStore(tmp_path / "sweep")
    for t in study.trials:  # each trial's point has its record; nfe per sample is the step count here
        rec = store.record(t.user_attrs["key"])
        assert rec["status"] == "ok" and t.values[1] == rec["cost"]["nfe_per_sample"] == t.params["sampler.steps"]
        assert rec["settings"]["model"] == str(tiny_model)
    assert (tmp_path / "sweep" / "trials" / "0" / ".hydra" / "overrides.yaml").exists()  # Hydra's job dir per trial
    results = yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())
    assert results["trials"] == 6 and results["front"]
    assert {f["number"] for f in results["front"]} <= {t.number for t in study.trials}

    # the same command with a larger budget continues the study; points already computed are cache hits
    out = run_search(args + ["hydra.sweeper.n_trials=9"])
    study = load_study(tmp_path / "sweep")
    assert len(study.trials) == 9 and study.trials[0].params["sampler.steps"] == 8
    assert "9 trials" in out.stdout + out.stderr
    assert len(store.records()) == len({t.user_attrs["key"] for t in study.trials})  # one record per point


@pytest.mark.slow
def test_resume_runs_new_points_and_a_budget_in_evaluations(tiny_model, tmp_path, conf):
    """The same command again with a bigger budget evaluates points the study has not seen (it used to replay
    its first trials as cache hits); `n_evaluations` counts distinct points."""
    write_search(conf, n_trials=4, sampler="tpe")
    args = search_args(tiny_model, tmp_path / "sweep", conf)
    run_search(args)
    out = run_search(args + ["hydra.sweeper.n_trials=null", "hydra.sweeper.n_evaluations=8"])
    study = load_study(tmp_path / "sweep")
    keys = [t.user_attrs.get("key") for t in study.trials]
    assert len(keys) == len(set(keys)) == 8  # the whole 8-point space, no point twice
    assert "4 launched, 0 cache hits, 0 repeats" in out.stdout + out.stderr, out.stderr[-2000:]
    results = yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())
    assert results["evaluations"] == 8 and results["repeats"] == 0


@pytest.mark.slow
def test_trials_run_as_submitit_jobs_two_in_flight(tiny_model, tmp_path, conf):
    write_search(conf, n_trials=4)
    run_search(search_args(tiny_model, tmp_path / "sweep", conf, "tiny", "hydra/launcher=submitit_local",
                           "hydra.launcher.timeout_min=5"))
    study = load_study(tmp_path / "sweep")
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(done) == 4
    launched = [t for t in done if not t.user_attrs.get("cache_hit")]
    assert launched and all("job_id" in t.user_attrs for t in launched)
    # asynchronous: the second job was submitted before the first one finished
    starts = sorted((t.datetime_start, t.datetime_complete) for t in launched)
    assert len(starts) < 2 or starts[1][0] < starts[0][1]
    store = SweepStore(tmp_path / "sweep")
    jobs = [json.loads(p.read_text()) for p in store.jobs_dir.glob("*.json")]
    assert len(jobs) == len(launched) and len({j["pid"] for j in jobs}) == len(jobs)  # one process per trial


def test_failing_trial_is_fail_with_its_cause_and_the_search_goes_on(tiny_model, tmp_path, conf):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # truncated: the config reads, the weights do not load
    write_search(conf, n_trials=5, space={"model.path": {"choices": [str(tiny_model), str(broken)]},
                                          "sampler.steps": {"choices": [2, 4, 8]}},
                 enqueue=[{"model.path": str(broken), "sampler.steps": 8}])
    run_search(search_args(tiny_model, tmp_path / "sweep", conf))
    study = load_study(tmp_path / "sweep")
    first = study.trials[0]
    assert first.state == TrialState.FAIL and first.user_attrs["fail_reason"]
    rec = SweepStore(tmp_path / "sweep").record(first.user_attrs["key"])
    assert rec["status"] == "failed" and rec["error"]["message"] in first.user_attrs["fail_reason"]
    assert len(study.trials) == 5 and any(t.state == TrialState.COMPLETE for t in study.trials)
    assert all(t.state == TrialState.FAIL for t in study.trials if t.params["model.path"] == str(broken))


def test_constraint_from_yaml_excludes_a_region(tiny_model, tmp_path, conf):
    write_search(conf, n_trials=6, constraints={"nfe_per_sample": {"max": 4}},
                 enqueue=[{"sampler.steps": 8, "sampler.remasking": "low_confidence"},
                          {"sampler.steps": 2, "sampler.remasking": "low_confidence"}])
    run_search(search_args(tiny_model, tmp_path / "sweep", conf))
    study = load_study(tmp_path / "sweep")
    from illada.search import feasible, pareto_front

    assert not feasible(study.trials[0]) and feasible(study.trials[1])
    front = pareto_front(study)
    assert front and all(t.values[1] <= 4 for t in front)
    results = yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())
    assert all(f["values"]["nfe_per_sample"] <= 4 for f in results["front"])


@pytest.mark.parametrize("sweeper, named", [
    ({"space": {"sampler.stepz": {"choices": [1, 2]}}}, "hydra.sweeper.space.sampler.stepz=1"),
    ({"objectives": ["accuracy", "speed"]}, "search.objectives.speed"),
    ({"sampler": "cmaes"}, "search.sampler='cmaes'"),
    ({"sampler_options": {"population": 4}, "sampler": "nsga2"}, "search.sampler_options.population"),
    ({"constraints": {"accuracy": {"above": 0.5}}}, "search.constraints.accuracy.above"),
])
def test_bad_search_config_is_named_before_any_trial(tiny_model, tmp_path, conf, sweeper, named):
    write_search(conf, **sweeper)
    out = run_search(search_args(tiny_model, tmp_path / "sweep", conf), check=False)
    assert out.returncode != 0 and named in out.stderr, out.stderr[-2000:]
    assert not (tmp_path / "sweep" / "records").exists() and not (tmp_path / "sweep" / "trials").exists()


def test_sweep_override_on_the_command_line_is_refused(tiny_model, tmp_path, conf):
    write_search(conf)
    out = run_search(search_args(tiny_model, tmp_path / "sweep", conf, "tiny", "sampler.block_length=8,4"),
                     check=False)
    assert out.returncode != 0 and "'sampler.block_length=8,4'" in out.stderr


@pytest.mark.slow
def test_resume_after_the_controller_is_killed(tiny_model, tmp_path, conf):
    """SIGKILL the controller while trials run as submitit processes; the same command settles every trial left
    RUNNING (told from its record, re-attached to its still-running job, or FAIL with the cause) and finishes."""
    write_search(conf, n_trials=6, space={"sampler.steps": {"choices": [1, 2, 4, 8]},
                                          "sampler.seed": {"choices": [0, 1, 2, 3, 4, 5]}})
    args = search_args(tiny_model, tmp_path / "sweep", conf, "tiny", "hydra/launcher=submitit_local",
                       "task.limit=300", "batch_size=1", "sampler.temperature=1.0")
    proc = subprocess.Popen([sys.executable, "-m", "sweeps.app", "-m", *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    journal = tmp_path / "sweep" / "optuna.journal"
    end = time.time() + 120
    while time.time() < end:  # wait until two trials are in flight
        if journal.exists() and journal.stat().st_size and len(
                load_study(tmp_path / "sweep").get_trials(states=(TrialState.RUNNING,))) >= 2:
            break
        time.sleep(0.2)
    else:
        proc.kill()
        raise AssertionError("the search never had two trials in flight")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    left = {t.number for t in load_study(tmp_path / "sweep").get_trials(states=(TrialState.RUNNING,))}
    assert len(left) >= 2

    out = run_search(args)
    study = load_study(tmp_path / "sweep")
    assert len(study.trials) == 6 and not study.get_trials(states=(TrialState.RUNNING,))
    for t in study.trials:
        if t.number in left and t.state == TrialState.FAIL:
            assert "controller stopped" in t.user_attrs["fail_reason"] or "stopped without a record" in \
                t.user_attrs["fail_reason"]
        elif t.number not in left:
            assert t.state == TrialState.COMPLETE
    assert "resumed study 'tiny'" in out.stdout + out.stderr, out.stdout[-3000:]


def test_optuna_dashboard_reads_the_study(tiny_model, tmp_path, conf):
    from wsgiref.util import setup_testing_defaults

    pytest.importorskip("optuna_dashboard")
    from optuna_dashboard import wsgi
    from optuna_dashboard._storage_url import get_storage

    write_search(conf, n_trials=3)
    run_search(search_args(tiny_model, tmp_path / "sweep", conf))
    app = wsgi(get_storage(str(tmp_path / "sweep" / "optuna.journal")))  # what `optuna-dashboard PATH` serves

    def get(path: str):
        environ: dict = {"PATH_INFO": path}
        setup_testing_defaults(environ)
        status: list = []
        body = b"".join(app(environ, lambda s, h, exc=None: status.append(s)))
        assert status[0].startswith("200"), (path, status)
        return json.loads(body)

    studies = get("/api/studies")["study_summaries"]
    assert [s["study_name"] for s in studies] == ["tiny"]
    detail = get(f"/api/studies/{studies[0]['study_id']}")
    assert len(detail["trials"]) == 3 and detail["objective_names"] == ["accuracy", "nfe_per_sample"]
    assert detail["best_trials"] and all(t["state"] == "Complete" for t in detail["trials"])


def _script(name: str) -> Path:
    script = Path(sys.executable).parent / name
    if not script.exists():
        pytest.skip(f"illada is not installed in this environment (no {name} script)")
    return script


def test_console_script_from_another_directory_evaluates_one_point(tiny_model, tmp_path):
    """`illada-sweep ...` without -m: one point (a Hydra run); the entry point finds its configs from any directory."""
    out = subprocess.run([str(_script("illada-sweep")), f"model.path={tiny_model}", f"sweep_dir={tmp_path / 's'}",
                          "task.limit=2", "sampler.steps=4", f"hydra.run.dir={tmp_path / 'run'}"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    recs = SweepStore(tmp_path / "s").records()
    assert len(recs) == 1 and recs[0]["settings"]["sampler"]["steps"] == 4
    assert (tmp_path / "run" / ".hydra" / "config.yaml").exists()


def test_illada_search_is_a_deprecated_alias_of_the_pareto_sweeper(tiny_model, tmp_path, conf):
    """`illada-search search=NAME ...` still searches, through the same app, and says the new spelling once."""
    write_search(conf, n_trials=2)
    args = search_args(tiny_model, tmp_path / "sweep", conf)
    args = [("search=tiny" if a == "+ablation=tiny" else a) for a in args]
    out = subprocess.run([str(_script("illada-search")), *args], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    notes = [line for line in out.stderr.splitlines() if "deprecated" in line]
    assert len(notes) == 1 and "illada-sweep -m hydra/sweeper=illada_pareto" in notes[0] and "+ablation=tiny" in notes[0]
    assert len(load_study(tmp_path / "sweep").trials) == 2
