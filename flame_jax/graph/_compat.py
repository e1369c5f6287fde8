"""Compatibility shim for jraph 0.0.6.dev0 (archived in 2022) on current JAX.

jraph's utilities still call ``jax.tree_map`` and ``jax.tree_leaves``, which JAX removed in 0.6.
Instead of patching the global ``jax`` module, this shim gives jraph's own ``utils`` module a
namespace that forwards to ``jax`` and adds the two old names. Only jraph sees it; flame_jax code
reaches jraph through ``flame_jax.graph`` so the shim is always installed first.
"""

import types

import jax
import jraph
from jraph._src import utils as _jraph_utils

__all__ = ["install", "jraph"]

_REMOVED_ALIASES = {
    "tree_map": jax.tree.map,
    "tree_leaves": jax.tree.leaves,
    "tree_flatten": jax.tree.flatten,
    "tree_unflatten": jax.tree.unflatten,
    "tree_structure": jax.tree.structure,
}


class _JaxForJraph(types.ModuleType):
    """``jax`` as jraph expects it: every current attribute plus the removed tree aliases."""

    def __getattr__(self, name: str):
        if name in _REMOVED_ALIASES:
            return _REMOVED_ALIASES[name]
        return getattr(jax, name)


def install() -> None:
    """Points jraph's utils module at the forwarding namespace (idempotent)."""
    if not isinstance(_jraph_utils.jax, _JaxForJraph):
        _jraph_utils.jax = _JaxForJraph("jax")


install()
