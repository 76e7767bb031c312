"""Sweep directories -> one tidy DataFrame: one row per point, settings / quality / cost as columns.

Records are found as ``records/*.json`` (the layout of :mod:`illada.store`, written by grid and Optuna sweeps
alike); a directory without ``records/`` (e.g. ``illada-eval --out runs/demo``) is searched for any ``*.json``
that carries a ``"schema"`` key. Column names::

    sweep, key, status, task, model, model_name, method, decoding, label,
    accuracy, ci_low, ci_high, n, metric, acc_norm, ...          # quality ("value" is renamed accuracy)
    latency_p50_s, latency_p95_s, throughput_items_per_s, throughput_tokens_per_s, nfe_per_sample,
    tokens_per_forward, ...                                       # cost
    batch_size, threads, sampler.steps, sampler.block_length, sampler.remasking, scorer.name, split, limit, ...
    provenance.device_name, provenance.oversubscribed, ..., error.type, error.message, optuna.*, record_path,
    items_path

``latency_p50_s`` / ``latency_p95_s`` are per-request latencies at the point's ``batch_size`` (the wall time of
the batch the request was in). Schema-1 records are mapped to the schema-2 columns: ``throughput_items_per_s``
= 1 / ``seconds_per_sample``, ``throughput_tokens_per_s`` = ``tokens_per_second`` (null for a scorer, which
generates none), ``threads`` = 1 (what sweeps ran with); the misnamed schema-1 columns are dropped.
Points measured on an oversubscribed host (``provenance.oversubscribed``) are named in one warning per sweep.

Failed points go to a second frame, so a crash never shows up as a zero-accuracy point. Where a sweep has a
current plan (``plan.json``, written by ``illada-sweep``), records of points outside it (e.g. of a checkpoint
since replaced) go to a third frame, ``superseded``. A file that cannot be read (cut short by a crash) never
stops loading: it is listed in ``unreadable`` (path, kind, reason) and reported with a warning.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import pandas as pd

from illada.records import KEY_NEUTRAL, CorruptFileError, read_json, read_summary
from illada.store import PLAN_FILE, SUMMARY_MIN_RECORDS, SweepStore
from illada.summary import PREFIX, SUMMARY_DIR, Summary, listing, summarise

#: bump when the frame's columns change, so caches written by an older loader are rebuilt
CACHE_VERSION = 5
#: sweeps with at least this many records are cached as Parquet (``cache="auto"``)
CACHE_MIN_RECORDS = 200
CACHE_DIR = "analysis_cache"

# leading columns, in this order; everything else follows alphabetically
LEADING = ["sweep", "key", "status", "task", "model_name", "method", "decoding", "label", "accuracy", "ci_low",
           "ci_high", "n", "metric", "batch_size", "threads", "latency_p50_s", "latency_p95_s",
           "throughput_items_per_s", "throughput_tokens_per_s", "nfe_per_sample", "tokens_per_forward"]
#: schema-1 cost fields and the schema-2 columns they become (see :func:`schema_columns`)
SCHEMA1_COST = {"seconds_per_sample": "throughput_items_per_s", "tokens_per_second": "throughput_tokens_per_s"}


#: the frames of :class:`Sweeps` and the columns each has when empty
PARTS = {"points": ["sweep", "key"], "failures": ["sweep", "key"], "superseded": ["sweep", "key", "status"],
         "unreadable": ["sweep", "path", "kind", "reason"]}


@dataclass
class Sweeps:
    """Finished points and failures of the current plans of one or many sweep directories; ``superseded``:
    records (ok or failed) of points no longer in their sweep's plan; ``unreadable``: damaged files."""

    points: pd.DataFrame
    failures: pd.DataFrame
    superseded: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=PARTS["superseded"]))
    unreadable: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=PARTS["unreadable"]))

    def __len__(self) -> int:
        return len(self.points)


def record_files(sweep_dir: str | Path) -> list[Path]:
    """The summary files of a sweep: ``records/*.json``, else every ``**/*.json`` carrying a ``schema`` key."""
    root = Path(sweep_dir)
    records = root / "records"
    if records.is_dir():
        return sorted(records.glob("*.json"))
    # records written straight into a folder; skip our own cache and the store's non-record folders
    skip = {CACHE_DIR, SUMMARY_DIR, "points", "running", "jobs", "archive", "logs"}
    return sorted(p for p in root.rglob("*.json")
                  if not skip & set(p.relative_to(root).parts[:-1]) and '"schema"' in _head(p))


