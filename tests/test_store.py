"""The results store, the job runner and job collection, without Hydra and without Slurm."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest
import submitit

import illada.runner as runner
from illada.evaluate import failure_summary
from illada.launch import chunks, collect, slurm_max_array_size
from illada.runner import PointGroup, group_points
from illada.store import SweepStore, main as status_main
from tests.sweep_fixtures import points, tiny_model  # noqa: F401 -- fixture


def test_states_and_rerun_failed(tmp_path, tiny_model):
    store = SweepStore(tmp_path)
    a, b, c = points(tiny_model)
    for p in (a, b, c):
        store.plan(p.key, p.settings, [f"sampler.steps={p.settings['sampler']['steps']}"])
    assert store.status().missing == sorted([a.key, b.key, c.key])

    store.claim(a.key, {"host": "elsewhere", "pid": 1, "job_id": "7"})
    store.write_failure(failure_summary(b, RuntimeError("boom"), log_path="/logs/7.out"))
    st = store.status()
    assert (st.running, st.failed, st.missing) == ([a.key], [b.key], [c.key])
    assert store.record(b.key)["error"]["log_path"] == "/logs/7.out"

    assert store.todo([a.key, b.key, c.key]) == [a.key, c.key]  # a failure counts as finished...
    assert store.todo([b.key], rerun_failed=True) == [b.key]     # ...unless asked to rerun it
    assert store.record(b.key) is None and len(list(store.archive_dir.iterdir())) == 1


def test_stale_marker_of_a_dead_process(tmp_path, tiny_model):
    import socket

    store = SweepStore(tmp_path)
    (p,) = points(tiny_model, steps=(8,))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    store.claim(p.key, {"host": socket.gethostname(), "pid": dead.pid, "job_id": "x"})
    assert store.status().stale == [p.key]


def test_group_loads_once_records_failures_and_skips_finished(tmp_path, tiny_model, monkeypatch):
    loads = []
    real_load = runner.load
    monkeypatch.setattr(runner, "load", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    good = points(tiny_model, steps=(8, 4))
    bad = points(tiny_model, steps=(2,), data_path=str(tmp_path / "absent.jsonl"))  # fails when its data loads
    group = PointGroup(tmp_path, [good[0], *bad, good[1]])
    assert group() == {"done": 2, "failed": 1, "skipped": 0}
    assert len(loads) == 1

    store = SweepStore(tmp_path)
    assert store.record(bad[0].key)["status"] == "failed"
    assert {store.record(p.key)["status"] for p in good} == {"ok"}
    assert not list(store.running_dir.iterdir())
    (job,) = [j for j in store.jobs_dir.glob("*.json")]
    assert store.status().jobs == 1

    # a requeued job (same pickled group) does not redo anything, nor load the model
    delayed = group.checkpoint()
    assert isinstance(delayed, submitit.helpers.DelayedSubmission) and delayed.function is group
    assert delayed.function() == {"done": 0, "failed": 0, "skipped": 3}
    assert len(loads) == 1


def test_group_gpu_hours_from_visible_devices(tmp_path, tiny_model, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    PointGroup(tmp_path, points(tiny_model, steps=(8,)))()
    st = SweepStore(tmp_path).status()
    assert st.gpu_hours > 0 and len(st.done) == 1


def test_load_failure_fails_every_point_with_its_cause(tmp_path, tiny_model, monkeypatch):
    def broken(*a, **k):
        raise OSError("truncated shard model.safetensors")

    monkeypatch.setattr(runner, "load", broken)
    ps = points(tiny_model, steps=(8, 4))
    assert PointGroup(tmp_path, ps)() == {"done": 0, "failed": 2, "skipped": 0}
    assert {SweepStore(tmp_path).record(p.key)["error"]["message"] for p in ps} == {"truncated shard model.safetensors"}


def test_grouping_by_model_and_size(tiny_model, tmp_path):
    from tests.sweep_fixtures import make_tiny_model

    other = make_tiny_model(tmp_path / "other")
    ps = points(tiny_model, steps=(8, 4, 2, 1)) + points(other, steps=(8,))
    groups = group_points(ps, points_per_job=3)
    assert sorted(len(g) for g in groups) == [1, 2, 2]
    assert all(len({runner.model_key(p) for p in g}) == 1 for g in groups)
    with pytest.raises(ValueError, match="shares one model"):
        PointGroup(tmp_path, ps)


def test_chunks_and_max_array_size(monkeypatch):
    assert [len(c) for c in chunks(list(range(2500)), 1001)] == [1001, 1001, 498]
    monkeypatch.setattr("shutil.which", lambda name: "/usr/bin/" + name)
    monkeypatch.setattr("subprocess.run", lambda *a, **k: SimpleNamespace(stdout="MaxJobCount = 10000\nMaxArraySize            = 64\n"))
    assert slurm_max_array_size() == 64


class _DeadJob:
    """A job as submitit shows one that Slurm cancelled."""

    job_id, state = "12_3", "CANCELLED"
    paths = SimpleNamespace(stdout="/sweep/logs/12_3/12_3_0_log.out")

    def done(self):
        return True

    def result(self):
        raise submitit.core.utils.UncompletedJobError("Job 12_3 (task: 0) with path ... has state CANCELLED")


def test_collect_turns_a_dead_job_into_failure_records(tmp_path, tiny_model):
    from illada.launch import Submitted

    store = SweepStore(tmp_path)
    ps = points(tiny_model, steps=(8, 4))
    store.write_failure(failure_summary(ps[0], ValueError("its own failure")))  # finished before the kill
    counts = collect([Submitted(_DeadJob(), PointGroup(tmp_path, ps))], store, poll_s=0)
    assert counts["jobs_failed"] == 1 and counts["failed"] == 1
    err = store.record(ps[1].key)["error"]
    assert "CANCELLED" in err["message"] and err["log_path"].endswith("12_3_0_log.out")
    assert store.record(ps[0].key)["error"]["message"] == "its own failure"


def test_status_command(tmp_path, tiny_model, capsys):
    store = SweepStore(tmp_path)
    (p,) = points(tiny_model, steps=(8,))
    store.plan(p.key, p.settings)
    store.write_failure(failure_summary(p, MemoryError("CUDA out of memory"), log_path="/l.out"))
    status_main([str(tmp_path), "--failed"])
    out = capsys.readouterr().out
    assert "1 points: 0 done, 1 failed, 0 running, 0 missing" in out and "CUDA out of memory" in out
