"""Issue 14, item 7 (and illada-eval's part of item 5): small things a new user trips on.

illada-eval says where it wrote the record (``runs/eval`` without ``--out``), refuses an unwritable ``--out``
before evaluating, ends on Ctrl-C with one line; illada-status says when a folder is not a sweep and lists
running and missing points; every ``--help`` option says what it does; benchmarks leave committed reports
alone unless asked; ``reports/`` is git-ignored.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import pytest

import illada.evaluate as ev
from illada.store import SweepStore, main as status_main

ROOT = Path(__file__).resolve().parents[1]
GEN = ["--model", "default", "--task", "arithmetic", "--limit", "2", "--sampler", "gen_length=8", "steps=8",
       "block_length=8"]


class _Parsed(Exception):
    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self.parser = parser


def _parser_of(main) -> argparse.ArgumentParser:
    """The argument parser a command's ``main`` builds (caught at ``parse_args``; nothing runs)."""
    def catch(self, *args, **kwargs):
        raise _Parsed(self)

    with mock.patch.object(argparse.ArgumentParser, "parse_args", catch), pytest.raises(_Parsed) as caught:
        main([])
    return caught.value.parser


# ------------------------------------------------------------------------------------------ --help
def _commands():
    from illada.benchmarks import embedded, engine, samplers, status
    from sweeps import benchmark, benchmark_search

    return {"illada-eval": ev.main, "illada-status": status_main, "benchmarks.engine": engine.main,
            "benchmarks.embedded": embedded.main, "benchmarks.samplers": samplers.main,
            "benchmarks.status": status.main, "sweeps.benchmark": benchmark.main,
            "sweeps.benchmark_search": benchmark_search.main}


@pytest.mark.parametrize("name", list(_commands()))
def test_every_help_option_has_a_description(name):
    parser = _parser_of(_commands()[name])
    bare = [a.option_strings[0] if a.option_strings else a.dest for a in parser._actions
            if not a.help and not a.choices]  # an option with choices lists them in --help
    assert not bare, f"{name}: options without a description in --help: {bare}"


# ------------------------------------------------------------------------------------------ illada-eval
def test_eval_without_out_writes_runs_eval_and_prints_the_path(tmp_path, monkeypatch, capsys):
    """Was: without --out nothing was written, silently; with it, the path was never printed."""
    monkeypatch.chdir(tmp_path)
    ev.main(GEN + ["--batch-size", "2"])
    out, err = capsys.readouterr()
    key = json.loads(out)["key"]
    record = Path("runs/eval") / f"{key}.json"
    assert record.is_file() and json.loads(record.read_text())["status"] == "ok"
    assert f"record: {record}" in err


def test_scorer_run_prints_no_tokens_per_second(tmp_path, capsys):
    """Was: every multiple-choice run printed tokens_per_second: 0.0 (a scorer generates no tokens)."""
    ev.main(["--model", "default", "--task", "arithmetic_mc", "--limit", "2", "--scorer", "name=ar_order",
             "--out", str(tmp_path)])
    line = json.loads(capsys.readouterr().out)
    assert "throughput_tokens_per_s" not in line and line["acc"] >= 0 and line["nfe_per_sample"] > 0
    ev.main(GEN + ["--out", str(tmp_path)])
    assert json.loads(capsys.readouterr().out)["throughput_tokens_per_s"] > 0  # generation keeps it


def _never_evaluate(*args, **kwargs):
    raise AssertionError("evaluated although the record could not be written")


def test_eval_unwritable_out_is_refused_before_evaluating(tmp_path, monkeypatch):
    """Was: 7 minutes of evaluation, then the write failed."""
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    monkeypatch.setattr(ev, "evaluate", _never_evaluate)
    with pytest.raises(SystemExit) as exit_:
        ev.main(GEN + ["--out", str(blocker / "out")])
    line = str(exit_.value.code)
    assert line.startswith("error: --out ") and str(blocker / "out") in line and "Not a directory" in line


