"""Safety metrics: drug-drug interaction (DDI) pairs inside predicted medication sets."""

import jax
import jax.numpy as jnp

from flame_jax.arraytypes import Array, ArrayLike, Bool, Float, Int, Num
from flame_jax.metrics._reduce import safe_divide, weighted_mean, weighted_sum, weights_or_ones

__all__ = [
    "ddi_pair_counts",
    "ddi_rate",
    "ddi_rate_per_visit",
    "interaction_matrix",
    "pooled_ddi_rate",
]


@jax.jit
def interaction_matrix(
    ddi: Num[ArrayLike, "meds meds"] | Bool[ArrayLike, "meds meds"],
) -> Float[Array, "meds meds"]:
    """The 0/1 interaction matrix actually used: symmetric, zero diagonal, float32.

    Entry ``(i, j)`` is 1 when ``ddi[i, j] > 0`` or ``ddi[j, i] > 0`` and ``i != j``. The
    symmetrisation is SafeDrug's test ``ddi_A[i, j] == 1 or ddi_A[j, i] == 1``; the diagonal is
    ignored because a drug does not interact with itself within one set.

    Args:
        ddi: adjacency of the drug-drug interaction graph, bool/int/float, shape ``[meds, meds]``.
            Entries ``> 0`` mark an interacting pair.

    Returns:
        The cleaned adjacency, float32, shape ``[meds, meds]``.

    Examples:
        >>> import jax.numpy as jnp
        >>> print(interaction_matrix(jnp.array([[1, 2], [0, 0]])))
        [[0. 1.]
         [1. 0.]]
    """
    interacts = jnp.asarray(ddi) > 0
    interacts = interacts | interacts.T
    num_meds = interacts.shape[0]
    off_diagonal = ~jnp.eye(num_meds, dtype=bool)
    return (interacts & off_diagonal).astype(jnp.float32)


@jax.jit
def ddi_pair_counts(
    pred: Bool[ArrayLike, "batch meds"],
    ddi: Num[ArrayLike, "meds meds"] | Bool[ArrayLike, "meds meds"],
) -> tuple[Int[Array, " batch"], Int[Array, " batch"]]:
    """Interacting and total unordered drug pairs inside each predicted set.

    ``ddi_pairs = #{ {i, j} ⊆ P, i ≠ j : A_ij = 1 } = pᵀ A p / 2`` with ``p`` the multi-hot row and
    ``A`` the symmetric, zero-diagonal interaction matrix (see :func:`interaction_matrix`), and
    ``num_pairs = C(|P|, 2) = |P| (|P| - 1) / 2``.

    The product is a float32 matmul of 0/1 values at full precision, so the counts are exact
    (any ``meds < 2**12``) on every backend.

    Args:
        pred: predicted sets, multi-hot, shape ``[batch, meds]``.
        ddi: drug-drug interaction adjacency, bool/int/float, shape ``[meds, meds]``; entries
            ``> 0`` interact; the diagonal is ignored and the matrix is symmetrised.

    Returns:
        ``(ddi_pairs, num_pairs)``, both int32, shape ``[batch]``.

    Examples:
        >>> import jax.numpy as jnp
        >>> ddi = jnp.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]])
        >>> pred = jnp.array([[1, 1, 1], [1, 0, 1], [0, 1, 0]], dtype=bool)
        >>> bad, total = ddi_pair_counts(pred, ddi)
        >>> print(bad, total)
        [2 0 0] [3 1 0]

    References:
        Yang et al., "SafeDrug", IJCAI 2021 (DDI rate). FLAME, arXiv:2505.20218, 2025.
    """
    p = jnp.asarray(pred, dtype=bool).astype(jnp.float32)
    adjacency = interaction_matrix(ddi)
    neighbours = jnp.matmul(p, adjacency, precision=jax.lax.Precision.HIGHEST)
    twice_pairs = jnp.sum(neighbours * p, axis=-1)
    ddi_pairs = jnp.round(twice_pairs / 2).astype(jnp.int32)
    size = jnp.sum(jnp.asarray(pred, dtype=bool), axis=-1, dtype=jnp.int32)
    num_pairs = size * (size - 1) // 2
    return ddi_pairs, num_pairs


