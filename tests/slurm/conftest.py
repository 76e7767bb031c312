"""A real one-node Slurm cluster for the ``slurm`` tests, started by the project's own script.

The session fixture uses a cluster that already answers; otherwise, as root, it runs ``.ci/slurm/setup.sh``
(installs the Debian packages if needed, starts munge, MariaDB + slurmdbd for ``sacct``, slurmctld, slurmd)
and stops it with ``teardown.sh`` at the end of the session (``ILLADA_SLURM_KEEP=1`` leaves it up). Without
root or apt the tests are skipped with the reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / ".ci" / "slurm"


def _cluster_answers() -> bool:
    if shutil.which("sinfo") is None:
        return False
    out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    return out.returncode == 0 and any(s in out.stdout for s in ("idle", "mixed", "allocated"))


@pytest.fixture(scope="session")
def slurm_cluster():
    """Yields once a Slurm cluster with accounting answers on this machine."""
    started = False
    if not _cluster_answers():
        if os.geteuid() != 0:
            pytest.skip("no Slurm cluster answers and we are not root to start one (.ci/slurm/setup.sh)")
        if shutil.which("apt-get") is None and shutil.which("slurmctld") is None:
            pytest.skip("no Slurm cluster answers and neither Slurm nor apt-get is installed")
        run = subprocess.run(["bash", str(SCRIPTS / "setup.sh")], capture_output=True, text=True, timeout=600,
                             env={**os.environ, "SLURM_LOCAL_SMOKE": "0"})
        if run.returncode != 0:
            pytest.skip(f".ci/slurm/setup.sh failed:\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}")
        started = True
    yield
    if started and os.environ.get("ILLADA_SLURM_KEEP") != "1":
        subprocess.run(["bash", str(SCRIPTS / "teardown.sh")], capture_output=True, timeout=300)
