"""Running markers must prove their holder alive: a point never waits for ever behind a marker.

No cluster: markers are written as the jobs write them, with the holder's identity and heartbeat (the marker
file's mtime) set to the cases met on a shared cluster."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time

from illada.markers import DEFAULT_STALE_AFTER_S, Heartbeat, liveness, process_identity
from illada.runner import MINE, PointGroup, claim_point
from illada.store import SweepStore, main as status_main
from tests.sweep_fixtures import points, tiny_model  # noqa: F401 -- fixture

ELEVEN_MONTHS_S = 330 * 24 * 3600


def _age(store: SweepStore, key: str, seconds: float) -> None:
    """Make the marker's last sign of life ``seconds`` old."""
    path = store.running_dir / f"{key}.json"
    then = time.time() - seconds
    os.utime(path, (then, then))


def _no_squeue():
    return None  # squeue not answering: only the marker itself can tell


def test_a_live_pid_that_is_another_process_now_is_stale(tmp_path):
    """A pid reused after the holder died (another start time, or the host rebooted) proves nothing."""
    store = SweepStore(tmp_path)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        me = {"host": socket.gethostname(), "pid": other.pid, "job_id": "local-1", "cluster": "inprocess"}
        real = process_identity(other.pid)
        store.claim("reused", {**me, **real, "pid_start": real["pid_start"] + 1})
        store.claim("rebooted", {**me, **real, "boot_id": "0" * 32})
        store.claim("same", {**me, **real})
        assert real["pid_start"] is not None
        assert not store.liveness("reused").alive and "another process" in store.liveness("reused").why
        assert not store.liveness("rebooted").alive and "rebooted" in store.liveness("rebooted").why
        assert store.liveness("same").alive  # its holder, heartbeat fresh
        assert claim_point(store, "reused", {"host": "here", "pid": 1, "job_id": "2"}, _no_squeue) == MINE
    finally:
        other.kill()
        other.wait()


def test_a_silent_marker_of_another_host_is_taken_over_after_its_bound(tmp_path):
    """A killed local run on another login node (not a Slurm job: squeue cannot tell) held its point for ever."""
    store = SweepStore(tmp_path)
    holder = {"host": "login2", "pid": 4242, "job_id": "local-4242-0", "cluster": "inprocess"}
    store.claim("fresh", holder)
    store.claim("silent", holder)
    store.claim("own_bound", {**holder, "stale_after_s": 30})
    _age(store, "silent", DEFAULT_STALE_AFTER_S + 5)
    _age(store, "own_bound", 31)
    assert store.liveness("fresh").alive
    assert not store.liveness("silent").alive and "(stale after 300 s)" in store.liveness("silent").why
    assert store.is_stale("own_bound")  # the marker's own bound (hydra.sweeper.stale_after_s) decides
    st = store.status()
    assert sorted(st.running) == ["fresh", "own_bound", "silent"] and st.stale == ["own_bound", "silent"]
    assert claim_point(store, "silent", {"host": "node1", "pid": 7, "job_id": "9_1"}, _no_squeue) == MINE
    assert store.running("silent")["job_id"] == "9_1"


def test_an_eleven_month_old_marker_written_before_heartbeats_is_stale(tmp_path, capsys):
    store = SweepStore(tmp_path)
    store.plan("old", {"task": "arithmetic"}, ["sampler.steps=8"])
    store.set_current_plan(["old"])
    store.claim("old", {"host": "node7", "pid": 1, "job_id": "123_4"})  # the fields markers had before
    _age(store, "old", ELEVEN_MONTHS_S)
    assert store.status().stale == ["old"]
    status_main([str(store.root), "--running"])
    out = capsys.readouterr().out
    assert "1 points: 0 done, 0 failed, 1 running (1 stale)" in out
    assert "running (0 alive, 1 stale):" in out
    line = out.split("running (0 alive, 1 stale):\n")[1]
    assert line.startswith("  old: sampler.steps=8  (job 123_4 on node7 (pid 1)")
    age = re.search(r"stale: no sign of life for (\d+) s \(stale after 300 s\)", line)
    assert age and ELEVEN_MONTHS_S <= int(age[1]) < ELEVEN_MONTHS_S + 600, line


