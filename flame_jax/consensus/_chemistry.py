"""LLM Chemistry: ensemble cost, pairwise chemistry and exhaustive ensemble recommendation.

A pool of ``n`` models, each with a quality ``q_m`` (0-10 in (C)'s logs) and an accuracy ``a_m``
(the compound accuracy of its performance history). Subsets ``X`` of the pool are encoded as
bitmasks: subset ``x`` contains model ``k`` iff bit ``k`` of ``x`` is set, and tables over all
subsets have ``2^n`` rows in that order (:func:`subset_members`).

* :func:`ensemble_cost` is (C)'s ``cost_Q``.
* :func:`subset_costs` is the closed form of (C)'s Model Interaction Graph look-up,
  ``c(X) = cost_Q(X ∩ U)`` or 1.0 when ``X ∩ U = ∅`` (``U``: models with ``a > tau_use``);
  :func:`host_subset_costs` is the same table with the per-model terms computed in float64 on
  the host (accuracies within float32 rounding of 1 keep a non-zero cost).
* :func:`pairwise_chemistry` is ChemE: the second-order difference of ``c`` over contexts, in the
  published ``"replicate"`` mode (``max_X min(1, |Δ| / c(X∪{a,b}))``) or in the
  ``"informative"`` mode (signed, Shapley-weighted average over contexts).
* :func:`recommend_ensemble` replaces (C)'s seed-dependent hill-climb by an exact, deterministic
  search over all subsets, optionally of an exact size ``N``.

References:
    Sanchez & Hitaj, "LLM Chemistry Estimation for Multi-LLM Recommendation", arXiv:2510.03930
    (2025); Frank, Omiecinski & Navathe, "Adaptive and automated index selection in RDBMS",
    EDBT 1992; Grabisch & Roubens, "An axiomatic approach to the concept of interaction among
    players in cooperative games", Int. J. Game Theory 28 (1999), for the Shapley interaction
    index.
"""

import functools
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from flame_jax.arraytypes import Array, ArrayLike, Bool, Float, Int

__all__ = [
    "Chemistry",
    "Recommendation",
    "SubsetCosts",
    "configuration_chemistry",
    "ensemble_cost",
    "host_subset_costs",
    "pairwise_chemistry",
    "recommend_ensemble",
    "recommendation_loss",
    "subset_costs",
    "subset_members",
]

MAX_POOL = 20  # 2^20 subsets; beyond this exhaustive search is not what you want


def _check_pool(n: int) -> None:
    if not 1 <= n <= MAX_POOL:
        raise ValueError(f"the model pool must have 1..{MAX_POOL} models, got {n}")


def subset_members(n: int | np.integer) -> Bool[Array, "subsets models"]:
    """Membership of every subset of ``n`` models: row ``x`` has model ``k`` iff bit ``k`` of ``x``.

    Examples:
        >>> subset_members(2).astype(int).tolist()
        [[0, 0], [1, 0], [0, 1], [1, 1]]
    """
    n = int(n)
    _check_pool(n)
    idx = jnp.arange(2**n, dtype=jnp.int32)
    return ((idx[:, None] >> jnp.arange(n, dtype=jnp.int32)[None, :]) & 1).astype(bool)


