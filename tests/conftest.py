"""Shared fixtures: tiny configs, tiny tokenizers and checkpoints written to tmp dirs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from illada.config import ModelConfig

# lm-eval (the extra illada[lm-eval], installed by .ci/setup) brings `datasets`, which illada.tasks would ask
# the hub for a split it does not ship: tests never reach the network, however pytest is started
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

WORDS = ["the", "cat", "sat", "on", "mat", "a", "dog", "ran", "1", "2", "3", "+", "=", "?"]


def tiny_config(fmt: str = "illada", **kw) -> ModelConfig:
    base = dict(vocab_size=40, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=48, rope_theta=500000.0,
                max_seq_len=128, tie_embeddings=(fmt == "illada"), format=fmt, norm_eps=1e-5,
                # LLaDA configs carry their mask id; iLLaDA's comes from the tokenizer (or an override)
                mask_token_id=39 if fmt == "llada" else None)
    base.update(kw)
    return ModelConfig(**base)


def write_tokenizer(path: Path, mask_token: str | None = "<[MASK]>", chat_template: str | None = None) -> dict[str, int]:
    """A word-level tokenizer.json (+ tokenizer_config.json) with the specials an iLLaDA-style model has."""
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders

    specials = ["<pad>", "<s>", "</s>", "<|eot_id|>", "</think>"] + ([mask_token] if mask_token else [])
    vocab = {tok: i for i, tok in enumerate(specials + WORDS + ["<unk>"])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##")
    tok.add_special_tokens(specials)
    path.mkdir(parents=True, exist_ok=True)
    tok.save(str(path / "tokenizer.json"))
    cfg = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"}
    if chat_template:
        cfg["chat_template"] = chat_template
    (path / "tokenizer_config.json").write_text(json.dumps(cfg))
    return vocab


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    # tiny tensors: a second OpenMP thread costs more than it saves (and far more on a shared 2-core box)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield
