"""Ensemble metrics: reviewer quality, compound accuracy, effectiveness, reliability, CI.

Pure functions over arrays; each is exact for padded inputs (masked entries contribute nothing).

References:
    de Alfaro & Shavlovsky, "CrowdGrader", UCSC-SOE-13-11 / arXiv:1308.5273 (2013), for the
    reviewer quality. Sanchez & Hitaj, "LLM Chemistry Estimation for Multi-LLM Recommendation",
    arXiv:2510.03930 (2025), for the compound accuracy, ensemble effectiveness, reliability score
    and complementarity index.
"""

import jax
import jax.numpy as jnp

from flame_jax.arraytypes import Array, ArrayLike, Bool, Float

__all__ = [
    "complementarity_index",
    "compound_accuracy",
    "ensemble_effectiveness",
    "reliability_score",
    "reviewer_quality",
]


def _safe_div(num: Array, den: Array) -> Array:
    """``num / den`` where ``den > 0``, else 0, without NaN in values or gradients."""
    ok = den > 0
    return jnp.where(ok, num / jnp.where(ok, den, 1), 0)


@jax.jit
def reviewer_quality(
    reviewer_variance: Float[ArrayLike, " models"],
    grades: Float[ArrayLike, "models items"],
    mask: Bool[ArrayLike, "models items"],
) -> Float[Array, " models"]:
    """Vancouver's reviewer quality ``rho_r = max(0, 1 - sqrt(v_r) / (sqrt(2) * SD(grades)))``.

    ``SD`` is the population standard deviation (ddof 0) of all observed grades; the ``sqrt(2)``
    turns the spread of one grade into the spread of the difference of two. ``rho = 1`` means
    perfect agreement with the consensus, 0 means no better than random grading. When every
    observed grade is equal (SD 0) every reviewer agrees with the consensus and gets 1; this is a
    deliberate difference from the original code, which divides 0 by 0 there and turns the NaN
    into quality 0.
    Reviewers without any edge get 0.

    Args:
        reviewer_variance: ``v_r`` per reviewer, shape ``[models]``.
        grades: grade matrix ``[models, items]``; entries outside ``mask`` are ignored (may be NaN).
        mask: true where reviewer ``r`` graded item ``i``.

    Returns:
        ``rho`` per reviewer in ``[0, 1]``, shape ``[models]``.

    Examples:
        >>> import jax.numpy as jnp
        >>> g = jnp.array([[0.0, 1.0], [1.0, 0.0]])
        >>> m = jnp.ones((2, 2), dtype=bool)
        >>> [round(x, 4) for x in reviewer_quality(jnp.array([0.0, 0.5]), g, m).tolist()]
        [1.0, 0.0]

    References:
        de Alfaro & Shavlovsky, CrowdGrader, arXiv:1308.5273 (2013), ``evaluate_users``.
    """
    mask = jnp.asarray(mask, dtype=bool)
    grades = jnp.asarray(grades)
    v = jnp.asarray(reviewer_variance, dtype=grades.dtype)
    g = jnp.where(mask, grades, 0)
    n = jnp.sum(mask).astype(g.dtype)
    mean = _safe_div(jnp.sum(g), n)
    var_all = _safe_div(jnp.sum(jnp.where(mask, (g - mean) ** 2, 0)), n)
    sigma = jnp.sqrt(2 * var_all)
    # sqrt has an infinite derivative at 0; route v = 0 through a safe branch.
    root_v = jnp.where(v > 0, jnp.sqrt(jnp.where(v > 0, v, 1)), 0)
    rho = jnp.where(
        sigma > 0,
        jnp.maximum(0, 1 - root_v / jnp.where(sigma > 0, sigma, 1)),
        jnp.ones_like(root_v),
    )
    has_edge = jnp.any(mask, axis=1)
    return jnp.where(has_edge, rho, 0)


def compound_accuracy(
    generation_accuracy: Float[ArrayLike, "*batch"],
    review_accuracy: Float[ArrayLike, "*batch"],
    has_gold: Bool[ArrayLike, "*batch"] | bool,
) -> Float[Array, "*batch"]:
    """Compound accuracy of (C)'s logs: ``0.75 gen + 0.25 rho`` with gold, else ``0.25/0.75``.

    Args:
        generation_accuracy: correctness of the model's answer against the gold answer (0/1 or a
            graded score in [0, 1]).
        review_accuracy: the model's Vancouver reviewer quality ``rho``.
        has_gold: whether a gold answer was available for the round (broadcast).

    Returns:
        The compound accuracy, same shape as the inputs.

    Examples:
        >>> import jax.numpy as jnp
        >>> acc = compound_accuracy(jnp.array([1.0, 1.0]), jnp.array([0.6, 0.6]),
        ...                         jnp.array([True, False]))
        >>> [round(x, 4) for x in acc.tolist()]
        [0.9, 0.7]

    References:
        Sanchez & Hitaj, arXiv:2510.03930 (2025), docstring of the trial-data loader.
    """
    gen = jnp.asarray(generation_accuracy)
    rho = jnp.asarray(review_accuracy, dtype=gen.dtype)
    w = jnp.where(jnp.asarray(has_gold, dtype=bool), 0.75, 0.25).astype(gen.dtype)
    return w * gen + (1 - w) * rho


