"""Graphs: molecular graphs from SMILES, padded batches, GIN and GCN encoders; jraph with its shim.

Use ``from flame_jax.graph import jraph`` rather than importing jraph directly, so the shim in
``_compat.py`` is in force for ``zero_out_padding``, ``get_fully_connected_graph`` and the other
utilities that call JAX functions removed since jraph's last release.
"""

from flame_jax.graph._batching import MoleculeBatch, molecule_batch
from flame_jax.graph._compat import jraph
from flame_jax.graph._encoders import GCN, GINEncoder, normalized_adjacency
from flame_jax.graph._featurize import (
    ATOM_FEATURES,
    BOND_FEATURES,
    ELEMENTS,
    GraphError,
    atom_features,
    bond_features,
    smiles_to_graph,
)

__all__ = [
    "ATOM_FEATURES",
    "BOND_FEATURES",
    "ELEMENTS",
    "GCN",
    "GINEncoder",
    "GraphError",
    "MoleculeBatch",
    "atom_features",
    "bond_features",
    "jraph",
    "molecule_batch",
    "normalized_adjacency",
    "smiles_to_graph",
]
