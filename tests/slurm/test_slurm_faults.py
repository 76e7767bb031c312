"""Jobs that Slurm ends early, on a real one-node cluster: every point of a cancelled array gets its failure
record within a few polls (not one per 15 s), and the record names the state Slurm gives (CANCELLED) and the
exit code, also for a job cancelled minutes into a sweep (not "left the queue") or while still pending. A
requeue signal while a task starts requeues it; a SIGTERM fails it only where nothing requeues it.

Run with ``-s`` to see the figures: ``ILLADA_SLURM_KEEP=1 pytest -s -m slurm tests/slurm/test_slurm_faults.py``.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from illada.slurm import slurm_accounting, slurm_queue
from illada.store import SweepStore
from tests.slurm.test_slurm_sweeps import SLURM, _command, _driver, _wait_for
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


def _array(sweep_dir: Path, driver: subprocess.Popen) -> str:
    """The id of the sweep's (first) job array, once submitted (submitit makes a folder per task)."""
    def submitted() -> str | None:
        if driver.poll() is not None:
            raise AssertionError(f"the sweep command ended before submitting:\n{driver.communicate()[0]}")
        return next((p.name.split("_")[0] for p in (sweep_dir / ".submitit").glob("*_0")), None)

    return _wait_for(submitted, 300, "the array to be submitted")


def _starting(sweep_dir: Path, task: str) -> None:
    """Wait until the task's Python process has started and not yet installed submitit's signal handler: its
    log says it is loading the job's pickle (which imports torch and the model code, seconds on this machine)."""
    _wait_for(lambda: "Loading pickle" in _log(sweep_dir, task), 300, f"task {task} to start")


def _log(sweep_dir: Path, task: str) -> str:
    """The task's log, stdout and stderr (submitit logs to either, as the launcher says)."""
    paths = [sweep_dir / ".submitit" / task / f"{task}_0_log.{ext}" for ext in ("out", "err")]
    return "".join(p.read_text() for p in paths if p.exists())


def _requeued(task: str) -> bool:
    """Whether Slurm's accounting shows an earlier run of the task that ended REQUEUED."""
    out = subprocess.run(["sacct", "-X", "-D", "-n", "-P", "-o", "JobID,State", "-j", task], capture_output=True,
                         text=True).stdout
    return any(line.split("|")[1].startswith("REQUEUED") for line in out.splitlines() if "|" in line)


def test_requeue_signal_while_a_task_starts_requeues_it_and_its_points_run_in_the_next_attempt(tiny_model, tmp_path):
    # submitit installs its USR2 handler only after unpickling the job (torch, the model code): before, the
    # signal ended the task FAILED 12:0 with a failure record for each of its points. The array's last task
    # is signalled: its SLURM_JOB_ID is the array's id, and requeueing that id would requeue every task.
    driver = _driver(_args(tiny_model, tmp_path, "sampler.seed=0,1,2,3", "hydra.sweeper.points_per_job=2"))
    try:
        array = _array(tmp_path, driver)
        task = f"{array}_1"
        _starting(tmp_path, task)
        subprocess.run(["scancel", "--signal=USR2", task], check=True)
        out, _ = driver.communicate(timeout=600)
    finally:
        driver.kill()
    assert driver.returncode == 0, out
    st = SweepStore(tmp_path).status()
    assert len(st.done) == 4 and not (st.failed or st.running or st.missing), out
    _wait_for(lambda: _requeued(task), 60, f"sacct to show the run of {task} that was requeued")
    assert (SweepStore(tmp_path).jobs_dir / f"{task}.1.json").exists()  # its points ran in attempt 1
    assert not _requeued(f"{array}_0")  # only the signalled task
    assert "the requeue signal) came before the job installed its handler" in _log(tmp_path, task)


def test_pending_task_cancelled_is_recorded_cancelled_at_the_next_poll(tiny_model, tmp_path):
    # Slurm deletes a pending array task cancelled on its own without an accounting row: before, its point
    # waited lost_after_s (600 s here) and was then recorded as "left the queue"
    driver = _driver(_args(tiny_model, tmp_path, "sampler.seed=0,1,2", "hydra.sweeper.points_per_job=1",
                           "hydra.launcher.array_parallelism=1"))
    try:
        array = _array(tmp_path, driver)
        _starting(tmp_path, f"{array}_0")  # 0 runs, 1 and 2 pend (one task at a time)
        subprocess.run(["scancel", f"{array}_2"], check=True)
        cancelled = time.time()
        store = SweepStore(tmp_path)
        key = _wait_for(lambda: next((k for k in store.planned() if store.state(k) == "failed"), None), 90,
                        "the cancelled task's point to be recorded")
        recorded = time.time()
        out, _ = driver.communicate(timeout=600)
    finally:
        driver.kill()
        subprocess.run(["scancel", array], capture_output=True)  # a failed test leaves none of its tasks
    assert driver.returncode == 0, out
    message = store.record(key)["error"]["message"]
    assert f"job {array}_2 ended with Slurm state CANCELLED" in message and "cancelled while pending" in message
    st = store.status()
    assert len(st.done) == 2 and len(st.failed) == 1 and not (st.running or st.missing), out
    print(f"\na pending task cancelled: its failure record {recorded - cancelled:.1f} s after scancel "
          f"(poll_s={POLL_S:g}, lost_after_s=600)")


def test_sigterm_while_tasks_start_fails_only_the_task_nothing_requeues(tiny_model, tmp_path):
    # Task 0: SIGTERM that nothing follows with a requeue (scancel --signal=TERM) -> failure records that say
    # so, rerun by --rerun-failed. Task 1: SIGTERM followed by Slurm's requeue (what a preemption with
    # PreemptMode=REQUEUE does after its grace time; `scontrol requeue` here) -> no failure record, its points
    # run in the next attempt.
    args = _args(tiny_model, tmp_path, "sampler.seed=0,1,2,3", "hydra.sweeper.points_per_job=2")
    driver = _driver(args)
    try:
        array = _array(tmp_path, driver)
        _starting(tmp_path, f"{array}_0")
        subprocess.run(["scancel", "--signal=TERM", f"{array}_0"], check=True)
        _starting(tmp_path, f"{array}_1")
        subprocess.run(["scontrol", "requeue", f"{array}_1"], check=True)
        out, _ = driver.communicate(timeout=600)
    finally:
        driver.kill()
    assert driver.returncode == 0, out
    store = SweepStore(tmp_path)
    st = store.status()
    assert len(st.done) == 2 and len(st.failed) == 2 and not (st.running or st.missing), out
    for key in st.failed:
        message = store.record(key)["error"]["message"]
        assert f"job {array}_0 ended with Slurm state FAILED" in message and "terminated by SIGTERM" in message
    assert (store.jobs_dir / f"{array}_1.1.json").exists()  # task 1's points ran in its next attempt
    rerun = subprocess.run(_command(*args, "hydra.sweeper.rerun_failed=true"), capture_output=True, text=True,
                           timeout=600)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    st = store.status()
    assert len(st.done) == 4 and not (st.failed or st.running or st.missing), rerun.stdout
