"""``.ci/slurm/setup.sh`` leaves none of its caller's open files in the daemons it starts (issue 14, item 7).

Was: the daemons inherited every descriptor of the caller, so ``flock LOCK .ci/slurm/setup.sh`` never released
LOCK (slurmctld, slurmd, slurmdbd, munged and mariadbd kept it open for as long as they ran).

The test starts the daemons itself with a locked file open in setup.sh: a cluster that is already up (this
session's or another one set up by this script) is stopped with ``teardown.sh`` first. It is left up
afterwards when it was up before or with ``ILLADA_SLURM_KEEP=1`` (as tests/slurm/conftest.py does).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.slurm.conftest import SCRIPTS, _cluster_answers

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def _holders(path: Path) -> list[str]:
    """``comm[pid]`` of every process with ``path`` open."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fds = list((proc / "fd").iterdir())
            if any(os.readlink(fd) == str(path) for fd in fds):
                found.append(f"{(proc / 'comm').read_text().strip()}[{proc.name}]")
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


def test_setup_daemons_do_not_keep_the_callers_open_files(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("starting the cluster's daemons needs root (.ci/slurm/setup.sh)")
    if shutil.which("apt-get") is None and shutil.which("slurmctld") is None:
        pytest.skip("neither Slurm nor apt-get is installed")
    was_up = _cluster_answers()
    if was_up:  # the daemons must be started by this test to check what they inherited
        subprocess.run(["bash", str(SCRIPTS / "teardown.sh")], capture_output=True, timeout=300, check=True)
    lock = tmp_path / "setup.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # what `flock LOCK bash setup.sh` holds while the script runs
    try:
        run = subprocess.run(["bash", str(SCRIPTS / "setup.sh")], capture_output=True, text=True, timeout=600,
                             pass_fds=(fd,), env={**os.environ, "SLURM_LOCAL_SMOKE": "0"})
    finally:
        os.close(fd)
    try:
        assert run.returncode == 0, f"{run.stdout[-2000:]}\n{run.stderr[-2000:]}"
        assert _cluster_answers()
        assert _holders(lock) == [], "daemons kept the caller's lock file open"
        again = os.open(lock, os.O_RDWR)
        try:
            fcntl.flock(again, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError while a daemon holds it
        finally:
            os.close(again)
    finally:
        if not was_up and os.environ.get("ILLADA_SLURM_KEEP") != "1":
            subprocess.run(["bash", str(SCRIPTS / "teardown.sh")], capture_output=True, timeout=300)
