"""WinoGrande (Sakaguchi et al., 2020): fill the blank ``_`` with one of two options.

lm-eval ``winogrande`` uses *partial evaluation*: each option gives its own context, the sentence up to the
blank with the option filled in, and the continuation shared by both is the rest of the sentence:
context_i = ``sentence[:blank] + option_i``, continuation = ``" " + sentence[blank+1:].strip()``, gold
``int(answer) - 1``; metric acc. Split: validation (winogrande_xl; test labels are not public). Shots from
validation (lm-eval: train, not shipped offline).
"""

from __future__ import annotations

from illada.tasks.base import MultipleChoiceTask
from illada.tasks.sources import Row, Source


class WinoGrande(MultipleChoiceTask):
    name = "winogrande"
    splits = ("train", "validation")
    default_split = "validation"
    fields = ("sentence", "option1", "option2", "answer")
    source = Source(hub_path="allenai/winogrande", hub_name="winogrande_xl",
                    arrow={"validation": "hf_datasets/winogrande/winogrande_xl/validation/*.arrow"})

    def doc_to_text(self, row: Row) -> list[str]:
        blank = row["sentence"].index("_")
        return [row["sentence"][:blank] + row["option1"], row["sentence"][:blank] + row["option2"]]

    def doc_to_choice(self, row: Row) -> list[str]:
        return [row["sentence"][row["sentence"].index("_") + 1:].strip()]

    def doc_to_target(self, row: Row) -> int:
        return int(row["answer"]) - 1
