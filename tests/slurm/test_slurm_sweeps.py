"""Grid sweeps (``illada-sweep -m``, hydra/sweeper=illada_grid) through ``hydra/launcher=submitit_slurm`` on a real
one-node cluster (fake GPUs, accounting), tiny model."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from illada.store import SweepStore
from sweeps.app import run
from tests.sweep_fixtures import tiny_model  # noqa: F401 -- fixture

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.usefixtures("slurm_cluster")]

SLURM = ["hydra/launcher=submitit_slurm", "hydra.launcher.mem_gb=1", "hydra.launcher.cpus_per_task=1",
         "hydra.launcher.gpus_per_node=1", "hydra.launcher.timeout_min=10", "hydra.sweeper.poll_s=1",
         "hydra.sweeper.lost_after_s=15"]


def _sweep(model: Path, sweep_dir: Path, *extra: str) -> list[str]:
    return [f"model.path={model}", f"sweep_dir={sweep_dir}", "task.limit=8", "hydra.sweeper.plot=false",
            "sampler.steps=8,4", "sampler.block_length=8,4,2", *SLURM, *extra]


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "sweeps.app", "-m", *args]


def _driver(args: list[str]) -> subprocess.Popen:
    """The sweep command in its own process, so that the test can act on its jobs meanwhile."""
    return subprocess.Popen(_command(*args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for(predicate, timeout: float, what: str):
    end = time.time() + timeout
    while time.time() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_sweep_collects_every_record_across_split_arrays(tiny_model, tmp_path):
    # 6 points, 2 per job -> 3 array tasks; max_array_size=2 forces two arrays
    store = run(_sweep(tiny_model, tmp_path, "hydra.sweeper.points_per_job=2", "hydra.sweeper.max_array_size=2"))
    st = store.status()
    assert len(st.done) == 6 and not (st.failed or st.missing or st.running)
    jobs = [json.loads(p.read_text()) for p in store.jobs_dir.glob("*.json")]
    assert len(jobs) == 3 and len({j["job_id"].split("_")[0] for j in jobs}) == 2
    assert all(j["gpus"] == 1 and j["log_path"] for j in jobs) and st.gpu_hours > 0  # Slurm's (fake) GPU
    assert {r["provenance"]["slurm_job_id"] is not None for r in store.records()} == {True}


def test_cancelled_job_leaves_failure_records_and_rerun_completes_only_those(tiny_model, tmp_path):
    args = _sweep(tiny_model, tmp_path, "hydra.sweeper.points_per_job=2", "hydra.launcher.array_parallelism=1")
    driver = _driver(args)
    store = SweepStore(tmp_path)

    def a_running_marker():
        markers = list(store.running_dir.glob("*.json")) if store.running_dir.is_dir() else []
        return json.loads(markers[0].read_text()) if markers else None

    # array_parallelism=1: task 0 runs while tasks 1 and 2 wait; cancel the last one
    first = _wait_for(a_running_marker, 120, "the first job to start a point")
    victim = f"{first['job_id'].split('_')[0]}_2"
    subprocess.run(["scancel", victim], check=True)
    out, _ = driver.communicate(timeout=240)
    assert driver.returncode == 0, out
    st = store.status()
    assert (len(st.done), len(st.failed)) == (4, 2), out
    for key in st.failed:
        err = store.record(key)["error"]
        assert f"job {victim} " in err["message"] and err["log_path"]  # CANCELLED, or lost while pending
    done_before = {k: store.records_dir.joinpath(f"{k}.json").stat().st_mtime_ns for k in st.done}

    # the same command does nothing more; with --rerun-failed it runs just the cancelled points
    assert "running 0 in 0 jobs" in subprocess.run(_command(*args), capture_output=True, text=True,
                                                   check=True).stdout
    rerun = subprocess.run(_command(*args, "--rerun-failed"), capture_output=True, text=True, check=True).stdout
    assert "4 points already have a record; running 2 in 1 jobs" in rerun
    st = store.status()
    assert len(st.done) == 6 and not st.failed
    assert all(store.records_dir.joinpath(f"{k}.json").stat().st_mtime_ns == t for k, t in done_before.items())


def test_job_killed_while_running_leaves_failure_records(tiny_model, tmp_path):
    driver = _driver(_sweep(tiny_model, tmp_path, "hydra.sweeper.points_per_job=6", "task.limit=2000"))
    store = SweepStore(tmp_path)
    marker = _wait_for(lambda: next((json.loads(p.read_text()) for p in store.running_dir.glob("*.json")), None)
                       if store.running_dir.is_dir() else None, 120, "a point to start")
    subprocess.run(["scancel", marker["job_id"]], check=True)
    out, _ = driver.communicate(timeout=240)
    st = store.status()
    assert st.failed and not st.running and not st.missing, out  # points finished before the kill stay done
    assert all("CANCELLED" in store.record(k)["error"]["message"] for k in st.failed)


def test_job_signalled_before_its_time_limit_is_requeued_and_finishes(tiny_model, tmp_path):
    # What slurmctld does --signal's delay before the time limit, done by hand once the first point has its
    # record: USR2 to the job's processes. submitit then checkpoints the group and requeues the job, and the
    # requeued attempt skips the points that have records. 36 points of ~1 s each leave the first attempt
    # far from finished when the signal comes, however slow the machine (a slower machine only widens it).
    driver = _driver(_sweep(tiny_model, tmp_path, "sampler.seed=0,1,2,3,4,5", "hydra.sweeper.points_per_job=36",
                            "task.limit=1000", "batch_size=4", "hydra.launcher.max_num_timeout=5"))
    store = SweepStore(tmp_path)
    first = _wait_for(lambda: next((json.loads(p.read_text()) for p in store.jobs_dir.glob("*.0.json")), None)
                      if store.jobs_dir.is_dir() else None, 180, "the first point of the first attempt")
    subprocess.run(["scancel", "--signal=USR2", first["job_id"]], check=True)
    out, _ = driver.communicate(timeout=600)
    assert driver.returncode == 0, out
    st = store.status()
    assert len(st.done) == 36 and not st.failed, out
    attempts = {json.loads(p.read_text())["attempt"]: json.loads(p.read_text())["points"]
                for p in store.jobs_dir.glob("*.json")}
    assert sorted(attempts) == [0, 1] and 0 < attempts[0] < 36 and attempts[0] + attempts[1] == 36, attempts
    sacct_cmd = ["sacct", "-X", "-D", "-n", "-P", "-o", "JobID,State", "-j", first["job_id"]]
    history = lambda: subprocess.run(sacct_cmd, capture_output=True, text=True).stdout  # noqa: E731
    # accounting lags the job's end by a few seconds
    sacct = _wait_for(lambda: (h := history()).strip().endswith("COMPLETED") and h, 30, "sacct to record the end")
    assert "REQUEUED" in sacct or "PREEMPTED" in sacct, sacct
