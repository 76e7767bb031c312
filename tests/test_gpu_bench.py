"""The GPU benchmark (illada.benchmarks.gpu): its smoke mode runs every code path on tiny presets on the CPU;
the CUDA-only paths (events, graph capture, bf16 kernels, flash-attn) run under ``-m gpu`` on a GPU machine."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from illada.attention import flash_attn_available
from illada.benchmarks import gpu
from illada.benchmarks.engine import Roofline
from illada.config import PRESETS

ROOT = Path(__file__).resolve().parents[1]
FORWARD_COLUMNS = ["preset", "backend", "batch", "seq", "median (ms)", "min (ms)", "repeats", "tokens/s", "peak (GiB)",
                   "memory bound (ms)", "compute bound (ms)", "x roofline"]
SAMPLER_COLUMNS = ["preset", "gen_length", "sampler", "NFE", "tokens/forward", "tokens/s", "wall (s)", "ms/step",
                   "ms in forward/step", "outside the model", "forwards captured/replayed/eager", "same tokens as plain",
                   "vs plain"]


def tables(text: str) -> dict[str, list[dict[str, str]]]:
    """Each '### title' section's Markdown table as a list of row dicts (keyed by the header cells)."""
    out = {}
    for block in text.split("\n### ")[1:]:
        title, _, body = block.partition("\n")
        lines = [line for line in body.splitlines() if line.startswith("|")]
        if not lines:
            out[title] = []
            continue
        header = [c.strip() for c in lines[0].strip("|").split("|")]
        out[title] = [dict(zip(header, (c.strip() for c in line.strip("|").split("|")))) for line in lines[2:]]
    return out


def section(parsed: dict, prefix: str) -> list[dict[str, str]]:
    [title] = [t for t in parsed if t.startswith(prefix)]
    return parsed[title]


