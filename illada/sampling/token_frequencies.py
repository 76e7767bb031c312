"""Token frequencies for PC-Sampler's debiasing (``SamplerSettings.debias``), in PC-Sampler's file format:
``{"num_token": N, "p_baseline_dict": {"<token id>": count, ...}}`` (NEUIR/PC-Sampler ``data/baseline/*.json``,
d2Cache ``src/third_party/<family>_corpus.json``), plus an optional ``"vocab_size"`` that must equal the model's
(so a file counted with another tokenizer fails instead of calibrating nonsense). A token's frequency is
count / N; tokens absent from the file get 1 / N, as in both references.

The shipped file, ``illada/sampling/data/token_frequencies_default.json``, counts the embedded default model's
training text (tokenizer of ``illada/embedded/default``): the rows ``prompt + answer + EOS padding to 8`` of the
first 20,000 training problems of ``illada.tasks.arithmetic.problems('train', 20000, seed=0)``. Rebuild it with

    python -m illada.sampling.token_frequencies --out illada/sampling/data/token_frequencies_default.json

For another model, count that model's tokenizer over a corpus like its training text (PC-Sampler's authors use
their evaluation-domain corpora) with :func:`count_tokens` and pass the file as ``sampler.token_frequencies``.
"""

from __future__ import annotations

import argparse
import functools
import json
from collections import Counter
from pathlib import Path
from typing import Iterable

import torch

DEFAULT_FILE = Path(__file__).parent / "data" / "token_frequencies_default.json"


def count_tokens(rows: Iterable[list[int]]) -> dict:
    """The file's content for token-id rows."""
    counts: Counter[int] = Counter()
    for row in rows:
        counts.update(row)
    return {"num_token": sum(counts.values()),
            "p_baseline_dict": {str(i): counts[i] for i in sorted(counts)}}


@functools.lru_cache(maxsize=4)
def _read(path: str) -> tuple[int, dict[int, int], int | None]:
    try:
        data = json.loads(Path(path).read_text())
        total, counts = int(data["num_token"]), {int(k): int(v) for k, v in data["p_baseline_dict"].items()}
        vocab = data.get("vocab_size")
    except FileNotFoundError:
        raise ValueError(f"SamplerSettings.token_frequencies={path!r}: no such file") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"SamplerSettings.token_frequencies={path!r}: not a token-frequency file "
                         f"({{'num_token': N, 'p_baseline_dict': {{id: count}}}}): {type(e).__name__}: {e}") from None
    if total <= 0 or any(c < 0 for c in counts.values()) or any(i < 0 for i in counts):
        raise ValueError(f"SamplerSettings.token_frequencies={path!r}: counts and num_token must be >= 0 "
                         f"(num_token={total})")
    return total, counts, vocab


def load_frequencies(path: str | None, vocab_size: int) -> torch.Tensor:
    """Float32 [vocab_size] frequencies: count / N, 1 / N for tokens the file lacks; ids >= vocab_size are an
    error (the file belongs to another tokenizer)."""
    path = str(DEFAULT_FILE if path is None else path)
    total, counts, vocab = _read(path)
    if vocab is not None and vocab != vocab_size:
        raise ValueError(f"SamplerSettings.token_frequencies={path!r}: counts tokens of a vocabulary of {vocab}, the "
                         f"model has {vocab_size}; give a file counted with this model's tokenizer")
    beyond = [i for i in counts if i >= vocab_size]
    if beyond:
        raise ValueError(f"SamplerSettings.token_frequencies={path!r}: token id {max(beyond)} is outside the "
                         f"model's vocabulary of {vocab_size} (a file for another tokenizer?)")
    freq = torch.full((vocab_size,), 1.0 / total, dtype=torch.float32)
    if counts:
        ids = torch.tensor(list(counts), dtype=torch.long)
        freq[ids] = torch.tensor([c / total for c in counts.values()], dtype=torch.float32)
    return freq


def embedded_training_rows(n: int = 20_000, seed: int = 0) -> list[list[int]]:
    """Token rows of the embedded model's training text: prompt + answer + EOS padding (train.py's rows)."""
    from illada.embedded.train import DEFAULT_DIR, EOS_ID, GEN_LENGTH
    from illada.tasks.arithmetic import problems
    from illada.tokenizer import Tokenizer

    tok = Tokenizer.from_dir(DEFAULT_DIR)
    rows = []
    for p in problems("train", n, seed=seed):
        answer = tok.encode(p.answer)
        rows.append(tok.encode(p.prompt) + answer + [EOS_ID] * (GEN_LENGTH - len(answer)))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Count the embedded model's training text into a PC-Sampler "
                                                 "token-frequency file.")
    parser.add_argument("--out", type=Path, default=DEFAULT_FILE)
    parser.add_argument("-n", type=int, default=20_000, help="training problems counted")
    args = parser.parse_args(argv)
    from illada.embedded.train import DEFAULT_DIR
    from illada.tokenizer import Tokenizer

    data = count_tokens(embedded_training_rows(args.n))
    data["vocab_size"] = Tokenizer.from_dir(DEFAULT_DIR).vocab_size
    data["source"] = f"illada.tasks.arithmetic.problems('train', {args.n}, seed=0): prompt + answer + EOS to 8"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {args.out}: {data['num_token']} tokens, {len(data['p_baseline_dict'])} distinct ids")


if __name__ == "__main__":
    main()
