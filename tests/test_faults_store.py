"""Faults of the results store (issue 12): damaged files, atomic writes, file modes, torch-free reading, and
records of points that are no longer in the sweep's plan."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import illada
import illada.records as records
from analysis.load import load_sweep
from analysis.report import main as report_main
from analysis.synthetic import write_generation_sweep
from illada.atomic import atomic_write_text
from illada.store import SweepStore, main as status_main
from tests.sweep_fixtures import tiny_model  # noqa: F401 -- fixture


def _sweep(root: Path, n: int = 4, failures: int = 1) -> SweepStore:
    """A small sweep in the real record schema, with its current plan."""
    write_generation_sweep(root, n_points=n, n_items=5, failures=failures)
    store = SweepStore(root)
    store.set_current_plan(store.planned())
    return store


def _cut(path: Path) -> bytes:
    """Cut a file to half its length, as a node dying mid-write on NFS can leave it; returns what is left."""
    data = path.read_bytes()[: path.stat().st_size // 2]
    path.write_bytes(data)
    return data


def _failure(key: str) -> dict:
    return {"schema": records.SCHEMA_VERSION, "key": key, "status": "failed", "settings": {"task": "arithmetic"},
            "quality": None, "cost": None, "error": {"type": "OSError", "message": "truncated shard", "log_path": None}}


# ------------------------------------------------------------------------------- 1: damaged files, atomic writes
def test_status_reports_damaged_files_with_their_path_and_goes_on(tmp_path, capsys):
    store = _sweep(tmp_path, n=4, failures=1)
    keys = store.planned()
    bad_record = store.records_dir / f"{keys[0]}.json"
    _cut(bad_record)
    _cut(store.points_dir / f"{keys[1]}.json")
    store.write_job("1_0.0", {"gpus": 1, "load_seconds": 1800.0, "eval_seconds": 1800.0})
    store.write_job("2_0.0", {"gpus": 1, "load_seconds": 1800.0, "eval_seconds": 1800.0})
    _cut(store.jobs_dir / "2_0.0.json")
    store.plan("f" * 16, {"task": "arithmetic"})
    store.claim("f" * 16, {"host": "node7", "pid": 1, "job_id": "3"})
    _cut(store.running_dir / f"{'f' * 16}.json")
    store.set_current_plan([*keys, "f" * 16])

    status_main([str(tmp_path)])
    out, err = capsys.readouterr()
    assert "6 points: 3 done, 1 failed, 1 running (1 stale), 0 missing, 1 corrupt; 1.000 GPU-hours in 1 job" in out
    for path in (bad_record, store.jobs_dir / "2_0.0.json", store.running_dir / f"{'f' * 16}.json"):
        assert str(path) in err
    assert "runs again with the next illada-sweep" in err
    assert store.state(keys[0]) == "corrupt"


def test_a_corrupt_record_is_not_finished_and_is_set_aside_never_deleted(tmp_path):
    store = _sweep(tmp_path, n=3, failures=0)
    bad, good, _ = store.planned()
    left = _cut(store.records_dir / f"{bad}.json")
    assert not store.has_record(bad) and store.record(bad) is None and store.has_record(good)
    assert [r["key"] for r in store.records()] == sorted({good, _})

    assert store.todo([bad, good]) == [bad]  # the point runs again...
    (aside,) = store.archive_dir.glob(f"{bad}.*.json.corrupt")  # ...and its damaged file is kept
    assert aside.read_bytes() == left
    assert list(store.archive_dir.glob(f"{bad}.*.items.parquet"))  # with its per-item table
    assert not (store.records_dir / f"{bad}.json").exists() and store.state(bad) == "missing"


def test_writing_over_a_corrupt_record_keeps_it(tmp_path):
    store = _sweep(tmp_path, n=2, failures=0)
    a, b = store.planned()
    for key in (a, b):
        _cut(store.records_dir / f"{key}.json")
    store.write_failure(_failure(a))  # a job that died: its failure record replaces the damaged one
    assert store.record(a)["status"] == "failed"
    store.claim(b, {"host": "node1", "pid": 1, "job_id": "9"})  # a job about to rewrite b's record
    assert store.state(b) == "running"
    assert len(list(store.archive_dir.glob("*.json.corrupt"))) == 2


def test_a_corrupt_running_marker_reads_as_stale(tmp_path):
    store = SweepStore(tmp_path)
    store.claim("k" * 16, {"host": "elsewhere", "pid": 1, "job_id": "7"})
    (store.running_dir / f"{'k' * 16}.json").write_bytes(b"\0" * 64)  # zero-filled after a crash
    marker = store.running("k" * 16)
    assert marker["corrupt"] and store.is_stale("k" * 16)
    assert store.status().stale == ["k" * 16]


def test_damaged_plan_files_are_reported_and_rewritten_by_the_next_run(tmp_path, capsys):
    store = _sweep(tmp_path, n=2, failures=0)
    a, b = store.planned()
    store.set_current_plan([a])
    _cut(store.plan_path)
    _cut(store.points_dir / f"{b}.json")
    st = store.status()  # no readable current plan: every point counts, as in a sweep without one
    assert (st.done, [e.path for e in st.unreadable]) == ([a, b], [store.plan_path])
    status_main([str(tmp_path)])
    assert "every point ever planned is counted until the next illada-sweep" in capsys.readouterr().err
    assert store.plan_of(b) == {}

    store.plan(b, {"task": "arithmetic"}, ["sampler.steps=4"])  # what the next run does for each point
    store.set_current_plan([a, b])
    assert store.plan_of(b)["overrides"] == ["sampler.steps=4"] and not store.status().unreadable


def test_analysis_and_report_go_on_past_damaged_files(tmp_path, capsys):
    store = _sweep(tmp_path / "s", n=4, failures=1)
    keys = store.planned()
    bad = store.records_dir / f"{keys[0]}.json"
    _cut(bad)
    _cut(store.points_dir / f"{keys[1]}.json")
    for cache in (False, True, True):  # built, then written to and read from the cache
        with pytest.warns(UserWarning, match="2 unreadable files"):
            sweeps = load_sweep(store.root, cache=cache)
        assert len(sweeps.points) + len(sweeps.failures) == 4
        assert sorted(sweeps.unreadable["kind"]) == ["plan", "record"] and str(bad) in set(sweeps.unreadable["path"])

    report_main([str(store.root), "--out", str(tmp_path / "report"), "--no-cache"])
    out, err = capsys.readouterr()
    assert f"warning: unreadable record file left out: {bad}" in err
    assert "## Unreadable files" in (tmp_path / "report" / "report.md").read_text()


def test_atomic_write_flushes_the_file_before_and_the_directory_after_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real_fsync(fd)

    def replace(src, dst):
        events.append("rename")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    atomic_write_text(tmp_path / "a.json", "{}")
    assert events == ["file", "rename", "dir"]
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]  # no temporary file left


# ------------------------------------------------------------------------------------------------ 6: file modes
@pytest.mark.parametrize("umask", [0o022, 0o027], ids=["umask022", "umask027"])
def test_every_store_file_honours_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        store = _sweep(tmp_path / "s", n=2, failures=1)  # plan files, records, per-item Parquet tables
        store.write_job("1_0.0", {"gpus": 1})
        store.claim("f" * 16, {"host": "node1", "pid": 1, "job_id": "1"})
    finally:
        os.umask(old)
    files = [p for p in store.root.rglob("*") if p.is_file()]
    assert {p.suffix for p in files} == {".json", ".parquet"}
    assert {oct(p.stat().st_mode & 0o777) for p in files} == {oct(0o666 & ~umask)}


# ----------------------------------------------------------------------------------- 10: reading without torch
def test_commands_that_only_read_results_do_not_import_torch(tmp_path):
    store = _sweep(tmp_path / "s", n=3, failures=1)
    code = f"""
