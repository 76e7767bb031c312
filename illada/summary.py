"""A columnar summary of a folder of JSON files (a sweep's ``records/`` or ``points/``): one Parquet file.

Reading 50,000 records one file at a time, and turning 50,000 nested dicts into a DataFrame, is what made
``illada-status`` and ``illada-report`` slow on a large sweep. The summary ``SWEEP/summary/{folder}.parquet``
holds, per file, its name, modification time and size, its ``status`` and its fields flattened into typed
Arrow columns (``settings.sampler.steps``, ...; a nested object is split into its fields, a field whose values
are lists, objects or of mixed types is stored as JSON text). Which fields a file has is its *layout* (a
number into the layouts kept in the file's metadata), so "field absent" stays apart from "field null".

It is never the truth -- the files are: a reader lists the folder (one ``scandir``, no reads), takes from the
summary each file whose time and size are unchanged, reads the others, forgets the files that are gone and
writes the summary back when anything changed. So it follows the records as they land whoever wrote them, and
a summary that is missing, stale or damaged is rebuilt from the files. A damaged file is reported
(:class:`~illada.records.CorruptFileError`) and left out of the summary, so it is read, and reported, again
next time. Nothing is written when the sweep directory is read-only.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from illada.atomic import atomic_target
from illada.records import CorruptFileError

if TYPE_CHECKING:
    import pyarrow as pa

SUMMARY_DIR = "summary"
STAMP = ("file", "mtime_ns", "size", "status", "layout")
PREFIX = "v:"  # value columns: the flattened fields, apart from the summary's own columns
VERSION = "2"  # in the file's metadata: a summary of another layout is rebuilt
BATCH = 2_000  # files flattened into Arrow at a time: the Python objects of one batch only are alive


@dataclass
class Summary:
    """The JSON files of a folder: a table of their flattened fields and statuses, the damaged files."""

    table: "pa.Table | None" = None  # STAMP columns + PREFIX value columns, one row per readable file, by name
    layouts: list[list[str]] = field(default_factory=list)  # layout number -> its fields, in file order
    json_fields: set[str] = field(default_factory=set)  # fields stored as JSON text
    unreadable: list[CorruptFileError] = field(default_factory=list)
    read: int = 0  # files read from disk this time (the rest came from the summary)

    @property
    def statuses(self) -> dict[str, str | None]:
        """File name -> its ``status`` (None where it is not a string)."""
        if self.table is None:
            return {}
        return dict(zip(self.table.column("file").to_pylist(), self.table.column("status").to_pylist()))

    def fields(self, rows: "pa.Table | None" = None) -> list[str]:
        """The fields any of ``rows`` (default: every file) has, in first-seen order."""
        rows = self.table if rows is None else rows
        seen: dict[str, None] = {}
        if rows is not None and rows.num_rows:
            for i in sorted(set(rows.column("layout").to_pylist())):
                seen.update(dict.fromkeys(self.layouts[i]))
        return list(seen)

    def values(self, name: str, rows: "pa.Table") -> list[Any]:
        """The values of field ``name`` in ``rows``, as Python objects (JSON fields decoded)."""
        col = rows.column(PREFIX + name).to_pylist()
        return [None if v is None else json.loads(v) for v in col] if name in self.json_fields else col

    def objects(self) -> dict[str, dict[str, Any]]:
        """File name -> its JSON object, nested again from the flattened fields."""
        if self.table is None:
            return {}
        names = self.table.column("file").to_pylist()
        layouts = self.table.column("layout").to_pylist()
        cols = {f: self.values(f, self.table) for f in self.fields()}
        out = {}
        for i, (name, layout) in enumerate(zip(names, layouts)):
            obj: dict[str, Any] = {}
            for path in self.layouts[layout]:
                *parents, leaf = path.split(".")
                node = obj
                for p in parents:
                    node = node.setdefault(p, {})
                node[leaf] = cols[path][i]
            out[name] = obj
        return out


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


def flatten(obj: dict[str, Any], prefix: str = "", out: dict[str, Any] | None = None) -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``, as ``pandas.json_normalize`` does (an empty object vanishes)."""
    out = {} if out is None else out
    for k, v in obj.items():
        if isinstance(v, dict):
            flatten(v, f"{prefix}{k}.", out)
        else:
            out[f"{prefix}{k}"] = v
    return out


def summarise(root: str | Path, folder: str, write: bool = True, need_values: bool = True) -> Summary:
    """The files of ``root/folder`` (see the module docstring); ``write``: bring the summary up to date on
    disk. ``need_values=False`` (status) reads the summary's names and statuses only while it is up to date."""
    import pyarrow as pa
    import pyarrow.compute as pc

    root = Path(root)
    files = listing(root / folder)
    path = summary_path(root, folder)
    old, meta = _read(path, columns=None if need_values else list(STAMP))
    stamps = {} if old is None else dict(zip(old.column("file").to_pylist(),
                                             zip(old.column("mtime_ns").to_pylist(), old.column("size").to_pylist())))
    kept = sorted(n for n, stamp in files.items() if stamps.get(n) == stamp)
    changed = len(kept) != len(stamps) or len(kept) != len(files)
    if changed and write and not need_values:  # the summary is rewritten whole: take its values too
        return summarise(root, folder, write, need_values=True)
    out = Summary(layouts=list(meta.get("layouts", [])), json_fields=set(meta.get("json", [])))
    parts = []
    if kept:  # filtered only when some are gone or changed: the filter copies the table
        parts.append(old if len(kept) == old.num_rows else
                     old.filter(pc.is_in(old.column("file"), value_set=pa.array(kept))))
    del old
    batch: list[tuple[str, tuple[int, int], dict]] = []
    layout_ids = {tuple(fields): i for i, fields in enumerate(out.layouts)}
    for name in sorted(n for n in files if stamps.get(n) != files[n]):
        file = root / folder / name
        try:
            data = json.loads(file.read_text())
        except FileNotFoundError:
            continue
        except (ValueError, UnicodeDecodeError) as e:
            out.unreadable.append(CorruptFileError(file, f"{type(e).__name__}: {e}"))
            continue
        if not isinstance(data, dict):
            out.unreadable.append(CorruptFileError(file, f"a JSON {type(data).__name__}, not an object"))
            continue
        out.read += 1
        batch.append((name, files[name], flatten(data)))
        if len(batch) >= BATCH:
            parts.append(_batch_table(batch, out, layout_ids))
            batch = []
    if batch:
        parts.append(_batch_table(batch, out, layout_ids))
    table = _combine(parts, out) if parts else None
    if table is not None and len(parts) > 1:
        table = table.take(pc.sort_indices(table, sort_keys=[("file", "ascending")]))
    out.table = table
    if changed and write and table is not None:
        _write(path, table, out)
    return out


