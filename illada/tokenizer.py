"""Tokenizers from ``tokenizer.json`` (or Qwen2-style ``vocab.json`` + ``merges.txt``, as Dream ships) with
``tokenizer_config.json``, and the special ids a sampler needs.

Special ids (mask, EOS, end-of-turn, end-of-thinking, pad, BOS) always come from the checkpoint at hand:
LLaDA's 126081/126348 are ordinary tokens in iLLaDA's vocabulary, and 126336 is not iLLaDA's mask.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Sequence

import torch

# Token strings recognised per role, in order of preference (LLaDA, iLLaDA/Seed, common conventions).
MASK_TOKENS = ("<|mdm_mask|>", "<[MASK]>", "[MASK]", "<|mask|>", "<mask>")
# Slow byte-level BPE tokenizers whose files (vocab.json + merges.txt) are converted here: Dream's DreamTokenizer
# is Qwen2's tokenizer under another name. The split pattern is the one both classes use.
QWEN2_TOKENIZER_CLASSES = ("Qwen2Tokenizer", "Qwen2TokenizerFast", "DreamTokenizer")
QWEN2_SPLIT_PATTERN = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"""
                       r"""\s*[\r\n]+|\s+(?!\S)|\s+""")
EOT_TOKENS = ("<|eot_id|>", "<|im_end|>", "<seed:eos>", "<|end_of_turn|>", "<end_of_turn>", "<|end|>")
END_THINK_TOKENS = ("</think>", "</seed:think>", "<|end_of_thinking|>")


class TokenizerError(ValueError):
    """A tokenizer file is missing or does not declare a token the model needs."""


@dataclass(frozen=True)
class SpecialIds:
    """Ids of the tokens samplers and scorers treat specially; ``None`` where the model has no such token."""

    mask: int
    eos: int | None = None
    eot: int | None = None
    end_think: int | None = None
    pad: int | None = None
    bos: int | None = None

    def stop_ids(self) -> tuple[int, ...]:
        """Tokens that end a generated answer (EOS and end-of-turn)."""
        return tuple(dict.fromkeys(i for i in (self.eos, self.eot) if i is not None))


class Tokenizer:
    """A ``tokenizers.Tokenizer`` with the settings of ``tokenizer_config.json`` (chat template, specials)."""

    def __init__(self, backend: Any, config: dict[str, Any] | None = None, source: str = "<memory>") -> None:
        self.backend = backend
        self.config = config or {}
        self.source = source

    @staticmethod
    def files_present(path: str | Path) -> bool:
        """Whether ``path`` holds a tokenizer this class reads: tokenizer.json, or vocab.json + merges.txt."""
        path = Path(path)
        slow = (path / "vocab.json").is_file() and (path / "merges.txt").is_file()
        return (path / "tokenizer.json").is_file() or slow

    @classmethod
    def from_dir(cls, path: str | Path) -> "Tokenizer":
        from tokenizers import Tokenizer as HFTokenizer

        path = Path(path)
        tok_file = path / "tokenizer.json"
        cfg_file = path / "tokenizer_config.json"
        config = json.loads(cfg_file.read_text()) if cfg_file.is_file() else {}
        if tok_file.is_file():
            try:
                backend = HFTokenizer.from_file(str(tok_file))
            except Exception as e:
                raise TokenizerError(f"{tok_file}: cannot parse tokenizer ({e})") from e
        elif (path / "vocab.json").is_file() and (path / "merges.txt").is_file():
            backend = _qwen2_bpe(path, config)
        else:
            raise TokenizerError(f"{tok_file}: tokenizer.json not found, nor vocab.json + merges.txt (Qwen2/Dream)")
        return cls(backend, config, source=str(path))

    # ------------------------------------------------------------------ ids and text
    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def token_to_id(self, token: str) -> int | None:
        return self.backend.token_to_id(token)

    def special_token(self, role: str) -> str | None:
        """The string of ``bos_token``/``eos_token``/... from tokenizer_config.json, if declared."""
        value = self.config.get(role)
        if isinstance(value, dict):  # AddedToken serialisation
            value = value.get("content")
        return value

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return self.backend.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def apply_chat_template(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        """Render ``messages`` with the checkpoint's Jinja chat template (Instruct models)."""
        template = self.config.get("chat_template")
        if not template:
            raise TokenizerError(f"{self.source}: tokenizer_config.json has no chat_template (a Base model?)")
        from jinja2.exceptions import TemplateError
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message: str) -> None:
            raise TemplateError(message)

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = raise_exception
        return env.from_string(template).render(
            messages=messages, add_generation_prompt=add_generation_prompt,
            bos_token=self.special_token("bos_token") or "", eos_token=self.special_token("eos_token") or "",
        )


