"""Multiple-choice scorers: the MC ELBO against a transcription of get_log_likelihood, the chain-rule scorers
against straightforward per-candidate loops, and the estimator against exact likelihoods of a toy model."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from illada.scoring import (
    SCORERS, Question, ScoringSettings, _stratified_table, ar_order, confidence, likelihood, likelihood_masks,
    score_questions,
)
from tests.toy_models import Factorised, Recorder, tiny_transformer

MASK = 47  # tiny_transformer's mask id


PAIRS = [([5, 6, 7], [8, 9]), ([5, 6, 7], [10]), ([5, 6, 7], [11, 12, 13, 14]), ([20, 21, 22, 23, 24, 25], [3, 4, 5])]


def reference_elbo_given_masks(model, prompt, answer, masks, counts, batch_size, cfg_scale, mask_id):
    """get_log_likelihood's loop for one pair, fed the mask draws instead of drawing them (no padding)."""
    L, P = len(answer), len(prompt)
    seq = torch.tensor(prompt + answer)[None].repeat(batch_size, 1)
    prompt_index = torch.arange(seq.shape[1]) < P
    losses = []
    for g in range(len(masks) // batch_size):
        rows = slice(g * batch_size, (g + 1) * batch_size)
        is_mask = torch.cat([torch.zeros(batch_size, P, dtype=torch.bool), masks[rows]], dim=1)
        noisy = torch.where(is_mask, mask_id, seq)
        p_mask = (counts[rows] / L)[:, None].repeat(1, seq.shape[1])
        if cfg_scale > 0:
            un = noisy.clone()
            un[prompt_index[None].repeat(batch_size, 1)] = mask_id
            cond, unc = torch.chunk(model(torch.cat([noisy, un]), None), 2)
            logits = unc + (cfg_scale + 1) * (cond - unc)
        else:
            logits = model(noisy, None)
        loss = F.cross_entropy(logits[is_mask], seq[is_mask], reduction="none") / p_mask[is_mask]
        losses.append(loss.sum().item() / batch_size)
    return -sum(losses) / len(losses)


@pytest.mark.parametrize("cfg_scale", [0.0, 2.0])
def test_likelihood_is_get_log_likelihood_for_the_same_draws(cfg_scale):
    model = tiny_transformer()
    settings = ScoringSettings(mask_id=MASK, mc_num=16, batch_size=4, cfg_scale=cfg_scale, seed=3, max_rows=7)
    ours = likelihood(model, PAIRS, settings)  # packed, left-padded, chunks across pairs
    lengths = torch.tensor([len(a) for _, a in PAIRS])
    pair, counts, masked = likelihood_masks(lengths, settings)
    span = masked.shape[1]
    for n, (prompt, answer) in enumerate(PAIRS):
        rows = pair == n
        expected = reference_elbo_given_masks(model, prompt, answer, masked[rows][:, span - len(answer):],
                                              counts[rows], 4, cfg_scale, MASK)
        assert ours[n].item() == pytest.approx(expected, rel=1e-4, abs=1e-4)


def test_likelihood_draws_follow_the_reference_scheme():
    lengths = torch.tensor([1, 3, 5])
    settings = ScoringSettings(mask_id=MASK, mc_num=24, batch_size=8, seed=0)
    pair, counts, masked = likelihood_masks(lengths, settings)
    span = masked.shape[1]
    for n, L in enumerate(lengths.tolist()):
        rows = pair == n
        # exactly l of the L continuation positions, none in the padding columns
        assert torch.equal(masked[rows].sum(1), counts[rows])
        assert not masked[rows][:, :span - L].any()
        # each mini-batch of 8 rows is one stratified draw: a row of the reference's table
        table = _stratified_table(L, 8)
        for group in counts[rows].view(-1, 8):
            assert any(torch.equal(group, table[k]) for k in range(L))
    assert (counts[pair == 0] == 1).all()


def test_stratified_counts_match_the_reference_float32_linspace():
    for L in (1, 2, 3, 7, 12):
        for b in (1, 4, 16, 18, 24):
            table = _stratified_table(L, b)
            for k in range(1, L + 1):
                # forward_process: round(linspace(k, k + (b-1) L/b, b)) with a float32 end point, then wrap
                x = torch.round(torch.linspace(float(k), torch.tensor(k) + (b - 1) * (L / b), steps=b)).long()
                assert torch.equal(table[k - 1], ((x - 1) % L) + 1)
            assert table.min() >= 1 and table.max() <= L
    # with b = L each mini-batch covers every mask count exactly once
    assert all(sorted(row.tolist()) == list(range(1, 10)) for row in _stratified_table(9, 9))


def test_likelihood_is_seeded_and_independent_of_chunking():
    model = tiny_transformer()
    s = ScoringSettings(mask_id=MASK, mc_num=8, batch_size=4, seed=11)
    a = likelihood(model, PAIRS, s)
    b = likelihood(model, PAIRS, ScoringSettings(mask_id=MASK, mc_num=8, batch_size=4, seed=11, max_rows=3))
    c = likelihood(model, PAIRS, ScoringSettings(mask_id=MASK, mc_num=8, batch_size=4, seed=12))
    assert torch.allclose(a, b, atol=1e-5)
    assert torch.equal(a, likelihood(model, PAIRS, s))
    assert not torch.allclose(a[[0, 2, 3]], c[[0, 2, 3]])  # multi-token answers depend on the draws
    assert a[1] == pytest.approx(c[1].item(), abs=1e-5)  # a single token is always fully masked: exact


def exact_factorised_loglik(model, prompt, answer):
    """log p(y | x) of the factorised toy: the sum of the per-position log-probs (context unmasked)."""
    x = torch.tensor([prompt + answer])
    logp = torch.log_softmax(model(x, None)[0, len(prompt):].double(), -1)
    return float(logp.gather(1, torch.tensor(answer)[:, None]).sum())


def test_likelihood_estimator_is_unbiased_on_a_factorised_toy():
    model = Factorised(vocab=24, mask_id=23, scale=3.0)
    pairs = [([3, 4], [5, 6, 7, 8, 9, 10]), ([9, 8, 7], [1, 2, 3]), ([4, 4, 4, 4], [6])]
    exact = torch.tensor([exact_factorised_loglik(model, p, a) for p, a in pairs], dtype=torch.float64)
    est = likelihood(model, pairs, ScoringSettings(mask_id=23, mc_num=1024, batch_size=16, seed=0, max_rows=1024))
    # E[(L/l) sum_{j in S} log p_j] = sum_j log p_j; the 1-token pair is exact, the others within MC noise
    assert est[2].item() == pytest.approx(exact[2].item(), abs=1e-5)
    assert torch.allclose(est, exact, rtol=0.02)
    # the chain-rule scorers are exact for a factorised model
    s = ScoringSettings(mask_id=23)
    assert torch.allclose(confidence(model, pairs, s), exact, atol=1e-4)
    assert torch.allclose(ar_order(model, pairs, s), exact, atol=1e-4)


# --------------------------------------------------------------------------------------------- chain rules
def reference_confidence(model, prompt, answer, mask_id):
    """iLLaDA's confidence scoring for one candidate, one position at a time."""
    x = torch.tensor([prompt + [mask_id] * len(answer)])
    P, total, hidden = len(prompt), 0.0, set(range(len(answer)))
    for _ in answer:
        with torch.no_grad():
            logp = torch.log_softmax(model(x, None)[0].float(), -1)
        scores = {i: float(logp[P + i, answer[i]]) for i in hidden}
        best = max(sorted(hidden), key=lambda i: scores[i])
        total += scores[best]
        hidden.remove(best)
        x[0, P + best] = answer[best]
    return total


def reference_ar(model, prompt, answer, mask_id):
    total = 0.0
    for i in range(len(answer)):
        x = torch.tensor([prompt + answer[:i] + [mask_id] * (len(answer) - i)])
        with torch.no_grad():
            total += float(torch.log_softmax(model(x, None)[0, len(prompt) + i].float(), -1)[answer[i]])
    return total


@pytest.mark.parametrize("scorer,reference", [(confidence, reference_confidence), (ar_order, reference_ar)])
def test_chain_rule_scorers_match_per_candidate_loops(scorer, reference):
    model = tiny_transformer()
    ours = scorer(model, PAIRS, ScoringSettings(mask_id=MASK, max_rows=5))
    expected = torch.tensor([reference(model, p, a, MASK) for p, a in PAIRS], dtype=torch.float64)
    assert torch.allclose(ours, expected, atol=1e-4)


def test_confidence_order_is_never_worse_than_left_to_right_on_the_first_reveal():
    # a single-token candidate is scored identically by all three scorers (one forward, fully masked)
    model = tiny_transformer()
    pairs = [([5, 6, 7], [9]), ([1, 2], [30])]
    s = ScoringSettings(mask_id=MASK, mc_num=4, batch_size=2)
    # (not scorer dream: it appends the model's EOS, so its candidates are two tokens long)
    values = [SCORERS[name](model, pairs, s) for name in ("likelihood", "confidence", "ar_order")]
    assert all(torch.allclose(values[0], v, atol=1e-5) for v in values[1:])


def test_candidates_and_questions_run_together():
    model = Recorder(tiny_transformer())
    s = ScoringSettings(mask_id=MASK, mc_num=8, batch_size=4, max_rows=64)
    lengths = [len(a) for _, a in PAIRS]
    confidence(model, PAIRS, s)
    assert len(model.calls) == max(lengths)  # one forward per reveal step for all candidates
    assert [shape[0] for shape, _ in model.calls] == [sum(L > i for L in lengths) for i in range(max(lengths))]
    model.calls.clear()
    ar_order(model, PAIRS, s)
    assert len(model.calls) == 1 and model.calls[0][0][0] == sum(lengths)
    model.calls.clear()
    likelihood(model, PAIRS, s)
    assert len(model.calls) == 1 and model.calls[0][0][0] == 8 * len(PAIRS)


# --------------------------------------------------------------------------------------------- questions
def test_score_questions_groups_and_normalises():
    model = tiny_transformer()
    questions = [Question([5, 6, 7], [[8, 9], [10], [11, 12, 13, 14]], [6, 2, 9]),
                 Question([20, 21, 22, 23, 24, 25], [[3, 4, 5]], [4])]
    s = ScoringSettings(mask_id=MASK)
    scores = score_questions(model, questions, "ar_order", s)
    flat = ar_order(model, PAIRS, s)
    assert torch.allclose(torch.cat([q.total for q in scores]), flat)
    q = scores[0]
    assert torch.allclose(q.normalised("per_token"), q.total / torch.tensor([2.0, 1.0, 4.0], dtype=torch.float64))
    assert torch.allclose(q.normalised("per_char"), q.total / torch.tensor([6.0, 2.0, 9.0], dtype=torch.float64))
    assert q.best("sum") == int(q.total.argmax()) and q.best("per_char") == int(q.normalised("per_char").argmax())
    with pytest.raises(ValueError, match="per_char"):
        score_questions(model, [Question([5], [[6]])], "confidence", s)[0].normalised("per_char")
    with pytest.raises(ValueError, match="'mean'"):
        q.normalised("mean")


@pytest.mark.parametrize("kw,match", [
    (dict(mc_num=10, batch_size=4), "mc_num=10"),
    (dict(batch_size=0), "batch_size=0"),
    (dict(cfg_scale=-1.0), "cfg_scale=-1.0"),
    (dict(max_rows=0), "max_rows=0"),
])
def test_bad_scoring_settings(kw, match):
    with pytest.raises(ValueError, match=match):
        ScoringSettings(mask_id=MASK, **kw)


@pytest.mark.parametrize("pairs,match", [
    ([([5, MASK], [6])], "mask_id=47"),
    ([([5], [])], "continuation is empty"),
    ([([5] * 120, [6] * 20)], "max_seq_len=128"),
])
def test_bad_pairs_fail_before_any_forward(pairs, match):
    model = Recorder(tiny_transformer())
    for scorer in SCORERS.values():
        with pytest.raises(ValueError, match=match):
            scorer(model, pairs, ScoringSettings(mask_id=MASK))
    assert model.calls == []
    with pytest.raises(ValueError, match="'nll'"):
        score_questions(model, [Question([5], [[6]])], "nll", ScoringSettings(mask_id=MASK))


def test_scores_are_log_probabilities():
    model = tiny_transformer()
    s = ScoringSettings(mask_id=MASK, mc_num=8, batch_size=8)
    for scorer in SCORERS.values():
        values = scorer(model, PAIRS, s)
        assert values.dtype == torch.float64 and (values < 0).all() and values.isfinite().all()
    # a single token's score is a log-probability: over the whole vocabulary (scored in one call) they sum to 1
    vocab = [t for t in range(48) if t != MASK]
    probs = confidence(model, [([5, 6, 7], [t]) for t in vocab], s).exp()
    with torch.no_grad():
        p_mask = torch.softmax(model(torch.tensor([[5, 6, 7, MASK]]), None)[0, -1].double(), -1)[MASK]
    assert float(probs.sum() + p_mask) == pytest.approx(1.0, abs=1e-4)
