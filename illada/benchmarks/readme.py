"""Time every README command that needs no cluster, GPU or 8B checkpoint, run exactly as written.

    .venv/bin/python -m illada.benchmarks.readme [--doc README.md ...] [--keep DIR] [--all]

The commands are read from the ```bash and ```python blocks of README.md, ablations/README.md, sweeps/README.md
and docs/*.md
(the same extraction tests/test_readme_examples.py runs, so README and measurement cannot drift). Each doc runs in
document order in its own fresh directory (a later command reads what an earlier one wrote, e.g. the report reads
the sweep), with `.venv` linked into it, so `.venv/bin/illada-sweep ...` and `runs/sweeps/<name>` mean what they
mean in a fresh clone. Full-size commands (the doc states more than LONG_S for them) are listed, run only
with --all. Prints a Markdown table: command | time stated in the README | time measured. Timings on a
loaded machine are inflated: run it on a quiet one before writing any figure into the README.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ("README.md", "ablations/README.md", "sweeps/README.md",
        *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md")))

# Why a command is not run here; the first pattern that matches the command's text wins.
SKIPS: tuple[tuple[str, str], ...] = (
    (r"\.ci/setup", "setup: creates .venv"),
    (r"\bpytest\b", "the test suite itself"),
    (r"\bmodel=i?llada-8b|/data/ckpt/", "needs an 8B checkpoint"),
    (r"\.ci/gpu/|illada\.benchmarks\.gpu|device=\"cuda\"", "needs a GPU"),
    (r"submitit_slurm|example_site|my_cluster", "needs a Slurm cluster"),
    (r"optuna-dashboard", "a web server that runs until stopped (pip install optuna-dashboard)"),
    (r"-m (illada\.benchmarks|sweeps\.benchmark|analysis\.bench)", "a benchmark: a measurement that runs for minutes"),
    (r"\bgenerate\(model, prompt_ids", "a fragment: model, ids, prompt_ids, ctx_ids are the reader's own"),
)
_STATED = re.compile(r"~\s*[\d.,]+(?:\s*-\s*[\d.,]+)?\s*(?:ms|s|min|h)\b")
_COMMENT = re.compile(r"\s#")  # a shell comment starts at a `#` after a blank
_SETUP_PREFIX = re.compile(r"^bash \.ci/setup\s*&&\s*")


@dataclass(frozen=True)
class Example:
    """One runnable unit of a doc: a bash command line or a whole python block."""

    doc: str
    line: int      # 1-based line of the doc where it starts
    kind: str      # "bash" | "python"
    text: str      # the command (continuations joined, comment dropped) or the python source
    stated: str    # the time the doc states for it ("~20 s"), "" if none
    skip: str      # why it is not run here, "" if it runs

    @property
    def label(self) -> str:
        first = self.text.strip().splitlines()[0]
        return first if self.kind == "bash" else f"python block: {first}"


def _skip(text: str) -> str:
    return next((why for pattern, why in SKIPS if re.search(pattern, text)), "")


def _stated(comment: str) -> str:
    return (_STATED.findall(comment) or [""])[0]


def _bash_examples(doc: str, start: int, block: str) -> list[Example]:
    out, pending, note, first = [], "", "", 0
    for i, raw in enumerate(block.splitlines()):
        if not pending:
            first = start + i
        pending += raw
        if raw.rstrip().endswith("\\"):  # a continuation: the comment, if any, is on the last line
            pending = pending.rstrip()[:-1] + " "
            continue
        line, pending = pending, ""
        if not shlex.split(line, comments=True):  # a comment line speaks for the command below it
            note = note + " " + line if line.strip() else ""
            continue
        command, *comment = _COMMENT.split(line, maxsplit=1)
        command = _SETUP_PREFIX.sub("", " ".join(command.split()))
        stated = _stated(" ".join(comment)) or _stated(note)
        out.append(Example(doc, first, "bash", command, stated, _skip(command)))
        note = ""
    return out


def examples(doc: str) -> list[Example]:
    """The doc's bash command lines and python blocks, in document order."""
    text = (ROOT / doc).read_text()
    out: list[Example] = []
    for m in re.finditer(r"^```(bash|python)\n(.*?)^```", text, re.S | re.M):
        start = text.count("\n", 0, m.start(2)) + 1
        kind, block = m.group(1), m.group(2)
        if kind == "bash":
            out += _bash_examples(doc, start, block)
        else:
            comments = " ".join(_COMMENT.split(l, maxsplit=1)[-1] for l in block.splitlines() if "#" in l)
            out.append(Example(doc, start, "python", block, _stated(comments), _skip(block)))
    return out


