"""The asynchronous Optuna Pareto search (illada.search) on the tiny random model: fast, CPU only."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

import optuna
import pytest
from optuna.trial import TrialState

from illada.evaluate import Point
from illada.search import ParetoSearch, SearchError, constraint_values, feasible, pareto_front, parse_space
from illada.store import SweepStore
from tests.sweep_fixtures import SAMPLER, tiny_model  # noqa: F401 -- fixture

optuna.logging.set_verbosity(optuna.logging.WARNING)

SPACE = {
    "sampler.steps": {"type": "int", "low": 1, "high": 8, "log": True},
    "sampler.remasking": {"type": "categorical", "choices": ["low_confidence", "random"]},
}


def base(model) -> Point:
    return Point(model=str(model), task="arithmetic", limit=2, sampler=dict(SAMPLER), batch_size=2)


def search(tmp_path, model, **kw) -> ParetoSearch:
    args = dict(sweep_dir=tmp_path / "sweep", space=SPACE, base=base(model), n_trials=8, seed=0,
                n_startup_trials=3, log=None)
    args.update(kw)
    return ParetoSearch(**args)


def test_space_validation():
    with pytest.raises(SearchError, match="search.space.x.type"):
        parse_space({"x": {"type": "bogus"}})
    with pytest.raises(SearchError, match="when._p"):
        parse_space({"sampler.threshold": {"type": "float", "low": 0.5, "high": 0.9, "when": {"_p": "on"}}})
    with pytest.raises(SearchError, match="log scale"):
        parse_space({"sampler.steps": {"type": "int", "low": 0, "high": 8, "log": True}})


def test_async_multi_objective_search_end_to_end(tmp_path, tiny_model):
    with ThreadPoolExecutor(2) as pool:
        s = search(tmp_path, tiny_model, max_in_flight=2, executor=pool,
                   enqueue=[{"sampler.steps": 8, "sampler.remasking": "low_confidence"}])
        res = s.run()
    study = res.study
    assert len(study.trials) == 8
    assert study.metric_names == ["accuracy", "latency_p50_s"]
    assert study.trials[0].params == {"sampler.steps": 8, "sampler.remasking": "low_confidence"}  # enqueued first
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    assert res.launched + res.cache_hits == 8 and res.launched >= 1
    assert pareto_front(study)
    store = SweepStore(tmp_path / "sweep")
    assert (tmp_path / "sweep" / "optuna.journal").exists()
    for t in study.trials:  # every trial's point has its record in the sweep's results store
        assert store.record(t.user_attrs["key"])["status"] == "ok"
    # the same search again with a larger budget: same study, finished points are cache hits
    s2 = search(tmp_path, tiny_model, n_trials=10)
    res2 = s2.run()
    assert len(res2.study.trials) == 10
    assert res2.launched + res2.cache_hits == 2


def test_conditional_parameter_and_invalid_trials_are_not_launched(tmp_path, tiny_model):
    space = {"sampler.block_length": {"type": "categorical", "choices": [8, 3]},  # 3 does not divide 8
             "_parallel": {"type": "categorical", "choices": ["off", "threshold"]},
             "sampler.threshold": {"type": "float", "low": 0.5, "high": 0.99, "when": {"_parallel": "threshold"}}}
    s = search(tmp_path, tiny_model, space=space, n_trials=6, sampler="random",
               enqueue=[{"sampler.block_length": 3, "_parallel": "off"}])
    res = s.run()
    trials = res.study.trials
    bad = trials[0]
    assert bad.state == TrialState.FAIL and bad.user_attrs["fail_reason"].startswith("invalid:")
    assert "key" not in bad.user_attrs  # never planned or launched
    for t in trials:
        assert ("sampler.threshold" in t.params) == (t.params["_parallel"] == "threshold")
    assert res.invalid == sum(t.params["sampler.block_length"] == 3 for t in trials)


class FlakyExecutor:
    """Runs jobs in threads, but a job whose point uses ``steps == 2`` dies like a killed Slurm job."""

    def __init__(self):
        self.pool = ThreadPoolExecutor(2)

    def submit(self, group):
        if group.points[0].settings["sampler"]["steps"] == 2:
            fut: Future = Future()
            fut.set_exception(RuntimeError("job killed: out of memory"))
            return fut
        return self.pool.submit(group)


def test_failing_trial_is_fail_with_cause_and_search_goes_on(tmp_path, tiny_model):
    ex = FlakyExecutor()
    s = search(tmp_path, tiny_model, max_in_flight=2, executor=ex, n_trials=5, sampler="random",
               enqueue=[{"sampler.steps": 2, "sampler.remasking": "random"}])
    res = s.run()
    ex.pool.shutdown()
    first = res.study.trials[0]
    assert first.state == TrialState.FAIL
    assert "out of memory" in first.user_attrs["fail_reason"]
    assert res.failed >= 1
    assert len(res.study.trials) == 5
    assert any(t.state == TrialState.COMPLETE for t in res.study.trials)
    rec = SweepStore(tmp_path / "sweep").record(first.user_attrs["key"])
    assert rec["status"] == "failed" and "out of memory" in rec["error"]["message"]


def test_constraint_excludes_a_region(tmp_path, tiny_model):
    # NFE per sample equals steps with this fixed schedule: at most 4 forwards excludes steps 5..8
    s = search(tmp_path, tiny_model, n_trials=8, sampler="random", objectives=["accuracy", "nfe_per_sample"],
               constraints={"nfe_per_sample": {"max": 4}},
               enqueue=[{"sampler.steps": 8, "sampler.remasking": "low_confidence"},
                        {"sampler.steps": 2, "sampler.remasking": "low_confidence"}])
    study = s.run().study
    t8, t2 = study.trials[0], study.trials[1]
    assert constraint_values(t8)["nfe_per_sample<=4"] > 0 and not feasible(t8)
    assert feasible(t2)
    front = pareto_front(study)
    assert front and all(t.values[1] <= 4 for t in front)
    assert t8.number not in {t.number for t in front}


def test_resume_reconciles_trials_left_running(tmp_path, tiny_model):
    s = search(tmp_path, tiny_model, n_trials=3)
    study = s.study()
    # a controller that was killed: one trial asked (its point never ran), one whose job finished meanwhile
    lost = study.ask()
    lost.set_user_attr("key", "nonexistent")
    done_meanwhile = study.ask()
    from illada.evaluate import evaluate, resolve
    from illada.search import suggest, to_point

    values = suggest(done_meanwhile, s.params)
    resolved = resolve(to_point(s.base, values))
    done_meanwhile.set_user_attr("key", resolved.key)
    evaluate(resolved, s.store.records_dir, progress=False)
    assert len(study.get_trials(states=(TrialState.RUNNING,))) == 2

    res = search(tmp_path, tiny_model, n_trials=4).run()
    assert res.reconciled == 2
    trials = res.study.trials
    assert trials[lost.number].state == TrialState.FAIL
    assert "controller stopped" in trials[lost.number].user_attrs["fail_reason"]
    assert trials[done_meanwhile.number].state == TrialState.COMPLETE
    assert not res.study.get_trials(states=(TrialState.RUNNING,))
    assert len(trials) == 4


@pytest.mark.slow
def test_submitit_local_executor(tmp_path, tiny_model):
    """Trials as real submitit jobs (separate processes), two in flight."""
    import submitit

    ex = submitit.LocalExecutor(folder=tmp_path / "sweep" / "logs")
    ex.update_parameters(timeout_min=5)
    res = search(tmp_path, tiny_model, n_trials=3, max_in_flight=2, executor=ex, threads=1, poll_s=0.2).run()
    assert [t.state for t in res.study.trials] == [TrialState.COMPLETE] * 3
    assert res.launched >= 1 and all("job_id" in t.user_attrs or t.user_attrs.get("cache_hit")
                                     for t in res.study.trials)


def test_grid_of_a_conditional_space_and_stepped_floats():
    from illada.search import grid

    params = parse_space({"a": {"choices": [1, 2]}, "_mode": {"choices": ["x", "y"]},
                          "t": {"type": "float", "low": 0.5, "high": 0.95, "step": 0.05, "when": {"_mode": "y"}},
                          "n": {"type": "int", "low": 2, "high": 6, "step": 2, "when": {"_mode": "x"}}})
    combos = grid(params)
    assert len(combos) == 2 * (3 + 10)
    assert sorted({c["t"] for c in combos if "t" in c}) == [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95]
    assert all(("t" in c) == (c["_mode"] == "y") and ("n" in c) == (c["_mode"] == "x") for c in combos)
    with pytest.raises(SearchError, match="search.space.f: a continuous float has no grid"):
        grid(parse_space({"f": {"type": "float", "low": 0.1, "high": 0.2}}))
    # what a sampler suggests for a stepped float is the grid's value (so the point's key, and the cache, agree)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    values = {params[2].suggest(study.ask()) for _ in range(50)}
    assert values <= {c["t"] for c in combos if "t" in c}


def test_sampler_options_reach_the_sampler_and_bad_ones_are_named():
    from illada.search import make_sampler

    s = make_sampler("tpe", 3, options={"multivariate": True, "group": True})
    assert s._multivariate and s._group
    assert make_sampler("nsga2", 0, options={"population_size": 8})._population_size == 8
    with pytest.raises(SearchError, match="search.sampler_options.population: not an option of NSGAIISampler"):
        make_sampler("nsga2", 0, options={"population": 8})


@pytest.mark.parametrize("synchronous", [False, True])
def test_asynchronous_vs_batch_barrier(tmp_path, tiny_model, synchronous):
    """Asynchronous: a new trial starts as soon as one ends. With ``synchronous`` no trial starts while one of
    the previous batch still runs (the Hydra Optuna sweeper's barrier)."""
    import threading
    import time

    events: list[tuple[str, int, float]] = []
    lock = threading.Lock()
    pool = ThreadPoolExecutor(2)

    def launch(trial, resolved, overrides):
        def job():
            # a slow first trial of each pair: without a barrier the other worker takes the next trial meanwhile
            time.sleep(0.4 if trial.number % 2 == 0 else 0.05)
            from illada.runner import PointGroup

            PointGroup(tmp_path / "sweep", [resolved])()
            with lock:
                events.append(("end", trial.number, time.perf_counter()))
        with lock:
            events.append(("start", trial.number, time.perf_counter()))
        return pool.submit(job)

    space = {"sampler.seed": {"type": "int", "low": 0, "high": 1000}}
    res = search(tmp_path, tiny_model, space=space, n_trials=6, max_in_flight=2, sampler="random",
                 synchronous=synchronous, launch=launch, poll_s=0.01).run()
    pool.shutdown()
    assert res.launched == 6 and all(t.state == TrialState.COMPLETE for t in res.study.trials)
    start = {n: t for kind, n, t in events if kind == "start"}
    end = {n: t for kind, n, t in events if kind == "end"}
    # trial 3 (of the second batch) starts before trial 2 (slow, same batch in synchronous mode) would allow it
    overlapping = [n for n in start for m in end if m < n and m // 2 != n // 2 and start[n] < end[m]]
    if synchronous:
        assert not overlapping  # every trial of a batch starts after the whole previous batch ended
    else:
        assert overlapping


def test_a_refused_submission_is_the_trials_failure_record_and_the_search_goes_on(tmp_path, tiny_model):
    """sbatch refusing a job (a bad partition, a full queue) fails that trial with the refusal as its cause."""
    from illada.runner import PointGroup

    def launch(trial, resolved, overrides):
        if trial.number == 1:
            raise RuntimeError("sbatch: error: invalid partition specified: gpu")
        PointGroup(tmp_path / "sweep", [resolved])()
        fut: Future = Future()
        fut.set_result(None)
        return fut

    res = search(tmp_path, tiny_model, n_trials=4, max_in_flight=1, sampler="random", launch=launch, poll_s=0.01).run()
    states = [t.state for t in res.study.trials]
    assert states == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    failed = res.study.trials[1]
    assert "invalid partition" in failed.user_attrs["fail_reason"]
    rec = SweepStore(tmp_path / "sweep").record(failed.user_attrs["key"])
    assert rec["status"] == "failed" and "invalid partition" in rec["error"]["message"]
    assert res.failed == 1 and res.launched == 3