@jax.jit
def pooled_ddi_rate(
    ddi_pairs: Num[ArrayLike, " batch"],
    num_pairs: Num[ArrayLike, " batch"],
    weights: Num[ArrayLike, " batch"] | None = None,
) -> Float[Array, ""]:
    """``Σ w·ddi_pairs / Σ w·num_pairs``, 0 when the denominator is 0 (see :func:`ddi_rate`).

    Args:
        ddi_pairs: interacting pairs per visit, shape ``[batch]``.
        num_pairs: all pairs per visit, shape ``[batch]``.
        weights: visit weights, shape ``[batch]``; ``None`` means all ones.

    Returns:
        The pooled DDI rate, float32 scalar.

    Examples:
        >>> import jax.numpy as jnp
        >>> print(round(float(pooled_ddi_rate(jnp.array([1, 0]), jnp.array([3, 1]))), 4))
        0.25
    """
    ddi_pairs = jnp.asarray(ddi_pairs)
    w = weights_or_ones(weights, ddi_pairs.shape[0])
    return safe_divide(weighted_sum(ddi_pairs, w), weighted_sum(jnp.asarray(num_pairs), w))


@jax.jit
def ddi_rate(
    pred: Bool[ArrayLike, "batch meds"],
    ddi: Num[ArrayLike, "meds meds"] | Bool[ArrayLike, "meds meds"],
    weights: Num[ArrayLike, " batch"] | None = None,
) -> Float[Array, ""]:
    """Pooled DDI rate: interacting pairs over all predicted pairs, summed over visits.

    ``ddi_rate = Σ_v w_v · ddi_pairs_v / Σ_v w_v · C(|P_v|, 2)``, and 0 when the denominator is 0.
    This is the SafeDrug / PyHealth definition: visits with many drugs count more than visits with
    few, and visits with fewer than two drugs count not at all.

    Args:
        pred: predicted sets, multi-hot, shape ``[batch, meds]``.
        ddi: drug-drug interaction adjacency, shape ``[meds, meds]`` (see :func:`ddi_pair_counts`).
        weights: visit weights (0 = padding row, integers = multiplicities), shape ``[batch]``;
            ``None`` means all ones.

    Returns:
        The pooled DDI rate, float32 scalar.

    Examples:
        >>> import jax.numpy as jnp
        >>> ddi = jnp.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]])
        >>> pred = jnp.array([[1, 1, 1], [1, 0, 1]], dtype=bool)
        >>> print(round(float(ddi_rate(pred, ddi)), 4))  # (2 + 0) / (3 + 1)
        0.5

    References:
        Yang et al., "SafeDrug", IJCAI 2021. FLAME, arXiv:2505.20218, 2025.
    """
    ddi_pairs, num_pairs = ddi_pair_counts(pred, ddi)
    return pooled_ddi_rate(ddi_pairs, num_pairs, weights)


@jax.jit
def ddi_rate_per_visit(
    pred: Bool[ArrayLike, "batch meds"],
    ddi: Num[ArrayLike, "meds meds"] | Bool[ArrayLike, "meds meds"],
    weights: Num[ArrayLike, " batch"] | None = None,
) -> Float[Array, ""]:
    """Per-visit DDI rate, averaged over visits.

    ``ddi_rate_visit = Σ_v w_v · r_v / Σ_v w_v`` with ``r_v = ddi_pairs_v / C(|P_v|, 2)`` and
    ``r_v = 0`` when ``|P_v| < 2``; 0 when ``Σ w = 0``. Unlike :func:`ddi_rate`, every visit counts
    equally.

    Args:
        pred: predicted sets, multi-hot, shape ``[batch, meds]``.
        ddi: drug-drug interaction adjacency, shape ``[meds, meds]`` (see :func:`ddi_pair_counts`).
        weights: visit weights, shape ``[batch]``; ``None`` means all ones.

    Returns:
        The mean per-visit DDI rate, float32 scalar.

    Examples:
        >>> import jax.numpy as jnp
        >>> ddi = jnp.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]])
        >>> pred = jnp.array([[1, 1, 1], [1, 0, 1]], dtype=bool)
        >>> print(round(float(ddi_rate_per_visit(pred, ddi)), 4))  # (2/3 + 0/1) / 2
        0.3333

    References:
        Yang et al., "SafeDrug", IJCAI 2021. FLAME, arXiv:2505.20218, 2025.
    """
    ddi_pairs, num_pairs = ddi_pair_counts(pred, ddi)
    return weighted_mean(safe_divide(ddi_pairs, num_pairs), weights)
