"""PIQA (Bisk et al., 2020): physical commonsense, two solutions per goal.

lm-eval ``piqa``: context ``"Question: {goal}\\nAnswer:"``, continuations ``" {sol1}"`` / ``" {sol2}"``, gold
``label``; metrics acc and acc_norm. Split: validation (the test labels are not public). Shots: lm-eval draws
them from train, which is not shipped offline, so they come from validation (never the item itself).
"""

from __future__ import annotations

from illada.tasks.base import MultipleChoiceTask
from illada.tasks.sources import Row, Source


class PIQA(MultipleChoiceTask):
    name = "piqa"
    splits = ("train", "validation")
    default_split = "validation"
    fields = ("goal", "sol1", "sol2", "label")
    source = Source(hub_path="ybisk/piqa", arrow={"validation": "hf_datasets/piqa/plain_text/validation/*.arrow"})

    def doc_to_text(self, row: Row) -> str:
        return f"Question: {row['goal']}\nAnswer:"

    def doc_to_choice(self, row: Row) -> list[str]:
        return [row["sol1"], row["sol2"]]

    def doc_to_target(self, row: Row) -> int:
        return int(row["label"])