def _head(path: Path, size: int = 256) -> str:
    with path.open(errors="replace") as fh:
        return fh.read(size)


def signature(sweep_dir: str | Path) -> dict:
    """What invalidates a cache: number, newest mtime and total size of the record and plan files."""
    root = Path(sweep_dir)
    files = record_files(root) + (sorted((root / "points").glob("*.json")) if (root / "points").is_dir() else [])
    files += [root / PLAN_FILE] if (root / PLAN_FILE).is_file() else []
    stats = []
    for f in files:
        try:
            stats.append(os.stat(f))
        except FileNotFoundError:  # set aside by a running sweep since the listing
            pass
    return {"version": CACHE_VERSION, "files": len(stats), "newest_mtime_ns": max((s.st_mtime_ns for s in stats), default=0),
            "bytes": sum(s.st_size for s in stats)}


def load_sweep(sweep_dir: str | Path, cache: bool | str = "auto", name: str | None = None) -> Sweeps:
    """Load one sweep directory (see the module docstring for the columns).

    ``cache``: ``True`` reads / writes ``SWEEP/analysis_cache/{points,failures}.parquet``, rebuilt whenever
    :func:`signature` changes; ``"auto"`` does so from :data:`CACHE_MIN_RECORDS` records on; ``False`` never.
    A read-only sweep directory is loaded without a cache. Unreadable files are listed in ``unreadable`` and
    named in a warning.
    """
    root = Path(sweep_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"sweep directory {root} does not exist")
    name = name or root.resolve().name
    sig = signature(root) if cache is not False else None  # listing every file costs: only for a cache
    use_cache = cache is True or (cache == "auto" and sig["files"] >= CACHE_MIN_RECORDS)
    cached = _read_cache(root, sig) if use_cache else None
    if cached is None:
        cached = _build(root)
        if use_cache:
            _write_cache(root, sig, cached)
    for frame in (cached.points, cached.failures, cached.superseded, cached.unreadable):
        frame.insert(0, "sweep", name)
    _warn_oversubscribed(root, cached.points)
    if len(cached.unreadable):
        shown = "; ".join(f"{r.path} ({r.reason})" for r in cached.unreadable.head(3).itertuples())
        warnings.warn(f"{root}: {len(cached.unreadable)} unreadable files left out (cut short by a crash?): "
                      f"{shown}{' ...' if len(cached.unreadable) > 3 else ''}", stacklevel=2)
    return cached


def _warn_oversubscribed(root: Path, points: pd.DataFrame) -> None:
    """One line per sweep naming how many points ran on a host busier than its cores (inflated latency)."""
    if "provenance.oversubscribed" not in points or points.empty:
        return
    busy = points["provenance.oversubscribed"].fillna(False).astype(bool)
    if busy.any():
        warnings.warn(f"{root}: {int(busy.sum())} of {len(points)} points ran on an oversubscribed host (load "
                      "average above the CPU count): their latency and throughput are inflated", stacklevel=3)


def load_sweeps(sweep_dirs: str | Path | Iterable[str | Path], cache: bool | str = "auto") -> Sweeps:
    """Load and concatenate many sweep directories; the ``sweep`` column tells them apart (the directory's
    name, or its path where two share a name)."""
    dirs = [Path(sweep_dirs)] if isinstance(sweep_dirs, (str, Path)) else [Path(d) for d in sweep_dirs]
    names = [d.resolve().name for d in dirs]
    names = [str(d) if names.count(n) > 1 else n for d, n in zip(dirs, names)]
    loaded = [load_sweep(d, cache=cache, name=n) for d, n in zip(dirs, names)]
    return Sweeps(*(_concat([getattr(s, part) for s in loaded], columns) for part, columns in PARTS.items()))


def _concat(frames: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True, sort=False) if frames else pd.DataFrame(columns=columns)


def _read_records(root: Path, unreadable: list[dict]) -> list[dict]:
    """The records of :func:`record_files`, read one by one, with their paths."""
    records = []
    for path in record_files(root):
        try:
            rec = read_summary(path)
        except FileNotFoundError:  # set aside by a running sweep since the listing
            continue
        except CorruptFileError as e:
            unreadable.append(_unreadable(e, "record"))
            continue
        rec["record_path"] = str(path)
        items = path.with_name(f"{path.stem}.items.parquet")
        rec["items_path"] = str(items) if items.exists() else None
        records.append(rec)
    return records


