"""Progress while a sweep or search runs (issue 14, item 4): done / failed / running over the total with an ETA,
counted from the store; a bar on a terminal, throttled plain lines in a log; one line per point in job logs."""

from __future__ import annotations

import io
import re

import submitit

from illada.evaluate import evaluate, failure_summary
from illada.launch import Submitted, collect
from illada.progress import Counts, Progress, StoreCounts, interval_s
from illada.runner import PointGroup
from illada.store import SweepStore
from sweeps.app import run
from tests.sweep_fixtures import points, tiny_model  # noqa: F401 -- fixture


class _Tty(io.StringIO):
    """A terminal, as far as the progress display can tell."""

    def isatty(self) -> bool:
        return True


class _Steps:
    """Counts that advance by one finished point per call after the first."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> Counts:
        self.calls += 1
        return Counts(done=self.calls - 1, failed=0, running=1)


def test_inprocess_sweep_prints_progress_to_stderr(tiny_model, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ILLADA_PROGRESS_INTERVAL", "0")  # a line per point (default: one every 30 s)
    run([f"model.path={tiny_model}", f"sweep_dir={tmp_path / 'sweep'}", "task.limit=2", "sampler.steps=8,4,2",
         "hydra.sweeper.plot=false"])
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.startswith("sweep: ")]
    assert lines[0].startswith("sweep: 1/3 points finished (1 done, 0 failed, 0 running); ") and "ETA" in lines[0]
    assert lines[-1].startswith("sweep: 3/3 points finished (3 done, 0 failed, 0 running); ")
    assert "elapsed" in lines[-1]
    assert "points finished" not in out  # stdout keeps only the sweep's result lines


def test_point_group_logs_each_point_with_its_own_count(tiny_model, tmp_path, capsys, monkeypatch):
    import illada.runner as runner

    store = SweepStore(tmp_path)
    first, second, bad = points(tiny_model, steps=(8, 4, 2))
    evaluate(first, store.records_dir, progress=False)  # finished before: skipped
    store.plan(second.key, second.settings, ["sampler.steps=4"])  # a planned point's line names its overrides

    def evaluate_or_fail(point, *args, **kwargs):
        if point.key == bad.key:
            raise RuntimeError("boom")
        return evaluate(point, *args, **kwargs)

    monkeypatch.setattr(runner, "evaluate", evaluate_or_fail)
    assert PointGroup(tmp_path, [first, second, bad], log_points=True)() == {"done": 1, "failed": 1, "skipped": 1}
    out = capsys.readouterr().out
    assert re.search(rf"^\[job \S+\] 1/3 {first.key} skipped \(it has a record already\)$", out, re.M), out
    assert re.search(rf"^\[job \S+\] 2/3 {second.key} done in \d+\.\d s \(model load \d+\.\d s\) "
                     r"\[sampler.steps=4\]$", out, re.M), out
    assert re.search(rf"^\[job \S+\] 3/3 {bad.key} failed in \d+\.\d s: RuntimeError: boom$", out, re.M), out
    assert re.search(r"finished: 1 done, 1 failed, 1 skipped of 3 points in \d+\.\d s$", out, re.M), out


def test_point_group_in_process_logs_nothing(tiny_model, tmp_path, capsys):
    PointGroup(tmp_path, points(tiny_model, steps=(8,)))()  # log_points=None: decided by where it runs
    assert "[job" not in capsys.readouterr().out


def test_submitit_local_job_log_has_a_line_per_point(tiny_model, tmp_path):
    pts = points(tiny_model, steps=(8, 4))
    executor = submitit.AutoExecutor(folder=tmp_path / "logs", cluster="local")
    executor.update_parameters(timeout_min=5)
    job = executor.submit(PointGroup(tmp_path / "sweep", pts, threads=1))
    assert job.result() == {"done": 2, "failed": 0, "skipped": 0}
    log = job.stdout()
    for i, p in enumerate(pts, 1):
        assert re.search(rf"^\[job {job.job_id}\] {i}/2 {p.key} done in \d+\.\d s", log, re.M), log


def test_collect_counts_from_the_store(tiny_model, tmp_path, capsys):
    class Dead:
        job_id, state = "12_3", "CANCELLED"
        paths = type("Paths", (), {"stdout": "/logs/12_3_0_log.out"})

        def done(self):
            return True

        def result(self):
            raise submitit.core.utils.UncompletedJobError("Job 12_3 has state CANCELLED")

    ps = points(tiny_model, steps=(8, 4))
    collect([Submitted(Dead(), PointGroup(tmp_path, ps))], SweepStore(tmp_path), poll_s=0)
    err = capsys.readouterr().err
    assert "sweep: 2/2 points finished (0 done, 2 failed, 0 running)" in err, err


def test_plain_lines_are_throttled_plus_one_final_line():
    stream = io.StringIO()
    steps = _Steps()
    with Progress(4, steps, stream=stream, interval=3600) as progress:
        for _ in range(3):
            progress.tick()
    assert stream.getvalue().count("\n") == 1  # no line within the interval: only the final one
    assert stream.getvalue().startswith("sweep: 1/4 points finished (1 done, 0 failed, 1 running); ")
    assert steps.calls == 2  # a throttled tick does not count (no store listing)

    stream = io.StringIO()
    with Progress(4, _Steps(), stream=stream, interval=0) as progress:
        progress.tick()
        progress.tick()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3 and "\r" not in stream.getvalue()
    assert re.fullmatch(r"sweep: 1/4 points finished \(1 done, 0 failed, 1 running\); 00:00 elapsed, ETA \d\d:\d\d",
                        lines[0]), lines
    assert re.fullmatch(r"sweep: 3/4 points finished \(3 done, 0 failed, 1 running\); 00:00 elapsed", lines[-1]), lines


def test_eta_unknown_until_a_point_finished():
    progress = Progress(4, lambda: Counts(running=2), stream=io.StringIO(), interval=0)
    assert progress.eta() == "ETA unknown"
    progress.counts = Counts(done=1, running=2)
    assert re.fullmatch(r"ETA \d\d:\d\d", progress.eta())
    progress.counts = Counts(done=3, failed=1)
    assert progress.eta() == "ETA 00:00"


def test_terminal_gets_a_bar():
    stream = _Tty()
    with Progress(4, _Steps(), stream=stream, label="sweep", interval=0) as progress:
        progress.tick()
        progress.tick()
    text = stream.getvalue()
    assert "\r" in text and "|" in text and "points finished" not in text
    frames = [f for f in re.split(r"[\r\n]", text) if f.strip()]
    assert re.search(r"sweep:\s+25%\|.*\| 1/4 points \[\d\d:\d\d, 1 done, 0 failed, 1 running, ETA \d\d:\d\d\]",
                     text), frames
    assert "3/4 points" in frames[-1]


def test_store_counts_read_each_record_once(tiny_model, tmp_path, monkeypatch):
    store = SweepStore(tmp_path)
    ok, bad, running, other = points(tiny_model, steps=(8, 4, 2, 1))
    evaluate(ok, store.records_dir, progress=False)
    store.write_failure(failure_summary(bad, RuntimeError("boom")))
    store.write_failure(failure_summary(other, RuntimeError("not counted: not one of the keys")))
    store.claim(running.key, {"host": "h", "pid": 1, "job_id": "1"})
    count = StoreCounts(store, [ok.key, bad.key, running.key])
    assert count() == Counts(done=1, failed=1, running=1)
    reads = []
    monkeypatch.setattr(store, "record", lambda key: reads.append(key))
    assert count() == Counts(done=1, failed=1, running=1)
    assert reads == []  # known records are not read again


def test_interval_from_the_environment(monkeypatch, capsys):
    monkeypatch.setenv("ILLADA_PROGRESS_INTERVAL", "2.5")
    assert interval_s() == 2.5
    monkeypatch.setenv("ILLADA_PROGRESS_INTERVAL", "soon")
    assert interval_s() == 30.0
    assert "ILLADA_PROGRESS_INTERVAL='soon' is not a number of seconds" in capsys.readouterr().err


def test_search_shows_trials_progress(tiny_model, tmp_path, capsys, monkeypatch):
    from tests.test_search import search

    monkeypatch.setenv("ILLADA_PROGRESS_INTERVAL", "0")
    search(tmp_path, tiny_model, n_trials=3).run()
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("search 'search': ")]
    assert lines[-1].startswith("search 'search': 3/3 trials finished (3 done, 0 failed, 0 running)"), lines
    assert any("1/3 trials" in line for line in lines[:-1]), lines
