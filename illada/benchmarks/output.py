"""Where a benchmark writes its Markdown report.

By default under ``bench_out/`` (git-ignored), so that running a benchmark never changes a committed file;
``--update-results`` writes the committed report in ``illada/benchmarks/results/`` instead (full runs only:
a ``--quick`` run's smaller figures never replace it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

RESULTS_DIR = Path(__file__).parent / "results"
BENCH_OUT = Path("bench_out")


def add_report_options(parser: argparse.ArgumentParser, name: str, flag: str = "--out") -> None:
    """Add ``flag`` (the report's path) and ``--update-results`` for the committed report ``results/{name}``."""
    parser.add_argument(flag, type=Path, default=None, dest="report",
                        help=f"where to write the Markdown report (default: {BENCH_OUT / name})")
    parser.add_argument("--update-results", action="store_true",
                        help=f"overwrite the committed report illada/benchmarks/results/{name} (full runs only)")


def report_path(args: argparse.Namespace, name: str, flag: str = "--out") -> Path:
    """The report's path for parsed ``args`` (see :func:`add_report_options`); ``SystemExit`` with one
    ``error:`` line for ``--update-results`` with ``--quick`` or with an explicit path."""
    if not args.update_results:
        if args.report is not None and args.report.resolve() == (RESULTS_DIR / name).resolve():
            raise SystemExit(f"error: {flag} {args.report}: that is the committed report; pass --update-results "
                             "to replace it")
        return args.report or BENCH_OUT / name
    if getattr(args, "quick", False):
        raise SystemExit(f"error: --update-results with --quick: quick figures never replace "
                         f"illada/benchmarks/results/{name}; run without --quick")
    if args.report is not None:
        raise SystemExit(f"error: --update-results writes illada/benchmarks/results/{name}; drop {flag} {args.report}")
    return RESULTS_DIR / name


def write_report(out: Path, report: str) -> None:
    """Write a benchmark's Markdown ``report`` to ``out`` (see :func:`report_path`) and say where."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    print(f"wrote {out}", file=sys.stderr)


def command_line(module: str, argv: list[str] | None) -> str:
    """The command that reproduces a benchmark run, for its report: ``python -m MODULE ARGS``."""
    return " ".join(["python -m", module, *(sys.argv[1:] if argv is None else argv)])
