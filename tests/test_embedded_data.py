"""The embedded model's task family and tokenizer."""

from __future__ import annotations

from illada.tasks.arithmetic import Problem, multiple_choice, problems
from illada.embedded.train import GEN_LENGTH, MASK_ID, build_tokenizer, encode_batch
from illada.tokenizer import resolve_special_ids
from illada.embedded.train import model_config


def test_train_and_heldout_never_overlap_and_are_reproducible():
    train = problems("train", 2000, seed=0)
    test = problems("test", 300, seed=0)
    assert not {p.id for p in train} & {p.id for p in test}
    assert all(p.held_out for p in test) and not any(p.held_out for p in train)
    assert problems("test", 300, seed=0) == test
    assert problems("test", 300, seed=1) != test


def test_carries_and_long_chains_are_common():
    test = problems("test", 1000, seed=0)
    chains = [p for p in test if sum(int(x) + int(y) == 9 for x, y in zip(f"{p.a:06d}", f"{p.b:06d}")) >= 3]
    assert len(chains) > 300
    with_carry = [p for p in test if any(int(x) + int(y) >= 10 for x, y in zip(f"{p.a:06d}", f"{p.b:06d}"))]
    assert len(with_carry) > 400


def test_multiple_choice_has_one_gold_and_carry_distractors():
    p = Problem(1958, 67)
    choices, gold = multiple_choice(p)
    assert len(choices) == 4 and len(set(choices)) == 4
    assert choices[gold] == "0002025"
    assert "0001915" in choices  # digit-wise sum with every carry dropped
    assert multiple_choice(p) == (choices, gold)


def test_tokenizer_is_character_level_with_iLLaDA_mask():
    tok = build_tokenizer()
    assert tok.token_to_id("<[MASK]>") == MASK_ID
    ids = tok.encode("000012+000007=")
    assert len(ids) == 14 and tok.decode(ids) == "000012+000007="
    assert tok.decode(tok.encode("Question: why?")) == "Question: why?"
    ids = resolve_special_ids(model_config(tok.vocab_size), tok)
    assert (ids.mask, ids.eos, ids.pad) == (MASK_ID, 2, 0)


def test_encode_batch_pads_answers_with_eos():
    tok = build_tokenizer()
    ids, attn, resp = encode_batch(tok, [Problem(5, 7), Problem(1234, 8765)])
    assert tok.decode(ids[0, -GEN_LENGTH:].tolist()) == "0000012"
    assert ids[0, -GEN_LENGTH + 7:].tolist() == [2] * (GEN_LENGTH - 7)
    assert attn[0].sum() == len("000005+000007=") + GEN_LENGTH and attn.all()
    assert resp.sum(1).tolist() == [GEN_LENGTH, GEN_LENGTH]
