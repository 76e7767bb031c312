"""A Ctrl-C that surfaces as another exception is the Ctrl-C, never a point's failure.

Found in CI: a Ctrl-C landing while Hydra cleaned up a job came out as ``AttributeError: 'NoneType' object has
no attribute '_invalidate_flags_cache'``; the search wrote it as the trial's failure and went on to finish."""

from __future__ import annotations

import pytest

from illada.interrupts import caused_by_interrupt
from illada.runner import PointGroup
from illada.store import SweepStore
from tests.sweep_fixtures import points, tiny_model  # noqa: F401 -- fixture
from tests.test_search import search


def raise_disguised() -> None:
    """What Hydra's cleanup raised: another error while the KeyboardInterrupt was handled (context suppressed,
    as OmegaConf's error formatting does)."""
    try:
        raise KeyboardInterrupt
    except KeyboardInterrupt:
        raise AttributeError("'NoneType' object has no attribute '_invalidate_flags_cache'") from None


def _caught(fn) -> BaseException:
    try:
        fn()
    except BaseException as e:  # noqa: BLE001
        return e
    raise AssertionError("nothing raised")


def test_an_error_raised_while_handling_a_ctrl_c_is_the_ctrl_c():
    assert caused_by_interrupt(_caught(raise_disguised))
    assert caused_by_interrupt(KeyboardInterrupt())

    def chained():
        try:
            raise ValueError("first")
        except ValueError as e:
            raise RuntimeError("second") from e

    assert not caused_by_interrupt(_caught(chained))
    loop = ValueError("a cycle")
    loop.__context__ = RuntimeError("back")
    loop.__context__.__context__ = loop
    assert not caused_by_interrupt(loop)


def test_a_disguised_ctrl_c_in_a_point_stops_the_group_without_a_failure_record(tiny_model, tmp_path, monkeypatch):
    import illada.runner

    monkeypatch.setattr(illada.runner, "evaluate", lambda *a, **k: raise_disguised())
    group = points(tiny_model, steps=(2,))
    with pytest.raises(KeyboardInterrupt):
        PointGroup(tmp_path, group)()
    store = SweepStore(tmp_path)
    assert store.record(group[0].key) is None  # no false "AttributeError" failure: the same command runs it again
    assert store.running(group[0].key) is None  # and no marker left to wait for


def test_a_disguised_ctrl_c_in_a_launch_stops_the_search_without_a_failure_record(tiny_model, tmp_path):
    launched: list[str] = []

    def launch(trial, resolved, overrides):
        from concurrent.futures import Future

        if launched:
            raise_disguised()
        launched.append(resolved.key)
        PointGroup(tmp_path / "sweep", [resolved])()
        fut: Future = Future()
        fut.set_result(None)
        return fut

    s = search(tmp_path, tiny_model, n_trials=6, max_in_flight=1, sampler="random", launch=launch, poll_s=0.01)
    with pytest.raises(KeyboardInterrupt):
        s.run()
    store = SweepStore(tmp_path / "sweep")
    assert [r["key"] for r in store.records(status=None)] == launched  # the one evaluated point, no failure


def test_a_disguised_ctrl_c_in_a_sweep_is_the_one_interrupted_line(tiny_model, tmp_path, monkeypatch, capsys):
    from sweeps.app import main
    from sweeps.grid_sweeper import GridSweeper

    monkeypatch.setattr(GridSweeper, "run", lambda self, arguments: raise_disguised())
    with pytest.raises(SystemExit) as e:
        main(["-m", f"model.path={tiny_model}", f"sweep_dir={tmp_path / 'sweep'}", "sampler.steps=1,2"])
    assert e.value.code == 130
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("interrupted: ") and "Traceback" not in err, err
