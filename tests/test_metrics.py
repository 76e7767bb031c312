"""Accuracy with Wilson intervals, multiple-choice normalisations, per-item rows and paired counts."""

from __future__ import annotations

import pytest

from illada.metrics import (accuracy, argmax, exact_match, gen_outcome, mc_outcome, normalise_scores, outcomes_frame,
                            paired, summarize, wilson_interval)


@pytest.mark.parametrize("k, n, lower, upper", [
    # Newcombe (1998), Stat. Med. 17:857, Table I, method 3 (score interval without continuity correction)
    (81, 263, 0.2553, 0.3662),
    (15, 148, 0.0624, 0.1605),
    (0, 20, 0.0, 0.1611),
    (1, 29, 0.0061, 0.1718),
])
def test_wilson_matches_published_values(k, n, lower, upper):
    lo, hi = wilson_interval(k, n)
    assert (round(lo, 4), round(hi, 4)) == (lower, upper)


def test_wilson_is_symmetric_and_bounded():
    lo, hi = wilson_interval(20, 20)
    assert hi == 1.0 and lo == pytest.approx(1 - wilson_interval(0, 20)[1])
    with pytest.raises(ValueError, match="n=0"):
        wilson_interval(0, 0)
    with pytest.raises(ValueError, match="successes=5"):
        wilson_interval(5, 4)


def test_accuracy_estimate():
    est = accuracy([True] * 81 + [False] * 182)
    assert (est.n, est.successes, est.value) == (263, 81, 81 / 263)
    assert (round(est.lower, 4), round(est.upper, 4)) == (0.2553, 0.3662)
    assert est.as_dict()["confidence"] == 0.95


def test_acc_and_acc_norm_disagree_on_length():
    # the long choice has the lower total log-likelihood but the higher log-likelihood per character
    scores, chars, tokens = [-10.0, -12.0], [5, 20], [4, 3]
    row = mc_outcome("q1", scores, gold=1, n_chars=chars, n_tokens=tokens)
    assert (row["pred_acc"], row["acc"]) == (0, False)
    assert (row["pred_acc_norm"], row["acc_norm"]) == (1, True)
    assert (row["pred_acc_per_token"], row["acc_per_token"]) == (0, False)  # -2.5 vs -4.0
    assert normalise_scores(scores, "per_char", n_chars=chars) == [-2.0, -0.6]


def test_mc_outcome_without_lengths_has_only_acc():
    row = mc_outcome("q", [-1.0, -1.0, -3.0], gold=0)
    assert row == {"id": "q", "gold": 0, "scores": [-1.0, -1.0, -3.0], "pred_acc": 0, "acc": True}
    assert argmax([0.5, 2.0, 2.0]) == 1  # ties: first index, as numpy.argmax


def test_normalisation_errors():
    with pytest.raises(ValueError, match="'per_word' is unknown"):
        normalise_scores([1.0], "per_word")
    with pytest.raises(ValueError, match="needs one length per choice"):
        normalise_scores([1.0, 2.0], "per_token", n_tokens=[1])


def test_exact_match():
    assert exact_match(" 42\n", "42") and not exact_match("42.0", "42")


def test_rows_summary_frame_and_pairing():
    a = [{"id": "x", "acc": True}, {"id": "y", "acc": True}, {"id": "z", "acc": False}]
    b = [{"id": "z", "acc": True}, {"id": "y", "acc": False}, {"id": "x", "acc": True}, {"id": "w", "acc": True}]
    assert summarize(a, "acc").successes == 2
    assert paired(a, b, "acc") == {"n": 3, "both": 1, "only_a": 1, "only_b": 1, "neither": 0}
    frame = outcomes_frame([gen_outcome("g1", " 18", "18", True)])
    assert frame.loc["g1", "exact_match"] and frame.loc["g1", "reference"] == "18"
    with pytest.raises(KeyError, match="'acc_norm' is missing"):
        summarize(a, "acc_norm")
    with pytest.raises(ValueError, match="unique 'id'"):
        outcomes_frame(a + a)
