"""Rows of results (a list of dicts) as CSV and Markdown tables, for sweeps and reports.

A bottom-layer helper: plain Python, no flame_jax package imported.
"""

import csv
import io
import json
import math
from typing import Any

import numpy as np

__all__ = ["canonical", "format_csv", "format_rows_markdown", "spread"]


def canonical(value: Any) -> str:
    """``value`` as compact JSON with sorted keys: equal values, equal strings."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def spread(values: list[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample std (ddof 1; 0 for one value) of the available values (None, NaN left out).

    Examples:
        >>> spread([1.0, None, 3.0]), spread([2.0]), spread([None])
        ((2.0, 1.4142135623730951), (2.0, 0.0), (None, None))
    """
    xs = np.array([v for v in values if v is not None and math.isfinite(v)], np.float64)
    if not len(xs):
        return None, None
    return float(xs.mean()), float(xs.std(ddof=1)) if len(xs) > 1 else 0.0


def cell(v: Any) -> str:
    """One table cell: "" for None, 4 decimals for floats, canonical JSON for containers."""
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1e4 else f"{v:.4g}"
    if isinstance(v, str | int):
        return str(v)
    return canonical(v)


def columns(rows: list[dict[str, Any]]) -> list[str]:
    """The union of the rows' keys, in first-seen order."""
    cols: list[str] = []
    for row in rows:
        cols += [c for c in row if c not in cols]
    return cols


def format_csv(rows: list[dict[str, Any]]) -> str:
    """Rows as CSV (header from the union of the keys; empty cells for None)."""
    cols = columns(rows)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(cols)
    for row in rows:
        writer.writerow(["" if row.get(c) is None else
                         (canonical(row[c]) if isinstance(row[c], list | dict) else row[c])
                         for c in cols])  # fmt: skip
    return buf.getvalue()


def format_rows_markdown(rows: list[dict[str, Any]]) -> str:
    """Rows as a Markdown table (columns as in :func:`format_csv`)."""
    cols = columns(rows)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines)
