"""Every decoding strategy at its published defaults on the embedded model, next to LLaDA's schedule at one
token per step: exact match, NFE per sample, tokens per forward, tokens/s (one table).

    python -m illada.benchmarks.decoders                       # CPU, 200 held-out additions -> bench_out/decoders.md
    python -m illada.benchmarks.decoders --device cuda --limit 500
    python -m illada.benchmarks.decoders --update-results      # -> illada/benchmarks/results/decoders.md
    python -m illada.benchmarks.decoders --limit 0             # only the speed against the originals

After the table, the speed of the decoders whose originals are transcribed in the test suite (WINO, SlowFast,
PC-Sampler's position decay; ``tests/reference_decoders_*.py``, which run the original's algorithm as written)
against those transcriptions: same model, same tokens (checked), CPU at one thread, median of interleaved runs.

Each method is a ``sampler`` config (``sweeps/conf/sampler/<name>.yaml``, its ``defaults`` followed) on the
arithmetic task (gen_length 8, block 8). Samples run one at a time by default (``--batch-size``): a batch waits
for its slowest row in every block, so NFE per sample is then each sample's own. The embedded model's answers
are 8 tokens: strategies whose gain grows with the canvas (certainty prior, PC-Sampler's position decay, EB's
entropy budget over long blocks) cannot show it here. Timings from a loaded machine are not comparable.
"""

from __future__ import annotations

import argparse
import json
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


# decoder -> (oracle module, function, settings, the oracle's keywords) on the model of speed_vs_originals
ORACLE_RUNS: dict[str, tuple[str, str, dict[str, Any], dict[str, Any]]] = {
    "wino": ("reference_decoders_g", "wino_reference", {"decoder": "wino"}, {}),
    "slow_fast": ("reference_decoders_g", "slow_fast_reference", {"decoder": "slow_fast"}, {}),
    "pc_sampler": ("reference_decoders_f", "neuir_pc_sampler", {"debias": True, "pc_lambda": 0.25},
                   {"lambd": 0.25, "alpha": 10.0}),
}


def speed_vs_originals(repeats: int, gen_length: int = 64, block_length: int = 32) -> list[dict]:
    """illada's decoders against the test suite's transcriptions of their originals (CPU, one thread)."""
    import torch

    from illada.benchmarks.samplers import SMALL, oracle, timed
    from illada.model import Transformer
    from illada.sampling import SamplerSettings, generate
    from illada.sampling.token_frequencies import count_tokens, load_frequencies

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model = Transformer.random(SMALL).eval()
        mask_id = SMALL.mask_token_id
        prompt = torch.randint(2, SMALL.vocab_size - 2, (1, 32), generator=torch.Generator().manual_seed(0))
        with tempfile.TemporaryDirectory() as tmp:
            freq_file = Path(tmp) / "frequencies.json"  # a skewed corpus, so the debias has something to rank
            freq_file.write_text(json.dumps(count_tokens([[i] * (i % 7 + 1) for i in range(SMALL.vocab_size - 1)])))
            freq = load_frequencies(str(freq_file), SMALL.vocab_size)
            rows = []
            for name, (module, function, knobs, ref_knobs) in ORACLE_RUNS.items():
                original = oracle(module, function)
                shape = dict(gen_length=gen_length, block_length=block_length)
                s = SamplerSettings(mask_id=mask_id, steps=gen_length, **shape, **knobs,
                                    **({"token_frequencies": str(freq_file)} if knobs.get("debias") else {}))
                if knobs.get("debias"):
                    ref_knobs = {**ref_knobs, "token_freq": freq, "steps": gen_length}
                ours_fn = lambda: generate(model, prompt, s)  # noqa: E731
                ref_fn = lambda: original(model, prompt, mask_id=mask_id, **shape, **ref_knobs)  # noqa: E731
                (ours, t_ours), ((ref, ref_nfe), t_ref) = timed([ours_fn, ref_fn], "cpu", repeats)
                same = torch.equal(ours.tokens[:, -gen_length:], ref[:, -gen_length:])
                rows.append({"decoder": name, "original (transcribed)": f"tests/{module}.py {function}",
                             "same tokens": "yes" if same else "**NO**", "NFE ours / original": f"{ours.nfe} / {ref_nfe}",
                             "s ours": f"{t_ours:.3f}", "s original": f"{t_ref:.3f}",
                             "speed ratio": f"{t_ref / t_ours:.2f}"})
                print(f"{name}: {rows[-1]}", file=sys.stderr, flush=True)
        return rows
    finally:
        torch.set_num_threads(threads)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=200, help="held-out problems (default 200)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--model", default="default")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help="comma-separated sampler configs (sweeps/conf/sampler/<name>.yaml)")
    parser.add_argument("--repeats", type=int, default=7,
                        help="interleaved runs of the speed comparison with the originals (0: skip it)")
    add_report_options(parser, REPORT)
    args = parser.parse_args(argv)
    out = report_path(args, REPORT)  # refused now, not after the benchmark
    if args.limit < 0 or args.batch_size < 1 or args.repeats < 0:
        raise SystemExit(f"error: --limit={args.limit} / --batch-size={args.batch_size} / --repeats={args.repeats}: "
                         "--limit and --repeats must be >= 0, --batch-size >= 1")
    command = command_line("illada.benchmarks.decoders", argv)
    report = ""
    if args.limit:
        rows = run([m for m in args.methods.split(",") if m], args.limit, args.device, args.batch_size, args.model)
        report = (f"## Decoding strategies on the embedded model (arithmetic, {args.limit} problems, gen_length 8, "
                  f"block 8, batch size {args.batch_size})\n\n{markdown(rows)}\n\n`{command}`; "
                  f"{environment(args.device)}\n")
    if args.repeats:
        speed = speed_vs_originals(args.repeats)
        report += (f"\n## Speed against the transcribed originals (random model, prompt 32, gen_length 64, block 32, "
                   f"CPU, one thread, median of {args.repeats} interleaved runs)\n\n{markdown(speed)}\n\n"
                   f"`{command}`; {environment('cpu')}\n")
    print(report)
    write_report(out, report)


if __name__ == "__main__":
    main()
