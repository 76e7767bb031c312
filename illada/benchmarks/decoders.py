"""Every decoding strategy at its published defaults on the embedded model, next to LLaDA's schedule at one
token per step: exact match, NFE per sample, tokens per forward, tokens/s (one table).

    python -m illada.benchmarks.decoders                       # CPU, 200 held-out additions -> bench_out/decoders.md
    python -m illada.benchmarks.decoders --device cuda --limit 500
    python -m illada.benchmarks.decoders --update-results      # -> illada/benchmarks/results/decoders.md

Each method is a ``sampler`` config (``sweeps/conf/sampler/<name>.yaml``, its ``defaults`` followed) on the
arithmetic task (gen_length 8, block 8). Samples run one at a time by default (``--batch-size``): a batch waits
for its slowest row in every block, so NFE per sample is then each sample's own. The embedded model's answers
are 8 tokens: strategies whose gain grows with the canvas (certainty prior, PC-Sampler's position decay, EB's
entropy budget over long blocks) cannot show it here. Timings from a loaded machine are not comparable.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

import illada
from illada.benchmarks.engine import environment, markdown
from illada.benchmarks.output import add_report_options, command_line, report_path, write_report
from illada.evaluate import Point, evaluate, resolve

REPORT = "decoders.md"
SAMPLER_CONF = Path(__file__).resolve().parents[2] / "sweeps" / "conf" / "sampler"
# the LLaDA reference first, Fast-dLLM's threshold rule, then every strategy of sweeps/conf/sampler at its defaults
METHODS = ["fixed", "threshold", "eb_sampler", "eb_sampler_sglang", "hierarchy", "certainty_prior", "pc_sampler",
           "klass", "credit", "wino", "slow_fast"]


def sampler_config(name: str, conf_dir: Path = SAMPLER_CONF) -> dict[str, Any]:
    """A ``sampler`` config group value with its ``defaults`` list applied (later files override earlier)."""
    path = conf_dir / f"{name}.yaml"
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as e:
        raise SystemExit(f"error: sampler config {name!r}: cannot read {path} ({e.strerror})") from None
    merged: dict[str, Any] = {}
    for parent in data.pop("defaults", []) or []:
        if parent != "_self_":
            merged.update(sampler_config(parent, conf_dir))
    merged.update(data)
    return merged


def knobs(name: str, config: dict[str, Any]) -> str:
    """The settings that differ from the fixed schedule's (what makes this method this method)."""
    base = sampler_config("fixed")
    return ", ".join(f"{k}={v}" for k, v in config.items() if base.get(k) != v) or "steps=gen_length"


def run(names: list[str], limit: int, device: str, batch_size: int, model: str) -> list[dict]:
    loaded = illada.load(model, device=device)
    runs = Path(tempfile.mkdtemp(prefix="illada-decoders-"))
    rows = []
    for name in names:
        config = sampler_config(name)
        point = Point(model=model, task="arithmetic", limit=limit, sampler=config, batch_size=batch_size,
                      device=device)
        s = evaluate(resolve(point), runs, loaded=loaded, progress=False)
        if s.get("status") != "ok":
            rows.append({"method": name, "knobs": knobs(name, config), "exact match %": f"failed: {s.get('error')}"})
            continue
        q, c = s["quality"], s["cost"]
        rows.append({
            "method": name, "knobs": knobs(name, config),
            "exact match %": f"{100 * q['value']:.1f}",
            "95% CI": f"[{100 * q['ci_low']:.1f}, {100 * q['ci_high']:.1f}]",
            "NFE/sample": f"{c['nfe_per_sample']:.2f}", "tokens/forward": f"{c['tokens_per_forward']:.2f}",
            "tokens/s": f"{c['throughput_tokens_per_s']:.0f}", "items/s": f"{c['throughput_items_per_s']:.1f}",
        })
        print(f"{name}: {rows[-1]}", file=sys.stderr, flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=200, help="held-out problems (default 200)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--model", default="default")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help="comma-separated sampler configs (sweeps/conf/sampler/<name>.yaml)")
    add_report_options(parser, REPORT)
    args = parser.parse_args(argv)
    out = report_path(args, REPORT)  # refused now, not after the benchmark
    if args.limit < 1 or args.batch_size < 1:
        raise SystemExit(f"error: --limit={args.limit} / --batch-size={args.batch_size}: must be >= 1")
    rows = run([m for m in args.methods.split(",") if m], args.limit, args.device, args.batch_size, args.model)
    command = command_line("illada.benchmarks.decoders", argv)
    report = (f"## Decoding strategies on the embedded model (arithmetic, {args.limit} problems, gen_length 8, "
              f"block 8, batch size {args.batch_size})\n\n{markdown(rows)}\n\n`{command}`; "
              f"{environment(args.device)}\n")
    print(report)
    write_report(out, report)


if __name__ == "__main__":
    main()
