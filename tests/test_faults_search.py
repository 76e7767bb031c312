"""Faults of the Pareto search (issue 12: items 2, 8, 12): a torn Optuna journal, a stale running marker left by a
killed in-process search, and a resumed search that repeats its own trials. Tiny random model, CPU only."""

from __future__ import annotations

import errno
import json
import socket
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from illada.evaluate import Point, resolve
from illada.search import ParetoSearch, SearchError, pareto_front, repair_journal, suggest, to_point
from illada.store import SweepStore
from tests.sweep_fixtures import SAMPLER, tiny_model  # noqa: F401 -- fixture

optuna.logging.set_verbosity(optuna.logging.WARNING)

# 14 valid points, cheap on the tiny model (gen_length 8; one step cannot fill two blocks of 4: 2 invalid)
SPACE = {"sampler.steps": {"choices": [1, 2, 4, 8]},
         "sampler.remasking": {"choices": ["low_confidence", "random"]},
         "sampler.block_length": {"choices": [4, 8]}}
REFERENCE = {"sampler.steps": 8, "sampler.remasking": "low_confidence", "sampler.block_length": 8}


def search(root: Path, model, **kw) -> ParetoSearch:
    args = dict(sweep_dir=root, space=SPACE, n_trials=4, seed=0, n_startup_trials=3, log=None,
                objectives=["accuracy", "nfe_per_sample"],  # measured latency would make TPE non-deterministic
                base=Point(model=str(model), task="arithmetic", limit=2, sampler=dict(SAMPLER), batch_size=2))
    args.update(kw)
    return ParetoSearch(**args)


def load(path: Path, name: str = "search") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=optuna.storages.JournalStorage(JournalFileBackend(str(path))))


def keys(study: optuna.Study) -> list[str]:
    return [t.user_attrs.get("key") for t in study.trials]