_UNIT_S = {"ms": 0.001, "s": 1, "min": 60, "h": 3600}
LONG_S = 300  # a command the doc says takes longer than this is a full-size one; its short version is tested
SHORT_LIMIT = 3


def stated_seconds(stated: str) -> float | None:
    """The upper end of a stated time in seconds: "~20-40 s" -> 40, "~1 h" -> 3600; None when none is stated."""
    m = re.fullmatch(r"~\s*(?:[\d.,]+\s*-\s*)?([\d.,]+)\s*(ms|s|min|h)", stated.strip())
    return float(m.group(1).replace(",", "")) * _UNIT_S[m.group(2)] if m else None


def is_long(example: Example) -> bool:
    """Whether the doc says this command runs for minutes (a full-size one, shown beside its short version)."""
    return (stated_seconds(example.stated) or 0) > LONG_S


def shortened(example: Example) -> Example:
    """A long command with its item limits cut to SHORT_LIMIT (what the doc test runs); others as they are."""
    if not is_long(example):
        return example
    text = re.sub(r"(task\.limit=|--limit[ =])\d+", rf"\g<1>{SHORT_LIMIT}", example.text)
    return Example(example.doc, example.line, example.kind, text, example.stated, example.skip)


def workdir(path: Path) -> Path:
    """Make `path` look like a fresh clone for the docs' commands: `.venv` linked in, nothing else."""
    path.mkdir(parents=True, exist_ok=True)
    venv = path / ".venv"
    if not venv.exists():
        venv.symlink_to(ROOT / ".venv")
    return path


def environment() -> dict[str, str]:
    """The environment the docs assume: the venv's commands on PATH (ablations/README writes `illada-sweep`),
    the default sweep root (runs/sweeps under the working directory) and no display."""
    env = {k: v for k, v in os.environ.items() if k != "ILLADA_SWEEP_ROOT"}
    env["PATH"] = f"{ROOT / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("MPLBACKEND", "Agg")
    return env


def run(example: Example, cwd: Path, timeout: float | None = None) -> tuple[subprocess.CompletedProcess, float]:
    """Run one example in `cwd` as a new user would (a shell line; a python block in a fresh interpreter).
    Returns the finished process (stdout and stderr captured) and its wall time in seconds."""
    if example.kind == "bash":
        argv = ["bash", "-c", example.text]
    else:
        argv = [str(ROOT / ".venv" / "bin" / "python"), "-c", example.text]
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, env=environment(), capture_output=True, text=True, timeout=timeout)
    return done, time.perf_counter() - start


def _seconds(s: float) -> str:
    return f"{s:.0f} s" if s < 90 else f"{s / 60:.1f} min"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--doc", action="append", choices=DOCS, help="only this doc (repeatable; default: all)")
    parser.add_argument("--keep", type=Path, help="run in DIR/<doc> and keep it (default: a temporary directory)")
    parser.add_argument("--all", action="store_true",
                        help=f"also run the full-size commands (stated > {LONG_S} s; default: listed, not run)")
    args = parser.parse_args(argv)
    print(f"| doc | command | time stated | time measured |\n|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="illada-readme-") as tmp:
        for doc in args.doc or DOCS:
            cwd = workdir((args.keep or Path(tmp)) / doc.replace("/", "_"))
            for ex in examples(doc):
                if ex.skip:
                    measured = f"not run: {ex.skip}"
                elif is_long(ex) and not args.all:
                    measured = "not run: full size (--all runs it)"
                else:
                    done, seconds = run(ex, cwd)
                    measured = _seconds(seconds) + ("" if done.returncode == 0 else f" (exit {done.returncode})")
                    if done.returncode:
                        print(done.stderr[-2000:], file=sys.stderr)
                cmd = ex.label.replace("|", "\\|")
                print(f"| {doc}:{ex.line} | `{cmd}` | {ex.stated or '-'} | {measured} |", flush=True)


if __name__ == "__main__":
    main()