def _batch_table(batch: list[tuple[str, tuple[int, int], dict]], out: Summary,
                 layout_ids: dict[tuple[str, ...], int]) -> "pa.Table":
    """One batch of flattened files as an Arrow table (new layouts and JSON fields noted in ``out``)."""
    import pyarrow as pa

    fields: dict[str, None] = {}
    layouts = []
    for _, _, flat in batch:
        key = tuple(flat)
        if key not in layout_ids:
            layout_ids[key] = len(out.layouts)
            out.layouts.append(list(key))
        layouts.append(layout_ids[key])
        fields.update(dict.fromkeys(key))
    columns: dict[str, Any] = {
        "file": pa.array([b[0] for b in batch], pa.string()),
        "mtime_ns": pa.array([b[1][0] for b in batch], pa.int64()),
        "size": pa.array([b[1][1] for b in batch], pa.int64()),
        "status": pa.array([s if isinstance(s := b[2].get("status"), str) else None for b in batch], pa.string()),
        "layout": pa.array(layouts, pa.int32())}
    for name in fields:
        values = [b[2].get(name) for b in batch]
        columns[PREFIX + name] = _column(name, values, out)
    return pa.table(columns)


def _column(name: str, values: list[Any], out: Summary) -> "pa.Array":
    """Values of one field as an Arrow array: typed when they are scalars of one kind (ints and floats mix
    into floats), else JSON text (lists, objects, strings next to numbers, booleans next to numbers)."""
    import pyarrow as pa

    if name not in out.json_fields:
        kinds = {type(v) for v in values if v is not None}
        if not kinds & {list, dict} and (len(kinds) <= 1 or kinds == {int, float}):
            try:
                return pa.array(values)
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
                pass
        out.json_fields.add(name)
    return pa.array([None if v is None else json.dumps(v) for v in values], pa.string())


def _combine(parts: list["pa.Table"], out: Summary) -> "pa.Table":
    """Tables of several batches (and the summary's kept rows) as one: a field's types unified (a null
    column takes the other's type, ints become floats next to floats), else the field becomes JSON text."""
    import pyarrow as pa

    names: dict[str, None] = {}
    for part in parts:
        names.update(dict.fromkeys(part.column_names))
    for name in names:
        if not name.startswith(PREFIX):
            continue
        types = {part.schema.field(name).type for part in parts if name in part.column_names} - {pa.null()}
        field_name = name[len(PREFIX):]
        if field_name in out.json_fields:
            target = pa.string()
        elif len(types) <= 1:
            target = next(iter(types), pa.null())
        elif all(pa.types.is_integer(t) or pa.types.is_floating(t) for t in types):
            target = pa.float64()
        else:
            out.json_fields.add(field_name)
            target = pa.string()
        for i, part in enumerate(parts):
            if name not in part.column_names:
                continue
            col = part.column(name)
            if col.type == target:
                continue
            if target == pa.string() and col.type != pa.null():  # a typed column turned JSON
                col = pa.array([None if v is None else json.dumps(v) for v in col.to_pylist()], pa.string())
            else:
                col = col.cast(target)
            parts[i] = part.set_column(part.column_names.index(name), name, col)
    return pa.concat_tables(parts, promote_options="default")


def _read(path: Path, columns: list[str] | None) -> tuple["pa.Table | None", dict[str, Any]]:
    """The summary's table (``columns`` only) and metadata; None when it is missing, damaged or of another
    version (it is then rebuilt from the files)."""
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path, columns=columns)
        meta = table.schema.metadata or {}
        if meta.get(b"illada_summary") != VERSION.encode():
            return None, {}
        return table.replace_schema_metadata(None), json.loads(meta[b"illada_fields"])
    except FileNotFoundError:
        return None, {}
    except Exception:  # noqa: BLE001 -- a damaged or foreign summary is rebuilt, never trusted
        return None, {}


def _write(path: Path, table: "pa.Table", summary: Summary) -> None:
    import pyarrow.parquet as pq

    meta = {"layouts": summary.layouts, "json": sorted(summary.json_fields)}
    table = table.replace_schema_metadata({"illada_summary": VERSION, "illada_fields": json.dumps(meta)})
    try:
        path.parent.mkdir(exist_ok=True)
        with atomic_target(path) as tmp:
            pq.write_table(table, tmp)
    except OSError:
        pass  # a read-only sweep directory: the files are read each time
