"""The task family the embedded model is trained on: multi-digit addition with carries.

Problems are written with fixed widths: ``"0352+3366="`` -> ``"03718"``.

Chosen so that sampler settings matter: a sum digit depends on the carry chain from every digit to its
right. Revealed lower digits make each carry a local computation, so decoding one token per step (most
confident first) is easy, while committing several dependent digits in one step must guess carries and can
fail. Problems are split into train and held-out sets by a hash of the operands, so the two never overlap.
"""

from __future__ import annotations

import functools
import hashlib
import random
from dataclasses import dataclass

from illada.tasks.base import GenerationTask, MultipleChoiceTask

MAX_DIGITS = 6
ANSWER_WIDTH = MAX_DIGITS + 1  # the longest sum
HELD_OUT_EVERY = 10  # one problem in ten (by operand hash) is held out from training


@dataclass(frozen=True)
class Problem:
    a: int
    b: int

    @property
    def id(self) -> str:
        return f"{self.a}+{self.b}"

    @property
    def prompt(self) -> str:
        # fixed-width operands and sum: digit i of the answer always sits at the same distance from the
        # digits it depends on, so a small model can learn the digit rule instead of the alignment
        return f"{self.a:0{MAX_DIGITS}d}+{self.b:0{MAX_DIGITS}d}="

    @property
    def answer(self) -> str:
        return f"{self.a + self.b:0{ANSWER_WIDTH}d}"

    @property
    def held_out(self) -> bool:
        digest = hashlib.sha1(self.id.encode()).digest()
        return int.from_bytes(digest[:4], "little") % HELD_OUT_EVERY == 0


CHAIN_SHARE = 0.5  # share of problems drawn with long carry chains
CHAIN_COLUMN = 0.7  # in those, the chance that a column's digits sum to 9 (a carry passes straight through)


def sample_problem(rng: random.Random, max_digits: int = MAX_DIGITS) -> Problem:
    """Half the problems: operands with a uniform number of digits (1..max_digits) each. The other half: long
    carry chains, where most columns sum to 9 so a carry from the right ripples through all of them.

    Random operands rarely chain (a column passes a carry on only when its digits sum to exactly 9), and then
    every sum digit is a local function of two columns, which a model can predict all at once. Chains are
    what make committing several digits in one step fail while revealing them right to left succeeds.
    """
    if rng.random() < CHAIN_SHARE:
        a = b = 0
        for i in range(rng.randint(2, max_digits)):
            x = rng.randint(0, 9)
            y = 9 - x if rng.random() < CHAIN_COLUMN else rng.randint(0, 9)
            a, b = a + x * 10**i, b + y * 10**i
        return Problem(a, b)

    def operand() -> int:
        digits = rng.randint(1, max_digits)
        return rng.randint(10 ** (digits - 1) if digits > 1 else 0, 10**digits - 1)

    return Problem(operand(), operand())


def problems(split: str, n: int, seed: int, max_digits: int = MAX_DIGITS) -> list[Problem]:
    """``n`` distinct problems of ``split`` ('train' or 'test'), reproducible from ``seed``."""
    if split not in ("train", "test"):
        raise ValueError(f"arithmetic split must be 'train' or 'test', got {split!r}")
    rng = random.Random(f"{split}:{seed}")
    out: dict[str, Problem] = {}
    while len(out) < n:
        p = sample_problem(rng, max_digits)
        if p.held_out == (split == "test"):
            out.setdefault(p.id, p)
    return list(out.values())


def distractors(p: Problem, k: int = 3) -> list[str]:
    """Wrong sums a model that mishandles carries would produce: dropped or extra carries, nearby values."""
    a, b = p.a, p.b
    total = a + b
    no_carry = int("".join(str((int(x) + int(y)) % 10) for x, y in zip(str(a).zfill(6), str(b).zfill(6))))
    candidates = [no_carry]
    for place in (10, 100, 1000, 1):
        candidates += [total + place, total - place]
    rng = random.Random(p.id)
    out: list[str] = []
    for c in candidates:
        s = f"{c:0{ANSWER_WIDTH}d}"
        if c >= 0 and c != total and s not in out:
            out.append(s)
        if len(out) == k:
            break
    rng.shuffle(out)
    return out


def multiple_choice(p: Problem, n_choices: int = 4) -> tuple[list[str], int]:
    """Choices (the sum and ``n_choices - 1`` carry-style distractors) in a seeded order, and the gold index."""
    choices = distractors(p, n_choices - 1) + [p.answer]
    random.Random(f"mc:{p.id}").shuffle(choices)
    return choices, choices.index(p.answer)


# ------------------------------------------------------------------------------------------------ as tasks
# The problems behind each split are one fixed pool (generated from POOL_SEED); a run's ``seed`` picks its
# ``limit`` items from that pool, like any other task.
POOL_SIZE = {"train": 5000, "test": 2000}
POOL_SEED = 0


@functools.lru_cache(maxsize=None)
def _pool(split: str) -> tuple[Problem, ...]:
    # generating the pool draws ~70k problems (0.45 s); a sweep job loads the task once per point
    return tuple(problems(split, POOL_SIZE[split], POOL_SEED))


def _rows(split: str) -> list[dict]:
    return [{"a": p.a, "b": p.b} for p in _pool(split)]


class Arithmetic(GenerationTask):
    """``arithmetic``: complete ``"{a}+{b}="`` with the sum (exact match). The embedded model's held-out task."""

    name = "arithmetic"
    splits = ("train", "test")
    default_split = "test"
    target_delimiter = ""

    def rows(self, split: str, data_path=None) -> tuple[list[dict], str]:
        if data_path is not None:
            return super().rows(split, data_path)
        return _rows(split), f"generated (illada.tasks.arithmetic, pool seed {POOL_SEED})"

    def row_id(self, row: dict, index: int) -> str:
        return Problem(row["a"], row["b"]).id

    def doc_to_text(self, row: dict) -> str:
        return Problem(row["a"], row["b"]).prompt

    def doc_to_target(self, row: dict) -> str:
        return Problem(row["a"], row["b"]).answer

    def reference(self, row: dict) -> str:
        return self.doc_to_target(row)

    @staticmethod
    def check(completion: str, reference: str) -> bool:
        return completion.strip() == reference


class ArithmeticMC(MultipleChoiceTask):
    """``arithmetic_mc``: pick the sum of ``"{a}+{b}="`` among it and three carry-error distractors."""

    name = "arithmetic_mc"
    splits = ("train", "test")
    default_split = "test"
    target_delimiter = ""
    rows = Arithmetic.rows
    row_id = Arithmetic.row_id
    doc_to_text = Arithmetic.doc_to_text

    def doc_to_choice(self, row: dict) -> list[str]:
        return multiple_choice(Problem(row["a"], row["b"]))[0]

    def doc_to_target(self, row: dict) -> int:
        return multiple_choice(Problem(row["a"], row["b"]))[1]
