"""Jobs that Slurm ends early, on a real one-node cluster: every point of a cancelled array gets its failure
record within a few polls (not one per 15 s), and the record names the state Slurm gives (CANCELLED) and the
exit code, also for a job cancelled minutes into a sweep (not "left the queue").

Run with ``-s`` to see the figures: ``ILLADA_SLURM_KEEP=1 pytest -s -m slurm tests/slurm/test_slurm_faults.py``.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from illada.slurm import slurm_accounting, slurm_queue
from illada.store import SweepStore
from tests.slurm.test_slurm_sweeps import SLURM, _driver, _wait_for
from tests.sweep_fixtures import tiny_model  # noqa: F401 -- fixture

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.usefixtures("slurm_cluster")]

POLL_S = 1.0


def _args(model, sweep_dir, *extra: str, lost_after_s: float = 600) -> list[str]:
    """The sweep command; ``lost_after_s`` long: accounting, not the deadline, is to say how jobs ended."""
    slurm = [o for o in SLURM if not o.startswith(("hydra.sweeper.poll_s=", "hydra.sweeper.lost_after_s="))]
    return [f"model.path={model}", f"sweep_dir={sweep_dir}", "task.limit=8", "hydra.sweeper.plot=false", *slurm,
            f"hydra.sweeper.poll_s={POLL_S:g}", f"hydra.sweeper.lost_after_s={lost_after_s:g}", *extra]


def _a_marker(store: SweepStore) -> dict | None:
    """A running marker (some task has started a point), or None."""
    paths = list(store.running_dir.glob("*.json")) if store.running_dir.is_dir() else []
    for path in paths:
        try:
            return json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):  # its point finished meanwhile
            continue
    return None


def test_scancel_of_a_100_task_array_records_every_point_within_a_few_polls(tiny_model, tmp_path):
    driver = _driver(_args(tiny_model, tmp_path, "sampler.seed=range(0,100)", "hydra.sweeper.points_per_job=1"))
    store = SweepStore(tmp_path)
    array = _wait_for(lambda: (m := _a_marker(store)) and m["job_id"].split("_")[0], 300, "a task to start")
    cancelled = time.time()
    subprocess.run(["scancel", array], check=True)
    tasks = [f"{array}_{i}" for i in range(100)]
    # when Slurm's accounting says every task has ended (a running task gets KillWait to stop)
    _wait_for(lambda: (acc := slurm_accounting(tasks)) and all(t in acc and acc[t].ended for t in tasks), 120,
              "sacct to account every task as ended")
    ended = time.time()
    out, _ = driver.communicate(timeout=300)
    assert driver.returncode == 0, out
    st = store.status()
    assert len(st.done) + len(st.failed) == 100 and len(st.failed) >= 90 and not (st.missing or st.running), out
    for key in st.failed:
        err = store.record(key)["error"]
        assert "ended with Slurm state CANCELLED, exit code" in err["message"] and err["log_path"], err["message"]
    recorded = max(store.records_dir.joinpath(f"{key}.json").stat().st_mtime for key in st.failed)
    print(f"\nscancel of a 100-task array: the last of {len(st.failed)} failure records written "
          f"{recorded - cancelled:.1f} s after scancel, {recorded - ended:+.1f} s from sacct accounting every task "
          f"as ended (poll_s={POLL_S:g})")
    # before, the pending tasks took 15 s each (~25 min)
    assert recorded - ended < 2 * POLL_S + 10, out


def test_job_cancelled_minutes_into_a_sweep_names_cancelled_and_its_exit_code(tiny_model, tmp_path):
    # submitit refreshes sacct at most every half of the sweep's age: ~45 s in, it would not have seen the
    # end before lost_after_s (15 s here) passed, and the record said "left the queue"
    driver = _driver(_args(tiny_model, tmp_path, "hydra.sweeper.points_per_job=36", "task.limit=2000", "batch_size=4",
                           "sampler.seed=0,1,2,3,4,5", "sampler.steps=8,4", "sampler.block_length=8,4,2",
                           lost_after_s=15))
    store = SweepStore(tmp_path)
    marker = _wait_for(lambda: _a_marker(store), 300, "a point to start")
    time.sleep(45)
    assert driver.poll() is None, "the job finished before it could be cancelled"
    subprocess.run(["scancel", marker["job_id"]], check=True)
    out, _ = driver.communicate(timeout=300)
    assert driver.returncode == 0, out
    st = store.status()
    assert st.failed and not st.running and not st.missing, out
    for key in st.failed:
        message = store.record(key)["error"]["message"]
        assert f"job {marker['job_id']} ended with Slurm state CANCELLED, exit code " in message, message
        assert "left the queue" not in message


def test_driver_restarted_while_its_old_array_runs_evaluates_each_point_once(tiny_model, tmp_path):
    # The old driver dies, its job lives on (held still by `scontrol suspend` while the new driver's job
    # runs, so that both surely overlap): the new job leaves the point the old one holds to it, waits for
    # its record, and the old job, resumed, finds every other point recorded.
    # a suspended job's heartbeat is silent too: a bound longer than the test keeps its point its own
    args = _args(tiny_model, tmp_path, "sampler.seed=0,1", "sampler.steps=8,4", "sampler.block_length=8,4,2",
                 "hydra.sweeper.points_per_job=12", "hydra.sweeper.stale_after_s=3600")
    old = _driver(args)
    store = SweepStore(tmp_path)
    job_id = _wait_for(lambda: _a_marker(store), 300, "the old driver's job to start a point")["job_id"]
    held = _suspend_holding_a_point(job_id, store)
    old.kill()  # the driver dies; its job does not
    old.communicate()
    new = _driver(args)
    try:
        others = [k for k in store.planned() if k != held["key"]]
        _wait_for(lambda: all(store.has_record(k) for k in others), 300, "the new job to evaluate the other points")
        assert new.poll() is None and not store.has_record(held["key"])  # waiting for the old job's point
        subprocess.run(["scontrol", "resume", job_id], check=True)
        out, _ = new.communicate(timeout=300)
    finally:  # a failed test leaves no suspended job behind
        subprocess.run(["scontrol", "resume", job_id], capture_output=True)
        new.kill()
    assert new.returncode == 0, out
    _wait_for(lambda: (queued := slurm_queue()) is not None and job_id not in queued, 120, "the old job to end")
    st = store.status()
    assert len(st.done) == 12 and not (st.failed or st.running or st.missing), out
    evaluations = {p.name: json.loads(p.read_text())["points"] for p in store.jobs_dir.glob("*.json")}
    assert len(evaluations) == 2 and sum(evaluations.values()) == 12, evaluations


def _suspend_holding_a_point(job_id: str, store: SweepStore) -> dict:
    """Suspend the job at a moment it holds a point (not between two); the marker of that point."""
    for _ in range(20):
        subprocess.run(["scontrol", "suspend", job_id], check=True)
        time.sleep(0.5)  # its processes have stopped
        if marker := _a_marker(store):
            return marker
        subprocess.run(["scontrol", "resume", job_id], check=True)
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} never held a point when suspended")
