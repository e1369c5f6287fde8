"""Weighted reductions over visits that padding rows (weight 0) cannot affect, and safe division."""

import jax
import jax.numpy as jnp

from flame_jax.arraytypes import Array, ArrayLike, Float, Num

__all__ = ["safe_divide", "weighted_mean", "weighted_sum", "weights_or_ones"]


def safe_divide(
    numerator: Num[ArrayLike, "*shape"], denominator: Num[ArrayLike, "*shape"]
) -> Float[Array, "*shape"]:
    """Elementwise ``numerator / denominator``, 0 where the denominator is 0.

    The denominator is replaced before dividing, so neither the value nor its gradient is NaN.

    Args:
        numerator: any shape.
        denominator: same shape as ``numerator``.

    Returns:
        The quotient, same shape, 0 wherever ``denominator == 0``.

    Examples:
        >>> import jax.numpy as jnp
        >>> print(safe_divide(jnp.array([1.0, 2.0]), jnp.array([4.0, 0.0])))
        [0.25 0.  ]
    """
    numerator = jnp.asarray(numerator)
    denominator = jnp.asarray(denominator)
    nonzero = denominator != 0
    return jnp.where(nonzero, numerator / jnp.where(nonzero, denominator, 1), 0)


def weights_or_ones(weights: Num[ArrayLike, " batch"] | None, batch: int) -> Float[Array, " batch"]:
    """The visit weights as float32, or ones for ``batch`` visits when ``weights`` is None."""
    if weights is None:
        return jnp.ones((batch,), jnp.float32)
    return jnp.asarray(weights, dtype=jnp.float32)


def weighted_sum(values: Num[Array, " batch"], weights: Float[Array, " batch"]) -> Float[Array, ""]:
    """``Σ w·x`` over rows with ``w > 0``; other rows contribute exactly 0, even a NaN ``x``."""
    return jnp.sum(jnp.where(weights > 0, weights * values.astype(jnp.float32), 0))


@jax.jit
def weighted_mean(
    values: Num[ArrayLike, " batch"], weights: Num[ArrayLike, " batch"] | None = None
) -> Float[Array, ""]:
    """Weighted mean over visits, ``Σ w·x / Σ w``, and 0 when ``Σ w = 0``.

    Rows with ``w <= 0`` (padding) are ignored entirely, whatever their values, so padding a batch
    with weight-0 rows changes nothing.

    Args:
        values: one value per visit, shape ``[batch]``.
        weights: visit weights, shape ``[batch]``; ``None`` means all ones.

    Returns:
        The weighted mean, float32 scalar.

    Examples:
        >>> import jax.numpy as jnp
        >>> print(round(float(weighted_mean(jnp.array([1.0, 3.0, 99.0]), jnp.array([1, 3, 0]))), 4))
        2.5
    """
    values = jnp.asarray(values)
    w = weights_or_ones(weights, values.shape[0])
    return safe_divide(weighted_sum(values, w), weighted_sum(jnp.ones_like(w), w))
