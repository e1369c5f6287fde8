"""A sweep of Vancouver's numeric parameters over synthetic review matrices, in one program.

``flame-jax sweep`` runs it for a ``kind: consensus`` file (``experiments/flame/
sweep_consensus.yaml``); every grid point is scored at once by ``vancouver_grid`` under one jit.
"""

import dataclasses
import itertools
import math
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from flame_jax._io import write_bytes_atomic, write_json_atomic
from flame_jax._records import record_to_plain
from flame_jax._rows import format_csv, format_rows_markdown, spread
from flame_jax.consensus._vancouver import vancouver_grid
from flame_jax.plots import save_figure

__all__ = ["ConsensusSweepConfig", "consensus_sweep", "run_consensus_sweep", "save_consensus_plot"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class ConsensusSweepConfig:
    """A grid of Vancouver parameters scored on synthetic peer-review matrices.

    Each vignette has one answer per model with a planted quality q ~ N(0.5, answer_spread),
    clipped to [0, 1]; reviewer r grades every other model's answer as q + N(0, noise_r) (self
    review excluded), and each review fails (a missing edge) with probability
    ``failure_rate``. Vancouver runs at every point of eps x variance_floor x init_variance at
    once (``flame_jax.consensus.vancouver_grid``, vmapped over the vignettes, one jit).

    Attributes:
        vignettes: vignettes per seed.
        reviewer_noise: grading noise std of each model (its length is the ensemble size).
        answer_spread: std of the planted answer quality.
        failure_rate: probability that a review is missing.
        seeds: one synthetic set per seed (the tables give mean and std over seeds).
        eps, variance_floor, init_variance: the grid (``variance_floor`` 0: no floor).
        iterations, leave_one_out: Vancouver's static settings.
    """

    vignettes: int = 2000
    reviewer_noise: tuple[float, ...] = (0.05, 0.1, 0.2, 0.4, 0.8)
    answer_spread: float = 0.2
    failure_rate: float = 0.1
    seeds: tuple[int, ...] = (0, 1, 2)
    eps: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1)
    variance_floor: tuple[float, ...] = (0.0, 1e-3, 1e-2)
    init_variance: tuple[float, ...] = (0.1, 1.0)
    iterations: int = 20
    leave_one_out: bool = True

    def __post_init__(self) -> None:
        if self.vignettes < 1 or len(self.reviewer_noise) < 3 or not self.seeds:
            raise ValueError(
                "ConsensusSweepConfig: vignettes >= 1, at least 3 reviewer_noise values and one "
                f"seed needed, got {self.vignettes}, {list(self.reviewer_noise)}, "
                f"{list(self.seeds)}"
            )
        if any(not (math.isfinite(s) and s >= 0) for s in self.reviewer_noise):
            raise ValueError(f"reviewer_noise must be >= 0, got {list(self.reviewer_noise)}")
        if not (0 <= self.failure_rate < 1 and self.answer_spread > 0):
            raise ValueError(
                f"failure_rate must be in [0, 1) and answer_spread > 0, got {self.failure_rate}, "
                f"{self.answer_spread}"
            )
        for name, ok in (("eps", lambda v: v > 0), ("variance_floor", lambda v: v >= 0),
                         ("init_variance", lambda v: v > 0)):  # fmt: skip
            values = getattr(self, name)
            bad = [v for v in values if not (math.isfinite(v) and ok(v))]
            if not values or bad:
                raise ValueError(f"{name}: needs values in range, got {list(values)}")
        if self.iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {self.iterations}")


def _review_matrices(config: ConsensusSweepConfig, seed: int):
    rng = np.random.default_rng([seed, 2025])
    v, n = config.vignettes, len(config.reviewer_noise)
    quality = np.clip(rng.normal(0.5, config.answer_spread, (v, n)), 0.0, 1.0)
    noise = np.asarray(config.reviewer_noise, np.float64)[None, :, None]
    grades = quality[:, None, :] + rng.normal(size=(v, n, n)) * noise  # [vignettes, r, items]
    mask = ~np.eye(n, dtype=bool)[None] & (rng.random((v, n, n)) >= config.failure_rate)
    return grades.astype(np.float32), mask, quality


def _consensus_scores(grade, reliability, quality, best, seen, precision_rank) -> dict[str, float]:
    out = {
        "top1": float(np.mean(np.where(seen, grade, -np.inf).argmax(-1) == best)),
        "rmse": float(np.sqrt(np.mean(np.square(grade - quality)[seen]))),
    }
    if reliability is not None:
        ranks = np.argsort(np.argsort(-reliability, axis=-1), axis=-1)
        d = ranks - precision_rank[None]
        n = reliability.shape[-1]
        out["reliability_rank"] = float(np.mean(1 - 6 * np.sum(d * d, -1) / (n**3 - n)))
    return out


