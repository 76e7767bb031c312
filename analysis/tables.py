"""Small table helpers shared by the report and the notebooks: Markdown tables and category labels."""

from __future__ import annotations

import numpy as np
import pandas as pd

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
