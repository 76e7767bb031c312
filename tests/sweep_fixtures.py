"""Helpers shared by the store, sweep and Slurm tests: a tiny random model in the embedded format."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from illada.evaluate import Point, resolve

# The fixed schedule always terminates (a random model may never pass a confidence threshold).
SAMPLER = {"gen_length": 8, "steps": 8, "block_length": 8}


def make_tiny_model(path: Path) -> Path:
    from illada.embedded.train import build_tokenizer, model_config, save
    from illada.model import Transformer

    if not (path / "model.safetensors").exists():
        tok = build_tokenizer()
        cfg = replace(model_config(tok.vocab_size), dim=32, n_layers=1, ffn_dim=64)
        save(Transformer.random(cfg, seed=0), tok, path, {})
    return path


def points(model: Path, steps=(8, 4, 2), limit: int = 4, **kw):
    """Resolved arithmetic points of the tiny model, one per step count."""
    return [resolve(Point(model=str(model), task="arithmetic", limit=limit, sampler={**SAMPLER, "steps": s}, **kw))
            for s in steps]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A tiny random model in the embedded model's format (character tokenizer, iLLaDA config)."""
    return make_tiny_model(tmp_path_factory.mktemp("tiny_model"))
