"""Engine benchmark: checkpoint load time vs raw safetensors reads, forward latency and peak memory.

    python -m illada.benchmarks.engine            # CPU figures (+ 8B presets on CUDA when present)
    python -m illada.benchmarks.engine --quick    # the same, smaller, in well under a minute
    python -m illada.benchmarks.engine --update-results   # a full run that replaces the committed report

Prints Markdown tables and writes them, with device, date and versions, to ``--out`` (default
``bench_out/engine_{cpu,cuda}.md``; the committed ``illada/benchmarks/results/`` copy only with
``--update-results``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

import illada
from illada.attention import flash_attn_available
from illada.benchmarks.output import RESULTS_DIR, add_report_options, report_path, write_report  # noqa: F401 -- gpu.py imports RESULTS_DIR
from illada.checkpoint import save_checkpoint, shard_files
from illada.config import ModelConfig, preset
from illada.model import Transformer
from illada.records import device_name
from illada.timing import synchronize, time_call


def drop_page_cache() -> bool:
    """Evict the OS page cache (Linux, root only) so the next read comes from disk; False if not allowed."""
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def bench_load(cfg: ModelConfig, shard_mb: int, repeats: int) -> list[dict]:
    """illada.load of a sharded checkpoint against safetensors' own load_file of the same shards.

    safetensors maps files lazily on CPU, so both sides also touch every tensor once: the figure is the time
    until all weights are resident and usable, not the time to create a mapping. Measured with the files in
    the page cache (warm) and, where the OS lets us evict it, read from disk (cold).
    """
    def touch(tensors) -> None:
        for t in tensors:
            t.sum()

    def raw_read(files) -> None:
        for f in files:
            touch(load_file(str(f)).values())

    rows = []
    with tempfile.TemporaryDirectory(prefix="illada-bench-") as tmp:
        save_checkpoint(Transformer.random(cfg, seed=0), tmp, max_shard_bytes=shard_mb << 20)
        files = shard_files(tmp)
        nbytes = sum(f.stat().st_size for f in files)
        cold_ok = drop_page_cache()
        for cache in ("warm", "cold") if cold_ok else ("warm",):
            raw, ours = [], []
            raw_read(files)  # first touch outside the timing
            for _ in range(repeats):  # interleaved, so drift hits both alike
                if cache == "cold":
                    drop_page_cache()
                start = time.perf_counter()
                raw_read(files)
                raw.append(time.perf_counter() - start)
                if cache == "cold":
                    drop_page_cache()
                start = time.perf_counter()
                touch(illada.load(tmp).model.parameters())
                ours.append(time.perf_counter() - start)
            r, o = statistics.median(raw), statistics.median(ours)
            rows.append({
                "checkpoint": f"{cfg.num_parameters / 1e6:.0f}M params fp32, {len(files)} shards, {nbytes / 2**20:.0f} MiB",
                "page cache": cache, "safetensors load_file + touch (s)": f"{r:.3f}",
                "illada.load + touch (s)": f"{o:.3f}", "ratio": f"{o / r:.2f}x",
            })
    return rows


def bench_forward(cfg: ModelConfig, device: str, dtype: torch.dtype, shapes: list[tuple[int, int]],
                  backends: list[str], repeats: int, roofline: "Roofline | None" = None) -> list[dict]:
    model = Transformer.random(cfg, device=device, dtype=dtype, seed=0)
    rows = []
    for backend in backends:
        model.attn_backend = backend
        for batch, seq in shapes:
            ids = torch.randint(0, cfg.vocab_size, (batch, seq), device=device)
            with torch.inference_mode():
                t = time_call(lambda: model(ids), device=device, warmup=1, repeats=repeats)
            row = {
                "backend": backend, "batch": batch, "seq": seq, "dtype": str(dtype).removeprefix("torch."),
                "median (ms)": f"{t.median_s * 1e3:.1f}", "tokens/s": f"{batch * seq / t.median_s:,.0f}",
                ("peak CUDA alloc (MiB)" if device == "cuda" else "peak RSS (MiB)"): f"{t.peak_bytes / 2**20:,.0f}",
            }
            if roofline is not None:
                bound = roofline.seconds(cfg, batch, seq, dtype)
                row["roofline (ms)"] = f"{bound * 1e3:.1f}"
                row["x roofline"] = f"{t.median_s / bound:.2f}"
            rows.append(row)
    del model
    return rows


class Roofline:
    """Lower bound of a forward: max(weight bytes / measured bandwidth, FLOPs / measured matmul peak).

    The ceilings are measured on ``device``: a device-to-device copy of ``copy_elems`` elements (bytes read plus
    written) and a ``matmul_n``-cubed matrix product on random data.
    """

    def __init__(self, device: str, dtype: torch.dtype, copy_elems: int = 1 << 28, matmul_n: int = 8192) -> None:
        # defaults: 512 MiB of bf16 per buffer, far beyond any cache; a product that fills the chip
        a = torch.empty(copy_elems, dtype=dtype, device=device)
        b = torch.empty_like(a)
        t = time_call(lambda: b.copy_(a), device=device, warmup=2, repeats=10)
        self.bandwidth = 2 * a.numel() * a.element_size() / t.median_s  # read + write
        m = torch.randn(matmul_n, matmul_n, dtype=dtype, device=device)
        t = time_call(lambda: m @ m, device=device, warmup=2, repeats=10)
        self.flops = 2 * matmul_n**3 / t.median_s
        del a, b, m

    @staticmethod
    def matmul_parameters(cfg: ModelConfig) -> int:
        """Weights a forward multiplies with: all but an untied embedding table (a lookup); a tied table is
        the output head and counts once."""
        return cfg.num_parameters - (0 if cfg.tie_embeddings else cfg.vocab_size * cfg.dim)

    def memory_seconds(self, cfg: ModelConfig, dtype: torch.dtype) -> float:
        return self.matmul_parameters(cfg) * (torch.finfo(dtype).bits // 8) / self.bandwidth

    @classmethod
    def active_parameters(cls, cfg: ModelConfig) -> int:
        """Weights one token multiplies with: a mixture of experts runs only ``experts_per_token`` of its experts
        (every expert's weights are still read once a batch routes to all of them: ``matmul_parameters``)."""
        idle = (cfg.n_experts - cfg.experts_per_token) * 3 * cfg.dim * cfg.ffn_dim * cfg.n_layers if cfg.is_moe else 0
        return cls.matmul_parameters(cfg) - idle

    def compute_seconds(self, cfg: ModelConfig, batch: int, seq: int, kv_len: int | None = None) -> float:
        """FLOPs of ``seq`` fed tokens per row attending over ``kv_len`` keys (default ``seq``) / matmul peak."""
        dense = 2 * batch * seq * self.active_parameters(cfg)
        attention = 4 * batch * seq * (kv_len or seq) * cfg.n_heads * cfg.head_dim * cfg.n_layers
        return (dense + attention) / self.flops

    def seconds(self, cfg: ModelConfig, batch: int, seq: int, dtype: torch.dtype, kv_len: int | None = None) -> float:
        return max(self.memory_seconds(cfg, dtype), self.compute_seconds(cfg, batch, seq, kv_len))


def markdown(rows: list[dict]) -> str:
    if not rows:
        return ""
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def environment(device: str) -> str:
    return (f"device: {device_name(device)} ({device}), torch {torch.__version__}, CUDA {torch.version.cuda}, "
            f"illada {illada.__version__}, python {platform.python_version()}, threads {torch.get_num_threads()}, "
            f"date {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller models and fewer repeats")
    name = f"engine_{'cuda' if torch.cuda.is_available() else 'cpu'}.md"
    add_report_options(parser, name)
    args = parser.parse_args(argv)
    out = report_path(args, name)  # refused now, not after the benchmark
    repeats = 3 if args.quick else 5
    sections: list[str] = []

    def emit(title: str, rows: list[dict]) -> None:
        text = f"### {title}\n\n{markdown(rows)}\n"
        print(text, flush=True)
        sections.append(text)

    load_cfg = ModelConfig(vocab_size=32000, dim=512 if args.quick else 1024, n_layers=8, n_heads=8, n_kv_heads=8,
                           ffn_dim=1408 if args.quick else 2816, format="llada", mask_token_id=31999)
    emit("Checkpoint load vs raw safetensors read (target <= 1.2x)",
         bench_load(load_cfg, shard_mb=64 if args.quick else 128, repeats=repeats))

    small = ModelConfig(vocab_size=32000, dim=512, n_layers=8, n_heads=8, n_kv_heads=4, ffn_dim=1408)
    shapes = [(1, 128), (1, 512), (4, 512)] if args.quick else [(1, 128), (1, 512), (1, 1024), (4, 512), (8, 512)]
    emit(f"CPU forward, small config ({small.num_parameters / 1e6:.0f}M params, fp32)",
         bench_forward(small, "cpu", torch.float32, shapes, ["eager", "sdpa"], repeats))

    if torch.cuda.is_available():
        roof = Roofline("cuda", torch.bfloat16)
        backends = ["eager", "sdpa"] + (["flash_attn"] if flash_attn_available() else [])
        note = (f"measured bandwidth {roof.bandwidth / 1e9:,.0f} GB/s, bf16 matmul {roof.flops / 1e12:,.0f} TFLOP/s"
                + ("" if flash_attn_available() else "; flash-attn not importable, not measured"))
        for name in ("illada-8b", "llada-8b"):
            emit(f"{name}, bf16, random weights ({note})",
                 bench_forward(preset(name), "cuda", torch.bfloat16, [(1, 512), (1, 1024), (1, 2048), (8, 512)],
                               backends, repeats, roofline=roof))
            synchronize("cuda")
            torch.cuda.empty_cache()
    else:
        sections.append("No CUDA device: the 8B-preset GPU table was not measured.\n")
        print(sections[-1])

    report = f"# Engine benchmark\n\n{environment('cuda' if torch.cuda.is_available() else 'cpu')}\n\n" \
             f"Command: `python -m illada.benchmarks.engine{' --quick' if args.quick else ''}`\n\n" + "\n".join(sections)
    write_report(out, report)


if __name__ == "__main__":
    main()
