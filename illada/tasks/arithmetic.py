"""The task family the embedded model is trained on: multi-digit addition with carries.

Chosen so that sampler settings matter: a sum digit depends on the carry chain from every digit to its
right. Revealed lower digits make each carry a local computation, so decoding one token per step (most
confident first) is easy, while committing several dependent digits in one step must guess carries and can
fail. Problems are split into train and held-out sets by a hash of the operands, so the two never overlap.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

MAX_DIGITS = 4
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
        return f"{self.a}+{self.b}="

    @property
    def answer(self) -> str:
        return str(self.a + self.b)

    @property
    def held_out(self) -> bool:
        digest = hashlib.sha1(self.id.encode()).digest()
        return int.from_bytes(digest[:4], "little") % HELD_OUT_EVERY == 0


def sample_problem(rng: random.Random, max_digits: int = MAX_DIGITS) -> Problem:
    """Operands with a uniform number of digits (1..max_digits) each, so short and long sums are both common."""
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
        s = str(c)
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