def _record_summary(root: Path, unreadable: list[dict]) -> Summary | None:
    """The records of a large sweep (``records/``, :data:`~illada.store.SUMMARY_MIN_RECORDS` and more) as
    their columnar summary (:mod:`illada.summary`); None for other sweeps, whose records are read one by one."""
    folder = root / "records"
    if len(listing(folder)) < SUMMARY_MIN_RECORDS:
        return None
    summary = summarise(root, "records")
    unreadable.extend(_unreadable(e, "record") for e in summary.unreadable)
    if summary.table is not None:
        for name in summary.table.filter(_compute().is_null(summary.table.column("status"))).column("file").to_pylist():
            unreadable.append(_unreadable(CorruptFileError(folder / name, "no 'status' field"), "record"))
    return summary


def _compute():
    import pyarrow.compute

    return pyarrow.compute


def _summary_frame(summary: Summary, rows, folder: Path, names: set[str], labels: dict[str, str]) -> pd.DataFrame:
    """Records of the summary (``rows``: a part of its table) as :func:`tidy` frames them, without one Python
    dict per record: typed columns come straight from Arrow; a field is a column where any of the rows has it;
    where pandas would infer the type from Python values (JSON fields, a column null in every row) it does."""
    if rows.num_rows == 0:
        return tidy([])
    layouts = rows.column("layout").to_pylist()
    has = [set(fields) for fields in summary.layouts]
    columns: dict[str, pd.Series] = {}
    for name in summary.fields(rows):
        col = rows.column(PREFIX + name)
        if name in summary.json_fields or col.null_count == len(col):
            values = summary.values(name, rows)
            # absent -> NaN, null -> None: json_normalize's frame tells them apart in its inferred types
            columns[name] = pd.Series([v if v is not None or name in has[i] else float("nan")
                                       for v, i in zip(values, layouts)])
        else:
            columns[name] = col.to_pandas()
    files = rows.column("file").to_pylist()
    columns["record_path"] = pd.Series([str(folder / f) for f in files])
    items = [f"{f[:-5]}.items.parquet" for f in files]
    columns["items_path"] = pd.Series([str(folder / i) if i in names else None for i in items])
    keys = columns["key"] if "key" in columns else pd.Series([None] * len(files))
    columns["label"] = pd.Series([labels.get(k, "") for k in keys])
    return _tidy_frame(pd.DataFrame(columns))


def _build(root: Path) -> Sweeps:
    unreadable: list[dict] = []
    summary = _record_summary(root, unreadable)
    records = _read_records(root, unreadable) if summary is None else []
    labels = _labels(root, unreadable)
    current = _current_plan(root, unreadable)
    if summary is not None:
        return _build_from_summary(root, summary, labels, current, unreadable)
    for rec in records:
        rec["label"] = labels.get(rec.get("key"), "")
    old = [] if current is None else [r for r in records if r.get("key") not in current]
    records = [r for r in records if current is None or r.get("key") in current]
    # flattened apart, so a failure's missing numbers do not turn the points' integer columns into floats
    ok = [r for r in records if r.get("status") == "ok"]
    failed = [r for r in records if r.get("status") != "ok"]
    return Sweeps(_order(tidy(ok)), _order(tidy(failed).dropna(axis=1, how="all")),
                  _order(tidy(old).dropna(axis=1, how="all")),
                  pd.DataFrame(unreadable, columns=PARTS["unreadable"][1:]))


def _build_from_summary(root: Path, summary: Summary, labels: dict[str, str], current: set[str] | None,
                        unreadable: list[dict]) -> Sweeps:
    """:func:`_build` of a large sweep from its records' summary: the same frames, split in Arrow."""
    import pyarrow as pa

    table = summary.table
    if table is None:
        parts = [tidy([])] * 3
    else:
        if table.column("status").null_count:  # records without a status: reported as unreadable
            table = table.filter(_compute().is_valid(table.column("status")))
        keys = summary.values("key", table) if PREFIX + "key" in table.column_names else [None] * table.num_rows
        planned = pa.array([current is None or k in current for k in keys], pa.bool_())
        ok = _compute().equal(table.column("status"), "ok")
        folder = root / "records"
        names = {e.name for e in os.scandir(folder)}
        parts = [_summary_frame(summary, table.filter(mask), folder, names, labels)
                 for mask in (_compute().and_(planned, ok), _compute().and_(planned, _compute().invert(ok)), _compute().invert(planned))]
    return Sweeps(_order(parts[0]), _order(parts[1].dropna(axis=1, how="all")),
                  _order(parts[2].dropna(axis=1, how="all")),
                  pd.DataFrame(unreadable, columns=PARTS["unreadable"][1:]))


