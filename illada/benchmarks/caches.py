"""Every cache mode at its defaults, with LLaDA's fixed schedule and with Fast-dLLM's threshold 0.9, next to no
cache: one table.

    python -m illada.benchmarks.caches                    # CPU -> bench_out/caches.md
    python -m illada.benchmarks.caches --quick            # fewer problems, a shorter random canvas
    python -m illada.benchmarks.caches --device cuda --update-results   # -> illada/benchmarks/results/caches.md

Two settings: the embedded model on the arithmetic task (its sampler configs, gen_length 8, block 8, one
problem at a time) and a small random Transformer with a long canvas (G = 256, block 32, 256 steps for the
fixed schedule). Columns: exact match (embedded only), the fraction of generated tokens that differ from the
uncached run of the same decoding (for dKV-Cache-Greedy, which decodes in a random order drawn per block: its
own run with a full forward every step, same order, which has a row of its own), NFE per sample, time per step (wall time / forwards), tokens/s. A cache is a
row of :data:`CACHE_RUNS` (label, sampler overrides). Timings from a loaded machine are not comparable.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, Callable

import torch

import illada
from illada.benchmarks.decoders import sampler_config
from illada.benchmarks.engine import environment, markdown
from illada.benchmarks.output import add_report_options, command_line, report_path, write_report
from illada.config import ModelConfig
from illada.evaluate import Point, _encode_prompt, _load_task, resolve
from illada.model import Transformer
from illada.sampling import SamplerSettings, generate

# (label, sampler overrides); the first row is the uncached baseline the others are compared with
CACHE_RUNS: list[tuple[str, dict[str, Any]]] = [
    ("no cache", {"cache": "none"}),
    ("prefix (Fast-dLLM)", {"cache": "prefix"}),
    ("dual (Fast-dLLM)", {"cache": "dual"}),
    ("dKV-Cache-Decode", {"cache": "dkv"}),
    ("dKV-Cache-Greedy", {"cache": "dkv", "dkv_variant": "greedy", "remasking": "random", "seed": 0}),
    ("dLLM-Cache", {"cache": "dllm"}),
    ("d2Cache", {"cache": "d2cache"}),
]
# A cache that also changes the decoding order is compared with its own uncached run (a full forward every step,
# same order); dKV-Cache-Greedy needs the fixed schedule, so it has no threshold row.
OWN_BASELINE: dict[str, dict[str, Any]] = {"dKV-Cache-Greedy": {"cache_steps": 1}}
FIXED_ONLY = {"dKV-Cache-Greedy"}
DECODINGS: list[tuple[str, dict[str, Any]]] = [("fixed", {}), ("threshold 0.9", {"threshold": 0.9})]
RANDOM_CANVAS = dict(gen_length=256, block_length=32, steps=256)


def _row(setting: str, decoding: str, cache: str, outs: list, base: list | None, wall: float,
         correct: list[bool] | None) -> dict[str, str]:
    generated = sum(o.generated.numel() for o in outs)
    nfe = sum(int(o.row_nfe.sum()) for o in outs)
    differ = "-" if base is None else \
        f"{sum(int((o.generated != b.generated).sum()) for o, b in zip(outs, base)) / generated:.3f}"
    return {"model": setting, "decoding": decoding, "cache": cache,
            "exact match %": "-" if correct is None else f"{100 * sum(correct) / len(correct):.1f}",
            "tokens differing from no cache": differ, "NFE/sample": f"{nfe / len(outs):.2f}",
            "ms/step": f"{1e3 * wall / max(nfe, 1):.3f}", "tokens/s": f"{generated / max(wall, 1e-12):.0f}"}


def _timed(model, prompts: list[tuple[torch.Tensor, torch.Tensor | None]], s: SamplerSettings) -> tuple[list, float]:
    outs = [generate(model, ids, s, mask) for ids, mask in prompts]
    return outs, sum(o.wall_time_s for o in outs)


def _cache_rows(setting: str, decoding: str, model, prompts: list, s: SamplerSettings,
                score: Callable[[list], list[bool]] | None) -> list[dict[str, str]]:
    """One row per cache of :data:`CACHE_RUNS` for the decoding ``s``."""
    rows, base = [], None
    for label, overrides in CACHE_RUNS:
        if label in FIXED_ONLY and decoding != "fixed":
            continue
        reference = base
        if label in OWN_BASELINE:  # its own uncached run gets a row too: what the order costs, cache aside
            reference, own_wall = _timed(model, prompts, s.replace(**overrides, **OWN_BASELINE[label]))
            knobs = ", ".join(f"{k}={v}" for k, v in OWN_BASELINE[label].items())
            rows.append(_row(setting, decoding, f"{label}, uncached ({knobs})", reference, None, own_wall,
                             None if score is None else score(reference)))
        outs, wall = _timed(model, prompts, s.replace(**overrides))
        rows.append(_row(setting, decoding, label, outs, reference, wall, None if score is None else score(outs)))
        base = outs if base is None else base
        print(rows[-1], file=sys.stderr, flush=True)
    return rows


def embedded_rows(limit: int, device: str) -> list[dict[str, str]]:
    loaded = illada.load("default", device=device)
    rows = []
    for decoding, extra in DECODINGS:
        config = {**sampler_config("fixed"), **extra}
        resolved = resolve(Point(model="default", task="arithmetic", limit=limit, sampler=config, device=device))
        p = resolved.point
        data = _load_task(p.task, p.split, p.limit, p.seed, p.num_fewshot, p.data_path)
        prompts = [(torch.tensor([_encode_prompt(loaded.tokenizer, item.prompt, p.chat)], device=device), None)
                   for item in data.items]

        def score(outs: list) -> list[bool]:
            return [bool(item.score(loaded.tokenizer.decode(o.generated[0].tolist(), skip_special_tokens=True)))
                    for item, o in zip(data.items, outs)]

        rows += _cache_rows("embedded", decoding, loaded.model, prompts, resolved.sampler, score)
    return rows


def random_rows(samples: int, device: str, canvas: dict[str, int]) -> list[dict[str, str]]:
    cfg = ModelConfig(vocab_size=512, dim=128, n_layers=4, n_heads=4, n_kv_heads=4, ffn_dim=256,
                      mask_token_id=511, eos_token_id=1, max_seq_len=512)
    model = Transformer.random(cfg, device=device, std=0.3)  # peaked outputs: the threshold rule commits several
    with torch.no_grad():  # a random head may rank the mask token first forever (the adaptive rules never end):
        model.output.weight[cfg.mask_token_id].zero_()  # its logit is 0, below the best of 511 random ones
    g = torch.Generator().manual_seed(0)
    prompts = [(torch.randint(2, 511, (1, 32), generator=g).to(device), None) for _ in range(samples)]
    name = f"random 4x128, G={canvas['gen_length']}, block {canvas['block_length']}"
    rows = []
    for decoding, extra in DECODINGS:
        rows += _cache_rows(name, decoding, model, prompts, SamplerSettings(mask_id=511, **canvas, **extra), None)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=100, help="embedded-model problems (default 100)")
    parser.add_argument("--samples", type=int, default=2, help="random-model prompts (default 2)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="20 problems, one prompt, G=64 (a smoke run)")
    add_report_options(parser, "caches.md")
    args = parser.parse_args(argv)
    out = report_path(args, "caches.md")
    if args.limit < 1 or args.samples < 1:
        raise SystemExit(f"error: --limit={args.limit} / --samples={args.samples}: must be >= 1")
    limit, samples, canvas = args.limit, args.samples, dict(RANDOM_CANVAS)
    if args.quick:
        limit, samples, canvas = min(limit, 20), 1, dict(gen_length=64, block_length=32, steps=64)
    start = time.perf_counter()
    rows = embedded_rows(limit, args.device) + random_rows(samples, args.device, canvas)
    command = command_line("illada.benchmarks.caches", argv)
    report = (f"## Caches (embedded: arithmetic, {limit} problems, gen_length 8, block 8; random model: {samples} "
              f"prompt(s) of 32 tokens)\n\n{markdown(rows)}\n\n`{command}`; {environment(args.device)}; "
              f"{time.perf_counter() - start:.0f} s in all\n")
    print(report)
    write_report(out, report)


if __name__ == "__main__":
    main()
