"""Per-visit metric records, their weighted (macro) aggregation, and the bootstrap over rounds."""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from flame_jax.arraytypes import Array, ArrayLike, Bool, Float, Int, Num, PRNGKeyArray
from flame_jax.metrics._ranking import average_precision
from flame_jax.metrics._reduce import safe_divide, weighted_mean, weights_or_ones
from flame_jax.metrics._resample import _STATIC, bootstrap_weights
from flame_jax.metrics._safety import ddi_pair_counts, pooled_ddi_rate
from flame_jax.metrics._sets import _counts

__all__ = [
    "SetMetrics",
    "VisitMetrics",
    "bootstrap",
    "set_metrics",
    "summarize",
    "visit_metrics",
]


class VisitMetrics(NamedTuple):
    """Per-visit metrics, every field shape ``[batch]``; a pytree (``None`` fields have no leaves).

    Attributes:
        jaccard: ``|P ∩ Y| / |P ∪ Y|`` (0 when both are empty).
        precision: ``|P ∩ Y| / |P|`` (0 when ``P = ∅``).
        recall: ``|P ∩ Y| / |Y|`` (0 when ``Y = ∅``).
        f1: harmonic mean of precision and recall (0 when both are 0).
        prauc: average precision of the scores against ``Y``; ``None`` when no scores were given.
        ddi_pairs: interacting unordered pairs in ``P`` (int32); ``None`` without a DDI matrix.
        num_pairs: ``C(|P|, 2)`` (int32).
        num_meds: ``|P|`` (int32).
    """

    jaccard: Float[Array, " batch"]
    precision: Float[Array, " batch"]
    recall: Float[Array, " batch"]
    f1: Float[Array, " batch"]
    prauc: Float[Array, " batch"] | None
    ddi_pairs: Int[Array, " batch"] | None
    num_pairs: Int[Array, " batch"]
    num_meds: Int[Array, " batch"]


class SetMetrics(NamedTuple):
    """Metrics aggregated over visits, each a float32 scalar (shape ``()``); a pytree.

    ``prauc`` is ``None`` when no scores were given; ``ddi_rate`` and ``ddi_rate_visit`` are
    ``None`` when no DDI matrix was given ("not available", which is not the same as 0).

    Attributes:
        jaccard: weighted mean over visits of the per-visit Jaccard similarity.
        precision: weighted mean of per-visit precision.
        recall: weighted mean of per-visit recall.
        f1: weighted mean of per-visit F1.
        prauc: weighted mean of per-visit average precision, or ``None``.
        ddi_rate: pooled DDI rate ``Σ w·ddi_pairs / Σ w·C(|P|, 2)`` (SafeDrug), or ``None``.
        ddi_rate_visit: weighted mean of per-visit DDI rates, or ``None``.
        num_meds: weighted mean predicted set size (#Med).
    """

    jaccard: Float[Array, ""]
    precision: Float[Array, ""]
    recall: Float[Array, ""]
    f1: Float[Array, ""]
    prauc: Float[Array, ""] | None
    ddi_rate: Float[Array, ""] | None
    ddi_rate_visit: Float[Array, ""] | None
    num_meds: Float[Array, ""]

    def as_dict(self) -> dict[str, float | None]:
        """Host-side ``{name: float or None}`` for printing and logging (not for use under jit).

        Examples:
            >>> import jax.numpy as jnp
            >>> m = set_metrics(jnp.array([[1, 0]], dtype=bool), jnp.array([[1, 1]], dtype=bool))
            >>> m.as_dict()["recall"], m.as_dict()["prauc"]
            (0.5, None)
        """
        return {
            name: None if value is None else float(value) for name, value in self._asdict().items()
        }


