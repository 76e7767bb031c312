"""HellaSwag (Zellers et al., 2019): pick the most plausible ending of an ActivityNet / WikiHow context.

lm-eval ``hellaswag``: context ``preprocess(activity_label + ": " + ctx_a + " " + ctx_b.capitalize())``,
continuations ``" " + preprocess(ending)``, gold ``int(label)``; metrics acc and acc_norm (the reported one).
``preprocess`` strips, turns WikiHow's `` [title]`` into ``". "``, drops other ``[...]`` tags and double spaces.
Split: validation (test labels are not public). Shots from validation (lm-eval: train, not shipped offline).
"""

from __future__ import annotations

import re

from illada.tasks.base import MultipleChoiceTask
from illada.tasks.sources import Row, Source


def preprocess(text: str) -> str:
    """lm-eval's HellaSwag text clean-up (the brackets are WikiHow artefacts)."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


class HellaSwag(MultipleChoiceTask):
    name = "hellaswag"
    splits = ("train", "validation")
    default_split = "validation"
    fields = ("activity_label", "ctx_a", "ctx_b", "endings", "label")
    source = Source(hub_path="Rowan/hellaswag",
                    arrow={"validation": "hf_datasets/hellaswag/none/validation/*.arrow"})

    def doc_to_text(self, row: Row) -> str:
        return preprocess(f"{row['activity_label']}: {row['ctx_a']} {row['ctx_b'].capitalize()}")

    def doc_to_choice(self, row: Row) -> list[str]:
        return [preprocess(e) for e in row["endings"]]

    def doc_to_target(self, row: Row) -> int:
        return int(row["label"])
