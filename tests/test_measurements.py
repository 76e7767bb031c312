"""Issue 15, items 1-3 (measurement side): records that say what they measured and under which conditions.

Schema 2 writes per-request latency (the wall time of the batch an item was in) and throughput in items/s and
tokens/s instead of ``seconds_per_sample`` (an inverse throughput) and ``tokens_per_second``; torch's thread
count is a setting and part of the key (``illada-eval --threads``, default 1 as in sweeps); the host's load is
recorded and an oversubscribed measurement is warned about. Schema-1 records keep their keys.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace

import pandas as pd
import pytest
import torch

import illada.evaluate as ev
from illada import records
from illada.evaluate import Point, evaluate, resolve
from illada.records import SCHEMA_VERSION, read_summary, settings_key
from illada.runner import PointGroup
from illada.store import SweepStore
from tests.sweep_fixtures import make_tiny_model

GEN = {"gen_length": 8, "steps": 4, "block_length": 8}

# settings of a real schema-1 record (runs/bench/search/grid/records/d2561ba9416e107e.json, written before
# issue 15) and of a scoring point resolved by the schema-1 code, with the keys the schema-1 code gave them
SCHEMA1_GENERATION = {
    "model": "/work/main/illada/embedded/default", "model_hash": "e7f902c71561bf15", "task": "arithmetic",
    "split": "test", "limit": 500, "seed": 0, "num_fewshot": 0, "data_path": None, "chat": False,
    "dtype": "float32", "attn_backend": "sdpa", "batch_size": 16, "device": "cpu", "method": "generate",
    "sampler": {"mask_id": 5, "gen_length": 8, "steps": 8, "block_length": 1, "temperature": 0.0, "cfg_scale": 0.0,
                "remasking": "low_confidence", "threshold": 0.75, "factor": None, "cache": "none",
                "variable_length": False, "stop_ids": [], "eos_id": 2, "eot_id": 3, "logits_eos_inf": False,
                "confidence_eos_eot_inf": False, "confidence_precision": "auto", "seed": None}}
SCHEMA1_SCORING = {
    "model": "/work/main/illada/embedded/default", "model_hash": "e7f902c71561bf15", "task": "arithmetic_mc",
    "split": "test", "limit": 4, "seed": 0, "num_fewshot": 0, "data_path": None, "chat": False, "dtype": "float32",
    "attn_backend": "sdpa", "batch_size": 1, "device": "cpu", "method": "score",
    "scorer": {"name": "likelihood", "mask_id": 5, "mc_num": 4, "batch_size": 4, "cfg_scale": 0.0, "seed": 0,
               "max_rows": 16}}
SCHEMA1_KEYS = [(SCHEMA1_GENERATION, "d2561ba9416e107e"), (SCHEMA1_SCORING, "295a09ddb7bd2d98")]


def schema1_key(settings: dict) -> str:
    """The key formula of schema 1, frozen here: the hash of all settings, nothing left out."""
    canonical = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return str(make_tiny_model(tmp_path_factory.mktemp("tiny_embedded")))


def gen_point(model: str, **kw) -> Point:
    return Point(model=model, task="arithmetic", limit=5, batch_size=2, sampler=GEN, **kw)


# ------------------------------------------------------------------------------------------ schema 2 cost
def test_generation_record_has_throughputs_not_the_old_names(tiny_model, tmp_path):
    """Was: cost.seconds_per_sample (eval time / n at batch 16, an inverse throughput) and tokens_per_second."""
    s = evaluate(gen_point(tiny_model), tmp_path, progress=False)
    c, n = s["cost"], s["quality"]["n"]
    assert s["schema"] == SCHEMA_VERSION == 2
    assert "seconds_per_sample" not in c and "tokens_per_second" not in c
    assert c["throughput_items_per_s"] * c["eval_seconds"] == pytest.approx(n)
    assert c["throughput_tokens_per_s"] * c["eval_seconds"] == pytest.approx(c["generated_tokens"])
    assert 0 < c["latency_p50_s"] <= c["latency_p95_s"] <= c["eval_seconds"]
    assert s["settings"]["batch_size"] == 2 and s["settings"]["threads"] == 1
    assert read_summary(tmp_path / f"{s['key']}.json")["cost"] == json.loads(json.dumps(c))


def test_scorer_record_has_no_token_throughput(tiny_model, tmp_path):
    """Was: tokens_per_second 0.0 for a scorer, which generates nothing (0 is a measurement, None is not one)."""
    s = evaluate(Point(model=tiny_model, task="arithmetic_mc", limit=3, batch_size=2, scorer={"name": "ar_order"}),
                 tmp_path, progress=False)
    c = s["cost"]
    assert c["throughput_tokens_per_s"] is None
    assert c["throughput_items_per_s"] * c["eval_seconds"] == pytest.approx(s["quality"]["n"])


class FakeClock:
    """time.perf_counter that moves only when told: the test decides how long each step 'takes'."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_generation_latency_is_the_whole_batch(tiny_model, tmp_path, monkeypatch):
    """Was: an item's latency_s was the sampler's wall time only (decoding and scoring its answer not counted).
    Now it is the wall time of the batch it was in: with a clock that advances 10 s per answer scored, every
    item of a batch of 2 waited 20 s, and the last batch (1 item) 10 s."""
    clock = FakeClock()
    monkeypatch.setattr("time.perf_counter", clock)
    real = ev.gen_outcome

    def slow_outcome(*args, **kwargs):
        clock.now += 10.0
        return real(*args, **kwargs)

    monkeypatch.setattr(ev, "gen_outcome", slow_outcome)
    s = evaluate(gen_point(tiny_model), tmp_path, progress=False)
    items = pd.read_parquet(tmp_path / f"{s['key']}.items.parquet")
    assert items["latency_s"].tolist() == [20.0, 20.0, 20.0, 20.0, 10.0]
    assert s["cost"]["latency_p50_s"] == 20.0 and s["cost"]["eval_seconds"] == 50.0
    assert s["cost"]["throughput_items_per_s"] == pytest.approx(5 / 50.0)


