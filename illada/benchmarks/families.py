"""Model families benchmark: load time of a sharded checkpoint in each family's format, forward latency per family,
and on CUDA the forward latency of every 8B-class preset in bf16 (random weights).

    python -m illada.benchmarks.families            # CPU figures (+ every preset in bf16 on CUDA when present)
    python -m illada.benchmarks.families --quick    # smaller checkpoints, fewer repeats and shapes

Each family's checkpoint is written by ``save_checkpoint`` in its own layout (LLaDA's OLMo names, iLLaDA's Llama
names, Dream's Qwen2 names with q/k/v biases, LLaDA-MoE's per-expert names) at the same mid size, sharded with an
index, and read back by ``illada.load`` next to safetensors' own ``load_file`` of the same shards. The logits
parity figures per family come from the tests: ``pytest -s tests/test_families.py``.

Writes a Markdown report with device, date and versions to ``--out`` (default ``bench_out/families_{cpu,cuda}.md``).
"""

from __future__ import annotations

import argparse
import sys

import torch

from illada.attention import flash_attn_available
from illada.benchmarks.engine import Roofline, bench_forward, bench_load, environment, markdown
from illada.benchmarks.output import add_report_options, report_path, write_report
from illada.config import PRESETS, ModelConfig
from illada.timing import synchronize


def family_configs(quick: bool) -> dict[str, ModelConfig]:
    """One mid-size config per family, of about the same size, with each family's structural fields."""
    dim, layers = (512, 4) if quick else (1024, 8)
    base = dict(vocab_size=32000, dim=dim, n_layers=layers, n_heads=8, n_kv_heads=8, ffn_dim=dim * 11 // 4,
                mask_token_id=31999, eos_token_id=31998)
    return {
        "llada": ModelConfig(**base, format="llada"),
        "illada": ModelConfig(**{**base, "n_kv_heads": 2}, format="illada", tie_embeddings=True),
        "dream": ModelConfig(**{**base, "n_kv_heads": 2}, format="dream", qkv_bias=True, logits_shift=True),
        # 16 experts of a sixteenth of the dense width, 4 per token: the dense FFN's parameters in 16x the tensors
        "llada_moe": ModelConfig(**{**base, "ffn_dim": dim * 11 // 64}, format="llada_moe", qk_norm=True,
                                 n_experts=16, experts_per_token=4),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller checkpoints, fewer repeats and shapes")
    parser.add_argument("--presets", default=None,
                        help=f"comma-separated presets for the CUDA table (default: all of {', '.join(PRESETS)})")
    name = f"families_{'cuda' if torch.cuda.is_available() else 'cpu'}.md"
    add_report_options(parser, name)
    args = parser.parse_args(argv)
    out = report_path(args, name)  # refused now, not after the benchmark
    presets = args.presets.split(",") if args.presets else list(PRESETS)
    unknown = [p for p in presets if p not in PRESETS]
    if unknown:
        raise SystemExit(f"error: --presets {','.join(unknown)}: unknown preset(s); known: {', '.join(PRESETS)}")
    repeats = 3 if args.quick else 5
    sections: list[str] = []

    def emit(title: str, rows: list[dict]) -> None:
        text = f"### {title}\n\n{markdown(rows)}\n"
        print(text, flush=True)
        sections.append(text)

    configs = family_configs(args.quick)
    load_rows, forward_rows = [], []
    shapes = [(1, 256)] if args.quick else [(1, 256), (1, 1024)]
    for family, cfg in configs.items():
        for row in bench_load(cfg, shard_mb=32 if args.quick else 64, repeats=repeats):
            load_rows.append({"family": family, **row})
        for row in bench_forward(cfg, "cpu", torch.float32, shapes, ["sdpa"], repeats):
            forward_rows.append({"family": family, **row})
    emit("Sharded checkpoint load per family format (illada.load vs safetensors load_file of the same shards)",
         load_rows)
    emit("CPU forward per family, same mid-size shapes, fp32", forward_rows)

    if torch.cuda.is_available():
        roof = Roofline("cuda", torch.bfloat16)
        backends = ["sdpa"] + (["flash_attn"] if flash_attn_available() else [])
        note = (f"measured bandwidth {roof.bandwidth / 1e9:,.0f} GB/s, bf16 matmul {roof.flops / 1e12:,.0f} TFLOP/s; "
                "the roofline counts every expert of an MoE model, so it is no bound for one")
        shapes = [(1, 1024)] if args.quick else [(1, 512), (1, 1024), (1, 2048), (8, 512)]
        rows = []
        for preset_name in presets:
            for row in bench_forward(PRESETS[preset_name], "cuda", torch.bfloat16, shapes, backends, repeats,
                                     roofline=roof):
                rows.append({"preset": preset_name, **row})
            synchronize("cuda")
            torch.cuda.empty_cache()
        emit(f"Forward latency per preset, bf16, random weights ({note})", rows)
    else:
        sections.append("No CUDA device: the per-preset bf16 latency table was not measured.\n")
        print(sections[-1])

    device = "cuda" if torch.cuda.is_available() else "cpu"
    command = "python -m illada.benchmarks.families" + (" --quick" if args.quick else "")
    report = f"# Model families benchmark\n\n{environment(device)}\n\nCommand: `{command}`\n\n" + "\n".join(sections)
    write_report(out, report)


if __name__ == "__main__":
    main()
