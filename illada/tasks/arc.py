"""ARC (Clark et al., 2018), AI2 Reasoning Challenge: grade-school science questions, Easy and Challenge sets.

lm-eval ``arc_easy`` / ``arc_challenge``: context ``"Question: {question}\\nAnswer:"``, continuations
``" {choice text}"``, gold = the position of ``answerKey`` among ``choices.label``; metrics acc and acc_norm.

Split: **test** by default, as lm-eval (and LLaDA's reported ARC-C) use. The offline copy of test exists only as
oe-eval request docs (``test_rc_5shot``), which are turned back into HF rows: question = the query without
``"Question: "`` / ``"\\nAnswer:"``, labels A, B, ... (the original label letters/digits are not kept, which does
not change the prompt). The same conversion reproduces the HF validation rows exactly. Validation (299 / 570) is
read from the Arrow copy. Shots come from validation (lm-eval uses train, not shipped offline).
"""

from __future__ import annotations

import string

from illada.tasks.base import MultipleChoiceTask
from illada.tasks.sources import Row, Source

_PREFIX, _SUFFIX = "Question: ", "\nAnswer:"


def row_from_oe_doc(doc: dict) -> Row:
    """An oe-eval ranked-classification doc as an HF ``ai2_arc`` row."""
    query = doc["query"]
    if not (query.startswith(_PREFIX) and query.endswith(_SUFFIX)):
        raise ValueError(f"ARC doc {doc.get('id')!r}: unexpected query format {query[:40]!r}")
    labels = list(string.ascii_uppercase[:len(doc["choices"])])
    return {"id": doc["id"], "question": query[len(_PREFIX):-len(_SUFFIX)],
            "choices": {"text": list(doc["choices"]), "label": labels}, "answerKey": labels[doc["gold"]]}


def _source(subset: str, oe_name: str) -> Source:
    return Source(hub_path="allenai/ai2_arc", hub_name=subset,
                  arrow={"validation": f"hf_datasets/ai2_arc/{subset}/validation/*.arrow"},
                  requests={"test": f"oe_eval_tasks/{oe_name}/test_rc_5shot/requests.jsonl.gz"},
                  from_doc=row_from_oe_doc)


class _ARC(MultipleChoiceTask):
    splits = ("train", "validation", "test")
    default_split = "test"
    fewshot_split = "validation"
    fields = ("id", "question", "choices", "answerKey")

    def row_id(self, row: Row, index: int) -> str:
        return str(row["id"])

    def doc_to_text(self, row: Row) -> str:
        return f"{_PREFIX}{row['question']}{_SUFFIX}"

    def doc_to_choice(self, row: Row) -> list[str]:
        return list(row["choices"]["text"])

    def doc_to_target(self, row: Row) -> int:
        return list(row["choices"]["label"]).index(row["answerKey"])


class ARCEasy(_ARC):
    name = "arc_easy"
    source = _source("ARC-Easy", "arc_easy")


class ARCChallenge(_ARC):
    name = "arc_challenge"
    source = _source("ARC-Challenge", "arc_challenge")
