"""GPU benchmark of every model preset in bf16: backend agreement, forward latency next to the roofline, CUDA-graph
replay of the samplers' step forwards, and the samplers' cost.

    python -m illada.benchmarks.gpu            # on CUDA: every preset, bf16, all shapes (budget 7 minutes)
    python -m illada.benchmarks.gpu --quick    # fewer shapes, one generation length (budget 4 minutes)
    python -m illada.benchmarks.gpu --smoke    # tiny presets, short lengths, 1 repeat (automatic without CUDA)

On a lent device machine run ``bash .ci/gpu/run.sh`` (no network needed; it tries flash-attn wheels first).

Sections, in the order they run (a time budget, ``--budget-s``, skips what would not fit and says so):

1. checks: each attention backend against a float64 reference on random q/k/v (with and without a left-padded
   key mask), and a 2-layer model of each preset's shape: logits against the same weights in float32, and every
   row of a left-padded batch against that row alone, unpadded (the variable-length path of ``flash_attn``);
2. forward latency per preset x backend x batch x sequence length: CUDA events, warm-up, median of repeats, peak
   memory, next to the roofline measured on the device (weight bytes / copy bandwidth; FLOPs / bf16 matmul peak);
3. the samplers' step forwards (full canvas, prefix-cache and dual-cache spans) launched eagerly and replayed
   from a captured CUDA graph: what graphs would save per step;
4. the samplers (fixed schedule, threshold 0.9, factor, prefix/dual cache, iLLaDA's variable length, guidance)
   at batch 1: NFE, tokens/s, time per forward, and the share of each step spent outside the model; the threshold
   rows again with a head sharpened x128 (every token clears 0.9: the rule's best case); then the main ones with
   their forwards replayed from CUDA graphs (``illada.graphs.GraphedModel``), each checked against the plain
   run's tokens. A Targets table sums up what the issue asks of these figures.

Random weights: latency does not depend on them, but the adaptive rules (threshold, factor, variable length)
then commit one token per step, their worst case, so their NFE and tokens/s are bounds, not typical figures;
ms/forward is the transferable number. The report (one Markdown file: device, date, versions, one table per
section) is rewritten after every row, so a run cut short still leaves every row it measured.
"""

from __future__ import annotations

import argparse
import copy
import gc
import platform
import shlex
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from contextlib import contextmanager
from typing import Callable, Iterator

import torch

from illada.atomic import atomic_write_text
from illada.attention import eager_attention, get_backend
from illada.benchmarks.engine import RESULTS_DIR, Roofline, environment, markdown
from illada.benchmarks.samplers import prompts
from illada.config import PRESETS, ModelConfig
from illada.graphs import GraphedModel
from illada.model import Transformer
from illada.sampling import SamplerSettings, generate
from illada.timing import Timing, peak_memory, synchronize, time_call

BACKENDS = ("flash_attn", "sdpa", "eager")
# ||out - ref|| / ||ref|| allowed per dtype: one attention call against float64, and a 2-layer model's logits
# (a dozen roundings in a row) against float32 on the same weights. NaN never passes. Seen on CPU in bf16 at the
# 8B presets' shapes: 2e-3 (sdpa) and 5e-3 (eager) per call; 1.4e-2 / 1.9e-2 for the logits and 8e-3 between a
# left-padded row and the same row alone. A wrong mask or position gives errors of order 1.
KERNEL_TOLERANCE = {torch.bfloat16: 1e-2, torch.float16: 2e-3, torch.float32: 1e-5}
MODEL_TOLERANCE = {torch.bfloat16: 5e-2, torch.float16: 1e-2, torch.float32: 1e-4}
FORWARD_SEQ = 2048
FORWARD_TARGET = 1.5  # a single forward at batch 1 x FORWARD_SEQ within 1.5x of the roofline
STEP_TARGET = 1.2  # a cached sampler's step within 1.2x of the forwards it runs
HOST_TARGET = 0.10  # the share of a sampler step spent outside the model's forward
SPEEDUP_TARGET = 5.0  # threshold 0.9 + dual cache over the fixed schedule (1 token per step), tokens/s
# Fast-dLLM's mean tokens per step at threshold 0.9 (LLaDA-8B-Instruct, GSM8K 5-shot): what real weights commit,
# where random ones commit one token per step and a sharpened head a whole block
FAST_DLLM_TOKENS_PER_STEP = 3.25
# logits x 128 (a power of two: scaling the bf16 head and back is exact) make every token of a random model
# clear the 0.9 threshold: the adaptive rules' best case, one forward per block
HEAD_SCALE = 128.0
CONFIDENT = f"confident head (logits x{HEAD_SCALE:g})"
GRAPHS = "CUDA graphs"
# the samplers run a second time with their forwards replayed from CUDA graphs (illada/graphs.py)
GRAPHED_SAMPLERS = ("fixed", "fixed, dual cache", "threshold 0.9", "threshold 0.9, dual cache",
                    f"threshold 0.9, {CONFIDENT}", f"threshold 0.9, dual cache, {CONFIDENT}")


# ------------------------------------------------------------------------------------------------ the plan
@dataclass
class Plan:
    """Everything a run measures; ``smoke`` shrinks it to tiny presets that run anywhere in seconds."""

    mode: str  # smoke | quick | full
    device: str
    dtype: torch.dtype
    presets: dict[str, ModelConfig]
    backends: list[str]
    seqs: list[int]
    batches: list[int]
    gen_lengths: list[int]
    block: int
    prompt_length: int
    check_seq: int
    max_repeats: int
    min_repeats: int
    target_s: float  # aim for this much timed work per forward configuration
    roofline_sizes: tuple[int, int]  # copy elements, matmul n
    budget_s: float
    std: float = 0.02


