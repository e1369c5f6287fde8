"""Graphs: the one place flame_jax reaches jraph (with its compatibility shim installed).

Use ``from flame_jax.graph import jraph`` rather than importing jraph directly, so the shim in
``_compat.py`` is in force for ``zero_out_padding``, ``get_fully_connected_graph`` and the other
utilities that call JAX functions removed since jraph's last release.
"""

from flame_jax.graph._compat import jraph

__all__ = ["jraph"]