def _qwen2_bpe(path: Path, config: dict[str, Any]) -> Any:
    """The fast equivalent of a Qwen2 (or Dream) slow tokenizer: NFC, Qwen2's split pattern, byte-level BPE,
    and the added tokens of ``tokenizer_config.json`` at the ids it gives them."""
    from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers
    from tokenizers import Tokenizer as HFTokenizer

    cls_name = config.get("tokenizer_class")
    if cls_name not in QWEN2_TOKENIZER_CLASSES:
        raise TokenizerError(f"{path / 'tokenizer_config.json'}: tokenizer_class={cls_name!r} with vocab.json + "
                             f"merges.txt is not supported (only {list(QWEN2_TOKENIZER_CLASSES)}; "
                             "or give a tokenizer.json)")
    try:
        bpe = models.BPE.from_file(str(path / "vocab.json"), str(path / "merges.txt"))
    except Exception as e:
        raise TokenizerError(f"{path}: cannot read vocab.json / merges.txt ({e})") from e
    tok = HFTokenizer(bpe)
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    added = {int(i): v for i, v in (config.get("added_tokens_decoder") or {}).items()}
    extra_file = path / "added_tokens.json"
    if extra_file.is_file():
        for content, i in json.loads(extra_file.read_text()).items():
            added.setdefault(int(i), {"content": content, "special": True})
    for i in sorted(added):
        spec = added[i]
        token = AddedToken(spec["content"], single_word=spec.get("single_word", False),
                           lstrip=spec.get("lstrip", False), rstrip=spec.get("rstrip", False),
                           normalized=spec.get("normalized", False), special=spec.get("special", True))
        (tok.add_special_tokens if token.special else tok.add_tokens)([token])
        if tok.token_to_id(spec["content"]) != i:
            raise TokenizerError(f"{path}: added token {spec['content']!r} should have id {i}, the vocabulary gives "
                                 f"{tok.token_to_id(spec['content'])} (added tokens must follow vocab.json in order)")
    return tok


def pad_left(batch: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token lists into ``input_ids`` and ``attention_mask`` [B, T] (1 = real token)."""
    if not batch:
        raise ValueError("pad_left: empty batch")
    width = max(len(row) for row in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, row in enumerate(batch):
        if row:
            ids[i, width - len(row):] = torch.as_tensor(row, dtype=torch.long)
            mask[i, width - len(row):] = 1
    return ids, mask


def resolve_special_ids(model_config: Any, tokenizer: Tokenizer | None, **overrides: int | None) -> SpecialIds:
    """Special ids from explicit ``overrides``, then the tokenizer, then ``config.json``.

    ``overrides`` take the field names of :class:`SpecialIds` (``mask=5``, ``eos=...``).
    """
    unknown = set(overrides) - {f.name for f in fields(SpecialIds)}
    if unknown:
        raise TypeError(f"unknown special-id override(s) {sorted(unknown)}; use {[f.name for f in fields(SpecialIds)]}")

    def by_role(role: str) -> int | None:
        token = tokenizer.special_token(role) if tokenizer else None
        return tokenizer.token_to_id(token) if token else None

    def first_known(candidates: Sequence[str]) -> int | None:
        if tokenizer is None:
            return None
        return next((i for i in map(tokenizer.token_to_id, candidates) if i is not None), None)

    def pick(name: str, *candidates: int | None) -> int | None:
        if overrides.get(name) is not None:
            return overrides[name]
        return next((c for c in candidates if c is not None), None)

    mask = pick("mask", getattr(model_config, "mask_token_id", None), by_role("mask_token"), first_known(MASK_TOKENS))
    if mask is None:
        where = tokenizer.source if tokenizer else "config.json"
        raise TokenizerError(
            f"{where}: no mask token: config.json has no mask_token_id, tokenizer_config.json no mask_token, "
            f"and none of {list(MASK_TOKENS)} is in the vocabulary; pass the id explicitly (illada.load(..., mask=ID))"
        )
    eos = pick("eos", by_role("eos_token"), getattr(model_config, "eos_token_id", None))
    ids = SpecialIds(
        mask=mask,
        eos=eos,
        eot=pick("eot", first_known(EOT_TOKENS)),
        end_think=pick("end_think", first_known(END_THINK_TOKENS)),
        pad=pick("pad", by_role("pad_token"), getattr(model_config, "pad_token_id", None), eos),
        bos=pick("bos", by_role("bos_token"), getattr(model_config, "bos_token_id", None)),
    )
    vocab = getattr(model_config, "vocab_size", None)
    for f in fields(ids):
        value = getattr(ids, f.name)
        if value is not None and vocab is not None and not 0 <= value < vocab:
            raise TokenizerError(f"special id {f.name}={value} is outside the model's vocabulary [0, {vocab})")
    if ids.pad == ids.mask:
        raise TokenizerError(f"pad id {ids.pad} equals the mask id: padding would read as masked positions")
    return ids