def test_scoring_latency_is_the_whole_batch(tiny_model, tmp_path, monkeypatch):
    """Was: a scorer's latency_s timed the forwards only, not encoding the choices (the request's text)."""
    clock = FakeClock()
    monkeypatch.setattr("time.perf_counter", clock)
    real = ev.encode_pair

    def slow_encode(*args, **kwargs):
        clock.now += 1.0
        return real(*args, **kwargs)

    monkeypatch.setattr(ev, "encode_pair", slow_encode)
    s = evaluate(Point(model=tiny_model, task="arithmetic_mc", limit=3, batch_size=2, scorer={"name": "ar_order"}),
                 tmp_path, progress=False)
    latency = pd.read_parquet(tmp_path / f"{s['key']}.items.parquet")["latency_s"].tolist()
    # one second per choice encoded: the items of a batch share its latency, and the batches make up the run
    assert latency[0] == latency[1] > 0 and latency[2] > 0
    assert latency[0] + latency[2] == s["cost"]["eval_seconds"]


# ------------------------------------------------------------------------------------------ load
def test_record_notes_the_host_load(tiny_model, tmp_path, monkeypatch):
    """Was: nothing said a point was measured while other jobs shared its cores."""
    prov = evaluate(gen_point(tiny_model), tmp_path, progress=False)["provenance"]
    assert prov["cpu_count"] >= 1 and (prov["load_avg_1m"] is None or prov["load_avg_1m"] >= 0)
    assert prov["oversubscribed"] == (prov["load_avg_1m"] is not None and prov["load_avg_1m"] > prov["cpu_count"])
    loads = iter([0.5, 64.0])  # quiet at the start, crowded at the end: the larger one counts
    monkeypatch.setattr("illada.timing.load_average", lambda: next(loads))
    monkeypatch.setattr("illada.timing.cpu_count", lambda: 2)
    prov = evaluate(gen_point(tiny_model), tmp_path, progress=False)["provenance"]
    assert (prov["load_avg_1m"], prov["cpu_count"], prov["oversubscribed"]) == (64.0, 2, True)
    monkeypatch.setattr("illada.timing.load_average", lambda: None)  # a system without a load average
    prov = evaluate(gen_point(tiny_model), tmp_path, progress=False)["provenance"]
    assert prov["load_avg_1m"] is None and prov["oversubscribed"] is None


def test_illada_eval_warns_when_oversubscribed(tiny_model, tmp_path, monkeypatch, capsys):
    argv = ["--model", tiny_model, "--limit", "2", "--sampler", "gen_length=8", "steps=4", "block_length=8",
            "--out", str(tmp_path)]
    monkeypatch.setattr("illada.timing.load_average", lambda: 1.0)
    monkeypatch.setattr("illada.timing.cpu_count", lambda: 4)
    ev.main(argv)
    assert "warning" not in capsys.readouterr().err
    monkeypatch.setattr("illada.timing.load_average", lambda: 9.5)
    ev.main(argv)  # a record of the same key is written again: illada-eval always measures
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning")]
    assert len(err) == 1 and "oversubscribed" in err[0] and "9.5" in err[0] and "4 CPUs" in err[0]


