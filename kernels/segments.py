"""Segment reductions between token arrays and step arrays.

* token -> step: out[b, s] = sum_t values[b, t] 1[ids[b, t] = s] (``segment_sum``);
* step -> token: out[b, t] = steps[b, ids[b, t]], 0 where ids is outside [0, steps)
  (``segment_broadcast``).

Each is the transpose of the other, so each one's VJP is the other one (``jax.custom_vjp``).
Token ids of -1 (tokens outside every step, padding) contribute nothing and receive 0.
"""

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from flame_jax_kernels._dispatch import kernel_backend_available

__all__ = [
    "pallas_segment_broadcast",
    "pallas_segment_sum",
    "reference_segment_broadcast",
    "reference_segment_sum",
    "segment_broadcast",
    "segment_sum",
]


def reference_segment_sum(values: jax.Array, ids: jax.Array, num_segments: int) -> jax.Array:
    """Token -> step sums with plain jnp.

    Args:
        values: ``[batch, tokens]`` float.
        ids: ``[batch, tokens]`` int step id per token (-1: none).
        num_segments: the number of steps S (static).

    Returns:
        ``[batch, num_segments]`` float32.

    Examples:
        >>> import jax.numpy as jnp
        >>> reference_segment_sum(jnp.array([[1.0, 2.0, 4.0]]), jnp.array([[0, 0, -1]]), 2).tolist()
        [[3.0, 0.0]]
    """
    onehot = ids[..., None] == jnp.arange(num_segments)[None, None]
    return jnp.einsum("bt,bts->bs", values.astype(jnp.float32), onehot.astype(jnp.float32))


def reference_segment_broadcast(steps: jax.Array, ids: jax.Array) -> jax.Array:
    """Step -> token gather with plain jnp (0 where the id is out of range).

    Args:
        steps: ``[batch, num_segments]`` float.
        ids: ``[batch, tokens]`` int step id per token.

    Returns:
        ``[batch, tokens]`` float32.

    Examples:
        >>> import jax.numpy as jnp
        >>> reference_segment_broadcast(jnp.array([[3.0, 5.0]]), jnp.array([[1, -1, 0]])).tolist()
        [[5.0, 0.0, 3.0]]
    """
    num = steps.shape[-1]
    idx = jnp.clip(ids, 0, num - 1)
    out = jnp.take_along_axis(steps.astype(jnp.float32), idx, axis=-1)
    return jnp.where((ids >= 0) & (ids < num), out, 0.0)


def _sum_kernel(v_ref, i_ref, o_ref, *, num_segments):
    v = v_ref[...].astype(jnp.float32)
    ids = i_ref[...]
    seg = jax.lax.broadcasted_iota(jnp.int32, (*ids.shape, num_segments), 2)
    o_ref[...] = jnp.where(ids[:, :, None] == seg, v[:, :, None], 0.0).sum(axis=1)


def _broadcast_kernel(s_ref, i_ref, o_ref, *, num_segments):
    s = s_ref[...].astype(jnp.float32)
    ids = i_ref[...]
    seg = jax.lax.broadcasted_iota(jnp.int32, (*ids.shape, num_segments), 2)
    o_ref[...] = jnp.where(ids[:, :, None] == seg, s[:, None, :], 0.0).sum(axis=2)


def _rows(x, block_rows):
    pad = pl.cdiv(x.shape[0], block_rows) * block_rows - x.shape[0]
    return jnp.pad(x, ((0, pad), (0, 0)), constant_values=-1 if x.dtype == jnp.int32 else 0)


