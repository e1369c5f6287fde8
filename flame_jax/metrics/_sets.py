"""Set-overlap metrics of a predicted medication set against the true set, one value per visit.

Each visit is a multi-hot row over a fixed drug vocabulary of ``meds`` drugs. With ``P`` the
predicted set, ``Y`` the true set and ``tp = |P ∩ Y|``, every function here returns one value per
row and defines the degenerate cases (empty sets) as 0 rather than NaN, as SafeDrug does.
"""

import jax
import jax.numpy as jnp

from flame_jax.arraytypes import Array, ArrayLike, Bool, Float
from flame_jax.metrics._reduce import safe_divide

__all__ = ["f1", "jaccard", "precision", "recall"]


def _counts(
    pred: Bool[ArrayLike, "batch meds"], truth: Bool[ArrayLike, "batch meds"]
) -> tuple[Float[Array, " batch"], Float[Array, " batch"], Float[Array, " batch"]]:
    """``(|P ∩ Y|, |P|, |Y|)`` per row, as float32 (exact for any realistic vocabulary)."""
    pred = jnp.asarray(pred, dtype=bool)
    truth = jnp.asarray(truth, dtype=bool)
    tp = jnp.sum(pred & truth, axis=-1).astype(jnp.float32)
    n_pred = jnp.sum(pred, axis=-1).astype(jnp.float32)
    n_true = jnp.sum(truth, axis=-1).astype(jnp.float32)
    return tp, n_pred, n_true


@jax.jit
def jaccard(
    pred: Bool[ArrayLike, "batch meds"], truth: Bool[ArrayLike, "batch meds"]
) -> Float[Array, " batch"]:
    """Jaccard similarity of the predicted and true medication sets, per visit.

    ``jaccard = |P ∩ Y| / |P ∪ Y| = tp / (tp + fp + fn)``, and 0 when ``P ∪ Y = ∅``.

    Args:
        pred: predicted sets, multi-hot, shape ``[batch, meds]``.
        truth: true sets, multi-hot, shape ``[batch, meds]``.

    Returns:
        Jaccard similarity per visit, float32, shape ``[batch]``.

    Examples:
        >>> import jax.numpy as jnp
        >>> pred = jnp.array([[1, 1, 0, 0], [0, 0, 0, 0]], dtype=bool)
        >>> truth = jnp.array([[0, 1, 1, 0], [0, 0, 0, 0]], dtype=bool)
        >>> [round(v, 4) for v in jaccard(pred, truth).tolist()]
        [0.3333, 0.0]

    References:
        Yang et al., "SafeDrug: Dual Molecular Graph Encoders for Recommending Effective and Safe
        Drug Combinations", IJCAI 2021. FLAME, arXiv:2505.20218, 2025.
    """
    tp, n_pred, n_true = _counts(pred, truth)
    return safe_divide(tp, n_pred + n_true - tp)


@jax.jit
def precision(
    pred: Bool[ArrayLike, "batch meds"], truth: Bool[ArrayLike, "batch meds"]
) -> Float[Array, " batch"]:
    """Precision of the predicted medication set, per visit.

    ``precision = |P ∩ Y| / |P|``, and 0 when ``P = ∅``.

    Args:
        pred: predicted sets, multi-hot, shape ``[batch, meds]``.
        truth: true sets, multi-hot, shape ``[batch, meds]``.

    Returns:
        Precision per visit, float32, shape ``[batch]``.

    Examples:
        >>> import jax.numpy as jnp
        >>> pred = jnp.array([[1, 1, 0, 0], [0, 0, 0, 0]], dtype=bool)
        >>> truth = jnp.array([[0, 1, 1, 1], [1, 0, 0, 0]], dtype=bool)
        >>> [round(v, 4) for v in precision(pred, truth).tolist()]
        [0.5, 0.0]

    References:
        Yang et al., "SafeDrug", IJCAI 2021. FLAME, arXiv:2505.20218, 2025.
    """
    tp, n_pred, _ = _counts(pred, truth)
    return safe_divide(tp, n_pred)


@jax.jit
def recall(
    pred: Bool[ArrayLike, "batch meds"], truth: Bool[ArrayLike, "batch meds"]
) -> Float[Array, " batch"]:
    """Recall of the predicted medication set, per visit.

    ``recall = |P ∩ Y| / |Y|``, and 0 when ``Y = ∅``.

    Args:
        pred: predicted sets, multi-hot, shape ``[batch, meds]``.
        truth: true sets, multi-hot, shape ``[batch, meds]``.

    Returns:
        Recall per visit, float32, shape ``[batch]``.

    Examples:
        >>> import jax.numpy as jnp
        >>> pred = jnp.array([[1, 1, 0, 0], [1, 0, 0, 0]], dtype=bool)
        >>> truth = jnp.array([[0, 1, 1, 1], [0, 0, 0, 0]], dtype=bool)
        >>> [round(v, 4) for v in recall(pred, truth).tolist()]
        [0.3333, 0.0]

    References:
        Yang et al., "SafeDrug", IJCAI 2021. FLAME, arXiv:2505.20218, 2025.
    """
    tp, _, n_true = _counts(pred, truth)
    return safe_divide(tp, n_true)


@jax.jit
def f1(
    pred: Bool[ArrayLike, "batch meds"], truth: Bool[ArrayLike, "batch meds"]
) -> Float[Array, " batch"]:
    """F1 score (harmonic mean of precision and recall) of the predicted set, per visit.

    ``f1 = 2 · precision · recall / (precision + recall)``, and 0 when ``precision + recall = 0``.
    Whenever it is defined this equals ``2 |P ∩ Y| / (|P| + |Y|)``, which is what is computed (one
    division instead of three; 0 when ``|P| + |Y| = 0``).

    Args:
        pred: predicted sets, multi-hot, shape ``[batch, meds]``.
        truth: true sets, multi-hot, shape ``[batch, meds]``.

    Returns:
        F1 per visit, float32, shape ``[batch]``.

    Examples:
        >>> import jax.numpy as jnp
        >>> pred = jnp.array([[1, 1, 0, 0], [1, 0, 0, 0]], dtype=bool)
        >>> truth = jnp.array([[0, 1, 1, 1], [0, 1, 0, 0]], dtype=bool)
        >>> [round(v, 4) for v in f1(pred, truth).tolist()]
        [0.4, 0.0]

    References:
        Yang et al., "SafeDrug", IJCAI 2021. FLAME, arXiv:2505.20218, 2025.
    """
    tp, n_pred, n_true = _counts(pred, truth)
    return safe_divide(2 * tp, n_pred + n_true)