# ------------------------------------------------------------------------------------------ identity
@pytest.mark.parametrize("settings,key", SCHEMA1_KEYS)
def test_schema1_records_keep_their_keys(settings, key):
    """A field added after schema 1 at its neutral value is left out of the hash: old records stay cache hits."""
    assert schema1_key(settings) == key  # the fixture is what schema 1 wrote
    assert settings_key(settings) == key
    assert settings_key({**settings, "threads": 1}) == key
    assert settings_key({**settings, "threads": 2}) != key


def test_the_same_point_resolved_today_has_its_schema1_key():
    """Was: every generation key changed when the decoder fields (issue 16) joined the sampler settings, so no
    old record was found again. The point of the real schema-1 record, resolved now (threads 1, decoder llada),
    hashes to that record's key (model path and hash taken from the record: they are the machine's)."""
    point = Point(model="default", task="arithmetic", limit=500,
                  sampler={"gen_length": 8, "steps": 8, "block_length": 1, "threshold": 0.75})
    settings = resolve(point).settings
    assert settings["threads"] == 1 and settings["sampler"]["decoder"] == "llada"
    same_machine = {**settings, "model": SCHEMA1_GENERATION["model"], "model_hash": SCHEMA1_GENERATION["model_hash"]}
    assert settings_key(same_machine) == "d2561ba9416e107e"


@pytest.mark.parametrize("group,cls,schema1", [("sampler", "SamplerSettings", SCHEMA1_GENERATION["sampler"]),
                                                ("scorer", "ScoringSettings", SCHEMA1_SCORING["scorer"])])
def test_every_setting_added_after_schema1_is_key_neutral_at_its_default(group, cls, schema1):
    """A setting added later without a KEY_NEUTRAL entry changes every key (every record would run again)."""
    import dataclasses

    from illada.sampling import SamplerSettings
    from illada.scoring import ScoringSettings

    settings = {"SamplerSettings": SamplerSettings, "ScoringSettings": ScoringSettings}[cls]
    for f in dataclasses.fields(settings):
        if f.name not in schema1:
            assert records.KEY_NEUTRAL.get(f"{group}.{f.name}", "missing") == f.default, f"{group}.{f.name}"
    assert records.KEY_NEUTRAL["threads"] == 1


def test_threads_is_part_of_the_key(tiny_model):
    """Was: a point at torch's default threads and one at 1 thread had one key (times 2-16x apart)."""
    one, two = resolve(gen_point(tiny_model, threads=1)), resolve(gen_point(tiny_model, threads=2))
    assert one.key != two.key and two.settings["threads"] == 2
    default = resolve(gen_point(tiny_model, threads=None))  # torch's default here, recorded as its number
    assert default.settings["threads"] == torch.get_num_threads()
    for bad in (0, -1, True, "2", 1.5):
        with pytest.raises(ValueError, match=r"^threads="):
            resolve(gen_point(tiny_model, threads=bad))


def test_neutral_fields_may_be_nested(monkeypatch):
    """KEY_NEUTRAL takes dotted paths (the decoder knobs live in settings.sampler) and leaves the input intact."""
    monkeypatch.setattr(records, "KEY_NEUTRAL", {"threads": 1, "sampler.decoder": "llada", "sampler.gamma": None})
    old = SCHEMA1_GENERATION
    new = {**old, "threads": 1, "sampler": {**old["sampler"], "decoder": "llada", "gamma": None}}
    assert settings_key(new) == "d2561ba9416e107e" and new["sampler"]["decoder"] == "llada" and new["threads"] == 1
    assert settings_key({**new, "sampler": {**new["sampler"], "gamma": 0.5}}) != "d2561ba9416e107e"
    assert settings_key({**new, "sampler": {**new["sampler"], "decoder": "other"}}) != "d2561ba9416e107e"
    assert settings_key({**old, "threads": True}) != "d2561ba9416e107e"  # a bool is not the thread count 1