def tiny(cfg: ModelConfig) -> ModelConfig:
    """The same family at toy size (format, tied head, GQA grouping, RoPE), its special ids renumbered to fit."""
    vocab = 256
    groups = cfg.n_heads // cfg.n_kv_heads
    specials = [cfg.mask_token_id, cfg.eos_token_id, cfg.pad_token_id, cfg.bos_token_id]
    renumber = {old: vocab - 1 - i for i, old in enumerate(dict.fromkeys(s for s in specials if s is not None))}
    n_heads = max(4, groups)
    return cfg.replace(vocab_size=vocab, dim=64, n_layers=2, n_heads=n_heads, n_kv_heads=n_heads // groups,
                       head_dim=16, ffn_dim=128, n_experts=min(cfg.n_experts, 4),
                       experts_per_token=min(cfg.experts_per_token, 2),
                       shared_expert_ffn_dim=min(cfg.shared_expert_ffn_dim, 128),
                       mask_token_id=renumber.get(cfg.mask_token_id),
                       eos_token_id=renumber.get(cfg.eos_token_id), pad_token_id=renumber.get(cfg.pad_token_id),
                       bos_token_id=renumber.get(cfg.bos_token_id))


def make_plan(args: argparse.Namespace) -> Plan:
    cuda = torch.cuda.is_available()
    smoke = args.smoke or not cuda
    device = "cuda" if cuda else "cpu"
    names = args.presets or list(PRESETS)
    unknown = [n for n in names if n not in PRESETS]
    if unknown:
        raise SystemExit(f"error: --presets {','.join(unknown)}: unknown preset(s); known: {', '.join(PRESETS)}")
    presets = {n: tiny(PRESETS[n]) if smoke else PRESETS[n] for n in names}
    if smoke:
        plan = Plan("smoke", device, torch.bfloat16 if cuda else torch.float32, presets, list(BACKENDS),
                    seqs=[16, 32], batches=[1, 2], gen_lengths=[8, 16], block=8, prompt_length=8, check_seq=24,
                    max_repeats=1, min_repeats=1, target_s=0.0, roofline_sizes=(1 << 20, 128), budget_s=600)
    elif args.quick:
        plan = Plan("quick", device, torch.bfloat16, presets, list(BACKENDS), seqs=[512, FORWARD_SEQ], batches=[1, 8],
                    gen_lengths=[256], block=32, prompt_length=128, check_seq=256, max_repeats=10, min_repeats=3,
                    target_s=0.3, roofline_sizes=(1 << 28, 8192), budget_s=240)
    else:
        plan = Plan("full", device, torch.bfloat16, presets, list(BACKENDS), seqs=[512, 1024, 2048],
                    batches=[1, 8], gen_lengths=[256, 512], block=32, prompt_length=128, check_seq=256,
                    max_repeats=20, min_repeats=3, target_s=0.5, roofline_sizes=(1 << 28, 8192), budget_s=420)
    for name in ("backends", "seqs", "batches", "gen_lengths", "block", "prompt_length", "budget_s"):
        value = getattr(args, name)
        if value is not None:
            setattr(plan, name, value)
    bad = [b for b in plan.backends if b not in BACKENDS]
    if bad:
        raise SystemExit(f"error: --backends {','.join(bad)}: unknown backend(s); choose from {', '.join(BACKENDS)}")
    if any(g % plan.block for g in plan.gen_lengths):
        raise SystemExit(f"error: --block {plan.block} must divide every --gen-lengths value {plan.gen_lengths}")
    if args.repeats is not None:
        plan.max_repeats = plan.min_repeats = args.repeats
    return plan


# ------------------------------------------------------------------------------------------------ report
@dataclass
class Section:
    title: str
    note: str = ""
    rows: list[dict] = field(default_factory=list)


class Report:
    """One Markdown file, rewritten (atomically) after every row: a run cut short keeps what it measured."""

    def __init__(self, path: Path, header: str) -> None:
        self.path, self.header = path, header
        self.sections: list[Section] = []
        self.complete = False

    def section(self, title: str, note: str = "") -> Section:
        self.sections.append(Section(title, note))
        self.write()
        return self.sections[-1]

    def add(self, section: Section, row: dict) -> None:
        section.rows.append(row)
        self.write()

    def render(self) -> str:
        status = "" if self.complete else "\n**Incomplete: the run stopped (or is still running) here.**\n"
        parts = [self.header]
        for s in self.sections:
            parts.append(f"### {s.title}\n\n" + (f"{s.note}\n\n" if s.note else "") + (table(s.rows) or "(none)"))
        return "\n\n".join(parts) + "\n" + status

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, self.render())


def table(rows: list[dict]) -> str:
    """``markdown`` over the union of the rows' columns (an error or skipped row has fewer or other ones)."""
    columns = list(dict.fromkeys(c for row in rows for c in row))
    return markdown([{c: row.get(c, "") for c in columns} for row in rows])


