"""Partition rules: which mesh axes shard which dimension of every array of a training state.

A rule is ``(regex, spec)``: the first rule whose regex matches (``re.search``) the array's path
in its pytree (keys joined by ``/``, e.g. ``decoder/layers/0/self_attn/q_proj/kernel/value`` or,
inside an optax state, ``1/0/mu/decoder/layers/0/self_attn/q_proj/kernel/value``) gives one entry
per dimension: ``None`` (replicated), a mesh axis name, or a tuple of axis names. Arrays that no
rule matches, scalars, and arrays whose rank differs from the spec's are replicated.

**Fallback, never an error**: when a dimension is not divisible by the product of its axes' sizes,
the longest prefix of its axes that divides it is used (``("data", "fsdp")`` -> ``("data",)``),
else the dimension is replicated. Axes the mesh lacks are dropped. So the tiny test model runs on
any mesh, and a real model gets every sharding that fits.

The default rules (Megatron-style tensor parallelism plus FSDP over the other dimension):

======================================  =========================  ==============================
array (shape)                           spec                       why
======================================  =========================  ==============================
``embed_tokens/embedding`` [vocab,dim]  (tp+fsdp, -)               vocab split; ``dim`` whole, so
                                                                   looked-up embeddings follow
                                                                   the batch's sharding
``lm_head`` [vocab, dim]                (tp+fsdp, -)               same as the tied table
``q/k/v/gate/up_proj/kernel`` [in,out]  (fsdp, tp)                 column-parallel: heads / MLP
                                                                   columns on tp
``q/k/v_proj/bias`` [out]               (tp,)                      follows the columns
``o/down_proj/kernel`` [in, out]        (tp, fsdp)                 row-parallel: one all-reduce
                                                                   per block
``lora_a`` [in, rank]                   like the kernel's ``in``   x @ A needs no reshuffle of x
``lora_b`` [rank, out]                  like the kernel's ``out``  x A B lands in the base
                                                                   output's layout; rank is
                                                                   replicated (tiny)
norms, biases of o/down, knowledge      replicated                 small (the projectors' MLPs
projectors, scalars                                                are a few thousand numbers)
optimizer state (mu, nu)                as its parameter           the rules match the suffix
KV cache [layers,batch,slots,kv,hd]     (-, data+fsdp, -, tp, -)   batch split, heads on tp
batches: leading axis                   (data, fsdp)               every replica a slice
======================================  =========================  ==============================

Why B follows the output dimension rather than being replicated: with B replicated, ``x A B``
would come out replicated on its ``out`` dimension and be resharded to be added to the base
projection's tp-sharded output; with B split like the kernel's columns, the addition is local and
B's gradient and Adam moments are split too (cheap, and exact in the same way as the kernels).

Everything here is a pure placement: the numbers a sharded program computes equal the
single-device ones up to float reassociation of the sharded reductions.
"""

import dataclasses
import math
import re
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = [
    "BATCH_AXES",
    "KV_CACHE_RULES",
    "PARAM_RULES",
    "CacheSharding",
    "Rules",
    "batch_sharding",
    "host_to_global",
    "partition_spec",
    "shard_batch",
    "shard_module",
    "shard_state",
    "state_shardings",
    "tree_paths",
]

Rules = Sequence[tuple[str, tuple[Any, ...]]]

BATCH_AXES = ("data", "fsdp")

_COLUMN = r"(q_proj|k_proj|v_proj|gate_proj|up_proj)"
_ROW = r"(o_proj|down_proj)"

PARAM_RULES: Rules = (
    (r"embed_tokens/embedding", (("tp", "fsdp"), None)),
    (r"lm_head", (("tp", "fsdp"), None)),
    (_COLUMN + r"/lora/lora_a", ("fsdp", None)),
    (_COLUMN + r"/lora/lora_b", (None, "tp")),
    (_ROW + r"/lora/lora_a", ("tp", None)),
    (_ROW + r"/lora/lora_b", (None, "fsdp")),
    (_COLUMN + r"/kernel", ("fsdp", "tp")),
    (_COLUMN + r"/bias", ("tp",)),
    (_ROW + r"/kernel", ("tp", "fsdp")),
)

KV_CACHE_RULES: Rules = ((r"(^|/)(k|v)$", (None, BATCH_AXES, None, "tp", None)),)