@jax.jit
def visit_metrics(
    pred: Bool[ArrayLike, "batch meds"],
    truth: Bool[ArrayLike, "batch meds"],
    *,
    scores: Float[ArrayLike, "batch meds"] | None = None,
    ddi: Num[ArrayLike, "meds meds"] | Bool[ArrayLike, "meds meds"] | None = None,
) -> VisitMetrics:
    """All per-visit metrics of predicted medication sets against the true sets.

    See :func:`~flame_jax.metrics.jaccard`, :func:`~flame_jax.metrics.precision`,
    :func:`~flame_jax.metrics.recall`, :func:`~flame_jax.metrics.f1`,
    :func:`~flame_jax.metrics.average_precision` and :func:`~flame_jax.metrics.ddi_pair_counts`
    for the formulas; every empty-set case is 0, never NaN. Wrapped in ``jax.jit``; a ``None``
    argument is an empty pytree, so each combination of given inputs compiles once.

    Args:
        pred: predicted sets, multi-hot, shape ``[batch, meds]``.
        truth: true sets, multi-hot, shape ``[batch, meds]``.
        scores: per-drug scores for PRAUC, shape ``[batch, meds]``; ``None`` leaves
            ``prauc`` as ``None``.
        ddi: drug-drug interaction adjacency, shape ``[meds, meds]`` (entries ``> 0`` interact;
            symmetrised, diagonal ignored); ``None`` leaves ``ddi_pairs`` as ``None``.

    Returns:
        A :class:`VisitMetrics` of ``[batch]`` arrays.

    Raises:
        ValueError: if ``pred`` and ``truth`` (or ``scores``) differ in shape.

    Examples:
        >>> import jax.numpy as jnp
        >>> pred = jnp.array([[1, 1, 0], [0, 0, 0]], dtype=bool)
        >>> truth = jnp.array([[0, 1, 1], [1, 0, 0]], dtype=bool)
        >>> per = visit_metrics(pred, truth, ddi=jnp.ones((3, 3)))
        >>> [round(v, 4) for v in per.jaccard.tolist()], per.ddi_pairs.tolist(), per.prauc
        ([0.3333, 0.0], [1, 0], None)

    References:
        Yang et al., "SafeDrug", IJCAI 2021. FLAME, arXiv:2505.20218, 2025.
    """
    pred = jnp.asarray(pred, dtype=bool)
    truth = jnp.asarray(truth, dtype=bool)
    if pred.shape != truth.shape or pred.ndim != 2:
        raise ValueError(
            f"pred and truth must both have shape [batch, meds]; got {pred.shape} and {truth.shape}"
        )
    if scores is not None and jnp.shape(scores) != pred.shape:
        raise ValueError(f"scores must have shape {pred.shape} like pred; got {jnp.shape(scores)}")

    tp, n_pred, n_true = _counts(pred, truth)
    size = jnp.sum(pred, axis=-1, dtype=jnp.int32)
    if ddi is None:
        ddi_pairs = None
        num_pairs = size * (size - 1) // 2
    else:
        ddi_pairs, num_pairs = ddi_pair_counts(pred, ddi)
    return VisitMetrics(
        jaccard=safe_divide(tp, n_pred + n_true - tp),
        precision=safe_divide(tp, n_pred),
        recall=safe_divide(tp, n_true),
        f1=safe_divide(2 * tp, n_pred + n_true),
        prauc=None if scores is None else average_precision(scores, truth),
        ddi_pairs=ddi_pairs,
        num_pairs=num_pairs,
        num_meds=size,
    )


