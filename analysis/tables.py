"""Small table helpers shared by the report and the notebooks: Markdown tables and readable point names."""

from __future__ import annotations

import numpy as np
import pandas as pd

SETTING_PREFIXES = ("sampler.", "scorer.")
MISSING = "n/a"


def category_label(value) -> str:
    """A setting value as a label: whole numbers without ``.0``, missing values as ``n/a``."""
    if value is None or value != value:
        return MISSING
    if isinstance(value, (int, float, np.number)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def markdown_table(df: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table of ``df`` (cells as shown by ``str``; pipes escaped)."""
    def cells(values) -> str:
        return "| " + " | ".join(str(v).replace("|", "\\|").replace("\n", " ") for v in values) + " |"
    lines = [cells(df.columns), "|" + "---|" * len(df.columns)] + [cells(r) for r in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def setting_labels(df: pd.DataFrame) -> pd.Series:
    """A short name per point: its sweep overrides where the plan has them (less ``task=`` / ``model=``), else
    the sampler / scorer settings that vary across the frame (``steps=4 block_length=8``)."""
    varying = [c for c in df.columns if c.startswith(SETTING_PREFIXES)
               and df[c].astype(str).nunique() > 1 and c not in ("sampler.seed", "scorer.seed")]

    def describe(row: pd.Series) -> str:
        parts = [f"{c.split('.', 1)[1]}={category_label(row[c])}" for c in varying if pd.notna(row[c])]
        return " ".join(parts) or str(row.get("decoding", row["key"]))

    built = df.apply(describe, axis=1) if len(df) else pd.Series(dtype=str)
    if "label" not in df:
        return built
    # task and model have columns of their own; "sampler.steps=8" reads as well as "steps=8"
    shown = df["label"].fillna("").map(lambda label: " ".join(
        part.split(".", 1)[1] if part.startswith(SETTING_PREFIXES) else part
        for part in label.split() if not part.startswith(("task=", "model="))))
    return shown.where(shown.ne(""), built)
