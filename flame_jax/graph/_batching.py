"""Molecules of many drugs as one padded ``GraphsTuple``, bucketed to powers of two, with masks.

A drug may have several SMILES (salt forms, stereoisomers) or none. ``molecule_batch`` parses
every SMILES of every drug, batches all graphs into one ``GraphsTuple`` and pads it with
``jraph.pad_with_graphs`` to power-of-two numbers of nodes, edges and graphs, so that a jitted
encoder compiles once per bucket and number of drugs rather than once per exact shape.
"""

from collections.abc import Sequence
from typing import NamedTuple

import jax
import numpy as np

from flame_jax.arraytypes import Array, Bool, Int
from flame_jax.data import bucket_size
from flame_jax.graph._compat import jraph
from flame_jax.graph._featurize import ATOM_FEATURES, BOND_FEATURES, smiles_to_graph

__all__ = ["MoleculeBatch", "molecule_batch"]


class MoleculeBatch(NamedTuple):
    """A padded batch of molecular graphs for ``num_drugs`` drugs (device arrays).

    A pytree whose leaves are the arrays; ``num_drugs`` is static (pytree auxiliary data), so a
    jitted function of a ``MoleculeBatch`` sees it as a Python int and recompiles only when it
    or a padded size changes.

    Attributes:
        graphs: all graphs, padded with ``jraph.pad_with_graphs`` to ``n_node``, ``n_edge`` and
            ``n_graph`` buckets (powers of two); the last ``graphs - real`` graphs are padding
            (the first of them holds every padding node and edge, the rest are empty).
        graph_mask: [graphs] bool, true for real (molecule) graphs.
        graph_drug: [graphs] int32, the drug each graph belongs to; 0 on padding graphs.
        num_drugs: number of drugs (static); drugs with no SMILES own no graph.
    """

    graphs: jraph.GraphsTuple
    graph_mask: Bool[Array, " graphs"]
    graph_drug: Int[Array, " graphs"]
    num_drugs: int


jax.tree_util.register_pytree_node(
    MoleculeBatch,
    lambda b: ((b.graphs, b.graph_mask, b.graph_drug), b.num_drugs),
    lambda num_drugs, children: MoleculeBatch(*children, num_drugs),
)


def molecule_batch(
    smiles_per_drug: Sequence[Sequence[str]],
    *,
    names: Sequence[str] | None = None,
    n_node: int | np.integer | None = None,
    n_edge: int | np.integer | None = None,
    n_graph: int | np.integer | None = None,
) -> MoleculeBatch:
    """Parses, batches and pads the molecules of every drug.

    Padded sizes are powers of two tied to one size class, so that batches of similar size share
    one bucket (one compile) rather than a product of independent node, edge and graph
    buckets::

        n_node  = bucket_size(max(nodes + 1, ceil(edges / 2)))   (>= 8; pad_with_graphs needs a
                                                                  spare node)
        n_edge  = max(bucket_size(edges), 2 * n_node)             (= 2 * n_node by default)
        n_graph = max(bucket_size(graphs + 1), n_node // 16)      (>= 16 atoms per molecule on
                                                                  average need no larger bucket)

    Give ``n_node`` / ``n_edge`` / ``n_graph`` to fix them (e.g. one shape for a whole stream);
    the others then follow the rule above.

    Args:
        smiles_per_drug: for each drug, its SMILES strings (possibly none), e.g.
            ``Dataset.med_vocab.smiles``.
        names: drug names for error messages (e.g. ``Dataset.med_vocab.titles``); default
            ``"drug <index>"``.
        n_node: padded number of nodes (> real nodes).
        n_edge: padded number of edges (>= real edges).
        n_graph: padded number of graphs (> real graphs).

    Returns:
        A :class:`MoleculeBatch` of ``len(smiles_per_drug)`` drugs, graphs in drug order.

    Raises:
        GraphError: a SMILES cannot be parsed (names the drug and the SMILES).
        ValueError: ``names`` has the wrong length, or a given padded size is too small.

    Examples:
        >>> batch = molecule_batch([["CCO"], [], ["[Na+].[Cl-]", "[K+].[Cl-]"]])
        >>> batch.num_drugs, batch.graph_mask.tolist(), batch.graph_drug.tolist()
        (3, [True, True, True, False, False, False, False, False], [0, 2, 2, 0, 0, 0, 0, 0])
        >>> batch.graphs.nodes.shape, batch.graphs.edges.shape  # 7 atoms, 4 directed edges
        ((8, 50), (16, 11))
    """
    num_drugs = len(smiles_per_drug)
    if names is None:
        names = [f"drug {i}" for i in range(num_drugs)]
    elif len(names) != num_drugs:
        raise ValueError(f"molecule_batch: {len(names)} names for {num_drugs} drugs")
    if isinstance(smiles_per_drug, str) or any(isinstance(s, str) for s in smiles_per_drug):
        raise ValueError("molecule_batch: smiles_per_drug must be a list of SMILES lists per drug")
    graphs, drug_of_graph = [], []
    for drug, (smiles_list, name) in enumerate(zip(smiles_per_drug, names, strict=True)):
        for smiles in smiles_list:
            graphs.append(smiles_to_graph(smiles, name=name))
            drug_of_graph.append(drug)
    real_graphs = len(graphs)
    if real_graphs:
        joined = jraph.batch_np(graphs)
    else:
        joined = jraph.GraphsTuple(
            nodes=np.zeros((0, ATOM_FEATURES), np.float32),
            edges=np.zeros((0, BOND_FEATURES), np.float32),
            senders=np.zeros(0, np.int32),
            receivers=np.zeros(0, np.int32),
            globals=None,
            n_node=np.zeros(0, np.int32),
            n_edge=np.zeros(0, np.int32),
        )
    real_nodes, real_edges = int(np.sum(joined.n_node)), int(np.sum(joined.n_edge))
    if n_node is None:
        n_node = bucket_size(max(real_nodes + 1, -(-real_edges // 2)))
    n_node = int(n_node)
    n_edge = max(bucket_size(real_edges), 2 * n_node) if n_edge is None else int(n_edge)
    n_graph = max(bucket_size(real_graphs + 1), n_node // 16) if n_graph is None else int(n_graph)
    for field, size, need in (
        ("n_node", n_node, real_nodes + 1),
        ("n_edge", n_edge, real_edges),
        ("n_graph", n_graph, real_graphs + 1),
    ):
        if size < need:
            raise ValueError(f"molecule_batch: {field}={size} is too small; the batch needs {need}")
    padded = jraph.pad_with_graphs(joined, n_node=n_node, n_edge=n_edge, n_graph=n_graph)
    padded = padded._replace(
        senders=padded.senders.astype(np.int32),
        receivers=padded.receivers.astype(np.int32),
        n_node=padded.n_node.astype(np.int32),
        n_edge=padded.n_edge.astype(np.int32),
    )
    graph_drug = np.zeros(n_graph, np.int32)
    graph_drug[:real_graphs] = drug_of_graph
    graphs, graph_mask, graph_drug = jax.device_put(
        (padded, np.arange(n_graph) < real_graphs, graph_drug)
    )
    return MoleculeBatch(
        graphs=graphs,
        graph_mask=graph_mask,
        graph_drug=graph_drug,
        num_drugs=num_drugs,
    )