@pytest.fixture(scope="module")
def smoke_report(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("gpu") / "gpu_smoke.md"
    gpu.main(["--smoke", "--out", str(out)])
    return out.read_text()


def test_smoke_report_has_every_section_row_and_column(smoke_report):
    assert smoke_report.startswith("# GPU benchmark (smoke run")
    assert f"torch {torch.__version__}" in smoke_report and "date 20" in smoke_report
    assert "Incomplete" not in smoke_report
    parsed = tables(smoke_report)
    cuda = torch.cuda.is_available()
    backends = [b for b in gpu.BACKENDS if b != "flash_attn" or (cuda and flash_attn_available())]

    forwards = section(parsed, "Single forward")
    assert list(forwards[0]) == FORWARD_COLUMNS
    assert {(r["preset"], r["backend"], r["batch"], r["seq"]) for r in forwards} == {
        (p, b, str(batch), str(seq)) for p in PRESETS for b in backends for batch in (1, 2) for seq in (16, 32)}
    for row in forwards:
        assert float(row["median (ms)"]) > 0 and float(row["x roofline"]) > 0

    checks = section(parsed, "Backend agreement")
    assert {(r["preset"], r["backend"]) for r in checks} == {(p, b) for p in PRESETS for b in backends}
    assert all(r["result"] == "pass" for r in checks), checks

    steps = section(parsed, "Sampler step forwards")
    assert len(steps) == 3 * len(PRESETS) and all(float(r["eager (ms)"]) > 0 for r in steps)

    samplers = section(parsed, "Samplers")
    assert list(samplers[0]) == SAMPLER_COLUMNS
    configs = {name: [label for label, _ in gpu.sampler_configs(cfg)] for name, cfg in PRESETS.items()}
    graphed = {name: [f"{label}, {gpu.GRAPHS}" for label in labels if label in gpu.GRAPHED_SAMPLERS]
               for name, labels in configs.items()}
    assert [(r["preset"], r["sampler"]) for r in samplers if r["gen_length"] == "8"] == [
        (name, label) for name in PRESETS for label in configs[name] + graphed[name]]
    assert len(samplers) == 2 * sum(len(configs[n]) + len(graphed[n]) for n in PRESETS)
    for row in samplers:  # every decoder finished: no error column, a real NFE
        assert int(row["NFE"]) > 0 and float(row["tokens/s"]) > 0, row
        if row["sampler"].endswith(gpu.GRAPHS):  # off CUDA the wrapper runs every forward eagerly
            assert row["same tokens as plain"] == "yes", row
            if not cuda:
                assert re.fullmatch(r"0/0/\d+", row["forwards captured/replayed/eager"]), row


def test_smoke_report_states_why_a_backend_was_not_measured(smoke_report):
    if torch.cuda.is_available() and flash_attn_available():
        pytest.skip("flash-attn runs here")
    assert "Backend `flash_attn` not measured: attention backend 'flash_attn' needs" in smoke_report
    assert "flash-attn: not importable" in smoke_report


def test_smoke_report_checks_the_targets(smoke_report):
    targets = section(tables(smoke_report), "Targets")
    labels = {(r["preset"], r["target"]) for r in targets}
    steps = {(p, t) for p, t in labels if t.endswith("step vs its forwards")}
    assert steps == {(p, f"fixed, {c} cache: step vs its forwards") for p, cfg in PRESETS.items()
                     for c in ("prefix", "dual") if not cfg.logits_shift}  # Dream runs without a cache
    for p, cfg in PRESETS.items():
        threshold = "threshold 0.9" if cfg.logits_shift else "threshold 0.9, dual cache"
        for gen in (8, 16):
            assert sum(t.startswith(f"time outside the forward, gen {gen} (worst: ") for q, t in labels if q == p) == 1
            for suffix in ("", f", {gpu.GRAPHS}"):
                speedups = [t for q, t in labels if q == p and t.startswith(f"{threshold} vs fixed{suffix}, tokens/s, "
                                                                              f"gen {gen} (")]
                # random weights and the sharpened head; interpolated where the head committed more than 3.25/step
                kinds = {t.split(" (")[1].split(",")[0].split(" at ")[0] for t in speedups}
                assert kinds - {"interpolated"} == {"random weights", "head x128"}, speedups
    for r in targets:
        value = float(r["value"].rstrip("x%"))
        assert r["met"] == ("yes" if (value >= float(r["goal"][3:].rstrip("x%")) if r["goal"].startswith(">=")
                                      else value <= float(r["goal"][3:].rstrip("x%"))) else "**no**"), r


def test_interpolation_between_the_worst_and_best_case_is_linear_in_forwards():
    # 256 tokens: 256 forwards in 10 s (1 per step), 8 forwards in 1 s (32 per step)
    worst = {"_nfe": 256, "_tokens_per_step": 1.0, "_wall_s": 10.0}
    best = {"_nfe": 8, "_tokens_per_step": 32.0, "_wall_s": 1.0}
    # 4 tokens per step: 64 forwards, a (64 - 8) / (256 - 8) share of the way from 1 s to 10 s
    wall = 1.0 + (64 - 8) / 248 * 9.0
    assert gpu.interpolated_tokens_per_s(worst, best, 4.0) == pytest.approx(256 / wall)
    assert gpu.interpolated_tokens_per_s(worst, best, 64.0) is None  # outside what was measured


def test_a_sharpened_head_is_restored_exactly():
    from illada.model import Transformer

    cfg = gpu.tiny(PRESETS["illada-8b"])  # tied: the head is the embedding table
    model = Transformer.random(cfg, dtype=torch.bfloat16)
    before = model.output.weight.detach().clone()
    with gpu.scaled_head(model, gpu.HEAD_SCALE):
        assert torch.equal(model.output.weight, before * gpu.HEAD_SCALE)
    assert torch.equal(model.output.weight, before)


def test_tied_random_model_still_finishes_the_adaptive_decoders(tmp_path):
    # A random tied head scores each position's input token highest: without the zeroed mask row, masked
    # positions predict the mask token forever and threshold/factor/variable-length raise after 64x block steps.
    out = tmp_path / "r.md"
    gpu.main(["--smoke", "--presets", "illada-8b", "--seqs", "16", "--batches", "1", "--gen-lengths", "8",
              "--out", str(out)])
    samplers = section(tables(out.read_text()), "Samplers")
    assert PRESETS["illada-8b"].tie_embeddings
    labels = [label for label, _ in gpu.sampler_configs(PRESETS["illada-8b"])]
    assert [r["sampler"] for r in samplers] == labels + [f"{label}, {gpu.GRAPHS}" for label in labels
                                                         if label in gpu.GRAPHED_SAMPLERS]
    assert all("error" not in r or not r["error"] for r in samplers), samplers
    assert all(int(r["NFE"]) <= 8 * (2 if "guidance" in r["sampler"] else 1) for r in samplers)


def test_a_failing_row_is_recorded_and_the_run_goes_on(tmp_path, monkeypatch):
    real = gpu.forward_row

    def oom_at_batch_2(plan, model, backend, batch, seq, roof):
        if batch == 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 4.00 GiB")
        return real(plan, model, backend, batch, seq, roof)

    monkeypatch.setattr(gpu, "forward_row", oom_at_batch_2)
    out = tmp_path / "r.md"
    gpu.main(["--smoke", "--presets", "llada-8b", "--seqs", "16", "--batches", "1,2", "--gen-lengths", "8",
              "--backends", "sdpa", "--out", str(out)])
    text = out.read_text()
    forwards = section(tables(text), "Single forward")
    assert [r["batch"] for r in forwards] == ["1", "2"]
    assert forwards[0]["error"] == "" and float(forwards[0]["median (ms)"]) > 0
    assert forwards[1]["error"] == "OutOfMemoryError: CUDA out of memory. Tried to allocate 4.00 GiB"
    assert "Incomplete" not in text and section(tables(text), "Samplers")  # later sections still ran


def test_a_backend_that_fails_its_checks_is_not_used_for_the_samplers(tmp_path, monkeypatch):
    from illada import attention

    def broken(q, k, v, key_mask):
        raise RuntimeError("no kernel image is available for execution on the device")

    monkeypatch.setitem(attention.BACKENDS, "sdpa", broken)
    out = tmp_path / "r.md"
    gpu.main(["--smoke", "--presets", "llada-8b", "--seqs", "16", "--batches", "1", "--gen-lengths", "8",
              "--out", str(out)])
    text = out.read_text()
    parsed = tables(text)
    sdpa_checks = [r for r in section(parsed, "Backend agreement") if r["backend"] == "sdpa"]
    assert len(sdpa_checks) == 4
    assert all(r["result"].startswith("**error**: RuntimeError: no kernel image") for r in sdpa_checks)
    assert section(parsed, "Single forward")[0]["error"].startswith("RuntimeError: no kernel image")
    assert "### Samplers (backend eager," in text
    assert all(int(r["NFE"]) > 0 for r in section(parsed, "Samplers"))


def test_a_run_cut_short_leaves_the_rows_it_measured(tmp_path, monkeypatch):
    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # what a timeout's SIGINT/SIGKILL leaves behind: everything written so far

    monkeypatch.setattr(gpu, "step_row", killed)
    out = tmp_path / "r.md"
    with pytest.raises(KeyboardInterrupt):
        gpu.main(["--smoke", "--presets", "llada-8b", "--seqs", "16", "--batches", "1", "--backends", "sdpa",
                  "--out", str(out)])
    text = out.read_text()
    assert "**Incomplete: the run stopped" in text
    assert float(section(tables(text), "Single forward")[0]["median (ms)"]) > 0


def test_a_spent_budget_skips_rows_and_says_so(tmp_path):
    out = tmp_path / "r.md"
    gpu.main(["--smoke", "--presets", "llada-8b", "--seqs", "16", "--batches", "1", "--gen-lengths", "8",
              "--backends", "sdpa", "--budget-s", "0", "--out", str(out)])
    parsed = tables(out.read_text())
    for title in ("Single forward", "Sampler step forwards", "Samplers"):
        rows = section(parsed, title)
        assert rows and all(r["error"] == "skipped: time budget spent" for r in rows), (title, rows)


def test_roofline_counts_the_weights_a_forward_multiplies_with():
    roof = Roofline.__new__(Roofline)  # the ceilings are set by hand: no measurement
    tied, untied = PRESETS["illada-8b"], PRESETS["llada-8b"]
    assert tied.tie_embeddings and not untied.tie_embeddings
    roof.bandwidth, roof.flops = math.inf, 1.0
    # a tied table is still the output head: 2 FLOPs per parameter and token, plus attention
    attention = 4 * 1 * 1 * tied.n_heads * tied.head_dim * tied.n_layers
    assert roof.seconds(tied, 1, 1, torch.bfloat16) == 2 * tied.num_parameters + attention
    roof.bandwidth, roof.flops = 1.0, math.inf
    # an untied embedding table is a lookup: its bytes are not read by a forward
    assert roof.seconds(untied, 1, 1, torch.bfloat16) == 2 * (untied.num_parameters - untied.vocab_size * untied.dim)
    assert roof.seconds(tied, 1, 1, torch.bfloat16) == 2 * tied.num_parameters


def test_a_mixture_of_experts_computes_with_its_active_experts_but_reads_them_all():
    roof = Roofline.__new__(Roofline)
    moe = PRESETS["llada-moe-7b-a1b"]
    idle_experts = moe.n_experts - moe.experts_per_token
    expert = 3 * moe.dim * moe.ffn_dim
    roof.bandwidth, roof.flops = 1.0, 1.0
    attention = 4 * moe.n_heads * moe.head_dim * moe.n_layers
    assert roof.compute_seconds(moe, 1, 1) == 2 * (Roofline.matmul_parameters(moe) - idle_experts * expert
                                                   * moe.n_layers) + attention
    assert roof.memory_seconds(moe, torch.bfloat16) == 2 * Roofline.matmul_parameters(moe)
    dense = PRESETS["llada-8b"]
    assert Roofline.active_parameters(dense) == Roofline.matmul_parameters(dense)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_tiny_presets_keep_the_family(name):
    cfg, small = PRESETS[name], gpu.tiny(PRESETS[name])
    assert (small.format, small.tie_embeddings) == (cfg.format, cfg.tie_embeddings)
    assert small.n_heads // small.n_kv_heads == cfg.n_heads // cfg.n_kv_heads
    assert small.num_parameters < 1e6
    assert small.mask_token_id is not None and small.mask_token_id < small.vocab_size
    assert small.mask_token_id != small.eos_token_id
    assert (small.eos_token_id is None) == (cfg.eos_token_id is None)


@pytest.mark.parametrize("args,message", [
    (["--presets", "gpt2"], "error: --presets gpt2: unknown preset(s)"),
    (["--backends", "xformers"], "error: --backends xformers: unknown backend(s)"),
    (["--gen-lengths", "40", "--block", "32"], "error: --block 32 must divide every --gen-lengths value [40]"),
])
def test_bad_arguments_name_the_flag_and_value(args, message):
    with pytest.raises(SystemExit) as exc:
        gpu.main(["--smoke", *args])
    assert str(exc.value.code).startswith(message)


@pytest.mark.parametrize("args,message", [
    (["--seqs", "512,0"], "argument --seqs: '0' is not a positive integer"),
    (["--repeats", "x"], "argument --repeats: 'x' is not a positive integer"),
])
def test_non_positive_sizes_are_refused_by_the_parser(args, message, capsys):
    with pytest.raises(SystemExit) as exc:
        gpu.main(["--smoke", *args])
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_bad_arguments_are_one_line_without_traceback():
    proc = subprocess.run([sys.executable, "-m", "illada.benchmarks.gpu", "--presets", "gpt2"], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip() == "error: --presets gpt2: unknown preset(s); known: " + ", ".join(PRESETS)


def test_device_script_is_valid_bash():
    script = ROOT / ".ci" / "gpu" / "run.sh"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    # the report and logs land in $OUT, the one folder that comes back from a device machine
    assert re.search(r'--out "\$OUT/gpu_cuda\.md"', script.read_text())


# ------------------------------------------------------------------------------------------------ CUDA only
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_smoke_on_cuda_agrees_in_bf16_and_captures_graphs(tmp_path):
    out = tmp_path / "r.md"
    gpu.main(["--smoke", "--out", str(out)])
    text = out.read_text()
    parsed = tables(text)
    checks = section(parsed, "Backend agreement")
    assert "bfloat16 on cuda" in text
    assert all(r["result"] == "pass" for r in checks), checks
    if flash_attn_available():  # the variable-length kernel on a left-padded batch, against the unpadded rows
        assert any(r["backend"] == "flash_attn" and r["check"].startswith("left-padded rows") for r in checks)
    steps = section(parsed, "Sampler step forwards")
    for r in steps:  # the mixture of experts reads its routing counts on the host: no graph, and the row says so
        moe = PRESETS[r["preset"]].is_moe
        assert r["CUDA graph (ms)"].startswith("capture failed") if moe else float(r["CUDA graph (ms)"]) > 0, r
    samplers = [r for r in section(parsed, "Samplers") if r["sampler"].endswith(gpu.GRAPHS)]
    assert samplers and all(r["same tokens as plain"] == "yes" for r in samplers), samplers


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_event_timing_measures_device_work():
    a = torch.randn(2048, 2048, device="cuda")
    one = gpu.time_events(lambda: a @ a, "cuda", warmup=1, repeats=3)
    four = gpu.time_events(lambda: [a @ a for _ in range(4)], "cuda", warmup=1, repeats=3)
    assert 0 < one.median_s < four.median_s and one.peak_bytes >= a.numel() * 4
