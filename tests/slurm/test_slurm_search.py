"""The Pareto search (``illada-sweep -m +ablation=NAME``, hydra/sweeper=illada_pareto) with its trials as Slurm jobs
through ``hydra/launcher=submitit_slurm`` on the real one-node cluster."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from optuna.trial import TrialState

from illada.store import SweepStore
from tests.search_fixtures import ROOT, load_study, run_search, search_args, write_search
from tests.sweep_fixtures import tiny_model  # noqa: F401 -- fixture

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.usefixtures("slurm_cluster")]

SLURM = ["hydra/launcher=submitit_slurm", "hydra.launcher.mem_gb=1", "hydra.launcher.cpus_per_task=1",
         "hydra.launcher.gpus_per_node=1", "hydra.launcher.timeout_min=10"]


def test_search_runs_each_trial_as_a_slurm_job(tiny_model, tmp_path):
    conf = tmp_path / "conf"
    write_search(conf, n_trials=4, max_in_flight=2)
    run_search(search_args(tiny_model, tmp_path / "sweep", conf, "tiny", *SLURM), timeout=300)
    study = load_study(tmp_path / "sweep")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 4
    store = SweepStore(tmp_path / "sweep")
    launched = [t for t in study.trials if not t.user_attrs.get("cache_hit")]
    for t in launched:  # the trial's job id is the Slurm job that wrote its record
        rec = store.record(t.user_attrs["key"])
        assert rec["provenance"]["slurm_job_id"] == t.user_attrs["job_id"]
    assert store.status().gpu_hours > 0  # each job saw its (fake) GPU


def test_cancelled_trial_job_is_fail_with_the_slurm_state(tiny_model, tmp_path):
    conf = tmp_path / "conf"
    write_search(conf, n_trials=2, max_in_flight=1, space={"sampler.seed": {"choices": [0, 1, 2, 3, 4]}},
                 enqueue=[{"sampler.seed": 0}])
    args = search_args(tiny_model, tmp_path / "sweep", conf, "tiny", *SLURM, "task.limit=3000", "batch_size=1",
                       "sampler.temperature=1.0")
    proc = subprocess.Popen([sys.executable, "-m", "sweeps.app", "-m", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    store = SweepStore(tmp_path / "sweep")
    end = time.time() + 120
    marker = None
    while marker is None and time.time() < end:  # the first trial's job has started its point
        markers = list(store.running_dir.glob("*.json")) if store.running_dir.is_dir() else []
        marker = store.running(markers[0].stem) if markers else None
        time.sleep(0.2)
    assert marker is not None, "the first trial never started"
    subprocess.run(["scancel", marker["job_id"]], check=True)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    study = load_study(tmp_path / "sweep")
    first = study.trials[0]
    assert first.state == TrialState.FAIL and "CANCELLED" in first.user_attrs["fail_reason"], first.user_attrs
    assert store.record(first.user_attrs["key"])["status"] == "failed"
    assert len(study.trials) == 2 and study.trials[-1].state == TrialState.COMPLETE  # the search went on
