"""What Slurm says about jobs: the queue (``squeue``), how jobs ended (``sacct``), its array size limit.

One place for the calls, each a single batched command per question (never one per job), each answering
None when Slurm does not answer, so that callers wait for the next poll instead of guessing.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from typing import Iterable

SLURM_DEFAULT_MAX_ARRAY_SIZE = 1001

#: States of a job that has ended (``sacct``'s State, first word: "CANCELLED by 0" -> CANCELLED).
ENDED = {"COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE",
         "PREEMPTED", "REVOKED", "SPECIAL_EXIT"}


@dataclass(frozen=True)
class Accounting:
    """How Slurm's accounting says a job (one array task) is or ended: ``CANCELLED``, exit code ``0:15``."""

    state: str
    exit_code: str

    @property
    def ended(self) -> bool:
        return self.state in ENDED

    def __str__(self) -> str:
        return f"Slurm state {self.state}, exit code {self.exit_code}"


def _run(cmd: list[str], check: bool = True) -> str | None:
    """The command's output; None when it is not installed, hangs, or (``check``) fails."""
    if shutil.which(cmd[0]) is None:
        return None
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return None if check and out.returncode != 0 else out.stdout


def slurm_max_array_size() -> int:
    """The cluster's ``MaxArraySize`` (``scontrol show config``); Slurm's default when it cannot be read.

    Array indices must stay below it, and submitit numbers an array 0..n-1, so an array holds at most this
    many tasks."""
    out = _run(["scontrol", "show", "config"], check=False) or ""  # no value in it: the default
    m = re.search(r"^MaxArraySize\s*=\s*(\d+)", out, re.MULTILINE)
    return int(m.group(1)) if m else SLURM_DEFAULT_MAX_ARRAY_SIZE


def slurm_queue() -> set[str] | None:
    """Ids of the jobs Slurm still holds (array tasks one by one); None when squeue does not answer."""
    out = _run(["squeue", "-h", "-r", "-o", "%i"])
    return set(out.split()) if out is not None else None


def slurm_accounting(job_ids: Iterable[str]) -> dict[str, Accounting] | None:
    """What ``sacct`` knows of these jobs or array tasks (``123`` or ``123_4``), in one call; ids it has no
    record of yet are absent. None when sacct does not answer.

    Asks by array id, because tasks cancelled while pending are accounted as one row ``123_[2-99%4]``."""
    ids = sorted({str(j).split("_")[0] for j in job_ids})
    if not ids:
        return {}
    out = _run(["sacct", "-X", "-n", "-P", "-o", "JobID,State,ExitCode", "-j", ",".join(ids)])
    if out is None:
        return None
    found: dict[str, Accounting] = {}
    for line in out.splitlines():
        parts = line.split("|")
        if len(parts) < 3:
            continue
        acc = Accounting(state=(parts[1].split() or ["UNKNOWN"])[0], exit_code=parts[2])
        for job_id in _expand(parts[0]):
            found[job_id] = acc
    return found


def _expand(job_id: str) -> list[str]:
    """``123_[2-4,7%2]`` -> ``123_2 123_3 123_4 123_7``; other ids as they are."""
    m = re.fullmatch(r"(\d+)_\[([^\]%]*)(?:%\d+)?\]", job_id)
    if not m:
        return [job_id]
    out = []
    for part in m.group(2).split(","):
        lo, _, hi = part.partition("-")
        out.extend(f"{m.group(1)}_{i}" for i in range(int(lo), int(hi or lo) + 1))
    return out


def sbatch_test_only(script: str) -> tuple[bool, str]:
    """Ask ``sbatch --test-only`` whether Slurm would accept this batch script (nothing is queued): (accepted,
    sbatch's message, its ``sbatch: error:`` lines joined when it refuses)."""
    if shutil.which("sbatch") is None:
        return False, "sbatch is not installed on this host (is this a Slurm login node?)"
    try:
        out = subprocess.run(["sbatch", "--test-only"], input=script, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, f"sbatch --test-only did not answer: {e}"
    lines = [line.strip() for line in (out.stderr + out.stdout).splitlines() if line.strip()]
    if out.returncode == 0:
        return True, " ".join(lines)
    errors = [line.removeprefix("sbatch: error: ") for line in lines if line.startswith("sbatch: error:")]
    return False, "; ".join(errors or lines) or f"exit status {out.returncode}"