def _sum_call(values, ids, num_segments, block_rows, interpret):
    batch, tokens = values.shape
    v = _rows(values.astype(jnp.float32), block_rows)
    i = _rows(ids.astype(jnp.int32), block_rows)
    out = pl.pallas_call(
        functools.partial(_sum_kernel, num_segments=num_segments),
        grid=(v.shape[0] // block_rows,),
        in_specs=[
            pl.BlockSpec((block_rows, tokens), lambda r: (r, 0)),
            pl.BlockSpec((block_rows, tokens), lambda r: (r, 0)),
        ],
        out_specs=pl.BlockSpec((block_rows, num_segments), lambda r: (r, 0)),
        out_shape=jax.ShapeDtypeStruct((v.shape[0], num_segments), jnp.float32),
        interpret=interpret,
        name="segment_sum",
    )(v, i)
    return out[:batch]


def _broadcast_call(steps, ids, block_rows, interpret):
    batch, tokens = ids.shape
    num_segments = steps.shape[-1]
    s = _rows(steps.astype(jnp.float32), block_rows)
    i = _rows(ids.astype(jnp.int32), block_rows)
    out = pl.pallas_call(
        functools.partial(_broadcast_kernel, num_segments=num_segments),
        grid=(s.shape[0] // block_rows,),
        in_specs=[
            pl.BlockSpec((block_rows, num_segments), lambda r: (r, 0)),
            pl.BlockSpec((block_rows, tokens), lambda r: (r, 0)),
        ],
        out_specs=pl.BlockSpec((block_rows, tokens), lambda r: (r, 0)),
        out_shape=jax.ShapeDtypeStruct((s.shape[0], tokens), jnp.float32),
        interpret=interpret,
        name="segment_broadcast",
    )(s, i)
    return out[:batch]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _segment_sum(values, ids, num_segments, block_rows, interpret):
    return _sum_call(values, ids, num_segments, block_rows, interpret)


def _sum_fwd(values, ids, num_segments, block_rows, interpret):
    return _sum_call(values, ids, num_segments, block_rows, interpret), ids


def _sum_bwd(num_segments, block_rows, interpret, ids, g):
    return _broadcast_call(g, ids, block_rows, interpret), None


_segment_sum.defvjp(_sum_fwd, _sum_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _segment_broadcast(steps, ids, block_rows, interpret):
    return _broadcast_call(steps, ids, block_rows, interpret)


def _bc_fwd(steps, ids, block_rows, interpret):
    return _broadcast_call(steps, ids, block_rows, interpret), (ids, steps.shape[-1])


def _bc_bwd(block_rows, interpret, residuals, g):
    ids, num_segments = residuals
    return _sum_call(g, ids, num_segments, block_rows, interpret), None


_segment_broadcast.defvjp(_bc_fwd, _bc_bwd)


@functools.partial(jax.jit, static_argnames=("num_segments", "block_rows", "interpret"))
def pallas_segment_sum(
    values: jax.Array,
    ids: jax.Array,
    num_segments: int,
    *,
    block_rows: int = 8,
    interpret: bool = False,
) -> jax.Array:
    """Pallas kernel for ``reference_segment_sum`` (differentiable in ``values``).

    Args:
        values: ``[batch, tokens]``.
        ids: ``[batch, tokens]`` int step ids (-1: none).
        num_segments: S (static).
        block_rows: rows per program.
        interpret: run in the Pallas interpreter (CPU tests).

    Returns:
        ``[batch, num_segments]`` float32.

    Examples:
        >>> import jax.numpy as jnp
        >>> pallas_segment_sum(jnp.array([[1.0, 2.0]]), jnp.array([[1, 1]]), 2,
        ...                    interpret=True).tolist()
        [[0.0, 3.0]]
    """
    return _segment_sum(values, ids, num_segments, block_rows, interpret)


@functools.partial(jax.jit, static_argnames=("block_rows", "interpret"))
def pallas_segment_broadcast(
    steps: jax.Array,
    ids: jax.Array,
    *,
    block_rows: int = 8,
    interpret: bool = False,
) -> jax.Array:
    """Pallas kernel for ``reference_segment_broadcast`` (differentiable in ``steps``).

    Args:
        steps: ``[batch, num_segments]``.
        ids: ``[batch, tokens]`` int step ids (-1: none).
        block_rows: rows per program.
        interpret: run in the Pallas interpreter (CPU tests).

    Returns:
        ``[batch, tokens]`` float32.

    Examples:
        >>> import jax.numpy as jnp
        >>> pallas_segment_broadcast(jnp.array([[3.0, 5.0]]), jnp.array([[1, -1]]),
        ...                          interpret=True).tolist()
        [[5.0, 0.0]]
    """
    return _segment_broadcast(steps, ids, block_rows, interpret)


def segment_sum(values: jax.Array, ids: jax.Array, num_segments: int) -> jax.Array:
    """Token -> step sums: the Pallas kernel on GPU, the jnp reference elsewhere.

    Examples:
        >>> import jax.numpy as jnp
        >>> segment_sum(jnp.array([[1.0, 2.0]]), jnp.array([[0, 1]]), 2).tolist()
        [[1.0, 2.0]]
    """
    if kernel_backend_available():
        return pallas_segment_sum(values, ids, num_segments)
    return reference_segment_sum(values, ids, num_segments)


def segment_broadcast(steps: jax.Array, ids: jax.Array) -> jax.Array:
    """Step -> token gather: the Pallas kernel on GPU, the jnp reference elsewhere.

    Examples:
        >>> import jax.numpy as jnp
        >>> segment_broadcast(jnp.array([[1.0, 2.0]]), jnp.array([[1, 0, -1]])).tolist()
        [[2.0, 1.0, 0.0]]
    """
    if kernel_backend_available():
        return pallas_segment_broadcast(steps, ids)
    return reference_segment_broadcast(steps, ids)
