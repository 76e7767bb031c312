"""Task items and the task base classes.

A task turns rows (HF field names) into items, the way lm-evaluation-harness builds requests:
``description + shot_1 + "\\n\\n" + ... + shot_n + "\\n\\n" + doc_to_text(row)`` is the context, and each choice
(or the generation target) follows after ``target_delimiter`` (" "). Subclasses fill in the ``doc_to_*`` hooks;
a synthetic task overrides :meth:`Task.rows` to generate its rows instead of reading them.
"""

from __future__ import annotations

import hashlib
import random
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ClassVar, Sequence, Union

from illada.tasks.sources import Row, Source, find_rows

MULTIPLE_CHOICE = "multiple_choice"
GENERATION = "generation"


class TaskError(ValueError):
    """A bad argument: unknown task, split, limit or number of shots."""


# ------------------------------------------------------------------------------------------------ items
@dataclass(frozen=True)
class MCItem:
    """One multiple-choice question. ``context`` is one string shared by all choices, or one string per choice
    (WinoGrande's partial evaluation: the option fills the blank in the context, the continuation is the rest).
    ``continuations`` start with the target delimiter, exactly as they are scored."""

    id: str
    context: Union[str, tuple[str, ...]]
    continuations: tuple[str, ...]
    gold: int
    target_delimiter: str = " "

    def __post_init__(self) -> None:
        n = len(self.continuations)
        if n < 1:
            raise ValueError(f"item {self.id!r}: no continuations")
        if not isinstance(self.context, str) and len(self.context) != n:
            raise ValueError(f"item {self.id!r}: {len(self.context)} contexts for {n} continuations")
        if not 0 <= self.gold < n:
            raise ValueError(f"item {self.id!r}: gold={self.gold} out of range for {n} choices")

    @property
    def per_choice_context(self) -> bool:
        return not isinstance(self.context, str)

    def pairs(self) -> list[tuple[str, str]]:
        """(context, continuation) per choice: what a scorer evaluates."""
        ctx = self.context if self.per_choice_context else (self.context,) * len(self.continuations)
        return list(zip(ctx, self.continuations))

    @property
    def choice_chars(self) -> tuple[int, ...]:
        """Lengths for lm-eval's acc_norm: the choice text without the target delimiter."""
        return tuple(len(c.removeprefix(self.target_delimiter)) for c in self.continuations)


@dataclass(frozen=True)
class GenItem:
    """One generation problem: the model continues ``prompt``; :meth:`score` cuts the completion at the first
    ``stop`` string (as lm-eval's ``until``) and compares it with ``reference`` through ``check``."""

    id: str
    prompt: str
    reference: str
    check: Callable[[str, str], bool] = field(repr=False, compare=False)
    stop: tuple[str, ...] = ()

    def truncate(self, completion: str) -> str:
        cut = min((i for i in (completion.find(s) for s in self.stop) if i >= 0), default=len(completion))
        return completion[:cut]

    def score(self, completion: str) -> bool:
        return bool(self.check(self.truncate(completion), self.reference))


Item = Union[MCItem, GenItem]


@dataclass(frozen=True)
class TaskData:
    """The items of one load, with what produced them (for the evaluation record)."""

    task: str
    kind: str
    split: str
    source: str
    n_total: int  # rows in the split before ``limit``
    limit: int | None
    seed: int
    num_fewshot: int
    items: tuple[Item, ...]

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self):
        return iter(self.items)

    def __getitem__(self, i: int) -> Item:
        return self.items[i]


# ------------------------------------------------------------------------------------------------ sampling
def _hash_key(seed: int, *parts: str) -> bytes:
    return hashlib.sha256("\x1f".join([str(seed), *parts]).encode()).digest()


def stable_subsample(ids: Sequence[str], limit: int | None, seed: int) -> list[int]:
    """Indices of ``limit`` ids chosen by the order of sha256(seed, id), returned in the original order.

    Depends only on the ids and the seed (not on Python's RNG or the row order), so the same N items come back
    on every run and machine, and a smaller subsample is contained in a larger one with the same seed."""
    if limit is None or limit >= len(ids):
        return list(range(len(ids)))
    return sorted(seeded_order(ids, seed)[:limit])


def seeded_order(ids: Sequence[str], seed: int) -> list[int]:
    """Indices of ``ids`` in the seeded order behind :func:`stable_subsample`: its first k are the k items a
    ``limit`` of k keeps, so nested subsets are prefixes of one fixed order."""
    return sorted(range(len(ids)), key=lambda i: _hash_key(seed, ids[i]))