class Clock:
    """Timestamps progress lines and keeps the time budget."""

    def __init__(self, budget_s: float) -> None:
        self.start = time.monotonic()
        self.budget_s = budget_s

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def left(self) -> float:
        return self.budget_s - self.elapsed()

    def log(self, message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')} +{self.elapsed():5.0f}s] {message}", flush=True)


def guarded(fn: Callable[[], dict], clock: Clock, what: str) -> dict:
    """``fn()``'s row, or a row naming the error (an OOM or a kernel that refuses the shape must not end the run)."""
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 -- an OOM, a kernel refusing a shape: record the row and go on
        message = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:160] if str(e).strip() else ''}"
        clock.log(f"{what}: {message}")
        free_memory()
        return {"error": message}


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------------------ timing
def timer_words(device: str) -> str:
    return "CUDA-event timings" if device == "cuda" else "host-clock timings"


def time_events(fn: Callable[[], object], device: str, warmup: int, repeats: int) -> Timing:
    """Median device time of ``fn()`` from CUDA events around each call (``time_call``'s host clock on CPU)."""
    if torch.device(device).type != "cuda":
        return time_call(fn, device=device, warmup=warmup, repeats=repeats)
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    marks = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(repeats)]
    with peak_memory(device) as peak:
        for start, end in marks:
            start.record()
            fn()
            end.record()
        torch.cuda.synchronize()
    times = [start.elapsed_time(end) / 1e3 for start, end in marks]
    return Timing(statistics.median(times), min(times), repeats, peak.value)


def measure(fn: Callable[[], object], plan: Plan) -> Timing:
    """One host-timed warm-up sizes the repeats to about ``plan.target_s`` of timed work, then ``time_events``."""
    synchronize(plan.device)
    start = time.perf_counter()
    fn()
    synchronize(plan.device)
    first = time.perf_counter() - start
    repeats = max(plan.min_repeats, min(plan.max_repeats, round(plan.target_s / max(first, 1e-9))))
    return time_events(fn, plan.device, warmup=1, repeats=repeats)


class ForwardTimer:
    """A model stand-in that times each forward on the device (CUDA events; host clock on CPU).

    Everything else (``config``, ``new_kv_cache``, ...) is the wrapped model's, so samplers accept it as is.
    """

    def __init__(self, model: Transformer) -> None:
        self.model = model
        self.cuda = model.device.type == "cuda"
        self.calls = 0
        self._marks: list = []
        self._host: list[float] = []

    def __getattr__(self, name: str):
        return getattr(self.model, name)

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            out = self.model(*args, **kwargs)
            end.record()
            self._marks.append((start, end))
            return out
        start = time.perf_counter()
        out = self.model(*args, **kwargs)
        self._host.append(time.perf_counter() - start)
        return out

    def seconds(self) -> float:
        """Time spent inside the model's forwards so far."""
        if self.cuda:
            torch.cuda.synchronize()
            return sum(s.elapsed_time(e) for s, e in self._marks) / 1e3
        return sum(self._host)


def graph_replay(fn: Callable[[], object]) -> Callable[[], None]:
    """Capture ``fn`` (static inputs) into a CUDA graph after warming it on a side stream; returns the replay."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


# ------------------------------------------------------------------------------------------------ models
class Models:
    """One model resident at a time (an 8B preset is 16 GB in bf16); built on ``meta`` and initialised in place
    on the device by ``Transformer.random`` (no 16 GB CPU staging)."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.name: str | None = None
        self.model: Transformer | None = None

    def get(self, name: str) -> Transformer:
        if self.name != name:
            self.model = None
            free_memory()
            cfg = self.plan.presets[name]
            self.model = Transformer.random(cfg, device=self.plan.device, dtype=self.plan.dtype, seed=0,
                                            std=self.plan.std)
            if cfg.mask_token_id is not None:
                # A random *tied* head scores each position's own input token highest, so masked positions would
                # predict the mask token forever and the adaptive rules never finish; a zero row scores 0 instead.
                with torch.no_grad():
                    self.model.tok_embeddings.weight[cfg.mask_token_id].zero_()
            self.name = name
        return self.model


def backend_problem(name: str, plan: Plan) -> str | None:
    """Why ``name`` cannot run here (flash-attn missing, no CUDA, fp32), or None."""
    try:
        get_backend(name, plan.device, plan.dtype)
    except ValueError as e:
        return str(e)
    return None


def flash_attn_status() -> str:
    try:
        import flash_attn
    except Exception as e:  # an ImportError, or a wheel built for another torch/CUDA failing to load
        return f"not importable ({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})"
    return f"flash-attn {getattr(flash_attn, '__version__', '?')}"


