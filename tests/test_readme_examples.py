"""Every ``illada-sweep`` example of README.md, ablations/README.md and sweeps/README.md that needs no cluster and no
8B checkpoint runs, as written in the README (read from it here), on the embedded model; ``task.limit`` (and a
search's ``n_trials``) are appended to keep it short. Also Hydra's own conveniences on the app."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from illada.store import SweepStore
from sweeps.app import main

ROOT = Path(__file__).resolve().parents[1]
DOCS = ["README.md", "ablations/README.md", "sweeps/README.md"]
NEEDS_A_CLUSTER = ("submitit_slurm", "example_site", "my_cluster")
NEEDS_A_CHECKPOINT = re.compile(r"\bmodel=(il)?llada-8b")


def commands(doc: str) -> list[list[str]]:
    """The ``illada-sweep`` command lines in the doc's code blocks (continuations joined, comments dropped)."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", (ROOT / doc).read_text(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words and Path(words[0]).name == "illada-sweep":
                out.append(words[1:])
            elif "&&" in words and Path(words[-2]).name == "illada-sweep":  # bash .ci/setup && illada-sweep ...
                out.append(words[-1:])
    return out


EXAMPLES = [(doc, args) for doc in DOCS for args in commands(doc)]
RUNNABLE = [(doc, args) for doc, args in EXAMPLES if not NEEDS_A_CHECKPOINT.search(" ".join(args))
            and ("--dry-run" in args or not any(w in " ".join(args) for w in NEEDS_A_CLUSTER))]


def test_the_docs_have_examples():
    assert len(EXAMPLES) >= 15 and len(RUNNABLE) >= 10
    assert ["-m", "+ablation=frontier"] in [args for _, args in EXAMPLES]  # the README's main job


def _run(args: list[str]) -> None:
    try:
        main(args)
    except SystemExit as e:
        assert e.code in (0, None), f"illada-sweep {' '.join(args)}: {e.code}"


@pytest.mark.slow
@pytest.mark.parametrize("doc, args", RUNNABLE, ids=[f"{d}: {' '.join(a)}" for d, a in RUNNABLE])
def test_readme_example_runs(doc, args, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ILLADA_SWEEP_ROOT", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    short = ["task.limit=8"] if "--help" not in args else []
    if "+ablation=search" in args:
        short.append("hydra.sweeper.n_trials=3")
    _run([*args, *short])
    out = capsys.readouterr().out
    if "--help" in args:
        assert "ablation: " in out and "sampler: " in out
    elif "--dry-run" in args:
        assert "valid points" in out and not list(tmp_path.rglob("records"))
    else:
        stores = [p.parent for p in tmp_path.rglob("records")]
        assert stores and all(SweepStore(s).records() for s in stores), out[-2000:]


def test_main_job_ends_in_the_pareto_plot(tmp_path, monkeypatch):
    """README: `illada-sweep -m +ablation=frontier` ... ends with runs/sweeps/frontier/pareto.png."""
    monkeypatch.setenv("ILLADA_SWEEP_ROOT", str(tmp_path))
    _run(["-m", "+ablation=frontier", "task.limit=4"])
    store = SweepStore(tmp_path / "frontier")
    assert (store.root / "pareto.png").stat().st_size > 0 and len(store.records()) >= 10
    multirun = yaml.safe_load((store.root / "multirun.yaml").read_text())
    assert multirun["hydra"]["mode"] == "MULTIRUN" and "+ablation=frontier" in multirun["hydra"]["overrides"]["task"]


def test_hydra_conveniences(tmp_path, monkeypatch, capsys):
    """--help lists the config groups, --hydra-help the sweepers and launchers, --cfg job and --info answer,
    shell completion completes our groups."""
    _run(["--help"])
    out = capsys.readouterr().out
    assert "illada-sweep" in out and "ablation: caches, decoders, frontier" in out and "task: " in out
    _run(["--hydra-help"])
    out = capsys.readouterr().out
    assert "hydra/sweeper: basic, illada_grid, illada_pareto" in out
    assert "hydra/launcher: basic, example_site, submitit_local, submitit_slurm" in out
    _run(["--cfg", "job", "+ablation=steps_blocks"])
    assert yaml.safe_load(capsys.readouterr().out)["name"] == "steps_blocks"
    _run(["--cfg", "hydra", "-p", "hydra.sweeper", "+ablation=search"])
    assert "ParetoSweeper" in capsys.readouterr().out  # an ablation selects the sweeper
    _run(["--info", "defaults"])
    assert "hydra/sweeper/illada_grid" in capsys.readouterr().out
    monkeypatch.setenv("COMP_LINE", "illada-sweep hydra/sweeper=illada_")
    _run(["-sc", "query=bash"])
    assert "hydra/sweeper=illada_grid hydra/sweeper=illada_pareto" in capsys.readouterr().out