def _check_int(name: str, value, minimum: int | None, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TaskError(f"{name}={value!r}: must be an integer" + (" or None" if allow_none else ""))
    if minimum is not None and value < minimum:
        raise TaskError(f"{name}={value!r}: must be >= {minimum}" + (" or None for all items" if allow_none else ""))


# ------------------------------------------------------------------------------------------------ tasks
class Task(ABC):
    """A named evaluation task. ``splits`` are the labelled splits the data set defines; ``fewshot_split`` is
    where shots come from (None: the evaluation split itself, never the item being asked)."""

    name: ClassVar[str]
    kind: ClassVar[str]
    splits: ClassVar[tuple[str, ...]]
    default_split: ClassVar[str]
    fields: ClassVar[tuple[str, ...]] = ()
    source: ClassVar[Source | None] = None
    fewshot_split: ClassVar[str | None] = None
    fewshot_delimiter: ClassVar[str] = "\n\n"
    target_delimiter: ClassVar[str] = " "

    # --- hooks
    def rows(self, split: str, data_path: str | Path | None = None) -> tuple[list[Row], str]:
        """Rows of ``split`` in canonical order and where they came from."""
        if self.source is None:
            raise NotImplementedError(f"task {self.name!r} has no source; override rows()")
        return find_rows(self.name, self.source, split, data_path, self.fields)

    def row_id(self, row: Row, index: int) -> str:
        """A stable id; by default the row's position in the split (HF order)."""
        return str(index)

    def description(self, row: Row) -> str:
        return ""

    @abstractmethod
    def render_shot(self, row: Row) -> str:
        """A solved example, as it appears in a few-shot context."""

    @abstractmethod
    def make_item(self, row: Row, item_id: str, prefix: str) -> Item:
        """The item for ``row``; ``prefix`` (description and shots) goes in front of its text."""

    def choose_shots(self, row: Row, item_id: str, pool: list[tuple[str, Row]], n: int, seed: int) -> list[Row]:
        """``n`` pool rows other than the item, drawn by an RNG seeded from (seed, item id): stable per item."""
        rng = random.Random(int.from_bytes(_hash_key(seed, "fewshot", item_id)[:8], "big"))
        picked = rng.sample(range(len(pool)), min(n + 1, len(pool)))
        shots = [pool[i][1] for i in picked if pool[i][0] != item_id][:n]
        if len(shots) < n:
            raise TaskError(f"num_fewshot={n}: task {self.name!r} has only {len(shots)} shots available")
        return shots

    # --- loading
    def load(self, split: str | None = None, *, limit: int | None = None, seed: int = 0, num_fewshot: int = 0,
             data_path: str | Path | None = None) -> TaskData:
        """Items of ``split`` (default :attr:`default_split`): all of them, or a stable seeded subsample of
        ``limit``; ``num_fewshot`` solved examples in front of each; rows from ``data_path`` when given (it
        replaces the evaluation split only: a separate :attr:`fewshot_split` still comes from the usual sources)."""
        split = self.default_split if split is None else split
        if split not in self.splits:
            raise TaskError(f"split={split!r}: task {self.name!r} has the splits {list(self.splits)}")
        _check_int("limit", limit, 1, allow_none=True)
        _check_int("seed", seed, None)
        _check_int("num_fewshot", num_fewshot, 0)

        rows, where = self.rows(split, data_path)
        ids = [self.row_id(r, i) for i, r in enumerate(rows)]
        if len(set(ids)) != len(ids):
            raise ValueError(f"task {self.name!r}: item ids are not unique in {where}")
        chosen = stable_subsample(ids, limit, seed)

        pool: list[tuple[str, Row]] = []
        if num_fewshot:
            if self.fewshot_split in (None, split):
                pool = list(zip(ids, rows))
            else:
                pool_rows, _ = self.rows(self.fewshot_split)
                pool = [(self.row_id(r, i), r) for i, r in enumerate(pool_rows)]

        items = []
        for i in chosen:
            shots = self.choose_shots(rows[i], ids[i], pool, num_fewshot, seed) if num_fewshot else []
            prefix = self.description(rows[i]) + "".join(self.render_shot(s) + self.fewshot_delimiter for s in shots)
            items.append(self.make_item(rows[i], ids[i], prefix))
        return TaskData(self.name, self.kind, split, where, len(rows), limit, seed, num_fewshot, tuple(items))


class MultipleChoiceTask(Task):
    """lm-eval ``output_type: multiple_choice``. ``doc_to_text`` returns one context, or one per choice;
    ``doc_to_choice`` the choice texts (one shared continuation when the contexts vary)."""

    kind = MULTIPLE_CHOICE

    @abstractmethod
    def doc_to_text(self, row: Row) -> str | list[str]: ...

    @abstractmethod
    def doc_to_choice(self, row: Row) -> list[str]: ...

    @abstractmethod
    def doc_to_target(self, row: Row) -> int: ...

    def render_shot(self, row: Row) -> str:
        gold, text, choices = self.doc_to_target(row), self.doc_to_text(row), self.doc_to_choice(row)
        text = text if isinstance(text, str) else text[gold]
        return text + self.target_delimiter + (choices[gold] if len(choices) > 1 else choices[0])

    def make_item(self, row: Row, item_id: str, prefix: str) -> MCItem:
        text, choices = self.doc_to_text(row), self.doc_to_choice(row)
        if isinstance(text, str):
            context: str | tuple[str, ...] = prefix + text
        else:
            context = tuple(prefix + t for t in text)
            choices = choices * len(text) if len(choices) == 1 else choices
        conts = tuple(self.target_delimiter + c for c in choices)
        return MCItem(item_id, context, conts, self.doc_to_target(row), self.target_delimiter)


class GenerationTask(Task):
    """lm-eval ``output_type: generate_until``: ``doc_to_text`` is the prompt, ``doc_to_target`` the solved
    answer shown in shots, ``reference`` the gold answer that :meth:`check` compares a completion with."""

    kind = GENERATION
    stop: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def doc_to_text(self, row: Row) -> str: ...

    @abstractmethod
    def doc_to_target(self, row: Row) -> str: ...

    @abstractmethod
    def reference(self, row: Row) -> str: ...

    @staticmethod
    @abstractmethod
    def check(completion: str, reference: str) -> bool: ...

    def render_shot(self, row: Row) -> str:
        return self.doc_to_text(row) + self.target_delimiter + self.doc_to_target(row)

    def make_item(self, row: Row, item_id: str, prefix: str) -> GenItem:
        return GenItem(item_id, prefix + self.doc_to_text(row), self.reference(row), self.check, self.stop)