@jax.jit
def ensemble_cost(
    quality: Float[ArrayLike, " models"],
    accuracy: Float[ArrayLike, " models"],
    members: Bool[ArrayLike, "*batch models"],
    *,
    quality_scale: float | Float[ArrayLike, ""] = 10.0,
) -> Float[Array, "*batch"]:
    """(C)'s ensemble cost ``cost_Q(X) = sum_i (1/i) (1 - q_i/scale) (1 - a_i)``.

    Members are ranked ``i = 1..|X|`` by quality, highest first; equal qualities are ranked by
    model index (the released code leaves them to set order). Each member pays the penalty
    ``(1 - q/scale)(1 - a)``, discounted by the harmonic weight of its rank. The empty set costs 0.

    Args:
        quality: quality per model, on ``[0, quality_scale]``, shape ``[models]``.
        accuracy: accuracy per model in [0, 1], shape ``[models]``.
        members: one or more subsets as membership masks, shape ``[..., models]``.
        quality_scale: the top of the quality scale (10 in (C)'s logs).

    Returns:
        The cost of each subset, shape ``[...]``.

    Examples:
        >>> import jax.numpy as jnp
        >>> q, a = jnp.array([9.0, 6.0, 4.0]), jnp.array([0.9, 0.7, 0.6])
        >>> x = jnp.array([[1, 1, 0], [1, 1, 1]], bool)
        >>> [round(v, 4) for v in ensemble_cost(q, a, x).tolist()]
        [0.07, 0.15]

    References:
        Sanchez & Hitaj, arXiv:2510.03930 (2025), ``cost_q``.
    """
    q = jnp.asarray(quality)
    if not jnp.issubdtype(q.dtype, jnp.floating):
        q = q.astype(jnp.float32)
    a = jnp.asarray(accuracy, dtype=q.dtype)
    # (scale - q) / scale, not 1 - q / scale: a perfect quality must give exactly 0 (ChemE skips
    # zero costs), and XLA may turn the division into a multiplication by the reciprocal.
    penalty = (quality_scale - q) / quality_scale * (1 - a)
    order = jnp.argsort(-q, stable=True)  # quality descending, ties by index
    return _ranked_cost(penalty, order, jnp.asarray(members, dtype=bool))


def _ranked_cost(penalty: Array, order: Array, members: Array) -> Array:
    """``sum_i penalty_(i) / i`` over the members, ranked ``i = 1..`` in ``order``."""
    in_order = members[..., order]
    rank = jnp.cumsum(in_order, axis=-1).astype(penalty.dtype)
    terms = jnp.where(
        in_order, jnp.broadcast_to(penalty[order], rank.shape) / jnp.maximum(rank, 1), 0
    )
    return jnp.sum(terms, axis=-1)


class SubsetCosts(NamedTuple):
    """The cost set-function ``c`` over all ``2^n`` subsets (bit order of :func:`subset_members`).

    Attributes:
        cost: ``c(X)``; ``cost_Q(X ∩ U)``, or ``empty_cost`` where ``X ∩ U = ∅``.
        defined: whether ``c(X)`` is known; here ``X ∩ U ≠ ∅``. The informative chemistry uses
            only contexts with known costs; the replicate mode uses the fallback values.
    """

    cost: Float[Array, " subsets"]
    defined: Bool[Array, " subsets"]


@jax.jit
def subset_costs(
    quality: Float[ArrayLike, " models"],
    accuracy: Float[ArrayLike, " models"],
    *,
    usage_threshold: float | Float[ArrayLike, ""] = 0.5,
    quality_scale: float | Float[ArrayLike, ""] = 10.0,
    empty_cost: float | Float[ArrayLike, ""] = 1.0,
) -> SubsetCosts:
    """``c(X) = cost_Q(X ∩ U)`` for every subset, ``U = {m : a_m > usage_threshold}``.

    This is the closed form of (C)'s Model Interaction Graph look-up (the MIG is only a
    memoisation device): models with accuracy at or below the usage threshold never change a
    cost, and a set without any used model costs ``empty_cost`` (1.0 in the released code).

    Args:
        quality: quality per model, shape ``[models]``.
        accuracy: accuracy per model, shape ``[models]``.
        usage_threshold: ``tau_use``; a model is used iff its accuracy is strictly above it.
        quality_scale: the top of the quality scale.
        empty_cost: the cost of a set with no used model.

    Returns:
        :class:`SubsetCosts` with ``2^n`` entries.

    Examples:
        >>> import jax.numpy as jnp
        >>> c = subset_costs(jnp.array([9.0, 8.0]), jnp.array([0.9, 0.4]))
        >>> [round(x, 4) for x in c.cost.tolist()], c.defined.tolist()
        ([1.0, 0.01, 1.0, 0.01], [False, True, False, True])

    References:
        Sanchez & Hitaj, arXiv:2510.03930 (2025), ``find_models_for_q`` and ``build_mig``.
    """
    q = jnp.asarray(quality)
    if not jnp.issubdtype(q.dtype, jnp.floating):
        q = q.astype(jnp.float32)
    a = jnp.asarray(accuracy, dtype=q.dtype)
    penalty = (quality_scale - q) / quality_scale * (1 - a)  # as in ensemble_cost
    order = jnp.argsort(-q, stable=True)
    return _cost_table(penalty, order, a > usage_threshold, empty_cost)


