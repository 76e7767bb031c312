"""Multi-fidelity Pareto search: Optuna proposes points, the number of items decides how far each is measured.

Each trial's point is measured on its first rung of items (:mod:`illada.fidelity`: nested seeded subsets); it
is promoted to the next rung only while it could still be on the front at its measured latency (the upper
bound of its quality is not beaten by another point's lower bound at a latency no worse), and so on up to
every item. Promotion continues the point (:func:`illada.fidelity.evaluate_to` runs only the new items).
Optuna's multi-objective sampler is told each trial's last estimate; every trial carries its fidelity
(``items``, ``of``, the interval) as user attributes, so a resumed study (same storage) knows what each point
was measured on and goes on from there.

``measure(values, k)`` is the seam: :func:`record_measure` evaluates points into a results store; the
benchmark (``sweeps/benchmark_costs.py``) replays per-item records of a whole grid instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import optuna
from optuna.trial import TrialState

from illada.fidelity import (DEFAULT_CONFIDENCE, DEFAULT_RUNGS, Evidence, check_confidence, check_rungs,
                             could_be_on_front, evidence, rung_sizes)
from illada.search import SearchError, make_sampler, parse_space, suggest

MAX_ASKS = 5  # asks per counted trial at most (a space whose every point is measured ends the search)

#: measure(values, items) -> (the point's key, its evidence on its first ``items`` items; None for 0 items, which
#: runs nothing); None for an invalid point
Measure = Callable[[Mapping[str, Any], int], "tuple[str, Evidence] | None"]


@dataclass
class Step:
    """One measurement: the items it cost and the point's evidence after it."""

    trial: int
    items_spent: int
    evidence: Evidence


@dataclass
class FidelityResult:
    study: optuna.Study
    evidence: dict[str, Evidence] = field(default_factory=dict)  # point key -> what is known of it
    steps: list[Step] = field(default_factory=list)
    items_spent: int = 0
    invalid: int = 0

    def front(self, complete_only: bool = True) -> list[Evidence]:
        """Non-dominated points (accuracy up, latency down), by default of those measured on every item."""
        pool = [e for e in self.evidence.values() if e.complete or not complete_only]
        return [e for e in pool if not any((o.value >= e.value and o.latency <= e.latency)
                                           and (o.value > e.value or o.latency < e.latency) for o in pool)]


