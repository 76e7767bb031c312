"""The multi-fidelity search, end to end on the embedded model: points measured on rungs of items, promotion
continuing a point's record, a resumed study going on from its trials' fidelity."""

from __future__ import annotations

import pytest

from illada.evaluate import Point
from illada.fidelity import Evidence, evidence
from illada.mfsearch import FidelitySearch, record_measure
from illada.search import SearchError
from illada.store import SweepStore

SPACE = {"sampler.steps": {"choices": [8, 4, 2, 1]},
         "sampler.remasking": {"choices": ["low_confidence", "random"]}}


def test_rungs_and_budget_are_checked_and_said():
    measure = lambda values, k: None  # noqa: E731 -- never called
    with pytest.raises(SearchError, match=r"search.rungs=\[0.5\]"):
        FidelitySearch(SPACE, measure, n_items=64, rungs=(0.5,))
    with pytest.raises(SearchError, match="search.confidence=1.5"):
        FidelitySearch(SPACE, measure, n_items=64, confidence=1.5)
    search = FidelitySearch(SPACE, measure, n_items=64, batch_size=8, rungs=(0.125, 0.5, 1.0), n_trials=10)
    assert search.sizes == [16, 32, 64]  # two batches at least
    assert search.budget_lines() == [
        "rungs: 16 items (0.125), 32 items (0.5), 64 items (1); promoted at 95% confidence",
        "budget: 10 trials cost 160 items (all stopped at the first rung) to 640 items (all measured fully, as a "
        "search without rungs)"]


def test_replayed_search_stops_dominated_points_early():
    """Points measured from fixed outcomes: a slow bad point stops at the first rung, a fast one is promoted."""
    truth = {8: (0.95, 2.0), 4: (0.9, 1.0), 2: (0.3, 0.9), 1: (0.1, 3.0)}  # steps -> (accuracy, latency)

    def measure(values, k):
        key = f"steps{values['sampler.steps']}"
        if k == 0:
            return key, None
        acc, lat = truth[values["sampler.steps"]]
        return key, evidence(key, round(acc * k), k, lat, 64)

    search = FidelitySearch({"sampler.steps": {"choices": [8, 4, 2, 1]}}, measure, n_items=64, batch_size=8,
                            rungs=(0.125, 0.5, 1.0), n_trials=4, sampler="random",
                            enqueue=({"sampler.steps": 8}, {"sampler.steps": 4}, {"sampler.steps": 1},
                                     {"sampler.steps": 2}))
    res = search.run()
    assert res.evidence["steps8"].complete and res.evidence["steps4"].complete
    assert res.evidence["steps1"].items == 16  # 0.1 on 16 items: its bound is far below steps4's, and slower
    assert res.evidence["steps2"].items < 64 or res.evidence["steps2"].complete  # faster: may stay on the front
    assert res.items_spent == sum(e.items for e in res.evidence.values())
    assert {e.key for e in res.front()} == {"steps8", "steps4"} | ({"steps2"} if res.evidence["steps2"].complete
                                                                   else set())
    assert [t.user_attrs["items"] for t in res.study.trials][:3] == [64, 64, 16]


@pytest.mark.slow
def test_real_search_continues_points_and_resumes(tmp_path):
    import illada

    loaded = illada.load("default")
    base = Point(task="arithmetic", limit=64, batch_size=8,
                 sampler={"gen_length": 8, "block_length": 8, "steps": 8, "seed": 0})
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    calls = []

    def measure(values, k):
        calls.append(k)
        return inner(values, k)

    inner = record_measure(base, tmp_path / "sweep", loaded=loaded)
    search = FidelitySearch(SPACE, measure, n_items=64, batch_size=8, rungs=(0.125, 0.5, 1.0), n_trials=5,
                            storage=storage, seed=0,
                            enqueue=({"sampler.steps": 8, "sampler.remasking": "low_confidence"},))
    res = search.run()
    store = SweepStore(tmp_path / "sweep")
    records = {r["key"]: r for r in store.records()}
    assert set(records) == set(res.evidence)
    for key, ev in res.evidence.items():
        rec = records[key]
        assert rec["quality"]["n"] == ev.items
        assert (rec.get("coverage") is None) == ev.complete  # a partial record says which items it covers
        if not ev.complete:
            assert rec["coverage"] == {"items": ev.items, "of": 64, "order": "seeded batches"}
    assert res.evidence[next(iter(res.evidence))].complete  # the reference setting, enqueued first, is measured
    assert res.items_spent == sum(e.items for e in res.evidence.values())

    # resumed: the study's trials say what each point was measured on; nothing measured is run again
    again = FidelitySearch(SPACE, measure, n_items=64, batch_size=8, rungs=(0.125, 0.5, 1.0), n_trials=3,
                           storage=storage, seed=0).run()
    assert len(res.evidence) == 5 and len(again.evidence) == 8  # 5 new points, then 3 more: the space's 8
    for key, ev in res.evidence.items():
        assert again.evidence[key].items >= ev.items
    assert again.items_spent == sum(again.evidence[k].items - res.evidence.get(k, Evidence(k, 0, 64, 0, 0, 0, 0)).items
                                    for k in again.evidence)