import sys
import illada, illada.store, illada.records, analysis, analysis.load, analysis.report, sweeps.plot
illada.store.main([{str(store.root)!r}, "--failed"])
analysis.load.load_sweep({str(store.root)!r}, cache=False)
sweeps.plot.records_frame(illada.store.SweepStore({str(store.root)!r}))
assert "torch" not in sys.modules, "torch was imported"
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "4 points: 3 done, 1 failed" in out.stdout


def test_lazy_package_names_still_resolve():
    from illada import Tokenizer, load
    from illada.loading import load as real_load
    from illada.tokenizer import Tokenizer as real_tokenizer

    assert load is real_load and Tokenizer is real_tokenizer and "preset" in dir(illada)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        illada.nope  # noqa: B018


def test_device_name_and_provenance_never_raise(monkeypatch):
    import torch

    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    assert records.device_name("cuda").startswith("cuda (no name: ")
    assert records.device_name("no-such-device").startswith("no-such-device (no name: ")

    def broken():
        raise RuntimeError("git is broken")

    monkeypatch.setattr(records, "git_commit", broken)
    prov = records.provenance("cuda:1")
    assert prov["device"] == "cuda:1" and prov["device_name"].startswith("cuda:1 (no name")
    assert prov["git_commit"] is None and prov["torch"] == torch.__version__