def test_point_runs_with_its_threads(tiny_model, tmp_path, monkeypatch):
    """Was: the record said nothing of threads and illada-eval ran at torch's default; now the point runs at its
    own thread count and leaves the process's setting as it found it."""
    seen = []
    real = ev._run_generation

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(ev, "_run_generation", spy)
    before = torch.get_num_threads()
    evaluate(gen_point(tiny_model, threads=2), tmp_path, progress=False)
    evaluate(gen_point(tiny_model, threads=1), tmp_path, progress=False)
    assert seen == [2, 1] and torch.get_num_threads() == before


def test_no_cache_hit_across_thread_counts(tiny_model, tmp_path):
    """A store holding the 1-thread record of a point does not answer for the same point at 2 threads: a record
    is reused only for an equal key, and the key carries the conditions."""
    store = SweepStore(tmp_path / "sweep")
    one, two = resolve(gen_point(tiny_model, threads=1)), resolve(gen_point(tiny_model, threads=2))
    assert PointGroup(store.root, [one])()["done"] == 1
    assert not store.has_record(two.key)
    counts = PointGroup(store.root, [one, two])()
    assert (counts["skipped"], counts["done"]) == (1, 1)
    assert store.record(two.key)["settings"]["threads"] == 2 and store.record(one.key)["settings"]["threads"] == 1


# ------------------------------------------------------------------------------------------ illada-eval
def test_illada_eval_threads_option(tiny_model, tmp_path, capsys):
    """--threads defaults to 1 like sweeps, so illada-eval and a sweep give the same point the same key."""
    argv = ["--model", tiny_model, "--limit", "2", "--sampler", "gen_length=8", "steps=4", "block_length=8",
            "--batch-size", "1", "--out", str(tmp_path)]
    ev.main(argv)
    default = json.loads(capsys.readouterr().out)
    ev.main(argv + ["--threads", "2"])
    two = json.loads(capsys.readouterr().out)
    point = Point(model=tiny_model, task="arithmetic", limit=2, batch_size=1, sampler={**GEN, "steps": 4})
    assert default["key"] == resolve(point).key and default["threads"] == 1 and default["batch_size"] == 1
    assert two["threads"] == 2 and two["key"] == resolve(replace(point, threads=2)).key
    assert {"latency_p50_s", "latency_p95_s", "throughput_items_per_s", "throughput_tokens_per_s"} <= set(default)
    assert "seconds_per_sample" not in default
    with pytest.raises(SystemExit) as bad:
        ev.main(argv + ["--threads", "0"])
    assert str(bad.value).startswith("error: threads=0:") and "\n" not in str(bad.value)


def test_a_method_whose_tokens_changed_gets_new_keys_and_only_its_points_do(monkeypatch):
    """d2Cache's query search and the calibrations' softmax precision under the threshold rules changed with no
    setting changing: their points hash a revision (a resumed sweep measures them again instead of reusing a record
    of the old behaviour); every other point keeps its key."""
    base = {**SCHEMA1_GENERATION, "threads": 1,
            "sampler": {**SCHEMA1_GENERATION["sampler"], "decoder": "llada", "cache": "none", "sigma": None,
                        "debias": False, "confidence_precision": "auto"}}

    def key(**sampler):
        return settings_key({**base, "sampler": {**base["sampler"], **sampler}})

    def revised(**sampler):
        return records.revisions({**base, "sampler": {**base["sampler"], **sampler}})

    assert key() == "d2561ba9416e107e" and revised() == {}  # the schema-1 point: unchanged
    assert revised(cache="d2cache") == {"d2cache": 2}
    assert revised(sigma=10.0, threshold=0.9) == {"calibrated_threshold": 2}
    assert revised(debias=True, cache="dual") == {"calibrated_threshold": 2}
    assert revised(sigma=10.0, threshold=None, factor=None) == {}  # the fixed schedule: the logits' dtype before too
    assert revised(sigma=10.0, threshold=0.9, confidence_precision="float64") == {}  # asked for: unchanged
    assert revised(sigma=10.0, threshold=0.9, decoder="eb_sampler") == {}  # its own reference's precision
    assert revised(threshold=0.9) == {}  # no calibration
    now = [key(cache="d2cache"), key(sigma=10.0, threshold=0.9), key(threshold=0.9)]
    monkeypatch.setattr(records, "revisions", lambda settings: {})  # the keys records of the old behaviour have
    before = [key(cache="d2cache"), key(sigma=10.0, threshold=0.9), key(threshold=0.9)]
    assert now[0] != before[0] and now[1] != before[1] and now[2] == before[2]
