"""The lm-eval path vs illada's own tasks, on the embedded model: same items, same scorer / sampler.

    python -m illada.benchmarks.lm_eval            # piqa, arc_challenge (likelihood, mc_num 8), gsm8k, 20 items each
    python -m illada.benchmarks.lm_eval --quick    # 3 items each (~1 min on 2 CPU cores)

For each task the items are illada's seeded subsample (``limit``, ``seed``), handed to lm-eval as its ``samples``
(document indices), so both paths score the same documents with the same prompts, 0-shot. Reported per task:
accuracy through each path (lm-eval's acc / exact_match; illada's acc / exact_match), how many items agree
(multiple choice: identical scores; gsm8k: identical completions after the stop strings), seconds per item
through each path (evaluation only: model load and lm-eval's task index are outside both timings) and the
overhead of the lm-eval path in percent. Writes ``bench_out/lm_eval.md`` (``--out``) and a ``.json`` beside it.
Timings on a loaded machine are inflated: take the figures on a quiet one.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from illada.benchmarks.output import add_report_options, report_path

TASKS = {"piqa": "scorer", "arc_challenge": "scorer", "gsm8k": "sampler"}
SCORER = {"name": "likelihood", "mc_num": 8, "batch_size": 8, "seed": 0}
SAMPLER = {"gen_length": 8, "steps": 8, "block_length": 8}


def _indices(task: str, limit: int, seed: int) -> list[int]:
    from illada.tasks import get_task, stable_subsample

    t = get_task(task)
    rows, _ = t.rows(t.default_split)
    return stable_subsample([t.row_id(r, i) for i, r in enumerate(rows)], limit, seed)


def compare(task: str, loaded, manager, limit: int, seed: int, batch_size: int) -> dict:
    """One task through both paths; the figures of one report row."""
    import lm_eval

    from illada.evaluate import Point, evaluate, resolve
    from illada.harness import IlladaLM

    group = TASKS[task]
    values = SCORER if group == "scorer" else SAMPLER
    resolved = resolve(Point(task=task, limit=limit, seed=seed, batch_size=batch_size, **{group: values}))
    start = time.perf_counter()
    own = evaluate(resolved, loaded=loaded, progress=False)
    own_s = time.perf_counter() - start
    from illada.evaluate import _load_task

    items = _load_task(task, None, limit, seed, 0, None).items
    lm = IlladaLM(loaded=loaded, batch_size=batch_size, **{f"{group}.{k}": v for k, v in values.items()})
    index = _indices(task, limit, seed)
    start = time.perf_counter()
    out = lm_eval.simple_evaluate(model=lm, tasks=[task], samples={task: index}, num_fewshot=0,
                                  task_manager=manager, log_samples=True, bootstrap_iters=0, verbosity="ERROR")
    lm_s = time.perf_counter() - start
    samples = {s["doc_id"]: s for s in out["samples"][task] if s.get("filter", "none") in ("none", "flexible-extract")}
    res = out["results"][task]
    if group == "scorer":
        mine = _own_rows(resolved, loaded, items)
        agree = sum(mine[n] == [r[0][0] for r in samples[i]["resps"]] for n, i in enumerate(index))
        acc_lm, acc_own, metric = res["acc,none"], own["quality"]["value"], "acc"
    else:
        mine = [item.truncate(c) for item, c in zip(items, _own_rows(resolved, loaded, items))]
        agree = sum(mine[n] == samples[i]["resps"][0][0] for n, i in enumerate(index))
        acc_lm, acc_own, metric = res["exact_match,flexible-extract"], own["quality"]["value"], "exact_match"
    return {"task": task, "metric": metric, "n": len(index), "acc_lm_eval": acc_lm, "acc_illada": acc_own,
            "items_agree": agree, "s_per_item_lm_eval": lm_s / len(index), "s_per_item_illada": own_s / len(index),
            "overhead_pct": 100 * (lm_s - own_s) / own_s}


def _own_rows(resolved, loaded, items):
    """illada's per-item scores (MC) or raw completions (generation) for the items of ``resolved``."""
    from illada.evaluate import _run_generation, _run_scoring
    from illada.tasks import GENERATION, TaskData

    data = TaskData(resolved.point.task, resolved.kind, "", "", len(items), None, 0, 0, tuple(items))
    if resolved.kind == GENERATION:
        rows, _ = _run_generation(resolved, loaded, data, False)
        return [r["completion"] for r in rows]
    rows, _ = _run_scoring(resolved, loaded, data, False)
    return [r["scores"] for r in rows]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=20, help="items per task (default: 20)")
    parser.add_argument("--quick", action="store_true", help="3 items per task")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=16)
    add_report_options(parser, "lm_eval.md")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    from illada.harness import task_manager
    from illada.loading import load

    limit = 3 if args.quick else args.limit
    loaded, manager = load("default"), task_manager()
    rows = [compare(t, loaded, manager, limit, args.seed, args.batch_size) for t in TASKS]
    lines = ["# lm-eval path vs illada's own tasks (embedded model, same items, 0-shot)", "",
             f"`python -m illada.benchmarks.lm_eval --limit {limit}`; scorer {SCORER}; sampler {SAMPLER}; "
             f"batch size {args.batch_size}; torch threads {torch.get_num_threads()}.", "",
             "| task | metric | n | lm-eval | illada | items agree | s/item lm-eval | s/item illada | overhead |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['task']} | {r['metric']} | {r['n']} | {r['acc_lm_eval']:.3f} | {r['acc_illada']:.3f} | "
                     f"{r['items_agree']}/{r['n']} | {r['s_per_item_lm_eval']:.3f} | {r['s_per_item_illada']:.3f} | "
                     f"{r['overhead_pct']:+.1f}% |")
    path = report_path(args, "lm_eval.md")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    path.with_suffix(".json").write_text(json.dumps(rows, indent=2))
    print("\n".join(lines))
    print(f"report: {path}")


if __name__ == "__main__":
    main()
