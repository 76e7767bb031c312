"""One sweep point end to end: validation, generation and scoring records, schema, failure records."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from illada.embedded.train import build_tokenizer
from illada.evaluate import Point, encode_pair, evaluate, failure_summary, resolve
from illada.records import read_summary, settings_key, write_record
from illada.tasks import TaskError
from tests.sweep_fixtures import make_tiny_model


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return str(make_tiny_model(tmp_path_factory.mktemp("tiny_embedded")))


def test_generation_point_writes_a_complete_record(tiny_model, tmp_path):
    point = Point(model=tiny_model, task="arithmetic", limit=6, batch_size=4,
                  sampler={"gen_length": 8, "steps": 4, "block_length": 8})
    summary = evaluate(point, tmp_path, progress=False)
    assert set(summary) == {"schema", "key", "status", "settings", "quality", "cost", "provenance", "error"}
    assert summary["status"] == "ok" and summary["error"] is None
    s, q, c = summary["settings"], summary["quality"], summary["cost"]
    assert s["sampler"]["steps"] == 4 and s["sampler"]["mask_id"] == 5 and s["model_hash"]
    assert q["metric"] == "exact_match" and q["n"] == 6 and q["ci_low"] <= q["value"] <= q["ci_high"]
    assert c["nfe_per_sample"] == 4 and c["nfe_total"] == 8  # two batches, four steps each
    assert c["load_seconds"] > 0 and c["eval_seconds"] > 0 and c["peak_memory_kind"] == "process_rss"
    assert 0 <= c["generated_tokens"] <= 6 * 8 and c["tokens_per_forward"] == pytest.approx(2.0)
    assert summary["provenance"]["illada"] and summary["provenance"]["started_at"]
    on_disk = read_summary(tmp_path / f"{summary['key']}.json")
    assert on_disk["key"] == summary["key"] == settings_key(summary["settings"])
    items = pd.read_parquet(tmp_path / f"{summary['key']}.items.parquet")
    assert len(items) == 6 and {"id", "completion", "reference", "exact_match", "nfe"} <= set(items)


@pytest.mark.parametrize("scorer,forwards", [("confidence", None), ("likelihood", 8), ("ar_order", None)])
def test_scoring_point_counts_forwards(tiny_model, tmp_path, scorer, forwards):
    settings = {"name": scorer, **({"mc_num": 8, "batch_size": 4} if scorer == "likelihood" else {})}
    point = Point(model=tiny_model, task="arithmetic_mc", limit=5, batch_size=5, scorer=settings)
    summary = evaluate(point, tmp_path, progress=False)
    items = pd.read_parquet(tmp_path / f"{summary['key']}.items.parquet")
    assert summary["quality"]["metric"] == "acc" and "acc_norm" in summary["quality"]
    tok = build_tokenizer()
    lengths = [len(tok.encode(c)) for item_id in items["id"] for c in _choices(item_id)]
    expected = (forwards * 4 * 5 if forwards else sum(lengths)) / 5  # rows per question
    assert summary["cost"]["nfe_per_sample"] == pytest.approx(expected)


def _choices(item_id: str) -> list[str]:
    from illada.tasks.arithmetic import Problem, multiple_choice

    a, b = map(int, item_id.split("+"))
    return multiple_choice(Problem(a, b))[0]


def test_same_settings_same_key_and_different_settings_different_key(tiny_model):
    a = resolve(Point(model=tiny_model, task="arithmetic", sampler={"gen_length": 8, "steps": 8, "block_length": 8}))
    b = resolve(Point(model=tiny_model, task="arithmetic", sampler={"gen_length": 8, "steps": 8, "block_length": 8}))
    c = resolve(Point(model=tiny_model, task="arithmetic", sampler={"gen_length": 8, "steps": 4, "block_length": 8}))
    assert a.key == b.key != c.key


@pytest.mark.parametrize("point,match", [
    (dict(task="nope"), "task='nope' is unknown"),
    (dict(task="arithmetic", split="validation"), "split='validation'"),
    (dict(task="arithmetic", limit=0), "limit=0"),
    (dict(task="arithmetic", batch_size=0), "batch_size=0"),
    (dict(task="arithmetic", sampler={"gen_length": 8, "block_length": 3}), "block_length=3"),
    (dict(task="arithmetic", sampler={"gen_length": 8, "steps": 8, "block_length": 8, "stepz": 1}), "sampler.stepz=1"),
    (dict(task="arithmetic", sampler={"gen_length": 4096, "steps": 4096, "block_length": 4096}), "gen_length=4096"),
    (dict(task="arithmetic", scorer={"name": "confidence"}), "generation task"),
    (dict(task="arithmetic_mc", scorer={"name": "elbo"}), "scorer.name='elbo'"),
    (dict(task="arithmetic_mc", sampler={"steps": 4}), "multiple choice"),
    (dict(task="arithmetic", dtype="fp8"), "dtype 'fp8'"),
])
def test_bad_points_fail_before_any_work(tiny_model, point, match):
    with pytest.raises((ValueError, TaskError), match=match):
        resolve(Point(model=tiny_model, **point))


def test_missing_model_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        resolve(Point(model=str(tmp_path / "nowhere")))


def test_encode_pair_moves_trailing_space_into_the_continuation():
    tok = build_tokenizer()
    ctx, cont = encode_pair(tok, "Answer: ", "yes")
    assert tok.decode(ctx) == "Answer:" and tok.decode(cont) == " yes"


def test_failure_record(tiny_model, tmp_path):
    resolved = resolve(Point(model=tiny_model, task="arithmetic", sampler={"gen_length": 8, "steps": 8, "block_length": 8}))
    summary = failure_summary(resolved, RuntimeError("CUDA out of memory"), log_path="/logs/job_1.err")
    write_record(tmp_path, summary)
    on_disk = json.loads((tmp_path / f"{resolved.key}.json").read_text())
    assert on_disk["status"] == "failed" and on_disk["quality"] is None
    assert on_disk["error"]["type"] == "RuntimeError" and "out of memory" in on_disk["error"]["message"]
    assert on_disk["error"]["log_path"] == "/logs/job_1.err"
