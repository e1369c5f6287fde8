"""PNG plots of results (matplotlib, headless), written atomically next to the numbers.

A bottom-layer helper (DESIGN §3): it imports no flame_jax package, so every layer may draw with
it; callers hand it plain values (e.g. ``metrics.METRIC_COLUMNS`` for the metric names).
"""

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flame_jax._io import write_bytes_atomic

__all__ = ["save_figure", "save_metrics_plot"]


def save_figure(fig, path: str | os.PathLike, *, dpi: int = 120) -> Path:
    """Renders a matplotlib figure to PNG in memory, then writes it atomically and closes it.

    The PNG carries no creation timestamp, so the same figure gives the same bytes.
    """
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return write_bytes_atomic(path, buf.getvalue())


def save_metrics_plot(
    reports: Sequence[Any],
    path: str | os.PathLike,
    *,
    columns: Sequence[tuple[str, str]],
    title: str = "",
) -> Path:
    """Grouped bars (mean ± bootstrap std) of each metric for each recommender.

    ``reports`` are :class:`flame_jax.metrics.MetricsReport` (``name``, ``mean``, ``std``);
    ``columns`` are (field, title) pairs, normally ``flame_jax.metrics.METRIC_COLUMNS``.

    Rates in [0, 1] (Jaccard, F1, PRAUC, DDI) share the left panel; #Med has its own panel because
    its scale differs. Metrics that are not available are left out.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rate_cols = [(f, t) for f, t in columns if f != "num_meds"]
    fig, (ax, ax_med) = plt.subplots(
        1, 2, figsize=(10, 4), gridspec_kw={"width_ratios": [len(rate_cols), 1.3]}
    )
    width = 0.8 / max(len(reports), 1)
    x = np.arange(len(rate_cols))
    for i, r in enumerate(reports):
        means = [r.mean.get(f) for f, _ in rate_cols]
        stds = [r.std.get(f) for f, _ in rate_cols]
        keep = [m is not None for m in means]
        xs = x[keep] + (i - (len(reports) - 1) / 2) * width
        ax.bar(
            xs,
            [m for m, k in zip(means, keep, strict=True) if k],
            width,
            yerr=[s for s, k in zip(stds, keep, strict=True) if k],
            capsize=3,
            label=r.name,
        )
        if r.mean.get("num_meds") is not None:
            ax_med.bar(i, r.mean["num_meds"], 0.8, yerr=r.std["num_meds"], capsize=3)
    ax.set_xticks(x, [t for _, t in rate_cols])
    ax.set_ylim(0, 1)
    ax.set_ylabel("mean ± bootstrap std")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    ax_med.set_xticks(range(len(reports)), [r.name for r in reports], rotation=30, ha="right")
    ax_med.set_title("#Med")
    ax_med.grid(axis="y", alpha=0.3)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)
