"""Faults of evaluating one point (issue 12, items 3, 9, 13): broken weights, damaged files, a device that is
not there, an unwritable sweep dir. Each ends as a failure record with its true cause, or as one line
``error: ...`` naming the file or override, never as a traceback or a silent "ok"."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from illada.evaluate import NonFiniteLogitsError, Point, evaluate, failure_summary, resolve
from illada.loading import DeviceUnavailableError, check_device
from illada.runner import PointGroup
from illada.store import SweepStore
from tests.sweep_fixtures import SAMPLER, points, tiny_model  # noqa: F401 -- fixture

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")


# ------------------------------------------------------------------------------------------------ helpers
def _copy(model: Path, dest: Path) -> Path:
    shutil.copytree(model, dest)
    return dest


@pytest.fixture()
def nan_model(tiny_model, tmp_path) -> Path:
    """The tiny model with one NaN weight (in the final norm, so every logit is NaN)."""
    path = _copy(tiny_model, tmp_path / "nan_model")
    tensors = load_file(str(path / "model.safetensors"))
    tensors["model.norm.weight"][0] = float("nan")
    save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
    return path


def _cli(cmd: list[str], env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run a command; its exit code and its output (stdout + stderr) as lines, progress bars removed."""
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})
    return out.returncode, out.stdout + out.stderr