@jax.jit
def _cost_table(
    penalty: Array, order: Array, usable: Array, empty_cost: float | Array
) -> SubsetCosts:
    members = subset_members(penalty.shape[0])
    used = members & usable[None, :]
    defined = jnp.any(used, axis=-1)
    cost = _ranked_cost(penalty, order, used)
    return SubsetCosts(
        cost=jnp.where(defined, cost, empty_cost).astype(penalty.dtype), defined=defined
    )


def host_subset_costs(
    quality: Float[ArrayLike, " models"],
    accuracy: Float[ArrayLike, " models"],
    *,
    usage_threshold: float = 0.5,
    quality_scale: float = 10.0,
    empty_cost: float = 1.0,
) -> SubsetCosts:
    """:func:`subset_costs` with the per-model terms computed on the host in float64.

    The penalties ``(scale - q)/scale (1 - a)``, the usage test ``a > usage_threshold`` and the
    quality ranking are computed with NumPy in float64 before anything reaches JAX; the table is
    then built in JAX's default float dtype. In float32, ``1 - a`` is exactly 0 for every
    accuracy within about 6e-8 of 1, the model's cost becomes 0 and the replicate chemistry
    skips it (``c = 0`` is "no cost"), so pairs change or vanish and the recommended ensemble
    changes. A positive float64 penalty stays positive in float32, so the zero tests agree with
    float64; accuracies of exactly 1 still give 0 as they should. Host side: concrete arrays
    only (use :func:`subset_costs` under ``jit``).

    Args:
        quality: quality per model, ``[models]``.
        accuracy: accuracy per model, ``[models]``.
        usage_threshold: ``tau_use``; a model is used iff its accuracy is strictly above it.
        quality_scale: the top of the quality scale.
        empty_cost: the cost of a set with no used model.

    Returns:
        :class:`SubsetCosts` with ``2^n`` entries.

    Examples:
        >>> import numpy as np
        >>> c = host_subset_costs(np.array([9.0, 8.0]), np.array([1 - 1e-9, 1.0]))
        >>> [x > 0 for x in c.cost.tolist()], c.defined.tolist()
        ([True, True, False, True], [False, True, True, True])
    """
    q = np.asarray(quality, dtype=np.float64)
    a = np.asarray(accuracy, dtype=np.float64)
    if q.ndim != 1 or q.shape != a.shape:
        raise ValueError(f"quality and accuracy must both be [models], got {q.shape}, {a.shape}")
    _check_pool(q.shape[0])
    penalty = (quality_scale - q) / quality_scale * (1 - a)
    order = np.argsort(-q, kind="stable").astype(np.int32)
    return _cost_table(
        jnp.asarray(penalty), jnp.asarray(order), jnp.asarray(a > usage_threshold), empty_cost
    )


class Chemistry(NamedTuple):
    """Pairwise chemistry of a model pool.

    Attributes:
        value: symmetric ``[models, models]`` scores, 0 on the diagonal and where undefined.
            ``"replicate"``: in [0, 1], larger = stronger interaction of either sign.
            ``"informative"``: signed, in cost units; positive = synergy (the pair lowers the
            cost more than its members do separately), negative = antagonism.
        defined: whether the pair has at least one valid context (a missing entry is not 0).
    """

    value: Float[Array, "models models"]
    defined: Bool[Array, "models models"]


def _log_factorial(k: Array, dtype: jnp.dtype) -> Array:
    return jax.lax.lgamma(k.astype(dtype) + 1)


