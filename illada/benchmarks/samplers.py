"""Sampler benchmark: NFE, tokens per forward and tokens/s of the sampling configurations the sweeps use.

    python -m illada.benchmarks.samplers                    # small random model on CPU (about a minute)
    python -m illada.benchmarks.samplers --model llada-8b --device cuda --dtype bfloat16

(a) the fixed-schedule sampler against the straightforward transcription of LLaDA's reference loop
    (tests/reference_llada.py; run from the repository root): identical tokens and the speed ratio;
(b) Fast-dLLM's prefix / dual cache and threshold 0.9 at gen_length 256, block 32: speed-up over the uncached
    fixed schedule and the fraction of generated tokens that differ from the uncached output.

Tokens/s counts every generated canvas position (G per row) over the median wall time. The model has random
weights (init std ``--std``; a larger std gives peaked distributions so the threshold rule has something to do),
so the figures measure cost, not quality.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import statistics
import sys
import time
from pathlib import Path

import torch

from illada.config import ModelConfig, preset
from illada.model import Transformer
from illada.sampling import GenerationResult, SamplerSettings, generate
from illada.benchmarks.engine import markdown
from illada.benchmarks.output import BENCH_OUT
from illada.records import device_name
from illada.timing import synchronize

SMALL = ModelConfig(vocab_size=4096, dim=128, n_layers=4, n_heads=4, n_kv_heads=2, ffn_dim=384, max_seq_len=1024,
                    mask_token_id=4095, eos_token_id=1)


def oracle(module: str, name: str):
    """A transcription of an original from the test suite (``tests/<module>.py``), which only a source checkout
    has: ``SystemExit`` with one line elsewhere."""
    root = Path(__file__).resolve().parents[2]
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    try:
        return getattr(importlib.import_module(f"tests.{module}"), name)
    except (ImportError, AttributeError) as e:  # pragma: no cover - only outside a source checkout
        raise SystemExit(f"error: this benchmark needs tests/{module}.py from the source tree ({e})") from None


def reference_loop():
    """LLaDA's generate() transcribed straightforwardly (the test suite's reference)."""
    return oracle("reference_llada", "llada_generate")


def prompts(cfg: ModelConfig, batch: int, length: int, device: str, padded: bool) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(2, cfg.vocab_size - 2, (batch, length), generator=g)
    mask = torch.ones(batch, length, dtype=torch.long)
    if padded:
        for row in range(batch):  # left padding, a different amount per row
            ids[row, :3 * row], mask[row, :3 * row] = 0, 0
    return ids.to(device), mask.to(device)


def timed(fns: list, device: str, repeats: int) -> list[tuple[object, float]]:
    """(last result, median seconds) of each function, run in turn ``repeats`` times so drift hits all alike."""
    times: list[list[float]] = [[] for _ in fns]
    results: list[object] = [None] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            synchronize(device)
            start = time.perf_counter()
            results[i] = fn()
            synchronize(device)
            times[i].append(time.perf_counter() - start)
    return [(r, statistics.median(t)) for r, t in zip(results, times)]


def figures(result: GenerationResult, seconds: float) -> dict:
    tokens = int(result.generated_tokens.sum())
    return {"nfe": result.nfe, "tpf": result.tokens_per_forward, "tok_s": tokens / seconds, "s": seconds}


def table(title: str, header: list[str], rows: list[list[str]]) -> str:
    return f"### {title}\n\n{markdown([dict(zip(header, row)) for row in rows])}\n"


def section_a(model, cfg: ModelConfig, device: str, repeats: int) -> str:
    llada_generate = reference_loop()
    prompt, mask = prompts(cfg, batch=2, length=32, device=device, padded=True)
    configs = [
        dict(gen_length=64, steps=64, block_length=64),
        dict(gen_length=64, steps=32, block_length=16),
        dict(gen_length=64, steps=64, block_length=16, cfg_scale=1.0),
        dict(gen_length=64, steps=64, block_length=32, confidence_eos_eot_inf=True),
    ]
    rows = []
    for kw in configs:
        s = SamplerSettings(mask_id=cfg.mask_token_id, eos_id=cfg.eos_token_id, eot_id=2, **kw)
        run_ours = lambda: generate(model, prompt, s, mask)  # noqa: E731
        run_ref = lambda: llada_generate(model, prompt, mask, mask_id=s.mask_id, eos_id=s.eos_id,  # noqa: E731
                                         eot_id=2, **kw)
        (ours, t_ours), ((ref, ref_nfe), t_ref) = timed([run_ours, run_ref], device, repeats)
        f = figures(ours, t_ours)
        ref_tok_s = int(ours.generated_tokens.sum()) / t_ref
        rows.append([_knobs(kw), "yes" if torch.equal(ours.tokens, ref.to(ours.tokens.device)) else "**NO**",
                     f"{f['nfe']} / {ref_nfe}", f"{f['tpf']:.2f}", f"{f['tok_s']:.1f}", f"{ref_tok_s:.1f}",
                     f"{t_ref / t_ours:.2f}"])
    return table("(a) fixed schedule vs the reference loop (batch 2, left-padded prompts of 32)",
                 ["settings", "same tokens", "NFE ours / ref", "tokens/forward", "tok/s ours", "tok/s ref",
                  "speed ratio"], rows)


def section_b(model, cfg: ModelConfig, device: str, repeats: int, gen_length: int, block: int) -> str:
    prompt, _ = prompts(cfg, batch=1, length=32, device=device, padded=False)
    base = SamplerSettings(mask_id=cfg.mask_token_id, eos_id=cfg.eos_token_id, gen_length=gen_length,
                           steps=gen_length, block_length=block)
    configs = [
        ("fixed, no cache", base),
        ("fixed, prefix cache", base.replace(cache="prefix")),
        ("fixed, dual cache", base.replace(cache="dual")),
        ("threshold 0.9, no cache", base.replace(threshold=0.9)),
        ("threshold 0.9, prefix cache", base.replace(threshold=0.9, cache="prefix")),
        ("threshold 0.9, dual cache", base.replace(threshold=0.9, cache="dual")),
    ]
    results, rows = {}, []
    for name, s in configs:
        [(out, seconds)] = timed([lambda: generate(model, prompt, s)], device, repeats)
        results[name] = (out, seconds)
        base_out, base_s = results["fixed, no cache"]
        uncached = results[name.split(",")[0] + ", no cache"][0]
        f = figures(out, seconds)
        rows.append([name, str(f["nfe"]), f"{f['tpf']:.2f}", f"{f['tok_s']:.1f}", f"{base_s / seconds:.2f}",
                     f"{_differ(out, uncached):.3f}", _first_difference(out, uncached),
                     f"{_differ(out, base_out):.3f}"])
    return table(f"(b) caches and threshold (batch 1, prompt 32, gen_length {gen_length}, block {block})",
                 ["configuration", "NFE", "tokens/forward", "tok/s", "speed-up", "differ vs uncached same rule",
                  "first difference at", "differ vs fixed uncached"], rows)


def _differ(a: GenerationResult, b: GenerationResult) -> float:
    return float((a.generated != b.generated).float().mean())


def _first_difference(a: GenerationResult, b: GenerationResult) -> str:
    """Generated position of the first token that differs (one changed token re-conditions everything after)."""
    diff = (a.generated != b.generated).any(dim=0).nonzero()
    return str(int(diff[0])) if len(diff) else "-"


def _knobs(kw: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in kw.items())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="small", help="'small' (CPU default) or a preset: llada-8b, illada-8b")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--std", type=float, default=None, help="init std (default 0.5 small, 0.02 presets)")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads (1 by default: stable figures on a shared machine)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per configuration of (b) (median)")
    parser.add_argument("--repeats-a", type=int, default=5,
                        help="timed runs per configuration of (a), ours and the reference interleaved (median)")
    parser.add_argument("--gen-length", type=int, default=256, help="answer length of (b)")
    parser.add_argument("--block", type=int, default=32, help="block length of (b)")
    parser.add_argument("--skip-a", action="store_true", help="skip the reference-loop comparison")
    parser.add_argument("--out", type=Path, default=BENCH_OUT / "samplers.md",
                        help="where to write the Markdown report (default: %(default)s)")
    args = parser.parse_args(argv)

    if args.device == "cpu" and args.threads:
        torch.set_num_threads(args.threads)
    cfg = SMALL if args.model == "small" else preset(args.model)
    std = args.std if args.std is not None else (0.5 if args.model == "small" else 0.02)
    dtype = getattr(torch, args.dtype)
    model = Transformer.random(cfg, device=args.device, dtype=dtype, std=std, seed=0)

    header = (f"## Sampler benchmark ({dt.date.today()})\n\nmodel {args.model} ({cfg.num_parameters / 1e6:.1f}M "
              f"params, random init std {std}), {args.dtype} on {device_name(args.device)}, "
              f"torch {torch.__version__}, {torch.get_num_threads()} CPU thread(s); "
              f"medians of {args.repeats_a} (a) and "
              f"{args.repeats} (b) timed runs\n")
    print(header, flush=True)
    report = [header]
    if not args.skip_a:
        report.append(section_a(model, cfg, args.device, args.repeats_a))
        print(report[-1], flush=True)
    report.append(section_b(model, cfg, args.device, args.repeats, args.gen_length, args.block))
    print(report[-1], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(report))
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
