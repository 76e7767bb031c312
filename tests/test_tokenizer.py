"""Tokenizer files, chat templates, special ids, left padding."""

from __future__ import annotations

import pytest
import torch

from illada.config import ModelConfig
from illada.tokenizer import SpecialIds, Tokenizer, TokenizerError, pad_left, resolve_special_ids
from tests.conftest import tiny_config, write_tokenizer

LLAMA3_STYLE = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)


def test_encode_decode_round_trip(tmp_path):
    vocab = write_tokenizer(tmp_path)
    tok = Tokenizer.from_dir(tmp_path)
    ids = tok.encode("the cat sat on a mat")
    assert ids == [vocab[w] for w in "the cat sat on a mat".split()]
    assert tok.decode(ids + [vocab["</s>"]]) == "the cat sat on a mat"
    assert tok.vocab_size == len(vocab)


def test_chat_template_renders_with_specials(tmp_path):
    write_tokenizer(tmp_path, chat_template=LLAMA3_STYLE)
    tok = Tokenizer.from_dir(tmp_path)
    text = tok.apply_chat_template([{"role": "user", "content": "1 + 2 = ?"}])
    assert text == (
        "<s><|start_header_id|>user<|end_header_id|>\n\n1 + 2 = ?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )


def test_base_model_without_template_says_so(tmp_path):
    write_tokenizer(tmp_path)
    with pytest.raises(TokenizerError, match="no chat_template"):
        Tokenizer.from_dir(tmp_path).apply_chat_template([{"role": "user", "content": "x"}])


def test_missing_tokenizer_file_is_named(tmp_path):
    with pytest.raises(TokenizerError, match="tokenizer.json not found"):
        Tokenizer.from_dir(tmp_path)


def test_config_ids_win_over_token_strings_and_overrides_win_over_all(tmp_path):
    write_tokenizer(tmp_path)
    tok = Tokenizer.from_dir(tmp_path)
    llada_like = tiny_config("llada", mask_token_id=30, eos_token_id=2)
    assert resolve_special_ids(llada_like, tok).mask == 30
    assert resolve_special_ids(llada_like, tok, mask=31).mask == 31
    with pytest.raises(TypeError, match="unknown special-id override"):
        resolve_special_ids(llada_like, tok, mask_id=3)


def test_ids_outside_vocabulary_or_colliding_are_errors(tmp_path):
    cfg = tiny_config(mask_token_id=99)
    with pytest.raises(TokenizerError, match="mask=99 is outside"):
        resolve_special_ids(cfg, None)
    with pytest.raises(TokenizerError, match="pad id 3 equals the mask id"):
        resolve_special_ids(tiny_config(mask_token_id=3, pad_token_id=3), None)


def test_stop_ids_dedupe():
    assert SpecialIds(mask=1, eos=2, eot=2).stop_ids() == (2,)
    assert SpecialIds(mask=1, eos=2, eot=3).stop_ids() == (2, 3)


def test_pad_left():
    ids, mask = pad_left([[1, 2, 3], [4]], pad_id=0)
    assert ids.tolist() == [[1, 2, 3], [0, 0, 4]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert ids.dtype == torch.long