def _error_line(output: str) -> str:
    """The output's single ``error:`` line, after checking there is exactly one and no traceback."""
    assert "Traceback" not in output, output
    lines = [line for line in re.split(r"[\r\n]", output) if line.strip()]
    errors = [line for line in lines if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith("error: "), output
    return errors[0]


def _eval(model: Path, *extra: str) -> tuple[int, str]:
    # without --out, illada-eval writes to runs/eval of the repository: keep test records beside the model
    out = () if "--out" in extra else ("--out", str(Path(model).parent / "eval_out"))
    return _cli([str(BIN / "illada-eval"), "--model", str(model), "--limit", "2", "--device", "cpu", "--sampler",
                 *(f"{k}={v}" for k, v in SAMPLER.items()), *out, *extra])


def _sweep_args(model: Path, sweep_dir: Path, *extra: str) -> list[str]:
    return ["-m", f"model.path={model}", f"sweep_dir={sweep_dir}", "task.limit=2", "--no-plot",
            *(f"sampler.{k}={v}" for k, v in SAMPLER.items()), *extra]


# ------------------------------------------------------------------------------- 3: non-finite logits
def test_nan_weights_are_a_failure_record_not_a_result(nan_model, tmp_path):
    """Was: status ok, accuracy 0.0, on the Pareto plot. Now: every point of the job fails with the cause."""
    generation = points(nan_model, steps=(8, 4), limit=2)
    scoring = [resolve(Point(model=str(nan_model), task="arithmetic_mc", limit=2, scorer={"name": "confidence"}))]
    store = SweepStore(tmp_path / "sweep")
    for group in (generation, scoring):
        assert PointGroup(store.root, group)() == {"done": 0, "failed": len(group), "skipped": 0}
    for p in generation + scoring:
        rec = store.record(p.key)
        assert rec["status"] == "failed" and rec["quality"] is None
        assert rec["error"]["type"] == "NonFiniteLogitsError"
        assert "NaN or infinite logits" in rec["error"]["message"] and str(nan_model) in rec["error"]["message"]
    assert not store.status().done


def test_sweep_exits_non_zero_when_its_points_failed(nan_model, tiny_model, tmp_path, capsys):
    """Every point failed: exit status 1 and one line (default fail_on=all); fail_on=any also for a mix."""
    from sweeps.app import main

    with pytest.raises(SystemExit) as e:
        main(_sweep_args(nan_model, tmp_path / "all", "sampler.seed=0,1"))
    assert e.value.code == (f"error: all 2 points failed (hydra.sweeper.fail_on=all); their causes: "
                            f"`illada-status {tmp_path / 'all'} --failed`")
    main(_sweep_args(nan_model, tmp_path / "all", "sampler.seed=0,1", "hydra.sweeper.fail_on=never"))
    mixed = _sweep_args(tiny_model, tmp_path / "mixed", f"model.path={tiny_model},{nan_model}")
    main(mixed)  # one of two failed: not every point
    with pytest.raises(SystemExit) as e:
        main([*mixed, "hydra.sweeper.fail_on=any"])
    assert e.value.code.startswith("error: 1 of 2 points failed (hydra.sweeper.fail_on=any)"), e.value.code
    with pytest.raises(SystemExit) as e:
        main([*mixed, "hydra.sweeper.fail_on=some"])
    assert e.value.code == "error: hydra.sweeper.fail_on='some': choose one of all, any, never"
    capsys.readouterr()


def test_infinite_logits_are_caught_too(tiny_model):
    """One +inf logit (an fp16 overflow) in one forward is enough."""
    point = points(tiny_model, steps=(8,), limit=2)[0]
    from illada.loading import load

    loaded = load(point.settings["model"])
    forward = loaded.model.forward

    def overflowing(*args, **kwargs):
        logits = forward(*args, **kwargs)
        logits[0, 0, 0] = float("inf")
        return logits

    loaded.model.forward = overflowing
    with pytest.raises(NonFiniteLogitsError, match="a batch of 2 items"):
        evaluate(point, loaded=loaded, progress=False)


def test_nan_logits_are_the_cause_when_the_sampler_then_fails(nan_model, monkeypatch):
    """Garbage logits can make a sampler fail in its own way; the record names the logits, not that symptom."""
    import illada.evaluate as ev

    def confused(model, input_ids, settings, attention_mask=None):
        model(input_ids, attention_mask)
        raise RuntimeError("block [0, 8) still has masks after 512 steps")

    monkeypatch.setattr(ev, "generate", confused)
    with pytest.raises(NonFiniteLogitsError) as err:
        evaluate(points(nan_model, steps=(8,), limit=2)[0], progress=False)
    assert isinstance(err.value.__cause__, RuntimeError)


def test_nan_trial_is_failed_in_the_search(nan_model, tmp_path):
    """The search tells a point with non-finite logits FAIL with the cause, never as a result."""
    from optuna.trial import TrialState

    from illada.search import ParetoSearch

    base = Point(model=str(nan_model), task="arithmetic", limit=2, sampler=dict(SAMPLER), batch_size=2)
    with ThreadPoolExecutor(1) as pool:
        res = ParetoSearch(sweep_dir=tmp_path / "sweep", base=base, n_trials=2, seed=0, log=None, executor=pool,
                           space={"sampler.steps": {"type": "categorical", "choices": [4, 8]}}).run()
    assert res.study.trials and all(t.state == TrialState.FAIL for t in res.study.trials)
    assert all("NonFiniteLogitsError" in t.user_attrs["fail_reason"] for t in res.study.trials)


def test_illada_eval_nan_weights_exit_non_zero_and_record_the_failure(nan_model, tmp_path):
    code, out = _eval(nan_model, "--out", str(tmp_path / "out"))
    line = _error_line(out)
    assert code != 0 and "NaN or infinite logits" in line and str(nan_model) in line
    (record,) = (tmp_path / "out").glob("*.json")
    summary = json.loads(record.read_text())
    assert summary["status"] == "failed" and summary["error"]["type"] == "NonFiniteLogitsError"


# ------------------------------------------------------------------------------ 9: errors name their cause
def test_illada_eval_damaged_checkpoint_is_one_line(tiny_model, tmp_path):
    model = _copy(tiny_model, tmp_path / "damaged")
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    code, out = _eval(model)
    line = _error_line(out)
    assert code != 0 and str(weights) in line and "truncated or corrupt" in line


def test_illada_eval_unwritable_out_dir_is_one_line(tiny_model, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    code, out = _eval(tiny_model, "--out", str(blocker / "out"))
    line = _error_line(out)
    assert code != 0 and str(blocker) in line and "Not a directory" in line and ".tmp" not in line


def _bad_config(tiny_model: Path, tmp_path: Path) -> Path:
    model = _copy(tiny_model, tmp_path / "bad_config")
    cfg = json.loads((model / "config.json").read_text())
    cfg["num_key_value_heads"] = 3  # 4 heads cannot be split into 3 groups
    (model / "config.json").write_text(json.dumps(cfg))
    return model


def test_illada_eval_bad_config_names_the_file(tiny_model, tmp_path):
    model = _bad_config(tiny_model, tmp_path)
    code, out = _eval(model)
    line = _error_line(out)
    assert code != 0 and str(model / "config.json") in line and "n_kv_heads=3" in line


def test_illada_sweep_bad_config_blames_model_path_and_names_the_file(tiny_model, tmp_path):
    model = _bad_config(tiny_model, tmp_path)
    code, out = _cli([str(BIN / "illada-sweep"), *_sweep_args(model, tmp_path / "sweep", "sampler.steps=8,4")])
    line = _error_line(out)
    assert code != 0 and f"caused by 'model.path={model}'" in line
    assert str(model / "config.json") in line and "nothing was run" in line and "the defaults" not in line


def test_illada_sweep_unwritable_sweep_dir_is_refused_before_validation(tiny_model, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    code, out = _cli([str(BIN / "illada-sweep"), *_sweep_args(tiny_model, blocker / "sweep")])
    line = _error_line(out)
    assert code != 0 and f"sweep_dir={blocker / 'sweep'}" in line and "Not a directory" in line
    assert "valid points" not in out  # refused before validating


def test_illada_sweep_read_only_sweep_dir_is_refused(tiny_model, tmp_path):
    # root ignores permission bits, so the read-only filesystem is simulated: access(2) says EROFS there
    sweep = tmp_path / "sweep"
    script = (f"import os, sys; real = os.access; os.access = lambda p, m, **k: False if str(p).startswith({str(tmp_path)!r}) "
              "else real(p, m, **k); from sweeps.app import main; main(sys.argv[1:])")
    code, out = _cli([sys.executable, "-c", script, *_sweep_args(tiny_model, sweep)])
    line = _error_line(out)
    assert code != 0 and f"sweep_dir={sweep}" in line and ("Permission denied" in line or "Read-only" in line)
    assert not sweep.exists()


def test_illada_sweep_full_disk_is_one_line_naming_the_sweep_dir(tiny_model, tmp_path):
    """A write that fails with ENOSPC (no file name in the error, as from write(2)) mid-sweep."""
    sweep = tmp_path / "sweep"
    script = ("import errno, pathlib, sys\n"
              "real = pathlib.Path.write_text\n"
              "def full(self, *a, **k):\n"
              f"    if str(self).startswith({str(sweep)!r}):\n"
              "        raise OSError(errno.ENOSPC, 'No space left on device')\n"
              "    return real(self, *a, **k)\n"
              "pathlib.Path.write_text = full\n"
              "from sweeps.app import main\n"
              "main(sys.argv[1:])\n")
    code, out = _cli([sys.executable, "-c", script, *_sweep_args(tiny_model, sweep)])
    line = _error_line(out)
    assert code != 0 and "No space left on device" in line and f"sweep_dir={sweep}" in line


# ------------------------------------------------------------------------------ 13: a device that is not there
@no_cuda
def test_check_device_names_device_host_and_visible_gpus(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(DeviceUnavailableError, match=r"device='cuda': no CUDA device in this job \(CUDA_VISIBLE_DEVICES="):
        check_device("cuda")
    check_device("cpu")


@no_cuda
def test_job_without_its_gpu_records_every_point_as_failed(tiny_model, tmp_path):
    """Was: CheckpointError (pin_memory ...) then an AssertionError from the provenance, and no record at all."""
    group = points(tiny_model, steps=(8, 4), limit=2, device="cuda")  # validated on a "login node": fine
    store = SweepStore(tmp_path / "sweep")
    assert PointGroup(store.root, group)() == {"done": 0, "failed": 2, "skipped": 0}
    for p in group:
        rec = store.record(p.key)
        assert rec["status"] == "failed" and rec["error"]["type"] == "DeviceUnavailableError"
        assert "device='cuda'" in rec["error"]["message"]
    assert not store.status().missing


@no_cuda
def test_job_checks_its_host_once_before_loading_the_model(tiny_model, tmp_path, monkeypatch):
    """A job without its GPU: the host is checked once for the group's setting, no model load is tried, and
    every point's failure record names the device."""
    import illada.runner

    checks = []
    real = illada.runner.check_host
    monkeypatch.setattr(illada.runner, "check_host", lambda *setting: checks.append(setting) or real(*setting))
    monkeypatch.setattr(illada.runner, "load", lambda *a, **kw: pytest.fail("the model was loaded"))
    group = points(tiny_model, steps=(8, 4, 2), limit=2, device="cuda")
    store = SweepStore(tmp_path / "sweep")
    assert PointGroup(store.root, group)() == {"done": 0, "failed": 3, "skipped": 0}
    assert checks == [("cuda", "sdpa", "float32")]
    for p in group:
        assert "device='cuda': no CUDA device" in store.record(p.key)["error"]["message"]


@no_cuda
def test_illada_sweep_in_process_cuda_without_cuda_fails_fast(tiny_model, tmp_path):
    """In-process the driver is the job host: the device is checked with the other settings, nothing runs."""
    code, out = _cli([str(BIN / "illada-sweep"), *_sweep_args(tiny_model, tmp_path / "sweep", "model.device=cuda")])
    line = _error_line(out)
    assert code != 0 and "caused by 'model.device=cuda'" in line and "no CUDA device" in line
    assert not (tmp_path / "sweep").exists()


@no_cuda
def test_illada_eval_missing_device_is_one_line(tiny_model):
    code, out = _eval(tiny_model, "--device", "cuda")
    line = _error_line(out)
    assert code != 0 and "device='cuda'" in line


def test_failure_summary_never_fails(tiny_model, monkeypatch):
    point = points(tiny_model, steps=(8,), limit=2)[0]

    def broken(device):
        raise AssertionError("Torch not compiled with CUDA enabled")

    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    monkeypatch.setattr("illada.evaluate.provenance", broken)
    rec = failure_summary(point, Unprintable(), started="t0")
    assert rec["status"] == "failed" and rec["key"] == point.key and rec["error"]["type"] == "Unprintable"
    assert "Torch not compiled" in rec["provenance"]["provenance_error"] and rec["provenance"]["started_at"] == "t0"
    json.dumps(rec)  # writable as a record