# ---------------------------------------------------------------------------------- 14: the current plan only
def test_records_outside_the_current_plan_are_superseded_not_counted(tmp_path, capsys):
    store = SweepStore(tmp_path)
    records.write_record(store.records_dir, _failure("0" * 16))  # the point of a truncated checkpoint
    store.plan("0" * 16, {"task": "arithmetic"}, ["model=x"])
    old_sweep = store.status()  # a sweep directory without plan.json: everything counts, as before
    assert old_sweep.failed == ["0" * 16] and not old_sweep.superseded

    good = json.loads(next((_sweep(tmp_path / "src", n=1, failures=0).records_dir).glob("*.json")).read_text())
    records.write_record(store.records_dir, good)  # the fixed checkpoint: a new hash, a new point
    store.plan(good["key"], good["settings"], ["model=x"])
    store.set_current_plan([good["key"]])
    st = store.status()
    assert (st.done, st.failed, st.superseded) == ([good["key"]], [], ["0" * 16])
    status_main([str(tmp_path), "--failed"])
    out = capsys.readouterr().out
    assert out.startswith("1 points: 1 done, 0 failed, 0 running, 0 missing;") and "1 superseded" in out
    assert "failure records of superseded points" in out and "truncated shard" in out

    sweeps = load_sweep(tmp_path, cache=False)
    assert (len(sweeps.points), len(sweeps.failures), list(sweeps.superseded["key"])) == (1, 0, ["0" * 16])
    report_main([str(tmp_path), "--out", str(tmp_path / "report")])
    report = (tmp_path / "report" / "report.md").read_text()
    assert "No failed points." in report and "## Superseded points" in report


# ------------------------------------------------------------------------------------- the sweep driver, end to end
def _base(model: Path, sweep: Path) -> list[str]:
    return ["-m", f"model.path={model}", f"sweep_dir={sweep}", "task.limit=2", "sampler.steps=8", "--no-plot"]


@pytest.mark.slow
def test_driver_reruns_a_point_whose_record_was_cut_short(tiny_model, tmp_path, capsys):
    from sweeps.app import main as sweep_main

    base = _base(tiny_model, tmp_path / "sweep")
    sweep_main(base + ["sampler.block_length=8,4"])
    store = SweepStore(tmp_path / "sweep")
    victim = store.planned()[0]
    _cut(store.records_dir / f"{victim}.json")
    capsys.readouterr()

    sweep_main(base + ["sampler.block_length=8,4", "--dry-run"])
    assert f"{victim}  corrupt" in capsys.readouterr().out
    sweep_main(base + ["sampler.block_length=8,4"])
    out = capsys.readouterr().out
    assert "1 unreadable records (cut short by a crash?) moved to" in out and "running 1 in 1 jobs" in out
    assert "2 points: 2 done, 0 failed" in out
    assert len(list(store.archive_dir.glob(f"{victim}.*.json.corrupt"))) == 1


@pytest.mark.slow
def test_failure_of_a_checkpoint_since_fixed_is_superseded(tiny_model, tmp_path, capsys, monkeypatch):
    import illada.evaluate as evaluate_module
    from sweeps.app import main as sweep_main

    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    weights = model / "model.safetensors"
    whole = weights.read_bytes()
    weights.write_bytes(whole[: len(whole) // 2])  # a truncated download
    base = _base(model, tmp_path / "sweep")
    with pytest.raises(SystemExit, match=r"^error: all 1 points failed"):  # a sweep whose points all failed
        sweep_main(base)
    assert "1 points: 0 done, 1 failed" in capsys.readouterr().out

    weights.write_bytes(whole)  # fixed: a new hash, so a new point
    monkeypatch.setattr(evaluate_module, "_HASHES", {})  # this process hashed the broken one already
    sweep_main(base)
    out = capsys.readouterr().out
    assert "1 points: 1 done, 0 failed" in out and "1 superseded" in out and "--rerun-failed" not in out
    sweep_main(base + ["--rerun-failed"])
    out = capsys.readouterr().out
    assert ("--rerun-failed: no failed point in the current plan, nothing to rerun; 1 failure records of "
            "superseded points (no longer in the plan) left as they are") in out
