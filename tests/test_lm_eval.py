"""illada as an lm-evaluation-harness model (illada/harness.py): the three offline tasks end to end (simple_evaluate,
the command line, a sweep point), lm-eval's requests against illada's items, scores equal to illada's own, and no
generation shared between two settings (lm-eval's response cache)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

os.environ["HF_DATASETS_OFFLINE"] = "1"  # the offline configs must never need the hub
os.environ["HF_HUB_OFFLINE"] = "1"
lm_eval = pytest.importorskip("lm_eval")

from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.api.model import CachingLM  # noqa: E402

from illada import harness  # noqa: E402
from illada.evaluate import Point, evaluate, resolve  # noqa: E402
from illada.loading import load  # noqa: E402
from illada.sampling import SamplerSettings, generate  # noqa: E402
from illada.tasks import get_task, stable_subsample  # noqa: E402
from illada.tasks.gsm8k import reference_answer  # noqa: E402
from illada.tokenizer import pad_left  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
GEN = {"sampler.gen_length": 8, "sampler.steps": 8, "sampler.block_length": 8}


@pytest.fixture(scope="module")
def loaded():
    return load("default")


@pytest.fixture(scope="module")
def manager():
    return harness.task_manager()


def _lm(loaded, **settings):
    return harness.IlladaLM(loaded=loaded, **settings)


# ------------------------------------------------------------------------------------------------- requests
def _instances(manager, name: str, limit: int, num_fewshot: int = 0):
    task = manager.load([name])["tasks"][name]
    task.set_config("num_fewshot", num_fewshot)
    task.build_all_requests(limit=limit, rank=0, world_size=1)
    by_doc: dict[int, list] = {}
    for inst in task.instances:
        by_doc.setdefault(inst.doc_id, []).append(inst)
    docs = list(task.eval_docs)
    return task, by_doc, docs


@pytest.mark.parametrize("name", ["piqa", "arc_challenge"])
def test_multiple_choice_requests_equal_illada_items(manager, name):
    """Same documents (the offline rows illada reads), same (context, continuation) pairs and gold, item by item."""
    task, by_doc, docs = _instances(manager, name, limit=20)
    items = get_task(name).load(limit=None).items[:20]
    assert len(by_doc) == len(items) == 20
    for doc_id, item in enumerate(items):
        pairs = [inst.args for inst in sorted(by_doc[doc_id], key=lambda i: i.idx)]
        assert pairs == item.pairs(), (name, doc_id)
        assert task.doc_to_target(docs[doc_id]) == item.gold


def test_gsm8k_requests_equal_illada_items(manager):
    """Prompt, stop strings and gold answer agree (lm-eval's target is the solution; illada keeps its number)."""
    task, by_doc, docs = _instances(manager, "gsm8k", limit=20)
    items = get_task("gsm8k").load(limit=None).items[:20]
    for doc_id, item in enumerate(items):
        (inst,) = by_doc[doc_id]
        context, kwargs = inst.args
        assert context == item.prompt
        assert list(kwargs["until"]) == list(item.stop)
        assert reference_answer(task.doc_to_target(docs[doc_id])) == item.reference


def test_shots_come_from_the_offline_splits_never_the_item(manager):
    """lm-eval draws its shots itself (not illada's draw, so few-shot contexts differ from illada's: documented);
    offline they come from the evaluation split and never repeat the document asked."""
    _, by_doc, docs = _instances(manager, "gsm8k", limit=3, num_fewshot=2)
    for doc_id, (inst,) in by_doc.items():
        question = docs[doc_id]["question"]
        assert inst.args[0].count(question) == 1 and inst.args[0].count("Question:") == 3


# ------------------------------------------------------------------------------------------------- scores
def test_loglikelihood_equals_illada_scores_for_the_same_items(loaded, manager):
    """Same items (lm-eval's `samples` = illada's seeded subsample) and same batching: identical scores."""
    scorer = {"name": "likelihood", "mc_num": 4, "batch_size": 2, "seed": 3}
    own = evaluate(resolve(Point(task="piqa", limit=3, scorer=scorer, batch_size=16)), loaded=loaded, progress=False)
    assert own["quality"]["n"] == 3
    rows, _ = get_task("piqa").rows("validation")
    index = stable_subsample([str(i) for i in range(len(rows))], 3, 0)
    lm = _lm(loaded, batch_size=16, **{f"scorer.{k}": v for k, v in scorer.items()})
    out = lm_eval.simple_evaluate(model=lm, tasks=["piqa"], samples={"piqa": index}, task_manager=manager,
                                  log_samples=True)
    theirs = {s["doc_id"]: [r[0][0] for r in s["resps"]] for s in out["samples"]["piqa"]}
    mine = _own_scores(loaded, "piqa", 3, scorer)
    assert [theirs[i] for i in index] == mine


def _own_scores(loaded, task, limit, scorer):
    from illada.evaluate import _run_scoring, _load_task

    resolved = resolve(Point(task=task, limit=limit, scorer=scorer, batch_size=16))
    rows, _ = _run_scoring(resolved, loaded, _load_task(task, None, limit, 0, 0, None), False)
    return [r["scores"] for r in rows]


def test_loglikelihood_rolling_is_the_elbo_of_the_whole_string(loaded):
    lm = _lm(loaded, **{"scorer.name": "likelihood", "scorer.mc_num": 4, "scorer.batch_size": 4})
    req = Instance("loglikelihood_rolling", {}, ("000352+003366=0003718",), 0, ("t", 0, 1))
    (value,) = lm.loglikelihood_rolling([req])
    tok, ids = loaded.tokenizer, loaded.special_ids
    from illada.scoring import likelihood

    prefix = ids.bos if ids.bos is not None else ids.eos
    expected = likelihood(loaded.model, [([prefix], tok.encode("000352+003366=0003718"))], lm.scoring)
    assert value == pytest.approx(float(expected[0])) and value < 0


# ------------------------------------------------------------------------------------------------- generation
def _gen_requests(prompts, **kwargs):
    gen = {"until": ["Question:"], "max_gen_toks": 8, **kwargs}
    return [Instance("generate_until", {}, (p, gen), 0, ("t", n, 1)) for n, p in enumerate(prompts)]


PROMPTS = ["000352+003366=", "004519+000481=", "12+999999=", "000001+000001="]


def _direct(loaded, settings: SamplerSettings) -> list[str]:
    tok = loaded.tokenizer
    ids, mask = pad_left([tok.encode(p, add_special_tokens=True) for p in PROMPTS], loaded.special_ids.eos)
    res = generate(loaded.model, ids, settings, mask)
    return [tok.decode(res.generated[i, :int(res.answer_lengths[i])].tolist()) for i in range(len(PROMPTS))]


def test_two_settings_never_return_each_others_generations(loaded, tmp_path):
    """Each setting returns its own sampler's tokens (batched, left-padded); lm-eval's response cache, which
    ignores model_args, is refused unless its path is the setting's own."""
    a = _lm(loaded, batch_size=3, **GEN)
    b = _lm(loaded, batch_size=3, **{**GEN, "sampler.steps": 2, "sampler.remasking": "random", "sampler.seed": 1})
    ids = loaded.special_ids
    base = dict(mask_id=ids.mask, eos_id=ids.eos, eot_id=ids.eot, gen_length=8, block_length=8)
    want_a = _direct(loaded, SamplerSettings(**base, steps=8))
    want_b = _direct(loaded, SamplerSettings(**base, steps=2, remasking="random", seed=1))
    assert want_a != want_b  # else the test could not tell the settings apart
    assert a.generate_until(_gen_requests(PROMPTS)) == want_a
    assert b.generate_until(_gen_requests(PROMPTS)) == want_b
    assert a.key != b.key
    with pytest.raises(ValueError, match="use_cache=.*ignores model_args.*" + a.key):
        CachingLM(a, str(tmp_path / "shared.db"))
    cached = CachingLM(a, str(tmp_path / f"{a.key}.db"))
    assert cached.generate_until(_gen_requests(PROMPTS)) == want_a
    with pytest.raises(ValueError, match=b.key):
        CachingLM(b, str(tmp_path / f"{a.key}.db"))  # another setting never reads a's responses


def test_generate_until_honours_stop_strings_and_max_gen_toks(loaded):
    lm = _lm(loaded, batch_size=4, **GEN)
    full = lm.generate_until(_gen_requests(PROMPTS))
    short = lm.generate_until(_gen_requests(PROMPTS, max_gen_toks=3))
    assert [len(s) for s in short] == [min(len(f), 3) for f in full]  # one character per token here
    stopped = lm.generate_until(_gen_requests(PROMPTS, until=["0"]))
    assert stopped == [f.split("0")[0] for f in full]


def test_chat_template_prompt_gets_no_second_bos(loaded):
    lm = _lm(loaded, **GEN)
    plain = lm._encode_prompt("1+1=")
    lm._chat = True  # what apply_chat_template sets
    assert lm._encode_prompt("1+1=") == loaded.tokenizer.encode("1+1=", add_special_tokens=False)
    assert len(plain) >= len(lm._encode_prompt("1+1="))


def test_bad_model_args_are_one_line_errors(loaded):
    with pytest.raises(ValueError, match=r"^model_args sampler_steps=4: unknown"):
        _lm(loaded, sampler_steps=4)
    with pytest.raises(ValueError, match=r"SamplerSettings.steps=3"):
        _lm(loaded, **{**GEN, "sampler.block_length": 4, "sampler.steps": 3})
    with pytest.raises(ValueError, match=r"^scorer.name='bogus'"):
        _lm(loaded, **{"scorer.name": "bogus"})


# ------------------------------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_simple_evaluate_runs_the_three_tasks_offline(manager):
    out = lm_eval.simple_evaluate(model="illada", model_args="pretrained=default,scorer.name=ar_order,"
                                  "sampler.gen_length=8,sampler.steps=8,sampler.block_length=8",
                                  tasks=["piqa", "arc_challenge", "gsm8k"], num_fewshot=0, limit=2,
                                  task_manager=manager, log_samples=True)
    res = out["results"]
    for name in ("piqa", "arc_challenge"):
        assert res[name]["sample_len"] == 2 and 0 <= res[name]["acc,none"] <= 1 and "acc_stderr,none" in res[name]
    assert "exact_match,strict-match" in res["gsm8k"] and "exact_match_stderr,flexible-extract" in res["gsm8k"]
    assert len(out["samples"]["gsm8k"]) == 2 * 2  # two documents, two filters


@pytest.mark.slow
def test_command_line_writes_results_and_cost(tmp_path):
    out = tmp_path / "out"
    cmd = [str(BIN / "illada-lm-eval"), "--model", "illada", "--model_args",
           "pretrained=default,sampler.gen_length=8,sampler.steps=4,sampler.block_length=8,scorer.name=ar_order",
           "--tasks", "piqa,gsm8k", "--num_fewshot", "0", "--limit", "2", "--output_path", str(out),
           "--log_samples"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    # lm-eval's warnings about the user's choices stay (--limit, --num_fewshot); the harmless ones are gone
    for harmless in ("fatal: not a git repository", "overrides existing task", "Custom kwargs"):
        assert harmless not in run.stderr, run.stderr
    assert "--limit SHOULD ONLY BE USED FOR TESTING" in run.stderr
    results = list(out.rglob("results_*.json"))
    assert results and "gsm8k" in json.loads(results[0].read_text())["results"]
    assert list(out.rglob("samples_piqa_*.jsonl"))
    # named like the results file, beside it: a second run into the folder keeps the first one's cost
    cost_file = results[0].with_name(results[0].name.replace("results_", "illada_cost_"))
    cost = json.loads(cost_file.read_text())
    assert cost["nfe_total"] > 0 and cost["requests"] == 2 * 2 + 2 and cost["settings"]["sampler"]["steps"] == 4
    # the `=` form (lm-eval's own parser) and a file name: NAME_illada_cost_DATE.json beside NAME_DATE.json
    one = [*cmd[:4], "pretrained=default,scorer.name=ar_order", "--tasks", "piqa", "--limit", "2",
           f"--output_path={tmp_path / 'one' / 'run.json'}"]
    assert subprocess.run(one, capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path).returncode == 0
    (written,) = (tmp_path / "one").glob("run_illada_cost_*.json")
    assert written.name.replace("_illada_cost", "") in {p.name for p in (tmp_path / "one").glob("run_*.json")}

    bad = subprocess.run([*cmd[:4], "pretrained=default,sampler.steps=3,sampler.gen_length=8,sampler.block_length=4", *cmd[5:9]],
                         capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert bad.returncode != 0
    assert bad.stderr.strip().splitlines()[-1].startswith("error: SamplerSettings.steps=3")
    assert "Traceback" not in bad.stderr


def test_offline_tasks_replace_the_hub_ones_without_a_warning_each(caplog):
    """Was: a dozen WARNING lines per run, one per task the offline configs replace by design."""
    import logging

    with caplog.at_level(logging.WARNING, logger="lm_eval"):
        harness.task_manager()
        logging.getLogger("lm_eval.tasks._index").warning("Task '%s' from %s overrides existing task from %s",
                                                          "mine", "/elsewhere/mine.yaml", "/lm_eval/mine.yaml")
    overrides = [r.getMessage() for r in caplog.records if "overrides existing task" in r.getMessage()]
    assert overrides == ["Task 'mine' from /elsewhere/mine.yaml overrides existing task from /lm_eval/mine.yaml"]


def test_unwritable_output_path_is_one_line_before_evaluating(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    for given in (f"--output_path={tmp_path / 'file' / 'out'}", str(tmp_path / "file" / "out" / "r.json")):
        args = ["--model", "illada", "--model_args", "pretrained=no-such-model", "--tasks", "piqa", "--limit", "1"]
        args += [given] if given.startswith("--") else ["--output_path", given]
        with pytest.raises(SystemExit) as e:
            harness.main(args)  # the model would fail to load: the path is checked first
        assert str(e.value.code).startswith(f"error: --output_path={tmp_path / 'file' / 'out'}"), e.value.code
        assert "cannot write the results there" in e.value.code and "nothing was evaluated" in e.value.code


@pytest.mark.slow
@pytest.mark.parametrize("task, group", [("gsm8k", "sampler.gen_length=8 sampler.steps=8 sampler.block_length=8"),
                                         ("arc_challenge", "scorer=ar_order")])
def test_sweep_point_runs_an_lm_eval_task(tmp_path, task, group):
    cmd = [str(BIN / "illada-sweep"), "task=lm_eval", f"task.name={task}", "task.num_fewshot=0", "task.limit=2",
           *group.split(), f"sweep_dir={tmp_path / 'sweep'}"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr[-3000:]
    (record,) = (tmp_path / "sweep" / "records").glob("*.json")
    rec = json.loads(record.read_text())
    q, c = rec["quality"], rec["cost"]
    assert rec["status"] == "ok" and rec["settings"]["task"] == f"lm_eval:{task}" and q["n"] == 2
    assert q["stderr"] is not None and q["ci_low"] <= q["value"] <= q["ci_high"]
    assert c["nfe_per_sample"] > 0 and c["throughput_items_per_s"] > 0 and c["latency_p50_s"] > 0
    import pandas as pd

    items = pd.read_parquet(record.with_name(f"{record.stem}.items.parquet"))
    assert len(items) == 2 and q["metric"] in items and items["latency_s"].gt(0).all()


def test_lm_eval_point_is_validated_before_anything_runs():
    r = resolve(Point(task="lm_eval:gsm8k", sampler={"gen_length": 8, "steps": 8, "block_length": 8}))
    assert r.kind == "generation" and r.settings["lm_eval"] == harness.LM_EVAL_PIN
    assert resolve(Point(task="lm_eval:piqa", scorer={"name": "ar_order"})).kind == "multiple_choice"
    with pytest.raises(ValueError, match=r"^task.name='no_such_task'"):
        resolve(Point(task="lm_eval:no_such_task"))
    with pytest.raises(ValueError, match=r"^split='test': an lm-eval task"):
        resolve(Point(task="lm_eval:piqa", split="test"))
    with pytest.raises(ValueError, match=r"^sampler=.*multiple choice"):
        resolve(Point(task="lm_eval:piqa", sampler={"steps": 8}))


def test_non_finite_logits_are_an_error_not_a_result(loaded):
    from illada.evaluate import NonFiniteLogitsError

    lm = _lm(loaded, **GEN)
    vocab = loaded.config.vocab_size
    lm._monitor.model = lambda ids, *a, **k: torch.full((*ids.shape, vocab), float("nan"))
    with pytest.raises(NonFiniteLogitsError, match="NaN or infinite logits"):
        lm.generate_until(_gen_requests(PROMPTS[:1]))
    with pytest.raises(NonFiniteLogitsError):
        lm.loglikelihood([Instance("loglikelihood", {}, ("1+1=", "2"), 0, ("t", 0, 1))])