@jax.jit
def summarize(
    per_visit: VisitMetrics, weights: Num[ArrayLike, " batch"] | None = None
) -> SetMetrics:
    """Aggregates per-visit metrics over visits: weighted macro average, pooled DDI rate.

    With visit weights ``w`` (0 = padding row, integer ``k`` = the visit counted ``k`` times):

    - ``jaccard, precision, recall, f1, prauc, num_meds`` = ``Σ w·x / Σ w``;
    - ``ddi_rate = Σ w·ddi_pairs / Σ w·C(|P|, 2)`` (pooled over all predicted pairs, SafeDrug);
    - ``ddi_rate_visit = Σ w·r / Σ w`` with ``r = ddi_pairs / C(|P|, 2)`` (0 when ``|P| < 2``).

    Every quotient with a zero denominator is 0 (so all-zero weights give all zeros, never NaN),
    and rows with weight 0 do not affect the result whatever they contain. ``None`` fields of
    ``per_visit`` stay ``None``.

    Args:
        per_visit: per-visit metrics from :func:`visit_metrics`, fields of shape ``[batch]``.
        weights: non-negative visit weights, shape ``[batch]``; ``None`` means all ones.

    Returns:
        A :class:`SetMetrics` of float32 scalars.

    Examples:
        >>> import jax.numpy as jnp
        >>> pred = jnp.array([[1, 1, 0], [0, 0, 1], [1, 1, 1]], dtype=bool)
        >>> truth = jnp.array([[0, 1, 0], [0, 0, 1], [0, 0, 0]], dtype=bool)
        >>> m = summarize(visit_metrics(pred, truth), weights=jnp.array([1.0, 1.0, 0.0]))
        >>> print(round(float(m.jaccard), 4), round(float(m.num_meds), 4), m.ddi_rate)
        0.75 1.5 None

    References:
        Yang et al., "SafeDrug", IJCAI 2021. FLAME, arXiv:2505.20218, 2025.
    """
    w = weights_or_ones(weights, per_visit.jaccard.shape[0])
    if per_visit.ddi_pairs is None:
        ddi_rate = ddi_rate_visit = None
    else:
        ddi_rate = pooled_ddi_rate(per_visit.ddi_pairs, per_visit.num_pairs, w)
        ddi_rate_visit = weighted_mean(safe_divide(per_visit.ddi_pairs, per_visit.num_pairs), w)
    return SetMetrics(
        jaccard=weighted_mean(per_visit.jaccard, w),
        precision=weighted_mean(per_visit.precision, w),
        recall=weighted_mean(per_visit.recall, w),
        f1=weighted_mean(per_visit.f1, w),
        prauc=None if per_visit.prauc is None else weighted_mean(per_visit.prauc, w),
        ddi_rate=ddi_rate,
        ddi_rate_visit=ddi_rate_visit,
        num_meds=weighted_mean(per_visit.num_meds, w),
    )


@jax.jit
def set_metrics(
    pred: Bool[ArrayLike, "batch meds"],
    truth: Bool[ArrayLike, "batch meds"],
    *,
    scores: Float[ArrayLike, "batch meds"] | None = None,
    ddi: Num[ArrayLike, "meds meds"] | Bool[ArrayLike, "meds meds"] | None = None,
    weights: Num[ArrayLike, " batch"] | None = None,
) -> SetMetrics:
    """All metrics of a batch of visits in one call: ``summarize(visit_metrics(...), weights)``.

    Wrapped in ``jax.jit``: every bucket of shapes compiles once, so pad a batch to a bucket size
    and give the padding rows weight 0. It also composes under an outer ``jit`` or ``vmap``.

    Args:
        pred: predicted sets, multi-hot, shape ``[batch, meds]``.
        truth: true sets, multi-hot, shape ``[batch, meds]``.
        scores: per-drug scores for PRAUC, shape ``[batch, meds]``, or ``None``.
        ddi: drug-drug interaction adjacency, shape ``[meds, meds]``, or ``None``.
        weights: non-negative visit weights (0 = padding), shape ``[batch]``; ``None`` = ones.

    Returns:
        A :class:`SetMetrics` of float32 scalars (``prauc`` / DDI fields ``None`` when their
        input is ``None``).

    Examples:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> pred = jnp.array([[1, 1, 0], [0, 1, 1]], dtype=bool)
        >>> truth = jnp.array([[1, 0, 0], [0, 1, 1]], dtype=bool)
        >>> scores = jnp.array([[0.9, 0.6, 0.1], [0.2, 0.7, 0.8]])
        >>> ddi = jnp.array([[0, 1, 0], [1, 0, 0], [0, 0, 0]])
        >>> m = jax.jit(set_metrics)(pred, truth, scores=scores, ddi=ddi)
        >>> {k: round(v, 4) for k, v in m.as_dict().items()}  # doctest: +NORMALIZE_WHITESPACE
        {'jaccard': 0.75, 'precision': 0.75, 'recall': 1.0, 'f1': 0.8333, 'prauc': 1.0,
         'ddi_rate': 0.5, 'ddi_rate_visit': 0.5, 'num_meds': 2.0}

    References:
        Yang et al., "SafeDrug", IJCAI 2021. FLAME, arXiv:2505.20218, 2025.
    """
    return summarize(visit_metrics(pred, truth, scores=scores, ddi=ddi), weights)