def pairwise_chemistry(
    costs: Float[ArrayLike, " subsets"],
    defined: Bool[ArrayLike, " subsets"] | None = None,
    *,
    mode: Literal["replicate", "informative"] = "replicate",
) -> Chemistry:
    """ChemE: pairwise chemistry from the cost of every subset of the pool.

    For models ``a != b`` and every context ``X ⊆ S \\ {a, b}``, the interaction is the second
    difference ``Δ(a,b|X) = c(X∪{a,b}) - c(X∪{a}) - c(X∪{b}) + c(X)``.

    * ``"replicate"`` (the released code): ``d = min(1, |Δ| / c(X∪{a,b}))`` over the contexts
      whose four costs are all non-zero (and ``defined``, when given); ``chem = max_X d``. With
      :func:`subset_costs` (fallback ``c(∅∩U) = 1``) every pair of used models with non-zero
      penalties saturates at 1, and pairs with an unused model score 0, as in (C).
    * ``"informative"``: the contexts whose four costs are ``defined`` (for :func:`subset_costs`,
      ``X ∩ U ≠ ∅``), weighted by the Shapley interaction weights
      ``|X|! (n - |X| - 2)! / (n - 1)!`` and renormalised over the valid contexts;
      ``chem = -sum_X w Δ / sum_X w`` (signed; positive = synergy, because the cost falls).
      Any cost table may be passed, e.g. observed ``1 - accuracy`` of past ensembles.

    Args:
        costs: ``c(X)`` for all ``2^n`` subsets, bit order of :func:`subset_members`.
        defined: which costs are known; all when omitted.
        mode: ``"replicate"`` or ``"informative"`` (static).

    Returns:
        :class:`Chemistry`.

    Examples:
        >>> import jax.numpy as jnp
        >>> c = subset_costs(jnp.array([9.0, 6.0, 4.0, 8.0]), jnp.array([0.9, 0.7, 0.6, 0.4]))
        >>> pairwise_chemistry(c.cost).value.round(4).tolist()[0]
        [0.0, 1.0, 1.0, 0.0]
        >>> chem = pairwise_chemistry(c.cost, c.defined, mode="informative")
        >>> bool(chem.defined[0, 1]), bool(chem.value[0, 1] < 0)
        (True, True)

    References:
        Sanchez & Hitaj, arXiv:2510.03930 (2025), ``ChemE``; Grabisch & Roubens (1999).
    """
    cost = jnp.asarray(costs)
    if not jnp.issubdtype(cost.dtype, jnp.floating):
        cost = cost.astype(jnp.float32)
    n_sub = cost.shape[0]
    n = n_sub.bit_length() - 1
    if 2**n != n_sub or n < 2:
        raise ValueError(f"costs must have 2^n entries with n >= 2, got {n_sub}")
    _check_pool(n)
    if mode not in ("replicate", "informative"):
        raise ValueError(f"mode must be 'replicate' or 'informative', got {mode!r}")
    known = jnp.ones(n_sub, dtype=bool) if defined is None else jnp.asarray(defined, dtype=bool)
    return _pairwise_chemistry(cost, known, mode)