@jax.jit
def ensemble_effectiveness(
    accuracy: Float[ArrayLike, "models items"],
    members: Bool[ArrayLike, " models"],
    mask: Bool[ArrayLike, "models items"] | None = None,
) -> Float[Array, ""]:
    """Fraction of items on which the ensemble's soft vote is correct.

    For each item the accuracies of the members that have a value for it (``mask``) are averaged
    as soft votes; the ensemble is correct on the item when that mean is ``> 0.5``. Items without
    any available member vote are skipped. Effectiveness is the fraction of the remaining items
    that are correct; 0 when no item remains.

    Args:
        accuracy: per-model, per-item accuracy in [0, 1], shape ``[models, items]``.
        members: which models form the ensemble, shape ``[models]``.
        mask: which (model, item) accuracies exist (padding, missing runs); all when omitted.

    Returns:
        A scalar in [0, 1].

    Examples:
        >>> import jax.numpy as jnp
        >>> acc = jnp.array([[1.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
        >>> round(float(ensemble_effectiveness(acc, jnp.array([True, True, True]))), 4)
        0.6667

    References:
        Sanchez & Hitaj, arXiv:2510.03930 (2025), ``evaluate_ensemble_effectiveness``.
    """
    acc = jnp.asarray(accuracy)
    if not jnp.issubdtype(acc.dtype, jnp.floating):
        acc = acc.astype(jnp.float32)
    avail = jnp.ones(acc.shape, dtype=bool) if mask is None else jnp.asarray(mask, dtype=bool)
    votes = avail & jnp.asarray(members, dtype=bool)[:, None]
    n_votes = jnp.sum(votes, axis=0).astype(acc.dtype)
    mean_vote = _safe_div(jnp.sum(jnp.where(votes, acc, 0), axis=0), n_votes)
    valid = n_votes > 0
    correct = valid & (mean_vote > 0.5)
    return _safe_div(jnp.sum(correct).astype(acc.dtype), jnp.sum(valid).astype(acc.dtype))


def reliability_score(cost: Float[ArrayLike, "*batch"]) -> Float[Array, "*batch"]:
    """Reliability of an ensemble from its cost: ``max(0, 1 - cost_Q(X))``.

    Args:
        cost: ensemble costs, e.g. from :func:`flame_jax.consensus.ensemble_cost`.

    Returns:
        The reliability score, same shape.

    Examples:
        >>> import jax.numpy as jnp
        >>> reliability_score(jnp.array([0.25, 1.5])).tolist()
        [0.75, 0.0]

    References:
        Sanchez & Hitaj, arXiv:2510.03930 (2025), evaluation helpers.
    """
    return jnp.maximum(0, 1 - jnp.asarray(cost))


@jax.jit
def complementarity_index(
    points: Float[ArrayLike, "models 2"],
    mask: Bool[ArrayLike, " models"] | None = None,
    *,
    alpha: float | Float[ArrayLike, ""] = 0.5,
) -> Float[Array, ""]:
    """Complementarity index ``CI = alpha HV_norm + (1 - alpha) RaoQ_norm`` of 2-D points.

    * ``HV_norm`` is the area of ``[0, 1]^2`` dominated by the points (reference point (0, 0),
      bound (1, 1)); points are clipped to ``[0, 1]^2``.
    * ``RaoQ_norm`` is Rao's quadratic entropy with uniform weights, ``sum_ij d_ij / M^2`` over
      the ``M`` members (Euclidean ``d``, the zero diagonal included, as in (C)'s code), divided
      by the diagonal ``sqrt(2)``; 0 with fewer than two members.

    Args:
        points: one ``(accuracy, quality)`` point per model in [0, 1], shape ``[models, 2]``.
        mask: which rows are ensemble members (padding); all when omitted.
        alpha: weight of the hypervolume term.

    Returns:
        A scalar in [0, 1].

    Examples:
        >>> import jax.numpy as jnp
        >>> pts = jnp.array([[1.0, 0.0], [0.0, 1.0]])
        >>> round(float(complementarity_index(pts)), 4)  # HV 0, RaoQ (2 sqrt 2 / 4) / sqrt 2
        0.25

    References:
        Sanchez & Hitaj, arXiv:2510.03930 (2025), evaluation helpers.
    """
    pts = jnp.clip(jnp.asarray(points), 0, 1)
    n = pts.shape[0]
    mask = jnp.ones(n, dtype=bool) if mask is None else jnp.asarray(mask, dtype=bool)
    x = jnp.where(mask, pts[:, 0], 0)
    y = jnp.where(mask, pts[:, 1], 0)
    # Dominated area: sort by x descending; each point adds (x_k) * (y_k - best y so far) when
    # it rises above the running maximum of y of the points with larger (or equal) x.
    order = jnp.lexsort((-y, -x))
    xs, ys = x[order], y[order]
    prev_max = jnp.concatenate([jnp.zeros(1, ys.dtype), jax.lax.cummax(ys)[:-1]])
    hv = jnp.sum(xs * jnp.maximum(ys - prev_max, 0))
    diff = pts[:, None, :] - pts[None, :, :]
    sq = jnp.sum(diff * diff, axis=-1)
    dist = jnp.where(sq > 0, jnp.sqrt(jnp.where(sq > 0, sq, 1)), 0)
    pair = mask[:, None] & mask[None, :]
    m = jnp.sum(mask).astype(pts.dtype)
    rao = jnp.where(m >= 2, _safe_div(jnp.sum(jnp.where(pair, dist, 0)), m * m), 0)
    rao = jnp.clip(rao / jnp.sqrt(2.0).astype(pts.dtype), 0, 1)
    alpha = jnp.asarray(alpha, dtype=pts.dtype)
    return alpha * hv + (1 - alpha) * rao
