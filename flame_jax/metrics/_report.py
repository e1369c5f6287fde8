"""Host-side reporting: evaluate predicted sets with the bootstrap protocol and format the table.

This is the thin layer between the pure metric functions and a person reading results: it pads
the visits to a power-of-two bucket (so one compiled program serves every split of a similar
size), runs the jitted bootstrap, and turns the result into plain floats and a text table.
"""

import dataclasses
import functools
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from flame_jax.metrics._summary import SetMetrics, bootstrap

__all__ = ["METRIC_COLUMNS", "MetricsReport", "evaluate_sets", "format_table"]

# (field of SetMetrics, column title), in the order papers of this field report them.
METRIC_COLUMNS = (
    ("jaccard", "Jaccard"),
    ("f1", "F1"),
    ("prauc", "PRAUC"),
    ("ddi_rate", "DDI"),
    ("num_meds", "#Med"),
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class MetricsReport:
    """Bootstrap mean and std of every metric for one recommender (None = not available)."""

    name: str
    mean: dict[str, float | None]
    std: dict[str, float | None]
    visits: int
    patients: int
    rounds: int

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _pad_rows(x: np.ndarray, size: int, fill) -> np.ndarray:
    out = np.full((size, *x.shape[1:]), fill, dtype=x.dtype)
    out[: len(x)] = x
    return out


@functools.partial(jax.jit, static_argnames=("rounds", "fraction", "replace", "num_patients"))
def _jitted_bootstrap(pred, truth, patient, scores, ddi, key, *, rounds, fraction, replace,
                      num_patients):  # fmt: skip
    return bootstrap(
        pred,
        truth,
        patient,
        key=key,
        scores=scores,
        ddi=ddi,
        rounds=rounds,
        fraction=fraction,
        replace=replace,
        num_patients=num_patients,
    )


def _to_floats(m: SetMetrics) -> dict[str, float | None]:
    return {k: (None if v is None else float(v)) for k, v in m._asdict().items()}


def evaluate_sets(
    name: str,
    pred: np.ndarray,
    truth: np.ndarray,
    patient: np.ndarray,
    *,
    key: jax.Array,
    scores: np.ndarray | None = None,
    ddi: np.ndarray | None = None,
    rounds: int = 10,
    fraction: float = 0.8,
    replace: bool = True,
) -> MetricsReport:
    """Evaluates predicted medication sets with SafeDrug's bootstrap protocol.

    Args:
      name: the recommender's name, for the table.
      pred: [visits, meds] bool predicted sets.
      truth: [visits, meds] bool ground-truth sets.
      patient: [visits] int patient id of every visit (any integers; visits of one patient are
        resampled together).
      key: PRNG key for the resampling.
      scores: optional [visits, meds] float scores for PRAUC.
      ddi: optional [meds, meds] interaction adjacency; without it the DDI columns are None.
      rounds, fraction, replace: the bootstrap protocol (SafeDrug: 10 rounds of 80% of the test
        patients, drawn with replacement).

    Returns:
      A :class:`MetricsReport` with the mean and the std over rounds.
    """
    pred = np.asarray(pred, dtype=bool)
    n = len(pred)
    _, patient_number = np.unique(np.asarray(patient), return_inverse=True)
    num_patients = int(patient_number.max()) + 1 if n else 0
    size = 8
    while size < n:
        size *= 2
    args = (
        jnp.asarray(_pad_rows(pred, size, False)),
        jnp.asarray(_pad_rows(np.asarray(truth, dtype=bool), size, False)),
        jnp.asarray(_pad_rows(patient_number.astype(np.int32), size, -1)),
        None if scores is None else jnp.asarray(_pad_rows(np.asarray(scores, np.float32), size, 0)),
        None if ddi is None else jnp.asarray(np.asarray(ddi, np.float32)),
    )
    mean, std = _jitted_bootstrap(
        *args,
        key,
        rounds=rounds,
        fraction=fraction,
        replace=replace,
        num_patients=max(num_patients, 1),
    )
    return MetricsReport(
        name=name,
        mean=_to_floats(mean),
        std=_to_floats(std),
        visits=n,
        patients=num_patients,
        rounds=rounds,
    )


def format_table(reports: Sequence[MetricsReport], *, digits: int = 4) -> str:
    """A Markdown table of mean ± std per metric; "n/a" where a metric is not available.

    Examples:
      >>> r = MetricsReport(name="oracle", mean={"jaccard": 0.5, "f1": 0.6, "prauc": None,
      ...     "ddi_rate": 0.07, "num_meds": 8.0}, std={"jaccard": 0.01, "f1": 0.02, "prauc": None,
      ...     "ddi_rate": 0.003, "num_meds": 0.1}, visits=10, patients=4, rounds=10)
      >>> print(format_table([r], digits=3))
      | recommender | Jaccard | F1 | PRAUC | DDI | #Med |
      |---|---|---|---|---|---|
      | oracle | 0.500 ± 0.010 | 0.600 ± 0.020 | n/a | 0.070 ± 0.003 | 8.000 ± 0.100 |
    """
    head = "| recommender | " + " | ".join(title for _, title in METRIC_COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(METRIC_COLUMNS) + 1)]
    for r in reports:
        cells = []
        for field, _ in METRIC_COLUMNS:
            m, s = r.mean.get(field), r.std.get(field)
            if m is None or (isinstance(m, float) and math.isnan(m)):
                cells.append("n/a")
            else:
                cells.append(f"{m:.{digits}f} ± {s:.{digits}f}")
        lines.append(f"| {r.name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
