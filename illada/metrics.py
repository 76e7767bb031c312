"""Quality metrics: accuracy with a 95% Wilson interval, exact match, multiple-choice acc / acc_norm, and
per-item outcome rows for paired comparisons of two settings on the same items.

Why Wilson: the normal ("Wald") interval p +- z*sqrt(p(1-p)/n) collapses to zero width at p = 0 or 1 and
undercovers for small n or extreme p, both common here (near-chance models, 50-item smoke points). The Wilson
score interval inverts the score test instead,

    centre = (p + z^2/(2n)) / (1 + z^2/n),   half = z / (1 + z^2/n) * sqrt(p(1-p)/n + z^2/(4n^2)),

stays inside [0, 1] and has close to nominal coverage (Newcombe, Stat. Med. 1998; Brown, Cai & DasGupta,
Stat. Sci. 2001).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Iterable, Mapping, Sequence

import pandas as pd

Z95 = 1.959963984540054  # two-sided 95% standard normal quantile
NORMALISATIONS = ("sum", "per_char", "per_token")


@dataclass(frozen=True)
class Estimate:
    """A proportion with its interval: ``value`` = successes / n, [``lower``, ``upper``] at ``confidence``."""

    value: float
    lower: float
    upper: float
    n: int
    successes: int
    confidence: float = 0.95

    def as_dict(self) -> dict:
        return asdict(self)


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for ``successes`` out of ``n`` (95% by default)."""
    if n <= 0:
        raise ValueError(f"n={n}: a proportion needs at least one trial")
    if not 0 <= successes <= n:
        raise ValueError(f"successes={successes}: must lie in [0, n={n}]")
    p, z2 = successes / n, z * z
    denom = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    # clamp rounding noise at the ends (the exact bounds for 0/n and n/n are 0 and 1)
    return max(0.0, centre - half), min(1.0, centre + half)


def accuracy(outcomes: Iterable[bool]) -> Estimate:
    """Share of true outcomes with its 95% Wilson interval."""
    values = [bool(o) for o in outcomes]
    k, n = sum(values), len(values)
    lower, upper = wilson_interval(k, n)
    return Estimate(k / n, lower, upper, n, k)


def exact_match(prediction: str, reference: str) -> bool:
    """String equality after stripping surrounding whitespace (task-specific normalisation happens before)."""
    return prediction.strip() == reference.strip()


# ------------------------------------------------------------------------------------------------ multiple choice
def normalise_scores(scores: Sequence[float], kind: str = "sum", n_chars: Sequence[int] | None = None,
                     n_tokens: Sequence[int] | None = None) -> list[float]:
    """Per-choice scores under one normalisation: ``sum`` (summed log-likelihood: lm-eval acc), ``per_char``
    (divided by the choice's length in characters: lm-eval acc_norm) or ``per_token``."""
    if kind == "sum":
        return [float(s) for s in scores]
    if kind not in NORMALISATIONS:
        raise ValueError(f"normalisation {kind!r} is unknown; choose one of {list(NORMALISATIONS)}")
    lengths = n_chars if kind == "per_char" else n_tokens
    if lengths is None or len(lengths) != len(scores):
        raise ValueError(f"normalisation {kind!r} needs one length per choice ({len(scores)} choices)")
    # an empty choice counts as length 1, so it is not divided by zero (lm-eval would produce inf/nan)
    return [float(s) / max(int(n), 1) for s, n in zip(scores, lengths)]


def argmax(values: Sequence[float]) -> int:
    """Index of the largest value; ties go to the first, as numpy.argmax (and so lm-eval) does."""
    return max(range(len(values)), key=lambda i: (values[i], -i))


def mc_outcome(item_id: str, scores: Sequence[float], gold: int, n_chars: Sequence[int] | None = None,
               n_tokens: Sequence[int] | None = None) -> dict:
    """One per-item row: the prediction and correctness under each normalisation the lengths allow.

    Keys: ``id``, ``gold``, ``scores``, and for ``acc`` (sum), ``acc_norm`` (per_char) and ``acc_per_token``
    the predicted index ``pred_<metric>`` and the bool ``<metric>``."""
    row: dict = {"id": item_id, "gold": int(gold), "scores": [float(s) for s in scores]}
    for metric, kind, lengths in (("acc", "sum", True), ("acc_norm", "per_char", n_chars),
                                  ("acc_per_token", "per_token", n_tokens)):
        if lengths is None:
            continue
        pred = argmax(normalise_scores(scores, kind, n_chars, n_tokens))
        row[f"pred_{metric}"], row[metric] = pred, pred == gold
    return row


def gen_outcome(item_id: str, completion: str, reference: str, correct: bool) -> dict:
    """One per-item row for a generation task (``exact_match`` = the task's check of the completion)."""
    return {"id": item_id, "completion": completion, "reference": reference, "exact_match": bool(correct)}


# ------------------------------------------------------------------------------------------------ per-item rows
def summarize(rows: Sequence[Mapping], metric: str) -> Estimate:
    """Accuracy of the ``metric`` column over per-item rows."""
    missing = [r.get("id") for r in rows if metric not in r]
    if missing:
        raise KeyError(f"metric {metric!r} is missing from {len(missing)} row(s), e.g. id {missing[0]!r}")
    return accuracy(r[metric] for r in rows)


def outcomes_frame(rows: Sequence[Mapping]) -> pd.DataFrame:
    """Per-item rows as a DataFrame indexed by item id (what the evaluation record writes to Parquet)."""
    frame = pd.DataFrame(list(rows))
    if "id" not in frame or frame["id"].duplicated().any():
        raise ValueError("per-item rows need a unique 'id' per row")
    return frame.set_index("id")


def paired(rows_a: Sequence[Mapping], rows_b: Sequence[Mapping], metric: str) -> dict[str, int]:
    """Paired outcome counts of two runs over their common items: ``both``, ``only_a``, ``only_b``, ``neither``
    (``only_a`` + ``only_b`` are the discordant pairs a McNemar test uses)."""
    a = outcomes_frame(rows_a)[metric].astype(bool)
    b = outcomes_frame(rows_b)[metric].astype(bool)
    a, b = a.align(b, join="inner")
    return {"n": len(a), "both": int((a & b).sum()), "only_a": int((a & ~b).sum()),
            "only_b": int((~a & b).sum()), "neither": int((~a & ~b).sum())}
