"""A real tiny sweep for the analysis tests: a random 1-layer embedded-format model evaluated by illada.evaluate."""

from __future__ import annotations

from pathlib import Path

import pytest

from illada.evaluate import Point, evaluate, failure_summary, resolve
from illada.store import SweepStore
from tests.sweep_fixtures import make_tiny_model

# (steps, block_length) of gen_length 8: steps must be a multiple of the number of blocks
GRID = [(8, 8), (4, 8), (2, 8), (8, 4), (4, 4), (8, 2), (4, 2)]
SCORERS = [{"name": "confidence"}, {"name": "likelihood", "mc_num": 8, "batch_size": 8}]


def build_real_sweep(root: Path, limit: int = 8) -> Path:
    """Evaluate the grid (low-confidence remasking, plus random at 4 steps) on ``arithmetic`` and both scorers on
    ``arithmetic_mc`` into ``root`` in the store's layout, plus one failure record; built once per directory."""
    if (root / "done").exists():
        return root
    import illada

    model = make_tiny_model(root.parent / f"{root.name}_model")
    loaded = illada.load(str(model))
    store = SweepStore(root)
    samplers = [{"gen_length": 8, "steps": s, "block_length": b} for s, b in GRID]
    samplers.append({"gen_length": 8, "steps": 4, "block_length": 4, "remasking": "random", "seed": 0})
    points = [Point(model=str(model), task="arithmetic", limit=limit, sampler=s) for s in samplers]
    points += [Point(model=str(model), task="arithmetic_mc", limit=limit, scorer=s) for s in SCORERS]
    for point in points:
        resolved = resolve(point)
        overrides = [f"{k}={v}" for k, v in (point.sampler or point.scorer).items()]
        store.plan(resolved.key, resolved.settings, [f"task={point.task}", *overrides])
        evaluate(resolved, store.records_dir, loaded=loaded, progress=False)
    failed = resolve(Point(model=str(model), task="arithmetic", limit=limit,
                           sampler={"gen_length": 8, "steps": 2, "block_length": 4}))
    store.plan(failed.key, failed.settings, ["task=arithmetic", "steps=2", "block_length=4"])
    store.write_failure(failure_summary(failed, RuntimeError("CUDA out of memory"), log_path="logs/0_0_log.err"))
    (root / "done").touch()
    return root


@pytest.fixture(scope="session")
def real_sweep(tmp_path_factory) -> Path:
    """Shared by the analysis and notebook tests (one build per session, whichever module asks first)."""
    return build_real_sweep(tmp_path_factory.getbasetemp() / "analysis_real_sweep")
