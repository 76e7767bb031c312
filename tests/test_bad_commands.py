"""A bad command writes nothing: each exits non-zero with one line naming the setting at fault, and every file
of the existing sweep it was pointed at stays byte-identical (no plan rewritten, no journal, no folder made)."""

from __future__ import annotations

import hashlib
import os

import pytest

from sweeps.app import main
from tests.search_fixtures import search_args, write_search
from tests.test_errors_sweep import _error
from tests.sweep_fixtures import tiny_model  # noqa: F401 -- fixture


def _tree(root) -> dict[str, str]:
    """Every file (hashed) and folder under ``root``, hidden ones too."""
    out = {}
    for folder, dirs, files in os.walk(root):
        rel = os.path.relpath(folder, root)
        out[rel + "/"] = "dir"
        for name in files:
            with open(os.path.join(folder, name), "rb") as f:
                out[os.path.join(rel, name)] = hashlib.sha256(f.read()).hexdigest()
    return out


@pytest.fixture(scope="module")
def sweep(tiny_model, tmp_path_factory):
    """An existing sweep of two finished points (and a search config in ``conf/``, written per test)."""
    root = tmp_path_factory.mktemp("bad_commands")
    main(["-m", f"model.path={tiny_model}", f"sweep_dir={root / 'sweep'}", "task.limit=4", "sampler.steps=8,4",
          "--no-plot"])
    assert len(list((root / "sweep" / "records").glob("*.json"))) == 2
    return root


GRID = ["sampler.steps=8,4"]


@pytest.mark.parametrize("args, named", [
    (["sampler.seed=range(0,0)"], "sweep 'sampler.seed=range(0,0)': has no values"),
    ([*GRID, "hydra.sweeper.max_in_flight=0"], "hydra.sweeper.max_in_flight=0: must be a positive integer"),
    ([*GRID, "hydra/launcher=submitit_local", "hydra.sweeper.max_in_flight=0"], "hydra.sweeper.max_in_flight=0"),
    ([*GRID, "hydra/launcher=submitit_slurm", "hydra.launcher.array_parallelism=-2"],
     "hydra.launcher.array_parallelism=-2: must be a positive integer"),
    ([*GRID, "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=0"], "hydra.launcher.timeout_min=0"),
    ([*GRID, "hydra.sweeper.stale_after_s=0"], "hydra.sweeper.stale_after_s=0: must be a positive number"),
    ([*GRID, "hydra.sweeper.poll_s=-1"], "hydra.sweeper.poll_s=-1"),
    ([*GRID, "hydra.sweeper.max_array_size=0"], "hydra.sweeper.max_array_size=0"),
    (["sampler.block_length=3,5", "hydra.sweeper.on_invalid=skip"],
     "all 2 points are invalid (hydra.sweeper.on_invalid=skip dropped them)"),
])
def test_a_bad_grid_command_exits_with_one_line_and_writes_nothing(args, named, sweep, tiny_model, capsys):
    before = _tree(sweep / "sweep")
    line = _error(["-m", f"model.path={tiny_model}", f"sweep_dir={sweep / 'sweep'}", "task.limit=4", *args], capsys)
    assert named in line, line
    assert _tree(sweep / "sweep") == before


@pytest.mark.parametrize("sweeper, extra, named", [
    ({"space": {"sampler.block_length": {"choices": [3, 5]}}}, [],
     "search space (hydra.sweeper.space): all 2 points of the space are invalid, e.g. [sampler.block_length=3]"),
    ({"space": {"sampler.threshold": {"type": "float", "low": 1.5, "high": 3.0}}}, [],
     "search space (hydra.sweeper.space): 64 random draws of the space (continuous or over 4096 points) were all "
     "invalid"),
    ({}, ["hydra.sweeper.max_in_flight=0"], "hydra.sweeper.max_in_flight=0"),
    ({}, ["hydra.sweeper.n_trials=0"], "hydra.sweeper.n_trials=0"),
    ({}, ["hydra/launcher=submitit_slurm", "hydra.launcher.array_parallelism=-2"],
     "hydra.launcher.array_parallelism=-2"),
])
def test_a_bad_search_command_exits_with_one_line_and_writes_nothing(sweeper, extra, named, sweep, tiny_model,
                                                                     capsys):
    write_search(sweep / "conf", **sweeper)
    before = _tree(sweep / "sweep")
    line = _error(["-m", *search_args(tiny_model, sweep / "sweep", sweep / "conf"), *extra], capsys)
    assert named in line, line
    assert _tree(sweep / "sweep") == before  # no optuna.journal, no multirun.yaml rewritten

