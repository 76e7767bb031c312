"""On a real one-node Slurm cluster: a queue setting Slurm refuses (a partition that does not exist) is one line
naming ``hydra.launcher.partition`` and sbatch's message, from the dry run and before a real run writes or
submits anything; a dry run of an acceptable job says so (``sbatch --test-only``, with submitit's parameters).

``ILLADA_SLURM_KEEP=1 pytest -m slurm tests/slurm/test_slurm_dry_run.py``
"""

from __future__ import annotations

import pytest

from sweeps.app import main
from tests.slurm.test_slurm_sweeps import SLURM
from tests.sweep_fixtures import tiny_model  # noqa: F401 -- fixture

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.usefixtures("slurm_cluster")]
SLURM_QUEUE = [o for o in SLURM if not o.startswith("hydra.sweeper.")]  # the Pareto sweeper has no poll settings


def _args(model, sweep_dir, *extra: str) -> list[str]:
    return ["-m", f"model.path={model}", f"sweep_dir={sweep_dir}", "task.limit=4", "hydra.sweeper.plot=false",
            "sampler.steps=8,4", *SLURM, *extra]


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "run"])
def test_invalid_partition_is_one_line_before_anything_is_submitted(dry_run, tiny_model, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(_args(tiny_model, tmp_path / "sweep", "hydra.launcher.partition=nope", *(["--dry-run"] * dry_run)))
    line = e.value.code
    assert isinstance(line, str) and "\n" not in line, line
    assert line.startswith("error: hydra.launcher.partition=nope: Slurm would refuse the job: ") and \
        "invalid partition" in line.lower(), line
    assert not (tmp_path / "sweep").exists()  # nothing written: submitit's folder (its jobs' scripts) is in it
    assert "Traceback" not in capsys.readouterr().err


def test_dry_run_asks_slurm_whether_it_would_accept_the_job(tiny_model, tmp_path, capsys):
    main(_args(tiny_model, tmp_path / "sweep", "--dry-run"))
    out = capsys.readouterr().out
    assert "would run 2 in 1 jobs (slurm)" in out and "sbatch --test-only: the cluster would accept the job" in out
    assert not (tmp_path / "sweep").exists()


def test_invalid_partition_of_a_search_is_one_line_before_any_trial(tmp_path, capsys):
    from sweeps.search import main as search_main  # the deprecated alias runs the same Pareto sweeper

    with pytest.raises(SystemExit) as e:
        search_main([f"sweep_dir={tmp_path / 'sweep'}", "task.limit=4", *SLURM_QUEUE, "hydra.launcher.partition=nope"])
    line = e.value.code
    assert isinstance(line, str) and line.startswith("error: hydra.launcher.partition=nope: Slurm would refuse"), line
    assert not (tmp_path / "sweep").exists()
