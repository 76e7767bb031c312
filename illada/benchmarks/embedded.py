"""Figures of the embedded default model: what sampler and scorer settings do to it, and real-task sanity.

    python -m illada.benchmarks.embedded            # ~5 minutes on 2 CPU cores
    python -m illada.benchmarks.embedded --quick    # fewer items

Every figure is an evaluation record computed here (written under ``--runs``), summarised as Markdown in
``bench_out/embedded.md`` (``--out``); ``--update-results`` (a full run) replaces the committed
``illada/benchmarks/results/embedded.md``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import illada
from illada.benchmarks.engine import environment, markdown
from illada.benchmarks.output import add_report_options, report_path, write_report
from illada.evaluate import Point, evaluate, resolve

REPORT = "embedded.md"


def run(point: Point, runs: Path, loaded) -> dict:
    return evaluate(resolve(point), runs, loaded=loaded, progress=False)


def row(summary: dict, **label) -> dict:
    q, c = summary["quality"], summary["cost"]
    out = dict(label)
    out.update({
        q["metric"]: f"{100 * q['value']:.1f}", "95% CI": f"[{100 * q['ci_low']:.1f}, {100 * q['ci_high']:.1f}]",
        "n": q["n"], "NFE/sample": f"{c['nfe_per_sample']:.1f}", "items/s": f"{c['throughput_items_per_s']:.1f}",
    })
    if "acc_norm" in q:
        out["acc_norm"] = f"{100 * q['acc_norm']['value']:.1f}"
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default", help="'default' (the embedded model) or a checkpoint directory")
    parser.add_argument("--quick", action="store_true", help="fewer items (figures not for the committed report)")
    parser.add_argument("--runs", type=Path, default=None, help="where the records go (default: a temp dir)")
    add_report_options(parser, REPORT)
    args = parser.parse_args(argv)
    out = report_path(args, REPORT)  # refused now, not after the benchmark
    runs = args.runs or Path(tempfile.mkdtemp(prefix="illada-embedded-"))
    n_gen, n_mc, n_real = (100, 100, 4) if args.quick else (500, 300, 20)
    loaded = illada.load(args.model)
    sections = []

    def emit(title: str, rows: list[dict]) -> None:
        text = f"### {title}\n\n{markdown(rows)}\n"
        print(text, flush=True)
        sections.append(text)

    rows = []
    for remasking in ("low_confidence", "random"):
        for steps in (8, 4, 2):
            sampler = {"gen_length": 8, "block_length": 8, "steps": steps, "remasking": remasking, "seed": 0}
            s = run(Point(model=args.model, task="arithmetic", limit=n_gen, sampler=sampler, batch_size=50), runs, loaded)
            rows.append(row(s, remasking=remasking, **{"tokens/step": 8 // steps}))
    for threshold in (0.9, 0.7):
        sampler = {"gen_length": 8, "block_length": 8, "steps": 8, "threshold": threshold}
        s = run(Point(model=args.model, task="arithmetic", limit=n_gen, sampler=sampler, batch_size=50), runs, loaded)
        rows.append(row(s, remasking=f"threshold {threshold}", **{"tokens/step": "adaptive"}))
    emit(f"Held-out addition (arithmetic, gen_length 8, block 8, {n_gen} problems)", rows)

    rows = []
    for name, extra in (("likelihood", {"mc_num": 32, "batch_size": 8}), ("confidence", {}), ("ar_order", {})):
        s = run(Point(model=args.model, task="arithmetic_mc", limit=n_mc, scorer={"name": name, **extra},
                      batch_size=25), runs, loaded)
        rows.append(row(s, scorer=name + (" (mc_num 32)" if name == "likelihood" else "")))
    emit(f"Multiple-choice addition (arithmetic_mc, 4 choices, chance 25%, {n_mc} questions)", rows)

    rows = []
    # the character-level tokenizer makes real continuations long (HellaSwag endings: ~150 tokens, so confidence
    # scoring costs ~600 forwards per question): fewer HellaSwag items keep the run short
    for task, n in (("piqa", n_real), ("arc_challenge", n_real), ("hellaswag", max(2, n_real // 4))):
        for name, extra in (("likelihood", {"mc_num": 8, "batch_size": 8}), ("confidence", {})):
            s = run(Point(model=args.model, task=task, limit=n, scorer={"name": name, **extra}, batch_size=4),
                    runs, loaded)
            rows.append(row(s, task=task, scorer=name))
    emit("Real tasks with the embedded model (near chance by design: it only knows addition)", rows)

    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "illada.evaluate", "--model", args.model, "--task", "arithmetic",
                    "--limit", "100", "--sampler", "gen_length=8", "steps=8", "block_length=8",
                    "--out", str(runs / "cli")], check=True, capture_output=True)
    emit("One point end to end (`illada-eval`, 100 problems, 1 token/step: process start, load, evaluate, write)",
         [{"seconds": f"{time.perf_counter() - start:.1f}"}])

    report = (f"# Embedded default model\n\n{environment('cpu')}\n\n"
              f"Command: `python -m illada.benchmarks.embedded{' --quick' if args.quick else ''}`; records in "
              f"`{runs}`.\n\n" + "\n".join(sections))
    write_report(out, report)


if __name__ == "__main__":
    main()
