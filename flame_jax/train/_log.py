"""Training logs: JSONL metrics that survive a kill and a resume, and PNG training curves.

One row per logged step, ``{"step": int, ...scalars}``. Each row is appended and flushed to disk
before training goes on, so a kill loses at most the row being written. On resume from a
checkpoint at step S, :meth:`MetricsLog.open` drops rows with ``step > S`` (logged after the
checkpoint, they will be logged again) and a torn last line, so the resumed log equals an
uninterrupted run's log.
"""

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["MetricsLog", "read_metrics", "save_training_curves"]


def _scalar(name: str, value: Any) -> float | int | str | None:
    if isinstance(value, str | bool | int) or value is None:
        return value
    arr = np.asarray(value)
    if arr.size != 1:
        raise ValueError(f"metric {name!r} is not a scalar (shape {arr.shape})")
    x = arr.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None if math.isnan(x) else x  # JSON has no NaN; a NaN metric is logged as null
    return x


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of a metrics JSONL file; a torn last line (a kill mid-write) is ignored.

    Raises:
        ValueError: a line other than the last is not valid JSON (names the file and line).
    """
    path = Path(path)
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    rows = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break
            raise ValueError(f"{path}: line {i + 1} is not valid JSON") from None
    return rows


class MetricsLog:
    """Appends metric rows to a JSONL file (see the module docstring)."""

    def __init__(self, path: Path):
        self.path = path

    @classmethod
    def open(cls, path: str | os.PathLike, *, resume_step: int | None = None) -> "MetricsLog":
        """Opens ``path`` for appending.

        Args:
            path: the JSONL file.
            resume_step: None starts a fresh log (an existing file is replaced); an int keeps the
                rows with ``step <= resume_step`` and drops the rest.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        keep = [] if resume_step is None else [
            r for r in read_metrics(path) if r.get("step", -1) <= resume_step
        ]  # fmt: skip
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in keep))
        os.replace(tmp, path)
        return cls(path)

    def write(self, step: int | np.integer, metrics: Mapping[str, Any]) -> dict[str, Any]:
        """Appends one row and flushes it to disk; returns the row as written."""
        row = {"step": int(step), **{k: _scalar(k, v) for k, v in metrics.items()}}
        with self.path.open("a") as f:
            f.write(json.dumps(row, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
        return row


def save_training_curves(
    rows: Sequence[Mapping[str, Any]],
    keys: Sequence[str],
    path: str | os.PathLike,
    *,
    title: str = "",
) -> Path:
    """One panel per metric in ``keys`` against ``step``; keys absent from every row are skipped.

    Returns:
        The PNG's path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from flame_jax.plots import save_figure

    present = [k for k in keys if any(r.get(k) is not None for r in rows)]
    if not present:
        raise ValueError(f"none of the metrics {list(keys)} was logged")
    cols = min(3, len(present))
    nrows = -(-len(present) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.0 * nrows), squeeze=False)
    for ax, key in zip(axes.flat, present, strict=False):
        pts = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="." if len(pts) < 50 else None)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(present) :]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)
