"""Ranking metric: average precision (PRAUC) of per-drug scores against the true set, per visit."""

import jax
import jax.numpy as jnp
from jax import lax

from flame_jax.arraytypes import Array, ArrayLike, Bool, Float, Int
from flame_jax.metrics._reduce import safe_divide

__all__ = ["average_precision"]


def _ap_from_sorted(
    sorted_key: Array, sorted_label: Int[Array, "batch meds"]
) -> Float[Array, " batch"]:
    """AP from rows sorted ascending by score, with each element's 0/1 label alongside.

    ``sorted_key`` is anything whose equality is score equality (the scores themselves, or an
    order-preserving integer image). For position ``t`` the tie group starts at ``g(t)`` and
    ``prec(s_t) = (|Y| - positives before g(t)) / (meds - g(t))``. Both quantities are taken
    at the group start by one running maximum (prefix counts never decrease, so the latest
    group start holds the largest value).
    """
    batch, num_meds = sorted_label.shape
    index = lax.broadcasted_iota(jnp.int32, (batch, num_meds), 1)
    is_group_start = jnp.concatenate(
        [jnp.ones((batch, 1), bool), sorted_key[:, 1:] != sorted_key[:, :-1]], axis=1
    )
    positives_before = jnp.cumsum(sorted_label, axis=1) - sorted_label
    if num_meds < 46_000:  # (meds + 1)**2 < 2**31: pack both into one int32 running maximum
        packed = jnp.where(is_group_start, index * (num_meds + 1) + positives_before, 0)
        packed = lax.cummax(packed, axis=1)
        group_start, positives_before_group = packed // (num_meds + 1), packed % (num_meds + 1)
    else:
        group_start = lax.cummax(jnp.where(is_group_start, index, 0), axis=1)
        positives_before_group = lax.cummax(jnp.where(is_group_start, positives_before, 0), axis=1)
    num_positive = jnp.sum(sorted_label, axis=1)
    positives_at_or_above = (num_positive[:, None] - positives_before_group).astype(jnp.float32)
    num_at_or_above = (num_meds - group_start).astype(jnp.float32)  # >= 1 always
    precision_at = jnp.where(sorted_label > 0, positives_at_or_above / num_at_or_above, 0.0)
    return safe_divide(jnp.sum(precision_at, axis=1), num_positive)


def _ap_nonnegative(
    scores: Float[Array, "batch meds"], positive: Bool[Array, "batch meds"]
) -> Float[Array, " batch"]:
    """Fast path for float32 scores >= 0: one single-operand sort of 32-bit integer keys.

    The bits of a non-negative float32 read as an unsigned integer are ordered like the floats
    and leave the top bit free, so ``bits << 1 | label`` sorts by score and still carries the
    label. XLA sorts such a plain integer array several times faster than a (score, label) pair.
    """
    scores = jnp.where(scores == 0, jnp.zeros_like(scores), scores)  # -0.0 ties with +0.0
    bits = lax.bitcast_convert_type(scores, jnp.uint32)
    packed = jnp.sort((bits << 1) | positive.astype(jnp.uint32), axis=1)
    return _ap_from_sorted(packed >> 1, (packed & 1).astype(jnp.int32))


def _ap_general(
    scores: Float[Array, "batch meds"], positive: Bool[Array, "batch meds"]
) -> Float[Array, " batch"]:
    """Any real scores: sort (score, label) pairs by score."""
    sorted_scores, sorted_label = lax.sort(
        (scores, positive.astype(jnp.int32)), dimension=1, num_keys=1
    )
    return _ap_from_sorted(sorted_scores, sorted_label)


@jax.jit
def average_precision(
    scores: Float[ArrayLike, "batch meds"], truth: Bool[ArrayLike, "batch meds"]
) -> Float[Array, " batch"]:
    """Average precision of each visit's drug scores against its true medication set (PRAUC).

    With ``Y`` the true set and precision at threshold ``s`` defined as
    ``prec(s) = #{j ∈ Y : s_j ≥ s} / #{j : s_j ≥ s}``,

    ``AP = (1 / |Y|) Σ_{i ∈ Y} prec(s_i)``,  and 0 when ``Y = ∅``.

    Tied scores share one threshold, so this is scikit-learn's ``average_precision_score`` (the
    step-wise ``Σ_n (R_n - R_{n-1}) P_n`` over distinct thresholds), ties included; it is not the
    interpolated trapezoid area. Cost is one sort per row, ``O(meds log meds)``, then a few
    linear scans, with no loop over visits. When every score is ``≥ 0`` (probabilities), the
    sort is of plain 32-bit integer keys, which is several times faster on CPU; otherwise
    (logits with negative values) (score, label) pairs are sorted.

    Args:
        scores: per-drug scores (probabilities or logits: only the order matters), float32 or
            narrower (float64 is kept under x64), shape ``[batch, meds]``. NaN scores give an
            unspecified result.
        truth: true sets, multi-hot, shape ``[batch, meds]``.

    Returns:
        Average precision per visit, float32, shape ``[batch]``.

    Examples:
        >>> import jax.numpy as jnp
        >>> scores = jnp.array([[0.9, 0.8, 0.3, 0.1], [0.5, 0.5, 0.5, 0.2]])
        >>> truth = jnp.array([[1, 0, 1, 0], [0, 1, 0, 1]], dtype=bool)
        >>> [round(v, 4) for v in average_precision(scores, truth).tolist()]
        [0.8333, 0.4167]

    References:
        Yang et al., "SafeDrug", IJCAI 2021 (PRAUC). FLAME, arXiv:2505.20218, 2025.
        Pedregosa et al., "Scikit-learn: Machine Learning in Python", JMLR 2011
        (``average_precision_score``).
    """
    scores = jnp.asarray(scores)
    positive = jnp.asarray(truth, dtype=bool)
    if scores.dtype != jnp.float64:
        scores = scores.astype(jnp.float32)  # exact for float16 / bfloat16
        return lax.cond(jnp.all(scores >= 0), _ap_nonnegative, _ap_general, scores, positive)
    return _ap_general(scores, positive)