@functools.partial(jax.jit, static_argnums=(2,))
def _pairwise_chemistry(cost: Array, known: Array, mode: str) -> Chemistry:
    n_sub = cost.shape[0]
    n = n_sub.bit_length() - 1
    idx = jnp.arange(n_sub, dtype=jnp.int32)
    bits = jnp.left_shift(jnp.int32(1), jnp.arange(n, dtype=jnp.int32))
    members = subset_members(n)
    size = jnp.sum(members, axis=-1)
    dt = cost.dtype
    log_w = _log_factorial(size, dt) + _log_factorial(jnp.maximum(n - size - 2, 0), dt)
    weight = jnp.exp(log_w - _log_factorial(jnp.asarray(n - 1), dt))

    def row(a: Array) -> tuple[Array, Array]:
        bit_a = bits[a]
        x = idx[:, None]  # contexts
        xa = x | bit_a
        xb = x | bits[None, :]
        xab = xa | bits[None, :]
        c_x, c_a, c_b, c_ab = cost[x], cost[xa], cost[xb], cost[xab]  # [subsets, n]
        ok = ((x & bit_a) == 0) & ((x & bits[None, :]) == 0) & (jnp.arange(n)[None, :] != a)
        ok &= known[x] & known[xa] & known[xb] & known[xab]
        delta = (c_ab + c_x) - (c_a + c_b)  # exactly symmetric in a, b
        if mode == "replicate":
            ok &= (c_x != 0) & (c_a != 0) & (c_b != 0) & (c_ab != 0)
            d = jnp.minimum(1, jnp.abs(delta) / jnp.where(ok, c_ab, 1))
            value = jnp.max(jnp.where(ok, d, -jnp.inf), axis=0)
        else:
            w = jnp.where(ok, weight[:, None], 0)
            total = jnp.sum(w, axis=0)
            value = -jnp.sum(w * delta, axis=0) / jnp.where(total > 0, total, 1)
        has = jnp.any(ok, axis=0)
        return jnp.where(has, value, 0).astype(cost.dtype), has

    value, has = jax.lax.map(row, jnp.arange(n))
    return Chemistry(value=value, defined=has)


def configuration_chemistry(
    chemistry: Chemistry, members: Bool[ArrayLike, "*batch models"]
) -> Float[Array, "*batch"]:
    """Mean pairwise chemistry inside an ensemble (missing pairs count 0); 0 below two members.

    Examples:
        >>> import jax.numpy as jnp
        >>> chem = Chemistry(jnp.array([[0.0, 1.0, 0.5], [1.0, 0.0, 0.0], [0.5, 0.0, 0.0]]),
        ...                  jnp.ones((3, 3), bool))
        >>> round(float(configuration_chemistry(chem, jnp.array([True, True, True]))), 4)
        0.5
    """
    value = jnp.where(chemistry.defined, chemistry.value, 0)
    m = jnp.asarray(members, dtype=value.dtype)
    pair_sum = 0.5 * jnp.sum((m @ value) * m, axis=-1)
    k = jnp.sum(m, axis=-1)
    pairs = k * (k - 1) / 2
    return jnp.where(pairs > 0, pair_sum / jnp.where(pairs > 0, pairs, 1), 0)


class Recommendation(NamedTuple):
    """Result of :func:`recommend_ensemble`.

    Attributes:
        members: the recommended ensemble as a membership mask, ``[models]``.
        loss: its loss (``inf`` when no subset is feasible).
        found: whether a feasible subset was found from chemistry; ``False`` means the fallback
            (no pair has chemistry, or every subset is infeasible) picked ``members``.
        subset: the bitmask index of ``members``.
    """

    members: Bool[Array, " models"]
    loss: Float[Array, ""]
    found: Bool[Array, ""]
    subset: Int[Array, ""]


def _greedy_cut(chem: Array) -> Array:
    """(C)'s max-cut estimate: sort by degree (ties by index), alternate sides, sum across."""
    n = chem.shape[0]
    degree = jnp.sum(chem, axis=1)
    order = jnp.argsort(-degree, stable=True)
    side = jnp.zeros(n, dtype=bool).at[order].set(jnp.arange(n) % 2 == 1)
    across = side[:, None] != side[None, :]
    return 0.5 * jnp.sum(jnp.where(across, chem, 0))