# ------------------------------------------------------------------------------------------------ 1. checks
def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref|| / ||ref|| in float64; NaN when either has a non-finite value (so it never passes)."""
    out, ref = out.double(), ref.double()
    if not (torch.isfinite(out).all() and torch.isfinite(ref).all()):
        return float("nan")
    return float((out - ref).norm() / ref.norm())


def check_row(check: str, preset: str, backend: str, tol: float, error: Callable[[], float]) -> dict:
    """A pass/FAIL row for ``error()`` against ``tol``, or a row naming why the backend could not compute it."""
    row = {"check": check, "preset": preset, "backend": backend}
    try:
        err = error()
    except Exception as e:  # noqa: BLE001 -- a kernel that refuses the shape or the card: record it, go on
        return {**row, "result": f"**error**: {type(e).__name__}: {str(e).strip()[:160]}"}
    # NaN <= tol is False: a NaN fails
    return {**row, "rel. error": f"{err:.2e}", "tolerance": f"{tol:.0e}",
            "result": "pass" if err <= tol else "**FAIL**"}


def kernel_checks(plan: Plan, name: str, backends: list[str]) -> list[dict]:
    """Each backend on fresh random q/k/v against eager attention in float64, unmasked and left-padded."""
    cfg = plan.presets[name]
    batch, seq = 2, plan.check_seq
    gen = torch.Generator(device=plan.device).manual_seed(1)

    def draw(heads: int) -> torch.Tensor:
        return torch.randn(batch, heads, seq, cfg.head_dim, generator=gen, device=plan.device).to(plan.dtype)

    q, k, v = draw(cfg.n_heads), draw(cfg.n_kv_heads), draw(cfg.n_kv_heads)
    key_mask = torch.ones(batch, seq, dtype=torch.bool, device=plan.device)
    key_mask[1, :seq // 3] = False  # row 1 left-padded
    rows = []
    for label, mask in (("attention vs float64", None), ("attention vs float64, left-padded keys", key_mask)):
        ref = eager_attention(q.double(), k.double(), v.double(), mask)
        for backend in backends:
            attend = get_backend(backend, plan.device, plan.dtype)
            rows.append(check_row(label, name, backend, KERNEL_TOLERANCE[plan.dtype],
                                  lambda: relative_error(attend(q, k, v, mask), ref)))
    return rows


@torch.inference_mode()
def model_checks(plan: Plan, name: str, backends: list[str]) -> list[dict]:
    """A 2-layer model of the preset's shape: padded-batch logits against float32 on the same weights, and each
    left-padded row against the same row alone (unpadded), per backend."""
    cfg = plan.presets[name].replace(n_layers=min(2, plan.presets[name].n_layers))
    model = Transformer.random(cfg, device=plan.device, dtype=plan.dtype, seed=1, std=plan.std)
    ref = copy.deepcopy(model).float()  # the same (rounded) weights, float32 arithmetic
    ref.attn_backend = "eager"
    seq = plan.check_seq
    pads = [0, seq // 8, seq // 3]
    gen = torch.Generator().manual_seed(2)
    ids = torch.randint(0, cfg.vocab_size, (len(pads), seq), generator=gen).to(plan.device)
    mask = torch.ones_like(ids)
    for row, pad in enumerate(pads):
        mask[row, :pad] = 0
    real = mask.bool()
    expected = ref(ids, mask)
    tol = MODEL_TOLERANCE[plan.dtype]
    rows = []
    def padded_vs_alone() -> float:
        padded = model(ids, mask)
        return max(relative_error(padded[row, pad:], model(ids[row:row + 1, pad:])[0]) for row, pad in enumerate(pads))

    for backend in backends:
        model.attn_backend = backend
        rows.append(check_row("2-layer logits vs float32 (left-padded batch)", name, backend, tol,
                              lambda: relative_error(model(ids, mask)[real], expected[real])))
        rows.append(check_row("left-padded rows = same rows unpadded (max over rows)", name, backend, tol,
                              padded_vs_alone))
    return rows


# ------------------------------------------------------------------------------------------------ 2. forwards
@torch.inference_mode()
def forward_row(plan: Plan, model: Transformer, backend: str, batch: int, seq: int, roof: Roofline) -> dict:
    """One forward of ``batch`` x ``seq`` random tokens with ``backend``, next to its roofline."""
    cfg = model.config
    model.attn_backend = backend
    ids = torch.randint(0, cfg.vocab_size, (batch, seq), device=plan.device)
    t = measure(lambda: model(ids), plan)
    mem_s, flop_s = roof.memory_seconds(cfg, plan.dtype), roof.compute_seconds(cfg, batch, seq)
    ratio = t.median_s / max(mem_s, flop_s)
    return {"median (ms)": f"{t.median_s * 1e3:.2f}", "min (ms)": f"{t.min_s * 1e3:.2f}", "repeats": t.repeats,
            "tokens/s": f"{batch * seq / t.median_s:,.0f}", "peak (GiB)": f"{t.peak_bytes / 2**30:.2f}",
            "memory bound (ms)": f"{mem_s * 1e3:.2f}", "compute bound (ms)": f"{flop_s * 1e3:.2f}",
            "x roofline": f"{ratio:.2f}", "_ratio": ratio, "_ms": t.median_s * 1e3,
            "_bound_ms": max(mem_s, flop_s) * 1e3}


# ------------------------------------------------------------------------------------------------ 3. steps
def step_shapes(plan: Plan) -> list[tuple[str, int | None, int]]:
    """(label, cache start or None for an uncached forward, fed tokens) of the forwards a sampler runs, at the
    first generation length: the full canvas, the prefix cache's span from the middle block on, a dual block."""
    canvas = plan.prompt_length + plan.gen_lengths[0]
    mid = plan.prompt_length + (plan.gen_lengths[0] // plan.block // 2) * plan.block
    return [("full canvas (no cache; block start)", None, canvas),
            ("prefix cache, middle block on", mid, canvas - mid),
            ("dual cache, one block", mid, plan.block)]


@torch.inference_mode()
def step_row(plan: Plan, model: Transformer, start: int | None, fed: int, roof: Roofline) -> dict:
    """A sampler's forward of ``fed`` tokens (into a filled cache from ``start``), eager and graph-replayed."""
    cfg = model.config
    canvas = plan.prompt_length + plan.gen_lengths[0]
    x = torch.randint(0, cfg.vocab_size, (1, canvas), device=plan.device)
    if start is None:
        fn = lambda: model(x)  # noqa: E731
    else:
        cache = model.new_kv_cache(1, canvas)
        model(x, kv_cache=cache, cache_start=0)  # fill it as the block start does
        span = x[:, start:start + fed]
        fn = lambda: model(span, kv_cache=cache, cache_start=start)  # noqa: E731
    eager = measure(fn, plan)
    bound = roof.seconds(cfg, 1, fed, plan.dtype, kv_len=canvas)
    row = {"fed tokens": fed, "keys": canvas, "eager (ms)": f"{eager.median_s * 1e3:.2f}",
           "x roofline": f"{eager.median_s / bound:.2f}"}
    if plan.device == "cuda":
        try:
            replayed = measure(graph_replay(fn), plan)
            row["CUDA graph (ms)"] = f"{replayed.median_s * 1e3:.2f}"
            row["graph saves"] = f"{1 - replayed.median_s / eager.median_s:.0%}"
        except RuntimeError as e:  # capture refused (a host sync inside the forward): say so, keep the row
            row["CUDA graph (ms)"] = f"capture failed: {str(e).splitlines()[0][:100]}"
    else:
        row["CUDA graph (ms)"] = "CUDA only"
    row["_seconds"] = eager.median_s
    return row


# ------------------------------------------------------------------------------------------------ 4. samplers
def sampler_configs(cfg: ModelConfig) -> list[tuple[str, dict]]:
    """The decoders the project has, as SamplerSettings changes over the fixed schedule (steps = gen_length)."""
    stop = cfg.eos_token_id if cfg.eos_token_id is not None else next(i for i in (0, 1, 2) if i != cfg.mask_token_id)
    configs = [
        ("fixed", {}),
        ("fixed, prefix cache", {"cache": "prefix"}),
        ("fixed, dual cache", {"cache": "dual"}),
        ("threshold 0.9", {"threshold": 0.9}),
        ("threshold 0.9, prefix cache", {"threshold": 0.9, "cache": "prefix"}),
        ("threshold 0.9, dual cache", {"threshold": 0.9, "cache": "dual"}),
        ("factor 1.0, dual cache", {"factor": 1.0, "cache": "dual"}),
        ("variable length (iLLaDA), threshold 0.9, dual cache",
         {"variable_length": True, "stop_ids": (stop,), "threshold": 0.9, "cache": "dual"}),
        ("fixed, guidance cfg 1.0 (2 rows/forward)", {"cfg_scale": 1.0}),
    ]
    # each threshold row again with a sharpened head: every token clears the threshold (the best case)
    configs += [(f"{label}, {CONFIDENT}", {**c, "head_scale": HEAD_SCALE}) for label, c in configs
                if label in ("threshold 0.9", "threshold 0.9, dual cache")]
    # a model with shifted logits (Dream) runs without a cache: the samplers refuse one for it
    return [(label, c) for label, c in configs if not (cfg.logits_shift and c.get("cache", "none") != "none")]


@contextmanager
def scaled_head(model: Transformer, factor: float) -> Iterator[None]:
    """The output head's weights times ``factor`` (a power of two: exact in bf16, undone exactly on exit)."""
    if factor == 1.0:
        yield
        return
    with torch.no_grad():
        model.output.weight.mul_(factor)
    try:
        yield
    finally:
        with torch.no_grad():
            model.output.weight.div_(factor)


def sampler_row(plan: Plan, model: Transformer, settings: SamplerSettings, clock: Clock,
                head_scale: float = 1.0, graphs: bool = False) -> dict:
    """One generation at batch 1 after a one-block warm-up; skipped when its estimate exceeds the budget left.
    ``graphs``: the forwards go through :class:`GraphedModel` (captured once, replayed; eager off CUDA)."""
    with scaled_head(model, head_scale):
        return _sampler_row(plan, GraphedModel(model) if graphs else model, settings, clock)


def _sampler_row(plan: Plan, model, settings: SamplerSettings, clock: Clock) -> dict:
    cfg = model.config
    prompt, _ = prompts(cfg, batch=1, length=plan.prompt_length, device=plan.device, padded=False)
    prompt = torch.where(prompt == settings.mask_id, prompt - 1, prompt)  # a prompt never holds the mask token
    # warm-up: one block, which also prices a forward of this configuration
    warm = ForwardTimer(model)
    start = time.perf_counter()
    generate(warm, prompt, settings.replace(gen_length=plan.block, steps=plan.block))
    per_forward = (time.perf_counter() - start) / max(warm.calls, 1)
    canvas_growth = (plan.prompt_length + settings.gen_length) / (plan.prompt_length + plan.block)
    estimate = per_forward * canvas_growth * settings.gen_length  # at most one forward per generated token
    if estimate > clock.left():
        return {"error": f"skipped: estimated {estimate:.0f} s > {max(clock.left(), 0):.0f} s of budget left"}
    timer = ForwardTimer(model)
    graphed = isinstance(model, GraphedModel)
    if graphed:
        model.captures = model.replays = model.eager = 0  # count the timed generation only
    result = generate(timer, prompt, settings)
    wall = result.wall_time_s
    in_model = timer.seconds()
    extra = {}
    if graphed:
        extra["forwards captured/replayed/eager"] = f"{model.captures}/{model.replays}/{model.eager}" + (
            f" (capture refused: {model.refused[:80]})" if model.refused else "")
    return {**extra, "NFE": result.nfe, "tokens/forward": f"{result.tokens_per_forward:.2f}",
            "tokens/s": f"{result.tokens_per_second:.1f}", "wall (s)": f"{wall:.2f}",
            "ms/step": f"{wall / timer.calls * 1e3:.2f}", "ms in forward/step": f"{in_model / timer.calls * 1e3:.2f}",
            "outside the model": f"{1 - in_model / wall:.0%}", "_step_s": wall / timer.calls,
            "_outside": 1 - in_model / wall, "_tokens_s": result.tokens_per_second,
            "_tokens_per_step": result.tokens_per_forward, "_wall_s": wall, "_nfe": result.nfe,
            "_tokens": result.tokens.cpu()}


def interpolated_tokens_per_s(worst: dict, best: dict, tokens_per_step: float) -> float | None:
    """Tokens/s of a generation committing ``tokens_per_step``, between two measured runs of the same sampler
    that committed fewer (``worst``) and more (``best``): wall time linear in the number of forwards."""
    nfe_worst, nfe_best = worst["_nfe"], best["_nfe"]
    generated = worst["_tokens_per_step"] * nfe_worst
    nfe = generated / tokens_per_step
    if not nfe_best < nfe <= nfe_worst:
        return None
    wall = best["_wall_s"] + (nfe - nfe_best) / (nfe_worst - nfe_best) * (worst["_wall_s"] - best["_wall_s"])
    return generated / wall


def expected_step(steps: dict[str, float], cache: str | None, steps_per_block: int) -> float | None:
    """Per-step cost a cached sampler should reach: one full forward per block plus cached ones."""
    cached = {"prefix": "prefix cache, middle block on", "dual": "dual cache, one block"}.get(cache or "")
    full = steps.get("full canvas (no cache; block start)")
    part = steps.get(cached)
    if cached is None or full is None or part is None:
        return None
    return (full + (steps_per_block - 1) * part) / steps_per_block


# ------------------------------------------------------------------------------------------------ driver
class Run:
    """One benchmark run: the report, the clock, the resident model and what later sections reuse."""

    def __init__(self, plan: Plan, out: Path, command: str, install_log: str | None = None) -> None:
        self.plan, self.out = plan, out
        self.clock = Clock(plan.budget_s)
        problems = {b: backend_problem(b, plan) for b in plan.backends}
        self.backends = [b for b in plan.backends if problems[b] is None]
        if not self.backends:
            raise SystemExit(f"error: --backends {','.join(plan.backends)}: none can run here ({problems})")
        self.sampler_backend = self.backends[0]  # the first that passes its checks: flash_attn, else sdpa
        self.models = Models(plan)
        self.step_seconds: dict[str, dict[str, float]] = {}  # preset -> step forward label -> median s
        self.report = Report(out, self.header(command, problems, install_log))
        self.targets = self.report.section(
            "Targets", f"Forward at batch 1, length {FORWARD_SEQ} within {FORWARD_TARGET}x of the roofline; a "
            f"cached sampler's step within {STEP_TARGET}x of the forwards it runs (one full forward per block, cached "
            f"ones after it; prefix priced at its middle block); under {HOST_TARGET:.0%} of every sampler's step "
            f"outside the forward (the worst sampler named); threshold 0.9 with the dual cache at least "
            f"{SPEEDUP_TARGET:g}x the tokens/s of the fixed schedule (1 token per step) on the same prompt. Random "
            f"weights commit 1 token per step under the threshold (its worst case) and a head sharpened x"
            f"{HEAD_SCALE:g} a whole block (its best case); the row at {FAST_DLLM_TOKENS_PER_STEP} tokens per step "
            "(Fast-dLLM's mean on GSM8K at threshold 0.9 with LLaDA-8B-Instruct) interpolates between the two "
            "measured rows, linear in the forwards per block.")

    def header(self, command: str, problems: dict[str, str | None], install_log: str | None) -> str:
        plan = self.plan
        lines = [
            "# GPU benchmark" + (" (smoke run: tiny presets, not figures)" if plan.mode == "smoke" else ""), "",
            environment(plan.device), "",
            f"Command: `{command}` (mode {plan.mode}, dtype {dtype_name(plan.dtype)}, time budget "
            f"{plan.budget_s:.0f} s). Random weights (std {plan.std}).", "",
            f"flash-attn: {flash_attn_status()}."
            + "".join(f" Backend `{b}` not measured: {p}." for b, p in problems.items() if p),
        ]
        if install_log:
            lines += ["", f"flash-attn install attempts (from the device script):\n\n```\n{install_log.strip()}\n```"]
        return "\n".join(lines)

    def __call__(self) -> Report:
        self.clock.log(f"{self.plan.mode} run on {self.plan.device} ({platform.node()}), presets "
                       f"{list(self.plan.presets)}, backends {self.backends}")
        self.checks()
        self.clock.log("measuring the roofline ceilings")
        self.roof = Roofline(self.plan.device, self.plan.dtype, *self.plan.roofline_sizes)
        self.forwards()
        self.steps()
        self.samplers()
        self.report.complete = True
        self.report.write()
        self.clock.log(f"done in {self.clock.elapsed():.0f} s; wrote {self.out}")
        return self.report

    def add(self, section: Section, key: dict, what: str, fn: Callable[[], dict]) -> dict:
        """Measure one row (or record why not: budget spent, an error) and write the report."""
        if self.clock.left() <= 0:
            row = {**key, "error": "skipped: time budget spent"}
        else:
            self.clock.log(f"{what} " + " ".join(str(v) for v in key.values()))
            row = {**key, **guarded(fn, self.clock, what)}
        private = {k: row.pop(k) for k in list(row) if k.startswith("_")}
        self.report.add(section, row)
        return private

    def target(self, target: str, preset: str, measured: str, value: float, goal: float, *,
               at_least: bool = False, share: bool = False) -> None:
        """A Targets row: ``value`` against ``goal`` (at most, or ``at_least``; a ratio, or a ``share`` in %)."""
        shown = (lambda v: f"{v:.1%}") if share else (lambda v: f"{v:.2f}x")
        met = value >= goal if at_least else value <= goal
        self.report.add(self.targets, {"target": target, "preset": preset, "measured": measured,
                                       "value": shown(value), "goal": (">= " if at_least else "<= ") + shown(goal),
                                       "met": "yes" if met else "**no**"})

    def checks(self) -> None:
        plan = self.plan
        section = self.report.section("Backend agreement", f"{dtype_name(plan.dtype)} on {plan.device}; relative "
                                      "error ||out - ref|| / ||ref||; NaN fails.")
        for name in plan.presets:
            self.clock.log(f"checks {name}")
            for fn in (kernel_checks, model_checks):
                try:
                    for row in fn(plan, name, self.backends):
                        self.report.add(section, row)
                except Exception as e:  # noqa: BLE001 -- e.g. out of memory building the reference
                    self.report.add(section, {"check": fn.__name__, "preset": name, "backend": "all",
                                              "result": f"**error**: {type(e).__name__}: {str(e).strip()[:160]}"})
                free_memory()  # the 2-layer models go before the 8B ones come
        failed = {r["backend"] for r in section.rows if r["result"] != "pass"}
        self.sampler_backend = next((b for b in self.backends if b not in failed), self.backends[0])

    def forwards(self) -> None:
        plan, roof = self.plan, self.roof
        section = self.report.section(
            "Single forward", f"Roofline measured here: copy bandwidth {roof.bandwidth / 1e9:,.0f} GB/s (read + "
            f"write), {dtype_name(plan.dtype)} matmul {roof.flops / 1e12:,.1f} TFLOP/s; bound = max(weight bytes / "
            f"bandwidth, FLOPs / matmul peak). Median of {timer_words(plan.device)} after two warm-ups; peak = "
            + ("max allocated." if plan.device == "cuda" else "process RSS."))
        for name in plan.presets:
            model = self.models.get(name)
            for backend in self.backends:
                model.attn_backend = backend
                for batch in plan.batches:
                    for seq in plan.seqs:
                        key = {"preset": name, "backend": backend, "batch": batch, "seq": seq}
                        private = self.add(section, key, "forward", lambda: forward_row(
                            plan, model, backend, batch, seq, roof))
                        if batch == 1 and seq == FORWARD_SEQ and "_ratio" in private:
                            self.target(f"forward b1 x {FORWARD_SEQ} vs roofline ({backend})", name,
                                        f"{float(private['_ms']):.2f} ms vs {float(private['_bound_ms']):.2f} ms",
                                        private["_ratio"], FORWARD_TARGET)

    def steps(self) -> None:
        plan = self.plan
        section = self.report.section(
            f"Sampler step forwards, eager vs CUDA graph (backend {self.sampler_backend}, batch 1, prompt "
            f"{plan.prompt_length}, gen_length {plan.gen_lengths[0]}, block {plan.block})",
            "What a captured graph would save per step: launch gaps, not arithmetic.")
        for name in plan.presets:
            model = self.models.get(name)
            model.attn_backend = self.sampler_backend
            for label, start, fed in step_shapes(plan):
                private = self.add(section, {"preset": name, "step forward": label}, "step forward",
                                   lambda: step_row(plan, model, start, fed, self.roof))
                if "_seconds" in private:
                    self.step_seconds.setdefault(name, {})[label] = private["_seconds"]

    def samplers(self) -> None:
        plan = self.plan
        section = self.report.section(
            f"Samplers (backend {self.sampler_backend}, batch 1, prompt {plan.prompt_length}, block {plan.block}, "
            "steps = gen_length)",
            f"ms/step = wall time / forwards; ms in forward/step from {timer_words(plan.device)} around each model "
            "call; the rest is the sampler's own work. Random weights: the threshold/factor/variable-length rows "
            "commit one token per step (their worst case), so their NFE and tokens/s are bounds.")
        for gen_length in plan.gen_lengths:
            for name, cfg in plan.presets.items():
                model = self.models.get(name)
                model.attn_backend = self.sampler_backend
                measured: dict[str, dict] = {}
                for label, changes in sampler_configs(cfg):
                    def one() -> dict:
                        scale = changes.get("head_scale", 1.0)
                        settings = SamplerSettings.for_model(
                            cfg, gen_length=gen_length, steps=gen_length, block_length=plan.block,
                            **{k: v for k, v in changes.items() if k != "head_scale"})
                        return sampler_row(plan, model, settings, self.clock, head_scale=scale)

                    private = self.add(section, {"preset": name, "gen_length": gen_length, "sampler": label},
                                       "sampler", one)
                    if "_step_s" in private:
                        measured[label] = private
                    cache = changes.get("cache")
                    if "_step_s" in private and label.startswith("fixed,") and gen_length == plan.gen_lengths[0]:
                        want = expected_step(self.step_seconds.get(name, {}), cache, plan.block)
                        if want is not None:
                            step_s = private["_step_s"]
                            self.target(f"{label}: step vs its forwards", name,
                                        f"{step_s * 1e3:.2f} ms vs {want * 1e3:.2f} ms", step_s / want, STEP_TARGET)
                for label, changes in sampler_configs(cfg):
                    if label not in GRAPHED_SAMPLERS or label not in measured:
                        continue
                    plain = measured[label]

                    def graphed() -> dict:
                        settings = SamplerSettings.for_model(
                            cfg, gen_length=gen_length, steps=gen_length, block_length=plan.block,
                            **{k: v for k, v in changes.items() if k != "head_scale"})
                        row = sampler_row(plan, model, settings, self.clock, changes.get("head_scale", 1.0), True)
                        if "_tokens" in row:  # the same greedy tokens as the plain run, or the graphs are wrong
                            same = torch.equal(row["_tokens"], plain["_tokens"])
                            row["same tokens as plain"] = "yes" if same else "**NO**"
                            row["vs plain"] = f"{plain['_wall_s'] / row['_wall_s']:.2f}x"
                        return row

                    private = self.add(section, {"preset": name, "gen_length": gen_length,
                                                 "sampler": f"{label}, {GRAPHS}"}, "sampler", graphed)
                    if "_step_s" in private:
                        measured[f"{label}, {GRAPHS}"] = private
                self.sampler_targets(name, gen_length, measured)

    def sampler_targets(self, name: str, gen_length: int, measured: dict[str, dict]) -> None:
        """The host share of the worst sampler, and threshold decoding's speed-up over the fixed schedule."""
        if measured:
            worst = max(measured, key=lambda label: measured[label]["_outside"])
            self.target(f"time outside the forward, gen {gen_length} (worst: {worst})", name,
                        f"{measured[worst]['_outside'] * measured[worst]['_step_s'] * 1e3:.2f} of "
                        f"{measured[worst]['_step_s'] * 1e3:.2f} ms/step", measured[worst]["_outside"], HOST_TARGET,
                        share=True)
        for suffix in ("", f", {GRAPHS}"):  # plain forwards, then both sides replayed from CUDA graphs
            fixed = measured.get("fixed" + suffix)
            dual = "threshold 0.9, dual cache" if "threshold 0.9, dual cache" in measured else "threshold 0.9"
            worst, best = measured.get(dual + suffix), measured.get(f"{dual}, {CONFIDENT}{suffix}")
            if fixed is None:
                continue
            for what, row in (("random weights", worst), (f"head x{HEAD_SCALE:g}", best)):
                if row is not None:
                    self.target(f"{dual} vs fixed{suffix}, tokens/s, gen {gen_length} ({what}, "
                                f"{row['_tokens_per_step']:.2f} tokens/step)", name,
                                f"{row['_tokens_s']:.1f} vs {fixed['_tokens_s']:.1f} tokens/s",
                                row["_tokens_s"] / fixed["_tokens_s"], SPEEDUP_TARGET, at_least=True)
            if worst is not None and best is not None:
                tokens_s = interpolated_tokens_per_s(worst, best, FAST_DLLM_TOKENS_PER_STEP)
                if tokens_s is not None:
                    self.target(f"{dual} vs fixed{suffix}, tokens/s, gen {gen_length} (interpolated at "
                                f"{FAST_DLLM_TOKENS_PER_STEP} tokens/step)", name,
                                f"{tokens_s:.1f} vs {fixed['_tokens_s']:.1f} tokens/s",
                                tokens_s / fixed["_tokens_s"], SPEEDUP_TARGET, at_least=True)


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value


def positive_ints(text: str) -> list[int]:
    return [positive_int(part) for part in text.split(",")]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer shapes, one generation length")
    parser.add_argument("--smoke", action="store_true", help="tiny presets, short lengths, 1 repeat (CPU default)")
    parser.add_argument("--out", type=Path, default=None,
                        help="report path (default: illada/benchmarks/results/gpu_cuda.md; bench_out/gpu_smoke.md "
                             "for smoke runs)")
    parser.add_argument("--presets", type=lambda s: s.split(","), default=None, help="comma-separated preset names")
    parser.add_argument("--backends", type=lambda s: s.split(","), default=None, help=f"subset of {','.join(BACKENDS)}")
    parser.add_argument("--seqs", type=positive_ints, default=None, help="forward sequence lengths, e.g. 512,1024,2048")
    parser.add_argument("--batches", type=positive_ints, default=None, help="forward batch sizes, e.g. 1,8")
    parser.add_argument("--gen-lengths", type=positive_ints, default=None, help="sampler gen_lengths, e.g. 256,512")
    parser.add_argument("--block", type=positive_int, default=None, help="sampler block length (default 32)")
    parser.add_argument("--prompt-length", type=positive_int, default=None, help="sampler prompt length (default 128)")
    parser.add_argument("--repeats", type=positive_int, default=None, help="repeats per forward (default: adaptive)")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="seconds after which the remaining rows are skipped (default 420 full, 240 quick)")
    parser.add_argument("--install-log", type=Path, default=None,
                        help="a file of install attempts (flash-attn) to quote in the report")
    args = parser.parse_args(argv)
    plan = make_plan(args)
    torch.manual_seed(0)  # the random token ids
    out = args.out or (Path("bench_out/gpu_smoke.md") if plan.mode == "smoke" else RESULTS_DIR / "gpu_cuda.md")
    install_log = None
    if args.install_log is not None:
        try:
            install_log = args.install_log.read_text()
        except OSError as e:
            install_log = f"(could not read {args.install_log}: {e})"
    given = sys.argv[1:] if argv is None else argv
    command = " ".join(["python -m illada.benchmarks.gpu", *(shlex.quote(a) for a in given)])
    report = Run(plan, out, command, install_log)()
    print(report.render(), flush=True)
    print(f"### {report.sections[0].title}\n\n{table(report.sections[0].rows)}", flush=True)  # the tail a log shows


if __name__ == "__main__":
    main()