def test_eval_read_only_out_is_refused_before_evaluating(tmp_path, monkeypatch):
    # root ignores permission bits, so the read-only folder is simulated: access(2) says no there
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, m, **k: False if str(p).startswith(str(tmp_path)) else real(p, m, **k))
    monkeypatch.setattr(ev, "evaluate", _never_evaluate)
    with pytest.raises(SystemExit) as exit_:
        ev.main(GEN + ["--out", str(tmp_path / "out")])
    line = str(exit_.value.code)
    assert str(tmp_path / "out") in line and ("Permission denied" in line or "Read-only" in line)
    assert "\n" not in line and not (tmp_path / "out").exists()


def test_report_unwritable_out_is_one_line_before_loading(tmp_path, monkeypatch):
    """Was: a traceback from the first figure written into a read-only folder."""
    import analysis.report as report

    from analysis.synthetic import write_generation_sweep

    sweep = write_generation_sweep(tmp_path / "sweep")
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, m, **k: False if str(p).startswith(str(tmp_path / "ro"))
                        else real(p, m, **k))
    monkeypatch.setattr(report, "load_sweeps", lambda *a, **k: pytest.fail("the sweeps were loaded"))
    (tmp_path / "ro").mkdir()
    with pytest.raises(SystemExit) as exit_:
        report.main([str(sweep), "--out", str(tmp_path / "ro" / "report")])
    line = str(exit_.value.code)
    assert line.startswith(f"error: --out={tmp_path / 'ro' / 'report'}: cannot write the report there") and "\n" not in line


def _default_sigint() -> None:
    # A shell starts background jobs with SIGINT ignored and Python then installs no KeyboardInterrupt handler;
    # give the child the disposition a terminal's Ctrl-C meets, whatever started this test run.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_eval_ctrl_c_is_one_line_and_exit_130(tmp_path):
    """Was: a 24-frame torch traceback and no hint. SIGINT arrives while the point is being evaluated."""
    script = ("import sys, illada.evaluate as ev\n"
              "real = ev.evaluate\n"
              "def started(*a, **k):\n"
              "    print('STARTED', file=sys.stderr, flush=True)\n"
              "    return real(*a, **k)\n"
              "ev.evaluate = started\n"
              "ev.main(sys.argv[1:])\n")
    args = ["--model", "default", "--task", "arithmetic", "--limit", "100000", "--sampler", "gen_length=8",
            "steps=8", "block_length=8", "--out", str(tmp_path / "out")]
    proc = subprocess.Popen([sys.executable, "-c", script, *args], stderr=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            preexec_fn=_default_sigint)
    lines = []
    for line in proc.stderr:  # wait until main() is evaluating
        lines.append(line)
        if "STARTED" in line:
            break
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    output = "".join(lines) + err + out
    assert proc.returncode == 130, output
    assert "Traceback" not in output and "KeyboardInterrupt" not in output
    assert "interrupted" in output and "run the same command again" in output
    assert not list((tmp_path / "out").glob("*.json"))


# ------------------------------------------------------------------------------------------ illada-status
def test_status_on_a_folder_that_is_not_a_sweep_names_the_sweeps_under_it(tmp_path, capsys):
    """Was: "0 points: 0 done, ..." on runs/ instead of runs/sweeps/NAME."""
    store = SweepStore(tmp_path / "runs" / "sweeps" / "frontier")
    store.plan("k1", {"task": "arithmetic"}, ["sampler.steps=8"])
    store.set_current_plan(["k1"])
    with pytest.raises(SystemExit) as exit_:
        status_main([str(tmp_path / "runs")])
    assert exit_.value.code == 2
    out, err = capsys.readouterr()
    assert not out and err.count("\n") == 1 and err.startswith(f"error: {tmp_path / 'runs'} is not a sweep directory")
    assert str(store.root) in err
    with pytest.raises(SystemExit) as exit_:
        status_main([str(tmp_path / "runs" / "sweeps" / "frontier" / "points")])
    assert exit_.value.code == 2 and "no sweep directory under it" in capsys.readouterr().err