@jax.jit
def recommendation_loss(
    chemistry: Chemistry,
    *,
    alpha: float | Float[ArrayLike, ""] = 0.5,
    beta: float | Float[ArrayLike, ""] = 0.5,
) -> Float[Array, " subsets"]:
    """(C)'s Recommend loss for every subset ``X`` of the pool (missing chemistry counts 0).

    ``loss(X) = alpha (I* - inter(X)) + (1 - alpha) (T - intra(X)) + beta |X|``, where ``T`` is
    the total pairwise chemistry of the pool, ``intra`` / ``inter`` the chemistry inside ``X`` /
    across its boundary, and ``I*`` (C)'s greedy max-cut estimate (models sorted by degree, ties
    by index, alternately assigned to two sides). As in the released code, ``loss = inf`` when
    either bracket is negative (below ``-1e-6 max(1, T)``, so that rounding does not decide).

    Examples:
        >>> import jax.numpy as jnp
        >>> c = subset_costs(jnp.array([9.0, 6.0, 4.0, 8.0]), jnp.array([0.9, 0.7, 0.6, 0.4]))
        >>> loss = recommendation_loss(pairwise_chemistry(c.cost))
        >>> [float(loss[x]) for x in (0b0011, 0b0111, 0b1001, 0b1111)]
        [2.0, 2.5, 2.5, 3.0]

    References:
        Sanchez & Hitaj, arXiv:2510.03930 (2025), ``loss`` and ``fast_max_inter_chem``.
    """
    chem = jnp.where(chemistry.defined, chemistry.value, 0)
    n = chem.shape[0]
    members = subset_members(n).astype(chem.dtype)
    total = 0.5 * jnp.sum(chem)
    cut = _greedy_cut(chem)
    linked = members @ chem  # [subsets, n]: chemistry of each model with the members
    intra = 0.5 * jnp.sum(linked * members, axis=-1)
    inter = jnp.sum(linked * (1 - members), axis=-1)
    loss_inter, loss_intra = cut - inter, total - intra
    loss = alpha * loss_inter + (1 - alpha) * loss_intra + beta * jnp.sum(members, axis=-1)
    # A bracket that is 0 in exact arithmetic (e.g. intra(S) = T) must not turn infeasible by
    # rounding, so "negative" means below -1e-6 * max(1, T).
    slack = -1e-6 * jnp.maximum(1, total)
    return jnp.where((loss_inter < slack) | (loss_intra < slack), jnp.inf, loss)


