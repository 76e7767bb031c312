"""Helpers for the tests of the Pareto search (``illada-sweep -m +ablation=NAME`` with an ablation that sets
``hydra/sweeper=illada_pareto``): a search ablation file and a runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import yaml

ROOT = Path(__file__).resolve().parents[1]

# steps x remasking of the fixed schedule: 8 valid points, cheap on the tiny model
SPACE = {"sampler.steps": {"choices": [1, 2, 4, 8]},
         "sampler.remasking": {"choices": ["low_confidence", "random"]}}


def write_search(conf_dir: Path, name: str = "tiny", **sweeper) -> Path:
    """A search ablation ``ablation/NAME.yaml`` in ``conf_dir`` (passed to the app with ``hydra.searchpath``), as a
    user adds one: it selects the Pareto sweeper and sets its space."""
    spec = {"objectives": ["accuracy", "nfe_per_sample"], "space": SPACE, "n_trials": 6, "max_in_flight": 2,
            "sampler": "random", "seed": 0, "poll_s": 0.2}
    spec.update(sweeper)
    path = conf_dir / "ablation" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# @package _global_\n" + yaml.safe_dump(
        {"defaults": [{"override /hydra/sweeper": "illada_pareto"}], "name": name, "task": {"limit": 4},
         "sampler": {"gen_length": 8, "block_length": 8}, "hydra": {"mode": "MULTIRUN", "sweeper": spec}},
        sort_keys=False))
    return path


def search_args(model: Path, sweep_dir: Path, conf_dir: Path, name: str = "tiny", *extra: str) -> list[str]:
    return [f"hydra.searchpath=[file://{conf_dir}]", f"+ablation={name}", f"model.path={model}",
            f"sweep_dir={sweep_dir}", *extra]


def run_search(args: list[str], check: bool = True, **kw) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", "sweeps.app", "-m", *args], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONUNBUFFERED": "1"}, **kw)
    if check and out.returncode != 0:
        raise AssertionError(f"illada-sweep failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return out


def load_study(sweep_dir: Path, name: str = "tiny") -> optuna.Study:
    from optuna.storages.journal import JournalFileBackend

    storage = optuna.storages.JournalStorage(JournalFileBackend(str(sweep_dir / "optuna.journal")))
    return optuna.load_study(study_name=name, storage=storage)