def _unreadable(error: CorruptFileError, kind: str) -> dict:
    return {"path": str(error.path), "kind": kind, "reason": error.reason}


def _current_plan(root: Path, unreadable: list[dict]) -> set[str] | None:
    """Keys of the sweep's current plan, None without one (every record counts, as in older sweeps)."""
    try:
        keys = SweepStore(root).current_plan()
    except CorruptFileError as e:
        unreadable.append(_unreadable(e, "current plan"))
        return None
    return None if keys is None else set(keys)


def _labels(root: Path, unreadable: list[dict]) -> dict[str, str]:
    """The overrides that made each planned point (``points/{key}.json``), joined: a readable point name."""
    folder = root / "points"
    if not folder.is_dir():
        return {}
    out = {}
    if len(listing(folder)) >= SUMMARY_MIN_RECORDS:  # a large sweep: from the plans' columnar summary
        summary = summarise(root, "points")
        unreadable.extend(_unreadable(e, "plan") for e in summary.unreadable)
        table = summary.table
        if table is None:
            return out
        files = table.column("file").to_pylist()
        # two fields of every plan, read as columns: no plan rebuilt as a dict
        keys = summary.values("key", table) if PREFIX + "key" in table.column_names else [None] * len(files)
        has_key = [("key" in summary.layouts[i]) for i in table.column("layout").to_pylist()]
        overrides = (summary.values("overrides", table) if PREFIX + "overrides" in table.column_names
                     else [None] * len(files))
        for name, key, keyed, over in zip(files, keys, has_key, overrides):
            out[key if keyed else name[:-5]] = " ".join(over or [])
        return out
    for p in sorted(folder.glob("*.json")):
        try:
            plan = read_json(p)
        except FileNotFoundError:
            continue
        except CorruptFileError as e:
            unreadable.append(_unreadable(e, "plan"))
            continue
        out[plan.get("key", p.stem)] = " ".join(plan.get("overrides", []))
    return out


def tidy(records: list[dict]) -> pd.DataFrame:
    """Flatten record summaries into columns: ``settings.*`` lose their prefix, ``quality.value`` becomes
    ``accuracy``, the other ``quality.*`` and all ``cost.*`` fields lose theirs; other sections keep theirs."""
    if not records:
        return pd.DataFrame(columns=["key", "status"])
    return _tidy_frame(pd.json_normalize(records, sep="."))


def _tidy_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """:func:`tidy` of records already flattened into columns (``settings.sampler.steps``, ...)."""
    rename = {}
    for col in frame.columns:
        section, _, rest = col.partition(".")
        if section in ("settings", "cost") and rest:
            rename[col] = rest
        elif section == "quality" and rest:
            rename[col] = "accuracy" if rest == "value" else rest.removesuffix(".value")
    frame = frame.rename(columns=rename)
    # a failed record has quality / cost null: json_normalize leaves those as columns of None
    frame = frame.drop(columns=[c for c in ("quality", "cost", "error") if c in frame], errors="ignore")
    if "model" in frame:
        frame["model_name"] = frame["model"].map(lambda m: Path(str(m)).name)
    frame["decoding"] = _decoding(frame)
    return _hashable(schema_columns(frame))