def recommend_ensemble(
    chemistry: Chemistry,
    *,
    size: int | None = None,
    min_size: int = 2,
    alpha: float | Float[ArrayLike, ""] = 0.5,
    beta: float | Float[ArrayLike, ""] = 0.5,
    accuracy: Float[ArrayLike, " models"] | None = None,
    latency: Float[ArrayLike, " models"] | None = None,
    tie_tolerance: float | Float[ArrayLike, ""] = 1e-6,
) -> Recommendation:
    """The ensemble minimising :func:`recommendation_loss`, by exhaustive search.

    Candidates are all subsets with ``|X| = size`` (when given; (M) uses ``N = 3``) or with
    ``|X| >= min_size``. Losses within ``tie_tolerance * max(1, |best|)`` of the minimum tie;
    ties go to the higher mean ``accuracy`` (when given), then the lower median ``latency`` (when
    given), then the subset of lowest model indices (lexicographically smallest sorted index
    list). Unlike (C)'s hill-climb (whose result depends on ``PYTHONHASHSEED``) the answer is
    exact and deterministic.

    Fallback (``found`` false): when no pair has defined chemistry or every candidate is
    infeasible, the ``size`` (or 1, without ``size``) models of highest ``accuracy`` (ties by
    index; lowest indices without ``accuracy``) are returned. (C) returns the best single model in
    that case; with a size constraint we fill the ensemble the same way.

    Args:
        chemistry: pairwise chemistry of the pool.
        size: exact ensemble size, or None (static).
        min_size: smallest ensemble considered when ``size`` is None (static).
        alpha: weight of the inter-chemistry term.
        beta: per-member size penalty.
        accuracy: per-model accuracy for tie-breaks and the fallback.
        latency: per-model (median) latency for tie-breaks.
        tie_tolerance: relative tolerance under which two losses tie.

    Returns:
        :class:`Recommendation`.

    Examples:
        >>> import jax.numpy as jnp
        >>> c = subset_costs(jnp.array([9.0, 6.0, 4.0, 8.0]), jnp.array([0.9, 0.7, 0.6, 0.4]))
        >>> rec = recommend_ensemble(pairwise_chemistry(c.cost))
        >>> rec.members.tolist(), float(rec.loss)
        ([True, True, False, False], 2.0)
        >>> recommend_ensemble(pairwise_chemistry(c.cost), size=3).members.tolist()
        [True, True, True, False]

    References:
        Sanchez & Hitaj, arXiv:2510.03930 (2025), ``recommend``; Sanchez et al.,
        arXiv:2512.05066 (2025), for the fixed ensemble size.
    """
    n = chemistry.value.shape[0]
    if size is not None and not 1 <= size <= n:
        raise ValueError(f"size must be in 1..{n} (the pool), got {size}")
    if min_size < 1:
        raise ValueError(f"min_size must be >= 1, got {min_size}")
    # Absent tie-break keys are constant arrays (they then decide nothing), so that one compiled
    # function serves every call of a given pool size.
    dtype = jnp.result_type(chemistry.value.dtype, jnp.float32)
    zeros = jnp.zeros(n, dtype)
    acc = zeros if accuracy is None else jnp.asarray(accuracy, dtype)
    lat = zeros if latency is None else jnp.asarray(latency, dtype)
    return _recommend(chemistry, size, min_size, alpha, beta, acc, lat, tie_tolerance)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _recommend(
    chemistry: Chemistry,
    size: int | None,
    min_size: int,
    alpha: float | Float[ArrayLike, ""],
    beta: float | Float[ArrayLike, ""],
    acc: Float[Array, " models"],
    lat: Float[Array, " models"],
    tie_tolerance: float | Float[ArrayLike, ""],
) -> Recommendation:
    n = chemistry.value.shape[0]
    loss = recommendation_loss(chemistry, alpha=alpha, beta=beta)
    dtype = loss.dtype
    members = subset_members(n)
    count = jnp.sum(members, axis=-1)
    allowed = count == size if size is not None else count >= min_size
    loss = jnp.where(allowed, loss, jnp.inf)
    best = jnp.min(loss)
    found = jnp.isfinite(best) & jnp.any(chemistry.defined)
    cand = jnp.isfinite(loss) & (loss <= best + tie_tolerance * jnp.maximum(1, jnp.abs(best)))

    m_f = members.astype(dtype)
    k = jnp.maximum(count, 1).astype(dtype)
    acc = acc.astype(dtype)
    mean_acc = (m_f @ acc) / k
    top = jnp.max(jnp.where(cand, mean_acc, -jnp.inf))
    cand &= mean_acc >= top - tie_tolerance
    lat = lat.astype(dtype)
    sorted_lat = jnp.sort(jnp.where(members, lat[None, :], jnp.inf), axis=-1)
    lo = sorted_lat[jnp.arange(2**n), (count - 1) // 2]
    hi = sorted_lat[jnp.arange(2**n), count // 2]
    median = jnp.where(count > 0, 0.5 * (lo + hi), jnp.inf)
    low = jnp.min(jnp.where(cand, median, jnp.inf))
    cand &= median <= low + tie_tolerance * jnp.maximum(1, jnp.abs(low))
    # Lexicographically smallest sorted index list == largest bit-reversed mask (same size);
    # integer keys, so the final choice is exact.
    reversed_key = jnp.sum(
        jnp.where(members, jnp.left_shift(jnp.int32(1), n - 1 - jnp.arange(n, dtype=jnp.int32)), 0),
        axis=-1,
    )
    chosen = jnp.argmax(jnp.where(cand, reversed_key, -1)).astype(jnp.int32)

    # Fallback ranking: accuracy descending, then index.
    order = jnp.argsort(-acc, stable=True)
    take = 1 if size is None else size
    fallback_members = jnp.zeros(n, dtype=bool).at[order[:take]].set(True)
    fallback = jnp.sum(
        jnp.where(fallback_members, jnp.left_shift(jnp.int32(1), jnp.arange(n, dtype=jnp.int32)), 0)
    )
    subset = jnp.where(found, chosen, fallback).astype(jnp.int32)
    return Recommendation(
        members=members[subset],
        loss=jnp.where(found, loss[subset], jnp.inf).astype(dtype),
        found=found,
        subset=subset,
    )
