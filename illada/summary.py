"""A columnar summary of a folder of JSON files (a sweep's ``records/`` or ``points/``): one Parquet file.

Reading 50,000 records one file at a time is what made ``illada-status`` and ``illada-report`` slow on a large
sweep. The summary ``SWEEP/summary/{folder}.parquet`` holds, per file, its name, modification time and size,
and its text (plus a record's ``status``). It is never the truth -- the files are: a reader lists the folder
(one ``scandir``, no reads), takes from the summary each file whose time and size are unchanged, reads the
others, forgets the files that are gone and writes the summary back when anything changed. So it follows the
records as they land whoever wrote them, and a summary that is missing, stale or damaged is rebuilt from the
files. A damaged file is reported (:class:`~illada.records.CorruptFileError`) and left out of the summary, so
it is read, and reported, again next time. Nothing is written when the sweep directory is read-only.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from illada.atomic import atomic_target
from illada.records import CorruptFileError

SUMMARY_DIR = "summary"
COLUMNS = ("file", "mtime_ns", "size", "status", "text")
VERSION = "1"  # in the file's metadata: a summary of another layout is rebuilt


@dataclass
class Summary:
    """The JSON files of a folder: name -> text and, for records, name -> status; the damaged files."""

    texts: dict[str, str] = field(default_factory=dict)
    statuses: dict[str, str | None] = field(default_factory=dict)
    unreadable: list[CorruptFileError] = field(default_factory=list)
    read: int = 0  # files read from disk this time (the rest came from the summary)

    def objects(self) -> dict[str, dict[str, Any]]:
        """File name -> its JSON object (parsed from the summary's text)."""
        return {name: json.loads(text) for name, text in self.texts.items()}


def summary_path(root: str | Path, folder: str) -> Path:
    return Path(root) / SUMMARY_DIR / f"{folder}.parquet"


def listing(folder: Path) -> dict[str, tuple[int, int]]:
    """``{name}.json`` files of ``folder`` -> (modification time in ns, size), from one directory listing."""
    out = {}
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return out
    for e in entries:
        if not e.name.endswith(".json") or e.name.startswith("."):
            continue
        try:
            st = e.stat()
        except FileNotFoundError:  # set aside since the listing
            continue
        out[e.name] = (st.st_mtime_ns, st.st_size)
    return out


def summarise(root: str | Path, folder: str, write: bool = True, need_text: bool = True) -> Summary:
    """The files of ``root/folder`` (see the module docstring); ``write``: bring the summary up to date on
    disk. ``need_text=False`` (status) reads the summary's names and statuses only while it is up to date."""
    root = Path(root)
    files = listing(root / folder)
    old = _read(summary_path(root, folder), need_text)
    changed = len(old) != len(files) or any(old.get(n, (None,))[0] != stamp for n, stamp in files.items())
    if changed and write and not need_text:  # the summary is rewritten whole: take its texts too
        return summarise(root, folder, write, need_text=True)
    out = Summary()
    for name, stamp in sorted(files.items()):
        row = old.get(name)
        if row is not None and row[0] == stamp:
            out.statuses[name] = row[1]
            if need_text:
                out.texts[name] = row[2]
            continue
        path = root / folder / name
        try:
            text = path.read_text()
            data = json.loads(text)
        except FileNotFoundError:
            continue
        except (ValueError, UnicodeDecodeError) as e:
            out.unreadable.append(CorruptFileError(path, f"{type(e).__name__}: {e}"))
            continue
        if not isinstance(data, dict):
            out.unreadable.append(CorruptFileError(path, f"a JSON {type(data).__name__}, not an object"))
            continue
        status = data.get("status")
        out.read += 1
        out.statuses[name] = status if isinstance(status, str) else None
        out.texts[name] = text
        files[name] = stamp
    if changed and write and need_text:
        _write(summary_path(root, folder), {n: (files[n], out.statuses[n], out.texts[n]) for n in out.texts})
    return out


def _read(path: Path, need_text: bool) -> dict[str, tuple[tuple[int, int], str | None, str | None]]:
    """name -> ((mtime_ns, size), status, text); empty when the summary is missing, damaged or of another
    version (it is then rebuilt from the files)."""
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path, columns=list(COLUMNS if need_text else COLUMNS[:4]))
        if (table.schema.metadata or {}).get(b"illada_summary") != VERSION.encode():
            return {}
        cols = table.to_pydict()
    except FileNotFoundError:
        return {}
    except Exception:  # noqa: BLE001 -- a damaged or foreign summary is rebuilt, never trusted
        return {}
    texts = cols["text"] if need_text else [None] * len(cols["file"])
    return {f: ((m, s), st, t) for f, m, s, st, t in zip(cols["file"], cols["mtime_ns"], cols["size"],
                                                         cols["status"], texts)}


def _write(path: Path, rows: dict[str, tuple[tuple[int, int], str | None, str]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = list(rows)
    table = pa.table({"file": names, "mtime_ns": [rows[n][0][0] for n in names],
                      "size": [rows[n][0][1] for n in names], "status": [rows[n][1] for n in names],
                      "text": [rows[n][2] for n in names]})
    table = table.replace_schema_metadata({"illada_summary": VERSION})
    try:
        path.parent.mkdir(exist_ok=True)
        with atomic_target(path) as tmp:
            pq.write_table(table, tmp)
    except OSError:
        pass  # a read-only sweep directory: the files are read each time