def _key_name(key: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def tree_paths(tree: Any) -> list[str]:
    """The ``/``-joined path of every leaf of ``tree``, in leaf order.

    Examples:
        >>> tree_paths({"a": {"w": 1}, "b": [2, 3]})
        ['a/w', 'b/0', 'b/1']
    """
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return ["/".join(_key_name(k) for k in path) for path, _ in leaves]


def _axes(entry: Any) -> tuple[str, ...]:
    if entry is None:
        return ()
    return (entry,) if isinstance(entry, str) else tuple(entry)


def _fit(entry: Any, size: int, mesh_shape: dict[str, int]) -> Any:
    axes = tuple(a for a in _axes(entry) if a in mesh_shape)
    for n in range(len(axes), 0, -1):
        if size % math.prod(mesh_shape[a] for a in axes[:n]) == 0:
            kept = axes[:n]
            return kept[0] if len(kept) == 1 else kept
    return None


def partition_spec(
    path: str, shape: Sequence[int], mesh: Mesh, rules: Rules = PARAM_RULES
) -> PartitionSpec:
    """The spec of the array at ``path`` with ``shape``: the first matching rule, fitted.

    Args:
        path: the ``/``-joined pytree path (see :func:`tree_paths`).
        shape: the array's shape.
        mesh: the mesh (its axis sizes decide the divisibility fallback).
        rules: ``(regex, spec)`` pairs; the first ``re.search`` match wins.

    Returns:
        A ``PartitionSpec`` of ``len(shape)`` entries (all None when replicated).

    Examples:
        >>> mesh = jax.make_mesh((1, 1, 1), ("data", "fsdp", "tp"), devices=jax.devices()[:1])
        >>> partition_spec("layers/0/self_attn/q_proj/kernel", (16, 32), mesh)
        P('fsdp', 'tp')
        >>> partition_spec("layers/0/input_layernorm/weight", (16,), mesh)
        P(None,)
    """
    shape = tuple(int(s) for s in shape)
    for pattern, spec in rules:
        if re.search(pattern, path):
            if len(spec) != len(shape):
                break
            sizes = dict(mesh.shape)
            return PartitionSpec(*(_fit(e, n, sizes) for e, n in zip(spec, shape, strict=True)))
    return PartitionSpec(*([None] * len(shape)))


def state_shardings(state: Any, mesh: Mesh, rules: Rules = PARAM_RULES) -> Any:
    """A ``NamedSharding`` for every leaf of ``state`` (parameters, optimizer state, caches).

    Optimizer moments match their parameter's rule through their path's suffix; step counts
    and other scalars are replicated.

    Args:
        state: a pytree of arrays or ``jax.ShapeDtypeStruct`` (e.g. an ``nnx.State``).
        mesh: the mesh.
        rules: the partition rules.

    Returns:
        A pytree of the same structure with a ``NamedSharding`` at every leaf.
    """
    leaves, treedef = jax.tree_util.tree_flatten(state)
    out = [
        NamedSharding(mesh, partition_spec(path, np.shape(x), mesh, rules))
        for path, x in zip(tree_paths(state), leaves, strict=True)
    ]
    return jax.tree_util.tree_unflatten(treedef, out)


def host_to_global(x: Any, sharding: jax.sharding.Sharding) -> jax.Array:
    """Places ``x`` with ``sharding``, also when the sharding spans several processes.

    A value that is already a global (not fully addressable) array is resharded; any other
    value must be the same on every process (e.g. a batch computed from the seed and the step),
    and each process copies in the slices of its own devices.
    """
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return jax.device_put(x, sharding)
    if sharding.is_fully_addressable:
        return jax.device_put(x, sharding)
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def shard_state(state: Any, mesh: Mesh, rules: Rules = PARAM_RULES) -> Any:
    """``state`` placed on ``mesh`` by ``rules`` (a new tree; the input is not changed)."""
    return jax.tree.map(host_to_global, state, state_shardings(state, mesh, rules))


def shard_module(module: nnx.Module, mesh: Mesh, rules: Rules = PARAM_RULES) -> nnx.Module:
    """Places every variable of ``module`` on ``mesh`` by ``rules``, in place; returns it.

    Examples:
        >>> from flame_jax.policy import Decoder, DecoderConfig
        >>> model = Decoder(DecoderConfig.tiny(num_layers=1), rngs=nnx.Rngs(0))
        >>> mesh = jax.make_mesh((1, 1, 1), ("data", "fsdp", "tp"), devices=jax.devices()[:1])
        >>> model = shard_module(model, mesh)
        >>> model.layers[0].mlp.down_proj.kernel[...].sharding.spec
        P('tp', 'fsdp')
    """
    nnx.update(module, shard_state(nnx.state(module), mesh, rules))
    return module


def batch_sharding(shape: Sequence[int], mesh: Mesh) -> NamedSharding:
    """The sharding of a batch array: its leading axis over ``data`` and ``fsdp`` (fitted).

    Examples:
        >>> mesh = jax.make_mesh((1, 1, 1), ("data", "fsdp", "tp"), devices=jax.devices()[:1])
        >>> batch_sharding((8, 3), mesh).spec
        P(('data', 'fsdp'), None)
    """
    shape = tuple(int(s) for s in shape)
    if not shape:
        return NamedSharding(mesh, PartitionSpec())
    lead = _fit(BATCH_AXES, shape[0], dict(mesh.shape))
    return NamedSharding(mesh, PartitionSpec(lead, *([None] * (len(shape) - 1))))


def shard_batch(tree: Any, mesh: Mesh) -> Any:
    """Every array of ``tree`` with its leading axis split over ``data`` and ``fsdp``.

    Host values must be the same on every process (see :func:`host_to_global`); for per-host
    loading build the global arrays with ``jax.make_array_from_process_local_data``.
    """
    return jax.tree.map(lambda x: host_to_global(x, batch_sharding(np.shape(x), mesh)), tree)


@dataclasses.dataclass(frozen=True)
class CacheSharding:
    """``KVCache -> shardings`` by :data:`KV_CACHE_RULES` on ``mesh``; hashable, so it can be a
    static argument of the generator (``generate(..., cache_sharding=CacheSharding(mesh))``).
    """

    mesh: Mesh
    rules: tuple = KV_CACHE_RULES

    def __call__(self, cache: Any) -> Any:
        return state_shardings(cache, self.mesh, self.rules)