# ------------------------------------------------------------------------------------- torn journal
def test_torn_journal_tail_is_cut_and_the_search_resumes(tmp_path, tiny_model):
    root = tmp_path / "sweep"
    search(root, tiny_model, n_trials=3, sampler="random").run()
    journal = root / "optuna.journal"
    last = journal.read_bytes().splitlines()[-1]
    with open(journal, "ab") as f:  # the disk filled up in the middle of a record
        f.write(last[: len(last) // 2])
    torn = journal.read_bytes()

    logs: list[str] = []
    res = search(root, tiny_model, n_trials=5, sampler="random", log=logs.append).run()
    assert len(res.study.trials) == 5
    study = load(journal)  # what the next resume, optuna.load_study and optuna-dashboard read
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 5
    copies = list(root.glob("optuna.journal.torn-*"))
    assert len(copies) == 1 and copies[0].read_bytes() == torn  # nothing is thrown away
    assert any("torn last record" in line and str(copies[0]) in line for line in logs), logs


def _journal_with_trials(path: Path, n: int = 3) -> bytes:
    study = optuna.create_study(study_name="search", storage=optuna.storages.JournalStorage(
        JournalFileBackend(str(path))), directions=["maximize", "minimize"])
    for i in range(n):
        trial = study.ask()
        trial.suggest_int("x", 0, 9)
        trial.set_user_attr("key", f"k{i}")
        study.tell(trial, [i, -i])
    return path.read_bytes()


def test_records_written_onto_a_torn_one_are_kept(tmp_path):
    """A run before the repair appended onto a torn tail: the torn line is now in the middle, and Optuna 5.0's
    JournalFileBackend cannot skip it (JSONDecodeError on every load). The repair drops only the torn part."""
    journal = tmp_path / "optuna.journal"
    whole = _journal_with_trials(journal)
    lines = whole.splitlines(keepends=True)
    k = len(lines) // 2
    torn = lines[k][: len(lines[k]) // 3]  # a failed write of a record ...
    broken = b"".join(lines[:k]) + torn + b"".join(lines[k:]) + b"\x00\x00\x00\n"  # ... and a line of garbage
    journal.write_bytes(broken)
    with pytest.raises(json.JSONDecodeError):
        load(journal)

    done = repair_journal(journal)
    assert "1 whole record(s) written onto a torn one" in done and "dropped 1 unreadable line" in done
    assert journal.read_bytes() == whole
    assert [t.user_attrs["key"] for t in load(journal).trials] == ["k0", "k1", "k2"]
    assert [p.read_bytes() for p in tmp_path.glob("optuna.journal.torn-*")] == [broken]
    assert repair_journal(journal) is None  # a whole journal is left alone


def test_torn_journal_that_cannot_be_copied_is_left_as_it_is(tmp_path, monkeypatch):
    journal = tmp_path / "optuna.journal"
    _journal_with_trials(journal)
    with open(journal, "ab") as f:
        f.write(b'{"op_code":4,"wor')
    torn = journal.read_bytes()

    def disk_full(*args, **kw):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("illada.search.shutil.copy2", disk_full)
    with pytest.raises(SearchError, match=r"optuna.journal: the journal is torn .* No space left on device; free"):
        repair_journal(journal)
    assert journal.read_bytes() == torn and not list(tmp_path.glob("optuna.journal.torn-*"))


# ----------------------------------------------------------------- stale marker of a killed search
def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_killed_in_process_search_runs_its_point_on_resume(tmp_path, tiny_model):
    """The controller evaluated the enqueued reference point in its own process and was killed: the trial is
    left RUNNING and the point's running marker names a dead process. The resume clears the marker and runs
    the point (it used to FAIL the trial and leave the marker: "1 running (1 stale)" for good)."""
    root = tmp_path / "sweep"
    s = search(root, tiny_model, n_trials=2, enqueue=[REFERENCE])
    study = s.study()
    trial = study.ask()  # the reference point, as the killed controller asked it
    resolved = resolve(to_point(s.base, suggest(trial, s.params)))
    trial.set_user_attr("key", resolved.key)
    s.store.plan(resolved.key, resolved.settings)
    s.store.claim(resolved.key, {"host": socket.gethostname(), "pid": _dead_pid(),
                                  "job_id": "local-1-0", "cluster": "local"})
    assert s.store.is_stale(resolved.key)

    res = search(root, tiny_model, n_trials=2, enqueue=[REFERENCE]).run()
    first = res.study.trials[0]
    assert first.state == TrialState.COMPLETE and first.params == REFERENCE
    assert res.relaunched == 1
    store = SweepStore(root)
    assert store.record(resolved.key)["status"] == "ok" and store.running(resolved.key) is None
    assert not store.status().running and not store.status().stale
    assert len(res.study.trials) == 2


def test_resumed_search_runs_again_a_completed_point_whose_record_was_damaged(tmp_path, tiny_model):
    """A record cut in half after its trial completed: the resumed search sets the file aside and runs the point
    again (it used to warn on every run and leave the point corrupt); the study is not changed."""
    root = tmp_path / "sweep"
    first = search(root, tiny_model, n_trials=3).run()
    store = SweepStore(root)
    key = first.study.trials[1].user_attrs["key"]
    path = store.records_dir / f"{key}.json"
    good = json.loads(path.read_text())
    path.write_text(path.read_text()[: len(path.read_text()) // 2])
    assert key in store.status().corrupt

    res = search(root, tiny_model, n_trials=3).run()
    assert res.repaired == 1 and res.launched == 0 and len(res.study.trials) == 3
    again = store.record(key)
    assert again["status"] == "ok" and again["quality"] == good["quality"]  # the same point, measured again
    assert not store.status().corrupt and list(store.archive_dir.glob(f"{key}.*.json.corrupt"))
    assert [t.values for t in res.study.trials] == [t.values for t in first.study.trials]
    assert search(root, tiny_model, n_trials=3).run().repaired == 0


# ------------------------------------------------------------------- a resumed search repeats itself
def test_resumed_search_continues_instead_of_repeating(tmp_path, tiny_model):
    """`n_trials=6`, then the same search with `n_trials=10`: four new points (it used to replay trials 1-4 as
    cache hits); a resumed search proposes what an uninterrupted one would have."""
    root = tmp_path / "sweep"
    search(root, tiny_model, n_trials=6, enqueue=[REFERENCE]).run()
    res = search(root, tiny_model, n_trials=10, enqueue=[REFERENCE]).run()
    assert len(res.study.trials) == 10 and len(set(keys(res.study))) == 10
    assert res.launched == 4 and res.cache_hits == 0 and res.repeats == 0 and res.evaluations == 10

    straight = search(tmp_path / "straight", tiny_model, n_trials=10, enqueue=[REFERENCE]).run()
    assert [t.params for t in straight.study.trials] == [t.params for t in res.study.trials]


def test_no_repeat_while_a_point_is_left_and_fronts_count_points(tmp_path, tiny_model):
    root = tmp_path / "sweep"
    res = search(root, tiny_model, n_trials=14, sampler="tpe", n_startup_trials=2).run()
    assert len(set(keys(res.study))) == 14 and res.repeats == 0 and res.invalid == 0  # every valid point, once
    more = search(root, tiny_model, n_trials=16, sampler="tpe", n_startup_trials=2).run()
    extra = more.study.trials[14:]
    assert more.launched == 0 and more.repeats == 2  # nothing left to evaluate: repeats, answered from the store
    assert all("repeat_of" in t.user_attrs and t.state == TrialState.COMPLETE for t in extra)
    front = pareto_front(more.study)
    assert len({t.user_attrs["key"] for t in front}) == len(front)  # one trial per point
    assert {t.number for t in front} == {t.number for t in pareto_front(res.study)}


def test_budget_in_evaluations(tmp_path, tiny_model):
    root = tmp_path / "sweep"
    res = search(root, tiny_model, n_trials=None, n_evaluations=5, sampler="random").run()
    assert res.evaluations == 5 and len(set(keys(res.study))) == 5
    # more evaluations than the space has: stops once every point is evaluated, no repeats
    logs: list[str] = []
    res = search(root, tiny_model, n_trials=None, n_evaluations=40, sampler="random", log=logs.append).run()
    assert res.evaluations == 14 and len(res.study.trials) == 14 and res.repeats == 0
    assert any("no point of the space is left unevaluated (14 evaluated)" in line for line in logs)
    with pytest.raises(SearchError, match="search.n_trials=None: give a budget"):
        search(root, tiny_model, n_trials=None)
    with pytest.raises(SearchError, match="search.n_evaluations=0"):
        search(root, tiny_model, n_evaluations=0)


def test_nsga2_keeps_its_generations_through_the_scratch_proposals(tmp_path, tiny_model):
    """NSGA-II notes each trial's generation on the trial; proposals are made on a scratch copy of the study,
    so the note must reach the study's own trial, or every trial would stay in generation 0."""
    res = search(tmp_path / "sweep", tiny_model, n_trials=10, sampler="nsga2",
                 sampler_options={"population_size": 4}).run()
    generations = [t.system_attrs.get("NSGAIISampler:generation") for t in res.study.trials]
    assert None not in generations and max(generations) >= 1, generations


def test_search_whose_trials_all_failed_exits_non_zero(tmp_path, tiny_model):
    """Every point the search ran failed (a model with NaN weights): exit status 1 and one line."""
    import shutil

    from safetensors.torch import load_file, save_file

    from tests.search_fixtures import run_search, search_args, write_search

    nan_model = tmp_path / "nan_model"
    shutil.copytree(tiny_model, nan_model)
    tensors = load_file(str(nan_model / "model.safetensors"))
    tensors["model.norm.weight"][0] = float("nan")
    save_file(tensors, str(nan_model / "model.safetensors"), metadata={"format": "pt"})
    write_search(tmp_path / "conf", n_trials=2, max_in_flight=1)
    out = run_search(search_args(nan_model, tmp_path / "sweep", tmp_path / "conf"), check=False, timeout=600)
    assert out.returncode == 1, out.stdout[-2000:] + out.stderr[-2000:]
    last = out.stderr.strip().splitlines()[-1]
    assert last == f"error: all 2 trials of the search failed; their causes: `illada-status {tmp_path / 'sweep'} --failed`"