@dataclass
class FidelitySearch:
    """See the module docstring. ``n_items``: a point's item count; ``batch_size``: rungs are whole batches."""

    space: Mapping[str, Mapping[str, Any]]
    measure: Measure
    n_items: int
    batch_size: int = 1
    rungs: tuple[float, ...] = DEFAULT_RUNGS
    confidence: float = DEFAULT_CONFIDENCE
    sampler: str = "tpe"
    sampler_options: Mapping[str, Any] | None = None
    seed: int | None = 0
    n_trials: int | None = 60  # trials that measure a point not measured before (repeats and invalid points are
    # answered free and not counted, as a search budgets distinct points; at most MAX_ASKS x this many asks)
    item_budget: int | None = None  # stop once this many items have been evaluated (over this run)
    storage: str | None = None
    study_name: str = "fidelity"
    enqueue: tuple[Mapping[str, Any], ...] = ()
    log: Callable[[str], None] | None = None

    def __post_init__(self) -> None:
        try:
            self.rungs = check_rungs(self.rungs, "search.rungs")
            self.confidence = check_confidence(self.confidence, "search.confidence")
        except ValueError as e:
            raise SearchError(str(e)) from None
        if self.n_trials is None and self.item_budget is None:
            raise SearchError("search.n_trials=None: give a budget, n_trials and/or item_budget")
        self.params = parse_space(self.space)
        self.sizes = rung_sizes(self.n_items, self.rungs, self.batch_size)

    def budget_lines(self) -> list[str]:
        """The budget of the rungs: items per rung and what a search of ``n_trials`` costs at least and at most."""
        rungs = ", ".join(f"{k} items ({f:.3g})" for k, f in zip(self.sizes, self.rungs))
        out = [f"rungs: {rungs}; promoted at {self.confidence:.0%} confidence"]
        if self.n_trials:
            out.append(f"budget: {self.n_trials} trials cost {self.n_trials * self.sizes[0]} items (all stopped at "
                       f"the first rung) to {self.n_trials * self.sizes[-1]} items (all measured fully, as a "
                       "search without rungs)")
        return out

    def run(self) -> FidelityResult:
        study = optuna.create_study(directions=["maximize", "minimize"], storage=self.storage,
                                    study_name=self.study_name, load_if_exists=self.storage is not None,
                                    sampler=make_sampler(self.sampler, self.seed, None, self.sampler_options))
        res = FidelityResult(study)
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):  # a resumed study
            if "key" in t.user_attrs and "items" in t.user_attrs:
                a = t.user_attrs
                res.evidence[a["key"]] = Evidence(a["key"], a["items"], a["of"], t.values[0], a["low"], a["high"],
                                                  t.values[1])
        if not study.trials:
            for values in self.enqueue:
                study.enqueue_trial(dict(values))
        measured = asks = 0
        while ((self.n_trials is None or (measured < self.n_trials and asks < MAX_ASKS * self.n_trials))
               and (self.item_budget is None or res.items_spent < self.item_budget)):
            trial = study.ask()
            asks += 1
            before = len(res.evidence)
            self._trial(study, trial, res)
            measured += len(res.evidence) > before
        return res

    def _trial(self, study: optuna.Study, trial: optuna.Trial, res: FidelityResult) -> None:
        values = suggest(trial, self.params)
        first = self.measure(values, 0)  # the key and what is known already (nothing run)
        if first is None:
            trial.set_user_attr("fail_reason", "invalid point")
            study.tell(trial, state=TrialState.FAIL)
            res.invalid += 1
            return
        key = first[0]
        ev = res.evidence.get(key)
        for size in self.sizes:
            if ev is not None and ev.items >= size:  # measured that far already (this search or a resumed one)
                continue
            if ev is not None and not could_be_on_front(ev, res.evidence.values()):
                break  # stopped: the front's lower bounds beat its upper bound at a latency no worse
            measured = self.measure(values, size)
            assert measured is not None
            before = ev.items if ev is not None else 0
            got = measured[1]  # bounds at this search's confidence, whatever the measure used
            ev = evidence(key, round(got.value * got.items), got.items, got.latency, got.of, self.confidence)
            res.evidence[key] = ev
            res.items_spent += ev.items - before
            res.steps.append(Step(trial.number, res.items_spent, ev))
        assert ev is not None
        for name, value in (("key", key), ("items", ev.items), ("of", ev.of), ("low", ev.low), ("high", ev.high)):
            trial.set_user_attr(name, value)
        study.tell(trial, [ev.value, ev.latency])
        if self.log:
            self.log(f"trial {trial.number}: {key} on {ev.items}/{ev.of} items: accuracy {ev.value:.3f} "
                     f"[{ev.low:.3f}, {ev.high:.3f}], latency {ev.latency:.4g} s")


def record_measure(base, sweep_dir: str | Path, loaded=None, confidence: float = DEFAULT_CONFIDENCE) -> Measure:
    """A :data:`Measure` that evaluates points (``base`` with a trial's values) into the results store at
    ``sweep_dir``, continuing each point's record (:func:`illada.fidelity.evaluate_to`); latency is the
    record's ``latency_p50_s``."""
    from illada.evaluate import resolve
    from illada.fidelity import covered, evaluate_to
    from illada.search import to_point
    from illada.store import SweepStore

    store = SweepStore(sweep_dir)

    def measure(values: Mapping[str, Any], items: int):
        try:
            resolved = resolve(to_point(base, values))
        except (ValueError, OSError):
            return None
        store.plan(resolved.key, resolved.settings, [f"{k}={v}" for k, v in values.items()])
        if items == 0:
            return resolved.key, None
        rec = evaluate_to(resolved, store.records_dir, items, loaded=loaded)
        n = covered(rec)
        of = (rec.get("coverage") or {}).get("of", n)
        hits = round(rec["quality"]["value"] * n)
        return resolved.key, evidence(resolved.key, hits, n, rec["cost"]["latency_p50_s"], of, confidence)

    return measure