@functools.partial(jax.jit, static_argnames=_STATIC)
def bootstrap(
    pred: Bool[ArrayLike, "batch meds"],
    truth: Bool[ArrayLike, "batch meds"],
    patient: Int[ArrayLike, " batch"],
    *,
    key: PRNGKeyArray,
    scores: Float[ArrayLike, "batch meds"] | None = None,
    ddi: Num[ArrayLike, "meds meds"] | Bool[ArrayLike, "meds meds"] | None = None,
    rounds: int = 10,
    fraction: float = 0.8,
    replace: bool = True,
    num_patients: int,
) -> tuple[SetMetrics, SetMetrics]:
    """Mean and standard deviation of all metrics over SafeDrug's bootstrap rounds.

    The per-visit metrics are computed once; each round is then only a reweighting by
    :func:`bootstrap_weights`, and all rounds are summarised in one ``vmap`` over the weights:

    ``mean = (1/R) Σ_r m_r``,  ``std = sqrt((1/R) Σ_r (m_r - mean)²)`` (``ddof=0``, like the
    ``np.std`` in SafeDrug), with ``m_r = summarize(visit_metrics(...), w_r)``.

    Wrapped in ``jax.jit`` with the shape-fixing arguments static; inside an outer jit mark them
    static there too:
    ``jax.jit(bootstrap, static_argnames=("rounds", "num_patients", "replace", "fraction"))``.

    Args:
        pred: predicted sets, multi-hot, shape ``[batch, meds]``.
        truth: true sets, multi-hot, shape ``[batch, meds]``.
        patient: patient id of each visit in ``0 .. P-1``, ``-1`` for padding, shape ``[batch]``.
        key: PRNG key for the resampling.
        scores: per-drug scores for PRAUC, shape ``[batch, meds]``, or ``None``.
        ddi: drug-drug interaction adjacency, shape ``[meds, meds]``, or ``None``.
        rounds: number of bootstrap rounds (SafeDrug: 10).
        fraction: fraction of patients drawn per round (SafeDrug: 0.8).
        replace: draw patients with replacement (SafeDrug) or without.
        num_patients: number of patients ``P``.

    Returns:
        ``(mean, std)``, two :class:`SetMetrics` of float32 scalars; fields are ``None`` where
        their input (``scores`` / ``ddi``) is ``None``.

    Examples:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> pred = jnp.array([[1, 1, 0], [0, 1, 1], [1, 0, 0], [0, 0, 0]], dtype=bool)
        >>> truth = jnp.array([[1, 0, 0], [0, 1, 1], [1, 0, 1], [0, 0, 0]], dtype=bool)
        >>> patient = jnp.array([0, 0, 1, -1])
        >>> mean, std = bootstrap(pred, truth, patient, key=jax.random.key(0), num_patients=2)
        >>> bool(0 <= mean.jaccard <= 1), bool(std.jaccard >= 0), mean.prauc
        (True, True, None)

    References:
        Yang et al., "SafeDrug", IJCAI 2021 (evaluation protocol). FLAME, arXiv:2505.20218, 2025.
    """
    per_visit = visit_metrics(pred, truth, scores=scores, ddi=ddi)
    weights = bootstrap_weights(
        patient,
        key=key,
        rounds=rounds,
        fraction=fraction,
        replace=replace,
        num_patients=num_patients,
    )
    per_round = jax.vmap(summarize, in_axes=(None, 0))(per_visit, weights)
    mean = jax.tree.map(lambda x: jnp.mean(x, axis=0), per_round)
    std = jax.tree.map(lambda x: jnp.std(x, axis=0), per_round)
    return mean, std
