"""Medication-recommendation metrics: set overlap, PRAUC, DDI rate, #Med, and SafeDrug's bootstrap.

Per-visit inputs over a fixed drug vocabulary of ``meds`` drugs: predicted and true sets as
multi-hot ``[batch, meds]`` boolean rows, optional per-drug ``scores`` (for PRAUC), an optional
``[meds, meds]`` drug-drug interaction adjacency, and visit ``weights`` (0 = padding row). Every
empty-set or zero-weight case is 0, never NaN; metrics that need a missing input are ``None``.

Every public array function is pure and, like ``jax.nn``'s, wrapped in ``jax.jit``: a direct call
compiles once per input shape (pad visits to a few bucket sizes with weight-0 rows), and the
functions compose under an outer ``jit`` or ``vmap``. The bootstrap functions take ``rounds``,
``fraction``, ``replace`` and ``num_patients`` as static arguments.

References:
    Yang et al., "SafeDrug: Dual Molecular Graph Encoders for Recommending Effective and Safe Drug
    Combinations", IJCAI 2021. FLAME, arXiv:2505.20218, 2025.
"""

from flame_jax.metrics._ranking import average_precision
from flame_jax.metrics._reduce import safe_divide, weighted_mean
from flame_jax.metrics._report import METRIC_COLUMNS, MetricsReport, evaluate_sets, format_table
from flame_jax.metrics._resample import bootstrap_weights
from flame_jax.metrics._safety import (
    ddi_pair_counts,
    ddi_rate,
    ddi_rate_per_visit,
    interaction_matrix,
    pooled_ddi_rate,
)
from flame_jax.metrics._sets import f1, jaccard, precision, recall
from flame_jax.metrics._summary import (
    SetMetrics,
    VisitMetrics,
    bootstrap,
    set_metrics,
    summarize,
    visit_metrics,
)

__all__ = [
    "METRIC_COLUMNS",
    "MetricsReport",
    "SetMetrics",
    "VisitMetrics",
    "average_precision",
    "bootstrap",
    "bootstrap_weights",
    "ddi_pair_counts",
    "ddi_rate",
    "ddi_rate_per_visit",
    "evaluate_sets",
    "f1",
    "format_table",
    "interaction_matrix",
    "jaccard",
    "pooled_ddi_rate",
    "precision",
    "recall",
    "safe_divide",
    "set_metrics",
    "summarize",
    "visit_metrics",
    "weighted_mean",
]