def schema_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Schema-1 rows in the schema-2 columns: throughput from ``seconds_per_sample`` / ``tokens_per_second``
    (a scorer's 0.0 tokens/s becomes null: it generates nothing), ``threads`` 1 where not recorded (schema-1
    sweeps ran one thread); the schema-1 columns are dropped, so no figure can show them under a wrong name."""
    frame = frame.copy(deep=False)  # copy-on-write: the caller's frame is never changed, nothing is copied
    for old, new in SCHEMA1_COST.items():
        if old not in frame:
            continue
        values = pd.to_numeric(frame[old], errors="coerce")
        if old == "seconds_per_sample":
            values = 1.0 / values.where(values > 0)
        else:
            values = values.where(values > 0)  # 0.0: a scorer (no generated tokens) or nothing measured
        frame[new] = frame[new].fillna(values) if new in frame else values
        frame = frame.drop(columns=old)
    if len(frame):
        frame["threads"] = frame["threads"].fillna(1) if "threads" in frame else 1
        if frame["threads"].notna().all():
            frame["threads"] = frame["threads"].astype(int)
    # a setting added after schema 1 is, on an older record, at its neutral value (what the key assumes too),
    # so old and new records of one setting group together
    for path, neutral in KEY_NEUTRAL.items():
        section, _, _ = path.rpartition(".")
        if path not in frame or neutral is None or path == "threads":
            continue
        has = frame[[c for c in frame if c.startswith(f"{section}.")]].notna().any(axis=1) if section else True
        frame[path] = frame[path].where(frame[path].notna() | ~has, neutral)
    return frame


def _decoding(frame: pd.DataFrame) -> pd.Series:
    """How a point decodes: ``fixed`` schedule, Fast-dLLM ``threshold`` / ``factor``, another decoding strategy
    by its name (``eb_sampler``, ``klass``, ...; ``sampler.decoder``) (+ ``<cache> cache``, ``dkv greedy cache`` for
    dKV-Cache-Greedy), or the scorer's name for a
    multiple-choice point."""
    out = pd.Series("fixed", index=frame.index, dtype=object)
    for rule in ("factor", "threshold"):
        if f"sampler.{rule}" in frame:
            out = out.mask(frame[f"sampler.{rule}"].notna(), rule)
    if "sampler.decoder" in frame:  # threshold is also a knob of hierarchy/klass/credit: the decoder names them
        other = frame["sampler.decoder"].notna() & frame["sampler.decoder"].ne("llada")
        out = out.mask(other, frame["sampler.decoder"])
    if "sampler.cache" in frame:
        cached = frame["sampler.cache"].notna() & frame["sampler.cache"].ne("none")
        cache = frame["sampler.cache"].astype(str)
        if "sampler.dkv_variant" in frame:  # dKV-Cache's two variants are two methods
            cache = cache.mask(frame["sampler.dkv_variant"].eq("greedy"), cache + " greedy")
        out = out.mask(cached, out + "+" + cache + " cache")
    if "scorer.name" in frame:
        out = out.mask(frame["scorer.name"].notna(), frame["scorer.name"])
    return out


def _order(frame: pd.DataFrame) -> pd.DataFrame:
    lead = [c for c in LEADING if c in frame]
    return frame[lead + sorted(c for c in frame.columns if c not in lead)].reset_index(drop=True)


# ------------------------------------------------------------------------------------------------------ cache
def _cache_paths(root: Path) -> tuple[list[Path], Path]:
    folder = root / CACHE_DIR
    return [folder / f"{part}.parquet" for part in PARTS], folder / "signature.txt"


def _read_cache(root: Path, sig: dict) -> Sweeps | None:
    tables, sig_path = _cache_paths(root)
    try:
        if json.loads(sig_path.read_text()) != sig:
            return None
        return Sweeps(*(pd.read_parquet(t) for t in tables))
    except (OSError, ValueError):
        return None


def _write_cache(root: Path, sig: dict, sweeps: Sweeps) -> None:
    tables, sig_path = _cache_paths(root)
    try:
        sig_path.parent.mkdir(exist_ok=True)
        sig_path.unlink(missing_ok=True)  # no signature while the tables are half written
        for part, table in zip(PARTS, tables):
            getattr(sweeps, part).to_parquet(table, index=False)
        # a .txt, not .json: the fallback record search must never take the cache for a record
        sig_path.write_text(json.dumps(sig))
    except OSError:
        pass  # a read-only sweep directory: load without a cache


def _hashable(frame: pd.DataFrame) -> pd.DataFrame:
    """List / dict cells (``sampler.stop_ids``) and columns of mixed scalar types as JSON strings, so every
    column can be grouped on and written to Parquet, and a cached frame equals a freshly built one."""
    for col in frame.columns[frame.dtypes == object]:
        kinds = {type(v) for v in frame[col] if v is not None and v == v}
        if kinds & {list, tuple, dict} or len(kinds) > 1:
            frame[col] = frame[col].map(lambda v: None if v is None or v != v else json.dumps(v, default=str))
    return frame


# ------------------------------------------------------------------------------------------------- per item
def load_items(point: pd.Series | dict, columns: list[str] | None = None) -> pd.DataFrame:
    """The per-item rows of one point (``records/{key}.items.parquet``), indexed by item ``id``."""
    path = point["items_path"]
    if path is None or path != path:
        raise FileNotFoundError(f"point {point['key']} has no per-item table")
    cols = None if columns is None else ["id", *columns]
    return pd.read_parquet(path, columns=cols).set_index("id")
