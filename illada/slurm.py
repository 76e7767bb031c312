"""What Slurm says about jobs: the queue (``squeue``), how jobs ended (``sacct``), its array size limit.

One place for the calls, each a single batched command per question (never one per job), each answering
None when Slurm does not answer, so that callers wait for the next poll instead of guessing.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
from dataclasses import dataclass
from typing import Iterable

SLURM_DEFAULT_MAX_ARRAY_SIZE = 1001

#: States of a job that has ended (``sacct``'s State, first word: "CANCELLED by 0" -> CANCELLED).
ENDED = {"COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE",
         "PREEMPTED", "REVOKED", "SPECIAL_EXIT"}


#: Signals that end a job's step whose number Slurm reports as the batch script's exit code (srun exits
#: 128 + N when a signal N ended its task; accounting shows it as ``N:0`` or ``128+N:0``). Only these two:
#: other small exit codes are ordinary program exits (1, 2).
STEP_SIGNALS = (signal.SIGTERM, signal.SIGUSR2)

#: Why a task has no row of its own in ``sacct`` while its array has rows: Slurm deletes a pending array task
#: that is cancelled on its own (``scancel 123_4``) without accounting for it.
CANCELLED_PENDING = "cancelled while pending (Slurm keeps no accounting row for such a task)"


@dataclass(frozen=True)
class Accounting:
    """How Slurm's accounting says a job (one array task) is or ended: ``CANCELLED``, exit code ``0:15``;
    ``note`` says what was inferred beyond sacct's row (a task cancelled while pending has none)."""

    state: str
    exit_code: str
    note: str = ""

    @property
    def ended(self) -> bool:
        return self.state in ENDED

    @property
    def signal(self) -> signal.Signals | None:
        """The signal that ended the job, when the exit code says so: ``0:15`` (the batch script was killed)
        or, for a job that FAILED, srun's ``15:0`` / ``143:0`` for its step (SIGTERM or SIGUSR2 only)."""
        code, _, sig = self.exit_code.partition(":")
        try:
            code_n, sig_n = int(code), int(sig or 0)
        except ValueError:
            return None
        if sig_n:
            try:
                return signal.Signals(sig_n)
            except ValueError:
                return None
        if self.state == "FAILED":
            return next((s for s in STEP_SIGNALS if code_n in (s.value, 128 + s.value)), None)
        return None

    def __str__(self) -> str:
        sig = self.signal
        why = self.note or (f"terminated by {sig.name}" if sig is not None and self.state == "FAILED" else "")
        return f"Slurm state {self.state}, exit code {self.exit_code}" + (f" ({why})" if why else "")


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

    Asks by array id, because tasks cancelled while pending are accounted as one row ``123_[2-99%4]``. An
    asked task that has no row while its array has rows (its pending ones as ``123_[5-9]``, its started ones
    each as ``123_4``) was cancelled on its own while pending: Slurm deleted it without a row, so it is
    answered as CANCELLED with :data:`CANCELLED_PENDING` as its note. A task that has just ended may also
    lack its row for a moment (accounting lags), so a caller should see this twice before acting on it."""
    job_ids = [str(j) for j in job_ids]
    ids = sorted({j.split("_")[0] for j in job_ids})
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
    arrays = {j.split("_")[0] for j in found if "_" in j}
    for job_id in job_ids:
        if job_id not in found and "_" in job_id and job_id.split("_")[0] in arrays:
            found[job_id] = Accounting("CANCELLED", "0:0", note=CANCELLED_PENDING)
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


def requeue_before_handler(signal_name: str = "USR2") -> list[str]:
    """Batch-script lines to follow the job's ``srun`` line: when the requeue signal (submitit's
    ``SIG<signal_name>``) ended the job's step, i.e. it came before the job installed its handler (while
    Python started, imported torch, unpickled the job), requeue the task instead of letting it fail. From
    then on submitit's handler requeues it; either way the points without a record run in the next attempt.

    The lines keep the step's exit status as the script's (a step that failed otherwise still fails)."""
    return [
        "illada_step=$?  # srun exits 128 + N when a signal N ended the job's step",
        f'if [ "$illada_step" -eq $((128 + $(kill -l {signal_name}))) ]; then',
        # an array's last task has the array's own id as SLURM_JOB_ID: requeueing that id requeues every task
        '  illada_task=${SLURM_ARRAY_JOB_ID:+${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}}',
        f'  echo "illada: SIG{signal_name} (the requeue signal) came before the job installed its handler:'
        ' requeueing job ${illada_task:=$SLURM_JOB_ID}" >&2',
        '  scontrol requeue "$illada_task" && sleep 120  # Slurm ends this script as it requeues the job',
        "fi",
        '(exit "$illada_step")',
    ]
