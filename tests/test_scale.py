"""Sweeps at scale: the plan of a large grid is built without one Hydra composition per point, and still holds
exactly the points Hydra composes; the columnar summary of a sweep's records; the search controller's cost."""

from __future__ import annotations

import random

import pytest
from hydra import compose

from illada.evaluate import Point, resolve
from sweeps.app import grid_sweeper
from sweeps.expand import SweepError, to_point
from tests.sweep_fixtures import tiny_model  # noqa: F401 -- fixture

# group choices (task=, scorer=), nested values (sampler.*), top-level values (seed, batch_size) and a value that
# is an interpolation (task.limit=${batch_size}: it takes the full composition path)
GRID = ["task=arithmetic,piqa", "scorer=likelihood,confidence", "sampler.steps=8,4",
        "sampler.remasking=low_confidence,random", "seed=0,1,2", "batch_size=16,8", "task.limit=4,${batch_size}"]


def test_planned_points_are_what_hydra_composes(tiny_model, tmp_path):
    fixed = [f"model.path={tiny_model}", f"sweep_dir={tmp_path / 'sweep'}"]
    with grid_sweeper(fixed + GRID) as (sweeper, arguments):
        plan = sweeper.plan(arguments)
        # each distinct set of group choices composed once (task x scorer, and the sweep's base), not per point
        assert len(sweeper._composed) <= 5
        assert len(plan.points) == 2 * 2 * 3 * 2 * 2 + 2 * 3 * 2 * 2  # sampler.* duplicates of piqa dropped
        for p in random.Random(0).sample(plan.points, 40):
            cfg = compose("config", overrides=plan.fixed + p.overrides)  # a full Hydra composition of the point
            expected = resolve(to_point(cfg))
            assert p.resolved.settings == expected.settings, p.overrides
            assert p.resolved.key == expected.key
            assert p.resolved.point == expected.point


def test_unknown_key_is_refused_on_the_fast_path_too(tiny_model, tmp_path):
    with grid_sweeper([f"model.path={tiny_model}", f"sweep_dir={tmp_path / 'sweep'}", "sampler.stepz=8,4"]) as (
            sweeper, arguments):
        with pytest.raises(SweepError, match="there is no 'sampler.stepz' in the config"):
            sweeper.plan(arguments)


def test_sampler_validation_memo_keeps_types_apart():
    """Settings are validated once per distinct value set; 1 and True (equal in Python) are not one set."""
    base = Point(sampler={"steps": 8, "gen_length": 8, "block_length": 8})
    assert resolve(base).sampler is resolve(Point(sampler=dict(base.sampler), seed=3)).sampler  # validated once
    assert resolve(Point(sampler={**base.sampler, "debias": True})).settings["sampler"]["debias"] is True
    with pytest.raises(ValueError, match="debias=1: must be true or false"):
        resolve(Point(sampler={**base.sampler, "debias": 1}))
