"""Gradient accumulation: one update's gradient summed over micro-batches inside one program.

A batch of B examples is cut into K micro-batches; ``jax.lax.scan`` runs the forward and backward
pass of one micro-batch at a time and sums the weighted gradients, so the program's activations
(and temporaries) are those of B / K examples. The result is the gradient of

    L = sum_k w_k L_k / sum_k w_k,

the weighted mean of the micro-batch losses L_k. With the right weights this is exactly the loss
of the whole batch: for a mean over examples, w_k = the examples in micro-batch k (equal weights
when the micro-batches are equal); for a mean over tokens, w_k = the tokens in it (see
``flame_jax.rl.aggregation_weight`` for the GRPO aggregations).

Why: besides memory, on CPU a smaller working set is faster. XLA:CPU allocates a program's
temporaries as one buffer per call; above glibc's largest mmap threshold (32 MiB) every call maps
fresh pages and faults each one in. The tiny GRPO update of ``experiments/bench/
grpo_trl_bench.py`` (51 MiB of temporaries) runs in about 45 ms as 4 micro-batches against about
70 ms in one piece, with the same gradient.

Micro-batches are strided (:func:`split_microbatches`): example i goes to micro-batch i mod K, so
a batch sharded over the mesh's data axes keeps each device's rows on that device.
"""

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from flame_jax.arraytypes import Array

__all__ = ["accumulate_gradients", "split_microbatches"]


def split_microbatches(tree: Any, k: int, *, group: int = 1) -> Any:
    """Every leaf's leading axis cut into ``k`` strided micro-batches, stacked on a new axis 0.

    The leading axis holds ``n * group`` rows, ``group`` consecutive rows per example (GRPO's
    prompt rows, repeated once per completion of the group); example ``i`` goes to micro-batch
    ``i mod k`` with its whole group.

    Args:
        tree: a pytree of arrays sharing the leading axis.
        k: micro-batches; must divide the number of examples.
        group: rows per example.

    Returns:
        The same pytree with leaves ``[k, n * group / k, ...]``.

    Examples:
        >>> import jax.numpy as jnp
        >>> split_microbatches(jnp.arange(6), 2).tolist()
        [[0, 2, 4], [1, 3, 5]]
        >>> split_microbatches(jnp.arange(8), 2, group=2).tolist()
        [[0, 1, 4, 5], [2, 3, 6, 7]]
    """
    if k < 1 or group < 1:
        raise ValueError(f"split_microbatches: k and group must be >= 1, got k={k}, group={group}")

    def split(x: Array) -> Array:
        x = jnp.asarray(x)
        rows = x.shape[0] if x.ndim else 0
        if rows % (k * group):
            raise ValueError(
                f"split_microbatches: a leading axis of {rows} rows does not split into "
                f"{k} micro-batches of whole groups of {group}"
            )
        n = rows // (k * group)
        x = x.reshape(n, k, group, *x.shape[1:])
        return jnp.moveaxis(x, 1, 0).reshape(k, n * group, *x.shape[3:])

    return jax.tree.map(split, tree)


def accumulate_gradients(
    loss_fn: Callable[[Any, Any], tuple[Array, Mapping[str, Array]]],
    params: Any,
    micro_batches: Any,
    *,
    weight_fn: Callable[[Any], Array] | None = None,
    max_keys: tuple[str, ...] = (),
) -> tuple[Array, Any, Any]:
    """Loss, metrics and gradient of the weighted mean of ``loss_fn`` over micro-batches.

    Args:
        loss_fn: ``(params, micro_batch) -> (loss, aux)``, ``aux`` a pytree of float arrays
            (a dict of scalar metrics, typically).
        params: the differentiated pytree.
        micro_batches: a pytree whose leaves are stacked micro-batches ``[k, ...]``
            (:func:`split_microbatches`); everything ``loss_fn`` needs that is not per example
            goes in through its closure.
        weight_fn: ``micro_batch -> scalar`` weight w_k (default 1 each). Weights that sum to 0
            give a zero loss and gradient.
        max_keys: entries of a dict ``aux`` reduced by their maximum over the micro-batches;
            every other entry is the same weighted mean as the loss.

    Returns:
        ``(loss, aux, grads)``; ``grads`` has the structure and dtypes of ``params`` (summed in
        float32 or wider).

    Examples:
        >>> import jax.numpy as jnp
        >>> def loss_fn(w, x):
        ...     return jnp.mean((x * w) ** 2), {"x_max": jnp.max(x)}
        >>> x = jnp.arange(4.0)
        >>> loss, aux, g = accumulate_gradients(loss_fn, 1.0, split_microbatches(x, 2),
        ...                                     max_keys=("x_max",))
        >>> float(loss), float(g), float(aux["x_max"])
        (3.5, 7.0, 3.0)
    """
    leaves = jax.tree.leaves(micro_batches)
    if not leaves:
        raise ValueError("accumulate_gradients: micro_batches has no arrays")
    k = leaves[0].shape[0]
    if weight_fn is None:
        weights = jnp.ones((k,), jnp.float32)
    else:
        weights = jax.vmap(weight_fn)(micro_batches).astype(jnp.float32)
    total = weights.sum()
    scale = jnp.where(total > 0, weights / jnp.where(total > 0, total, 1.0), 0.0)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    first = jax.tree.map(lambda x: x[0], micro_batches)
    (_, aux_shape), _ = jax.eval_shape(grad_fn, params, first)
    if isinstance(aux_shape, Mapping):
        unknown = set(max_keys) - set(aux_shape)
        is_max = {
            name: jax.tree.map(lambda _, n=name: n in max_keys, v) for name, v in aux_shape.items()
        }
    else:
        unknown = set(max_keys)
        is_max = jax.tree.map(lambda _: False, aux_shape)
    if unknown:
        raise ValueError(f"accumulate_gradients: max_keys {sorted(unknown)} are not aux metrics")

    def wide(p):
        return jnp.zeros(jnp.shape(p), jnp.promote_types(jnp.result_type(p), jnp.float32))

    aux0 = jax.tree.map(
        lambda m, s: jnp.full(s.shape, -jnp.inf if m else 0.0, jnp.float32), is_max, aux_shape
    )
    init = (jnp.zeros((), jnp.float32), aux0, jax.tree.map(wide, params))

    def body(carry, xs):
        batch, s = xs
        (loss, aux), grads = grad_fn(params, batch)
        acc_loss, acc_aux, acc_grads = carry
        acc_aux = jax.tree.map(
            lambda m, a, x: jnp.maximum(a, x.astype(a.dtype)) if m else a + s * x.astype(a.dtype),
            is_max,
            acc_aux,
            aux,
        )
        acc_grads = jax.tree.map(lambda a, g: a + s * g.astype(a.dtype), acc_grads, grads)
        return (acc_loss + s * loss, acc_aux, acc_grads), None

    (loss, aux, grads), _ = jax.lax.scan(body, init, (micro_batches, scale))
    grads = jax.tree.map(lambda g, p: g.astype(jnp.result_type(p)), grads, params)
    return loss, aux, grads
