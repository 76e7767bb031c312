"""Faults between jobs, without Slurm: concurrent drivers of one sweep, a driver restarted while its old jobs
still run, jobs that Slurm reports ended (its answers stubbed), points of a failed job that another job holds."""

from __future__ import annotations

import json
import multiprocessing
import socket
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import pytest
from submitit.slurm.slurm import SlurmJob

import illada.launch as launch
import illada.slurm as slurm
from illada.evaluate import evaluate
from illada.launch import Submitted, collect
from illada.runner import PointGroup
from illada.slurm import Accounting
from illada.store import SweepStore
from sweeps.app import plan_sweep, run
from tests.sweep_fixtures import points, tiny_model  # noqa: F401 -- fixture


def _evaluations(store: SweepStore) -> int:
    """Points evaluated by all job attempts together (each attempt's accounting counts its own)."""
    return sum(json.loads(p.read_text())["points"] for p in store.jobs_dir.glob("*.json"))


def _wait_for(predicate, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if value := predicate():
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _run_group(sweep_dir, pts, barrier, out) -> None:
    PointGroup.wait_s = 0.1
    barrier.wait()  # both groups start at the same moment: without claims they evaluate the same points
    out.put(PointGroup(sweep_dir, pts, threads=1)())


def test_two_jobs_started_together_evaluate_each_point_once(tmp_path, tiny_model):
    pts = [p for limit in range(1, 13) for p in points(tiny_model, steps=(8,), limit=limit)]
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_run_group, args=(tmp_path, pts, barrier, out)) for _ in range(2)]
    for p in procs:
        p.start()
    counts = [out.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    store = SweepStore(tmp_path)
    assert _evaluations(store) == 12
    assert all(store.record(p.key)["status"] == "ok" for p in pts) and not list(store.running_dir.glob("*.json"))
    for c in counts:  # each job accounts for every point: evaluated, found finished, or waited for
        assert c["done"] + c["skipped"] == 12 and not c["failed"], counts


@pytest.fixture
def sleeper():
    """A live process standing in for a job of an older driver that still evaluates a point."""
    proc = subprocess.Popen(["sleep", "600"])
    yield proc
    proc.kill()
    proc.wait()


@pytest.mark.parametrize("old_job", ["finishes", "dies"])
def test_restarted_driver_leaves_a_point_to_the_old_job_that_holds_it(old_job, tiny_model, tmp_path, sleeper,
                                                                       monkeypatch):
    monkeypatch.setattr(PointGroup, "wait_s", 0.1, raising=False)
    args = [f"model.path={tiny_model}", f"sweep_dir={tmp_path}", "task.limit=2", "hydra.sweeper.plot=false",
            "sampler.steps=8,4,2", "sampler.block_length=8,4", "hydra.sweeper.points_per_job=3"]
    keys = [p.resolved.key for p in plan_sweep(args).points]
    held = plan_sweep(args).points[0].resolved
    store = SweepStore(tmp_path)
    # the old driver's job: another Slurm task on this host whose process still runs
    assert store.claim(held.key, {"host": socket.gethostname(), "pid": sleeper.pid, "job_id": "41_0",
                                  "cluster": "slurm", "attempt": 0, "log_path": None})
    driver = threading.Thread(target=run, args=(args,))
    driver.start()
    others = [k for k in keys if k != held.key]
    _wait_for(lambda: all(store.has_record(k) for k in others), 300, "the new driver's own points")
    assert driver.is_alive() and not store.has_record(held.key)  # it waits for the old job's point
    if old_job == "finishes":
        evaluate(held, store.records_dir, progress=False)
        store.clear_running(held.key)
    else:
        sleeper.kill()
        sleeper.wait()
    driver.join(timeout=300)
    assert not driver.is_alive()
    st = store.status()
    assert len(st.done) == len(keys) == 6 and not (st.failed or st.running or st.missing)
    assert _evaluations(store) == (5 if old_job == "finishes" else 6)  # the old job's point: once


# ----------------------------------------------------------------------------------------- collection
class _Cancelled:
    """A job as submitit shows one that Slurm cancelled: no result (reading it would wait, then raise)."""

    job_id, state = "12_3", "CANCELLED"
    paths = SimpleNamespace(stdout="/sweep/logs/12_3/12_3_0_log.out")

    def done(self):
        return True

    def result(self):
        raise RuntimeError("job 12_3 has no result")


def test_points_of_a_failed_job_held_by_a_live_job_are_counted_not_failed(tmp_path, tiny_model, sleeper):
    store = SweepStore(tmp_path)
    free, held = points(tiny_model, steps=(8, 4))
    store.claim(held.key, {"host": socket.gethostname(), "pid": sleeper.pid, "job_id": "other"})
    counts = {}
    collector = threading.Thread(target=lambda: counts.update(
        collect([Submitted(_Cancelled(), PointGroup(tmp_path, [free, held]))], store, poll_s=0.05)))
    collector.start()
    _wait_for(lambda: store.has_record(free.key), 30, "the failure record of the point nobody holds")
    assert not store.has_record(held.key) and store.running(held.key)["job_id"] == "other"
    evaluate(held, store.records_dir, progress=False)  # the other job finishes its point
    store.clear_running(held.key)
    collector.join(timeout=30)
    assert counts == {"done": 1, "failed": 1, "skipped": 0, "jobs_failed": 1}
    assert store.record(held.key)["status"] == "ok" and store.record(free.key)["status"] == "failed"


def _slurm_job(tmp_path, job_id: str) -> SlurmJob:
    return SlurmJob(folder=tmp_path / "logs" / "%j", job_id=job_id)


def test_ended_slurm_jobs_are_recorded_from_one_sacct_call_without_reading_results(tmp_path, tiny_model,
                                                                                    monkeypatch):
    """Slurm says the tasks ended (squeue no longer lists them, sacct names the state): their failure
    records name that state at the first poll, and no result is waited for (submitit waits 15 s each)."""
    ended = {"7_0": Accounting("CANCELLED", "0:15"), "7_1": Accounting("TIMEOUT", "0:0"),
             "7_2": Accounting("OUT_OF_MEMORY", "0:125"), "7_3": Accounting("NODE_FAIL", "1:0")}
    calls = []
    monkeypatch.setattr(launch, "slurm_queue", lambda: {"99_0"})
    monkeypatch.setattr(launch, "slurm_accounting", lambda ids: calls.append(sorted(ids)) or ended, raising=False)
    monkeypatch.setattr(SlurmJob, "result", lambda self: pytest.fail("read the result of a job that failed"))
    pts = points(tiny_model, steps=(8, 4, 2, 1))
    jobs = [Submitted(_slurm_job(tmp_path, j), PointGroup(tmp_path, [p])) for j, p in zip(ended, pts)]
    counts = collect(jobs, SweepStore(tmp_path), poll_s=0.01, lost_after_s=5)
    assert counts["failed"] == counts["jobs_failed"] == 4 and calls == [sorted(ended)]
    for (job_id, acc), p in zip(ended.items(), pts):
        err = SweepStore(tmp_path).record(p.key)["error"]
        assert f"job {job_id} ended with Slurm state {acc.state}, exit code {acc.exit_code}" in err["message"]
        assert err["log_path"].endswith(f"{job_id}_0_log.out")


def test_a_completed_slurm_job_is_read_and_one_unknown_to_sacct_is_lost_only_after_the_deadline(
        tmp_path, tiny_model, monkeypatch):
    monkeypatch.setattr(launch, "slurm_queue", lambda: set())
    monkeypatch.setattr(launch, "slurm_accounting", lambda ids: {"8_0": Accounting("COMPLETED", "0:0")}, raising=False)
    monkeypatch.setattr(SlurmJob, "result", lambda self: {"done": 1, "failed": 0, "skipped": 0})
    done, lost = points(tiny_model, steps=(8, 4))
    jobs = [Submitted(_slurm_job(tmp_path, "8_0"), PointGroup(tmp_path, [done])),
            Submitted(_slurm_job(tmp_path, "8_1"), PointGroup(tmp_path, [lost]))]
    counts = collect(jobs, SweepStore(tmp_path), poll_s=0.01, lost_after_s=0.2)
    assert counts == {"done": 1, "failed": 1, "skipped": 0, "jobs_failed": 1}
    assert "job 8_1 left the queue and Slurm's accounting had no record" in \
        SweepStore(tmp_path).record(lost.key)["error"]["message"]


def _sacct(monkeypatch, out: str) -> None:
    monkeypatch.setattr(slurm.shutil, "which", lambda name: "/usr/bin/" + name)
    monkeypatch.setattr(slurm.subprocess, "run", lambda cmd, **k: SimpleNamespace(stdout=out, returncode=0, args=cmd))


def test_sacct_rows_of_tasks_cancelled_while_pending_name_each_task(monkeypatch):
    _sacct(monkeypatch, "5_0|CANCELLED by 0|0:15\n5_[1-3,7%2]|CANCELLED by 0|0:0\n6|TIMEOUT|0:0\n6_9|RUNNING|0:0\n")
    got = slurm.slurm_accounting(["5_2", "5_7", "6"])
    assert sorted(got) == ["5_0", "5_1", "5_2", "5_3", "5_7", "6", "6_9"]
    assert got["5_7"] == Accounting("CANCELLED", "0:0") and got["5_7"].ended and not got["6_9"].ended
    assert str(got["5_0"]) == "Slurm state CANCELLED, exit code 0:15"


def test_a_task_missing_from_the_rows_of_its_array_was_cancelled_while_pending(monkeypatch):
    """Slurm deletes a pending task cancelled on its own (``scancel 5_3``) without a row: the array's other
    rows are there, the task's is not. A plain job without a row is still unknown (accounting lags)."""
    _sacct(monkeypatch, "5_0|RUNNING|0:0\n5_[1-2,4%1]|PENDING|0:0\n")
    got = slurm.slurm_accounting(["5_3", "5_4", "9", "8_1"])
    assert got["5_3"].state == "CANCELLED" and got["5_3"].ended and got["5_3"].note == slurm.CANCELLED_PENDING
    assert "cancelled while pending" in str(got["5_3"])
    assert got["5_4"] == Accounting("PENDING", "0:0") and "9" not in got and "8_1" not in got


@pytest.mark.parametrize("state, exit_code, says", [
    ("FAILED", "15:0", "(terminated by SIGTERM)"), ("FAILED", "143:0", "(terminated by SIGTERM)"),
    ("FAILED", "12:0", "(terminated by SIGUSR2)"), ("FAILED", "0:15", "(terminated by SIGTERM)"),
    ("FAILED", "1:0", ""), ("FAILED", "2:0", ""), ("CANCELLED", "0:15", ""), ("COMPLETED", "0:0", "")])
def test_accounting_names_the_signal_that_failed_a_job(state, exit_code, says):
    """A step ended by SIGTERM/SIGUSR2 fails its batch script with srun's 128 + N (sacct: ``N:0``); other small
    exit codes are ordinary exits, and a cancellation is named as such already."""
    assert str(Accounting(state, exit_code)) == f"Slurm state {state}, exit code {exit_code}" + (f" {says}" if says
                                                                                              else "")


def test_a_pending_task_cancelled_is_recorded_at_the_second_poll_and_one_that_ran_waits_for_its_row(
        tmp_path, tiny_model, monkeypatch):
    """Twice in a row (not accounting's lag) and without a log (Slurm makes it as a task starts): recorded as
    cancelled then, not after lost_after_s. A task with a log ran: its row is late, it waits for it."""
    cancelled, ran = points(tiny_model, steps=(8, 4))
    store = SweepStore(tmp_path)
    pending = Accounting("CANCELLED", "0:0", note=slurm.CANCELLED_PENDING)
    recorded_at = []  # the polls at which 7_1 had its record

    def sacct(ids):
        recorded_at.append(store.has_record(cancelled.key))
        return {"7_1": pending, "7_2": pending} if len(recorded_at) < 50 else {"7_2": Accounting("FAILED", "15:0")}

    monkeypatch.setattr(launch, "slurm_queue", lambda: set())
    monkeypatch.setattr(launch, "slurm_accounting", sacct)
    jobs = [Submitted(_slurm_job(tmp_path, "7_1"), PointGroup(tmp_path, [cancelled])),
            Submitted(_slurm_job(tmp_path, "7_2"), PointGroup(tmp_path, [ran]))]
    jobs[1].job.paths.stdout.parent.mkdir(parents=True)
    jobs[1].job.paths.stdout.write_text("")  # 7_2 started
    counts = collect(jobs, store, poll_s=0.001, lost_after_s=600)
    assert counts == {"done": 0, "failed": 2, "skipped": 0, "jobs_failed": 2} and len(recorded_at) == 50
    assert recorded_at[:3] == [False, False, True]  # recorded at the second poll that found it so
    assert "job 7_1 ended with Slurm state CANCELLED, exit code 0:0 (cancelled while pending" in \
        store.record(cancelled.key)["error"]["message"]
    assert "job 7_2 ended with Slurm state FAILED, exit code 15:0 (terminated by SIGTERM)" in \
        store.record(ran.key)["error"]["message"]


@pytest.mark.slow
def test_two_identical_sweeps_started_together_evaluate_each_point_once(tiny_model, tmp_path):
    args = [f"model.path={tiny_model}", f"sweep_dir={tmp_path}", "task.limit=100", "hydra.sweeper.plot=false",
            "sampler.steps=8,4", "sampler.block_length=8,4,2", "sampler.seed=0,1", "hydra.sweeper.points_per_job=4"]
    drivers = [subprocess.Popen([sys.executable, "-m", "sweeps.app", "-m", *args], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outs = [d.communicate(timeout=600)[0] for d in drivers]
    assert [d.returncode for d in drivers] == [0, 0], outs
    st = SweepStore(tmp_path).status()
    assert len(st.done) == 12 and not (st.failed or st.running or st.missing), outs
    assert _evaluations(SweepStore(tmp_path)) == 12, outs


@pytest.mark.parametrize("step_status, array, requeued", [
    (128 + 12, {}, "42"), (128 + 12, {"SLURM_ARRAY_JOB_ID": "40", "SLURM_ARRAY_TASK_ID": "2"}, "40_2"),
    (128 + 15, {}, ""), (1, {}, ""), (0, {}, "")])
def test_batch_script_requeues_a_job_the_requeue_signal_ended_before_its_handler(tmp_path, step_status, array,
                                                                                 requeued):
    """The lines after the job's srun (its step's exit status as $?): a step ended by SIGUSR2 is requeued
    (scontrol stubbed here), an array task by its task id (an array's last task has the array's id as
    SLURM_JOB_ID: requeueing that requeues every task); any other status is the script's own, unchanged."""
    (tmp_path / "scontrol").write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path}/calls\n")
    (tmp_path / "scontrol").chmod(0o755)
    script = "\n".join([f"(exit {step_status})", *slurm.requeue_before_handler("USR2")]).replace(
        "sleep 120", "exit 0")
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30,
                         env={"PATH": f"{tmp_path}:/usr/bin:/bin", "SLURM_JOB_ID": "42", **array})
    calls = (tmp_path / "calls").read_text() if (tmp_path / "calls").exists() else ""
    assert calls == (f"requeue {requeued}\n" if requeued else "")
    assert out.returncode == (0 if requeued else step_status)
    assert (f"came before the job installed its handler: requeueing job {requeued}\n" in out.stderr) == bool(requeued)


def test_slurm_executor_adds_the_requeue_lines_before_the_users_teardown(tiny_model, tmp_path):
    from sweeps.app import grid_sweeper
    from sweeps.launchers import submitit_executor

    args = [f"model.path={tiny_model}", f"sweep_dir={tmp_path}", "hydra/launcher=submitit_slurm",
            "+hydra.launcher.teardown=[echo done]"]
    with grid_sweeper(args) as (sweeper, _):
        teardown = submitit_executor(sweeper.launcher)._executor.parameters["teardown"]
    assert teardown == [*slurm.requeue_before_handler("USR2"), "echo done"]