def test_status_running_shows_holder_heartbeat_age_and_verdict(tmp_path, capsys):
    store = SweepStore(tmp_path)
    store.claim("k1", {"host": "node3", "pid": 11, "job_id": "77_0", "cluster": "slurm"})
    _age(store, "k1", 12)
    status_main([str(store.root), "--running"])
    out = capsys.readouterr().out
    assert "running (1 alive, 0 stale):" in out
    assert "k1: (no overrides recorded)  (job 77_0 on node3 (pid 11), since " in out
    age = re.search(r"; alive: last sign of life (\d+) s ago\)", out)
    assert age and 12 <= int(age[1]) < 300, out  # seconds since its heartbeat, however slow this machine is


def test_the_heartbeat_refreshes_only_the_marker_its_holder_wrote(tmp_path):
    store = SweepStore(tmp_path)
    path = store.running_dir / "k.json"
    store.claim("k", {"host": "node1", "pid": 1, "job_id": "1"})
    _age(store, "k", 3600)
    with Heartbeat(path, interval=0.02) as beat:
        deadline = time.monotonic() + 60
        while store.liveness("k").age_s > 60 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert store.liveness("k").alive
        # another job takes the point over (the marker is replaced): the old holder's beats must not keep it
        store.clear_running("k")
        store.claim("k", {"host": "node2", "pid": 2, "job_id": "2"})
        _age(store, "k", 3600)
        for _ in range(3):  # three more beats of the old holder, on the file it wrote
            last = os.fstat(beat._fd).st_mtime_ns
            while os.fstat(beat._fd).st_mtime_ns == last and time.monotonic() < deadline:
                time.sleep(0.01)
        assert os.fstat(beat._fd).st_mtime_ns > last
        assert store.liveness("k").age_s >= 3600


def test_a_job_keeps_its_marker_alive_while_it_evaluates(tmp_path, tiny_model, monkeypatch):
    """The marker a job writes carries its identity and bound, and its mtime moves while the point runs."""
    (p,) = points(tiny_model, steps=(8,))
    store = SweepStore(tmp_path)
    seen = []
    real_evaluate = __import__("illada.runner", fromlist=["evaluate"]).evaluate

    def slow_evaluate(point, *a, **k):
        path = store.running_dir / f"{point.key}.json"
        first = os.stat(path).st_mtime
        deadline = time.monotonic() + 60
        while os.stat(path).st_mtime == first and time.monotonic() < deadline:
            time.sleep(0.01)
        seen.append((store.running(point.key), os.stat(path).st_mtime > first))
        return real_evaluate(point, *a, **k)

    monkeypatch.setattr("illada.runner.evaluate", slow_evaluate)
    assert PointGroup(tmp_path, [p], stale_after_s=0.3)() == {"done": 1, "failed": 0, "skipped": 0}
    (marker, beat), = seen
    assert beat and marker["stale_after_s"] == 0.3 and marker["pid"] == os.getpid()
    assert marker["pid_start"] == process_identity()["pid_start"] is not None
    assert not list(store.running_dir.iterdir())


def test_a_job_waiting_for_a_held_point_says_so_and_takes_it_over_when_the_holder_falls_silent(
        tmp_path, tiny_model, capsys):
    (p,) = points(tiny_model, steps=(4,))
    store = SweepStore(tmp_path)
    store.plan(p.key, p.settings, ["sampler.steps=4"])
    # a run on another login node, killed: not a Slurm job, so only its heartbeat could prove it alive
    store.claim(p.key, {"host": "login2", "pid": 4242, "job_id": "local-4242-0", "cluster": "inprocess",
                        "stale_after_s": 1.5})
    group = PointGroup(tmp_path, [p], log_points=True)
    group.wait_s = 0.2
    counts = {}
    worker = threading.Thread(target=lambda: counts.update(group()), daemon=True)
    worker.start()
    worker.join(timeout=120)  # before: it waited until killed
    assert not worker.is_alive(), "the job still waits behind a silent marker"
    assert counts == {"done": 1, "failed": 0, "skipped": 0}
    assert store.record(p.key)["status"] == "ok"
    out = capsys.readouterr().out
    waiting = [line for line in out.splitlines() if f"waiting for {p.key} " in line]
    assert waiting and all(
        f"waiting for {p.key} [sampler.steps=4]: held by job local-4242-0 on login2 (pid 4242), last sign of life "
        in line and "(taken over after 1.5 s without one)" in line for line in waiting)
    assert f"{p.key} done" in out.rsplit(waiting[-1], 1)[1]  # taken over once the bound ran out


def test_liveness_of_markers_that_cannot_be_read_or_have_no_file():
    assert not liveness({"key": "k", "corrupt": "not JSON"}, 1.0).alive
    assert liveness({"host": "elsewhere", "pid": 3}, None).alive  # a file just released: nothing says it is dead