def consensus_sweep(config: ConsensusSweepConfig) -> list[dict[str, Any]]:
    """Top-1 accuracy and grade error of Vancouver at every grid point, and of the plain mean.

    Per seed and point: ``top1`` = fraction of vignettes whose highest consensus grade is the
    best planted answer; ``rmse`` = root mean squared error of the consensus grades against the
    planted qualities; ``reliability_rank`` = Spearman correlation between the reviewers'
    reliabilities and their true precision (1 / noise), averaged over vignettes. The row
    ``method: mean`` is the unweighted mean of the observed grades (no reviewer model).

    Returns:
        Rows ``{method, eps, variance_floor, init_variance, <metric>_mean, <metric>_std}``,
        mean and sample std over ``config.seeds``.
    """

    points = list(itertools.product(config.eps, config.variance_floor, config.init_variance))
    eps, floor, init = (jnp.asarray(np.array(c, np.float32)) for c in zip(*points, strict=True))

    @jax.jit
    def run(grades, mask):
        def one(g, m):
            return vancouver_grid(g, m, eps=eps, variance_floor=floor, init_variance=init,
                                  iterations=config.iterations,
                                  leave_one_out=config.leave_one_out)  # fmt: skip

        res = jax.vmap(one)(grades, mask)
        return res.grade, res.reliability, res.item_count

    precision_rank = np.argsort(np.argsort(np.asarray(config.reviewer_noise)))  # 0: least noisy
    per_seed: dict[tuple, list[dict[str, float]]] = {}
    for seed in config.seeds:
        grades, mask, quality = _review_matrices(config, seed)
        outputs = run(jnp.asarray(grades), jnp.asarray(mask))
        grade, reliability, count = (np.asarray(x, np.float64) for x in outputs)
        best = quality.argmax(-1)
        seen = count[:, 0, :] > 0  # [vignettes, items]
        observed = np.where(mask, grades, 0.0).sum(1) / np.maximum(mask.sum(1), 1)
        mean_grade = np.where(seen, observed, 0.0)

        truth = (quality, best, seen, precision_rank)
        per_seed.setdefault(("mean", None, None, None), []).append(
            _consensus_scores(mean_grade, None, *truth)
        )
        for p, (e, f, i) in enumerate(points):
            per_seed.setdefault(("vancouver", e, f, i), []).append(
                _consensus_scores(grade[:, p], reliability[:, p], *truth)
            )
    rows = []
    for (method, e, f, i), runs in per_seed.items():
        row: dict[str, Any] = {"method": method, "eps": e, "variance_floor": f,
                               "init_variance": i, "seeds": len(runs)}  # fmt: skip
        for m in ("top1", "rmse", "reliability_rank"):
            if m in runs[0]:
                row[f"{m}_mean"], row[f"{m}_std"] = spread([r[m] for r in runs])
        rows.append(row)
    return rows


def save_consensus_plot(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """Top-1 accuracy and RMSE against eps per (floor, initial variance), seed std as bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9.6, 3.6))
    base = next((r for r in rows if r["method"] == "mean"), None)
    series: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if r["method"] == "vancouver":
            series.setdefault(
                f"floor={r['variance_floor']:g}, V0={r['init_variance']:g}", []
            ).append(r)
    for a, m in zip(axes, ("top1", "rmse"), strict=True):
        for label, pts in series.items():
            pts = sorted(pts, key=lambda r: r["eps"])
            ys = [r[f"{m}_mean"] for r in pts]
            err = [r[f"{m}_std"] for r in pts]
            xs = [r["eps"] for r in pts]
            a.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=label)
        if base is not None:
            a.axhline(base[f"{m}_mean"], color="k", linestyle=":", label="plain mean")
        a.set_xscale("log")
        a.set_xlabel("eps")
        a.set_title({"top1": "top-1 accuracy (best answer chosen)", "rmse": "grade RMSE"}[m],
                    fontsize=9)  # fmt: skip
        a.grid(alpha=0.3)
    axes[0].legend(fontsize=6)
    fig.tight_layout()
    return save_figure(fig, path)


def run_consensus_sweep(config: ConsensusSweepConfig, out: str | Path) -> list[dict[str, Any]]:
    """Runs :func:`consensus_sweep`; writes ``consensus.csv``, ``.md``, ``.png`` in ``out``."""

    root = Path(out)
    rows = consensus_sweep(config)
    write_json_atomic(root / "consensus_sweep.json", record_to_plain(config))
    write_bytes_atomic(root / "consensus.csv", format_csv(rows).encode())
    write_bytes_atomic(root / "consensus.md", (format_rows_markdown(rows) + "\n").encode())
    save_consensus_plot(rows, root / "consensus.png")
    return rows