def test_status_lists_running_and_missing_points(tmp_path, capsys):
    store = SweepStore(tmp_path / "sweep")
    for key, steps in (("k1", 8), ("k2", 4), ("k3", 2), ("k4", 1)):
        store.plan(key, {"task": "arithmetic"}, [f"sampler.steps={steps}"])
    store.set_current_plan(["k1", "k2", "k3", "k4"])
    store.claim("k1", {"host": "node7", "pid": 1, "job_id": "123_4"})  # another host: its fresh heartbeat says live
    store.claim("k2", {"host": socket.gethostname(), "pid": 2 ** 22 + 12345, "job_id": "124_0"})  # process gone
    from illada.records import write_record
    write_record(store.records_dir, {"key": "k4", "status": "ok", "settings": {}, "quality": None, "cost": None})
    status_main([str(store.root), "--running", "--missing"])
    out = capsys.readouterr().out
    running = out.split("\nrunning (")[1].split("\nmissing (")[0]
    missing = out.split("\nmissing (")[1]
    assert running.startswith("1 alive, 1 stale):") and "job 123_4 on node7" in running
    assert "k1: sampler.steps=8" in running.split("\n  k2")[0] and "alive: last sign of life" in running
    assert "stale: process" in running.split("\n  k2")[1]  # each marked point, with its verdict
    assert missing.startswith("2):") and "k3: sampler.steps=2" in missing
    assert "k2: sampler.steps=4" in missing and "stale" in missing  # its marker's process is gone
    assert "k4" not in running + missing


# ------------------------------------------------------------------------------------------ benchmarks
def test_quick_engine_benchmark_leaves_the_committed_report_alone(tmp_path, monkeypatch):
    """Was: ``python -m illada.benchmarks.engine --quick`` rewrote illada/benchmarks/results/engine_cpu.md."""
    from illada.benchmarks import engine
    from illada.benchmarks.output import BENCH_OUT, RESULTS_DIR, report_path

    committed = RESULTS_DIR / "engine_cpu.md"
    before = committed.read_bytes()
    args = _parser_of(engine.main)  # what the command parses, not its 30 s of timing
    assert report_path(args.parse_args(["--quick"]), "engine_cpu.md") == BENCH_OUT / "engine_cpu.md"
    assert report_path(args.parse_args([]), "engine_cpu.md") == BENCH_OUT / "engine_cpu.md"
    assert report_path(args.parse_args(["--update-results"]), "engine_cpu.md") == committed
    with pytest.raises(SystemExit, match="^error: --update-results with --quick"):
        report_path(args.parse_args(["--quick", "--update-results"]), "engine_cpu.md")
    assert committed.read_bytes() == before


@pytest.mark.slow
def test_quick_engine_benchmark_writes_bench_out(tmp_path, monkeypatch):
    """The whole quick run: the report goes to bench_out/, the committed one is untouched."""
    from illada.benchmarks.output import RESULTS_DIR

    committed = RESULTS_DIR / "engine_cpu.md"
    before = committed.read_bytes()
    run = subprocess.run([sys.executable, "-m", "illada.benchmarks.engine", "--quick"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr[-2000:]
    assert (tmp_path / "bench_out" / "engine_cpu.md").is_file() and "wrote bench_out/engine_cpu.md" in run.stderr
    assert committed.read_bytes() == before


def test_search_benchmark_sections_go_to_bench_out(tmp_path, monkeypatch):
    from illada.benchmarks.output import RESULTS_DIR
    from sweeps import benchmark_search

    committed = RESULTS_DIR / "search.md"
    before = committed.read_bytes()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(benchmark_search, "utilisation_benchmark", lambda *a: "## Worker utilisation\n\nfigures")
    benchmark_search.main(["utilisation"])
    assert "figures" in (tmp_path / "bench_out" / "search.md").read_text()
    assert committed.read_bytes() == before


def test_readme_output_folders_are_git_ignored():
    """Was: ``illada-report ... --out reports/frontier`` left reports/ as untracked files."""
    for path in ("reports/frontier/pareto.png", "runs/eval/x.json", "bench_out/engine_cpu.md"):
        run = subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT)
        assert run.returncode == 0, f"{path} is not git-ignored"
