"""Graph encoders as NNX modules: a GIN(E) molecular encoder and a dense GCN (GAMENet's memory).

``GINEncoder`` embeds drugs from their molecular graphs (a :class:`MoleculeBatch`); ``GCN`` embeds
the nodes of a small dense graph (the drug-drug interaction graph, the EHR co-occurrence graph)
given its adjacency matrix and node features.
"""

import itertools

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Shaped

from flame_jax.arraytypes import Array, ArrayLike, Float
from flame_jax.graph._batching import MoleculeBatch
from flame_jax.graph._compat import jraph
from flame_jax.graph._featurize import ATOM_FEATURES, BOND_FEATURES

__all__ = ["GCN", "GINEncoder", "normalized_adjacency"]


class GINEncoder(nnx.Module):
    """Molecular encoder: GIN layers with bond features (GINE), mean pooling, per-drug average.

    With node states ``h`` (``h⁰ = W_atom x + b``) and, per layer ``l``, a bond embedding
    ``e_uv = W_bond^l b_uv + c^l``::

        m_v    = Σ_{u -> v} ReLU(h_u + e_uv)                  (sum over incoming edges)
        h_v'   = MLP^l((1 + ε^l) h_v + m_v)                   (MLP = Linear, ReLU, Linear)
        h_v'   = ReLU(h_v')                                   (all layers but the last)

    A molecule's embedding is the mean of its final node states; a drug's embedding is the mean
    of its molecules' embeddings. A drug with no molecule (no SMILES) gets the learned vector
    ``unknown`` (initialised to zeros). ``ε^l`` is learned (GIN-ε, initialised to 0). There is
    no batch normalisation (it would couple drugs through padding-dependent statistics).

    Args:
        dim: embedding width.
        layers: number of GIN layers (>= 1).
        rngs: NNX random streams for the initial weights.
        atom_features: input node width (default ``ATOM_FEATURES``).
        bond_features: input edge width (default ``BOND_FEATURES``).

    Examples:
        >>> from flax import nnx
        >>> from flame_jax.graph import GINEncoder, molecule_batch
        >>> batch = molecule_batch([["CCO"], [], ["[Na+].[Cl-]", "[K+].[Cl-]"]])
        >>> encoder = GINEncoder(dim=16, layers=2, rngs=nnx.Rngs(0))
        >>> out = encoder(batch)
        >>> out.shape, out[1].tolist() == [0.0] * 16  # drug 1 has no SMILES: the unknown vector
        ((3, 16), True)

    References:
        Xu et al., "How Powerful are Graph Neural Networks?", ICLR 2019 (GIN). Hu et al.,
        "Strategies for Pre-training Graph Neural Networks", ICLR 2020 (GINE, bond features).
    """

    def __init__(
        self,
        *,
        dim: int,
        layers: int,
        rngs: nnx.Rngs,
        atom_features: int = ATOM_FEATURES,
        bond_features: int = BOND_FEATURES,
    ):
        if dim < 1 or layers < 1:
            raise ValueError(f"GINEncoder needs dim >= 1 and layers >= 1, got {dim=}, {layers=}")
        self.dim = dim
        self.layers = layers
        self.atom_embed = nnx.Linear(atom_features, dim, rngs=rngs)
        self.bond_embed = nnx.List(
            [nnx.Linear(bond_features, dim, rngs=rngs) for _ in range(layers)]
        )
        self.mlp_hidden = nnx.List([nnx.Linear(dim, dim, rngs=rngs) for _ in range(layers)])
        self.mlp_out = nnx.List([nnx.Linear(dim, dim, rngs=rngs) for _ in range(layers)])
        self.eps = nnx.Param(jnp.zeros((layers,), jnp.float32))
        self.unknown = nnx.Param(jnp.zeros((dim,), jnp.float32))

    def node_states(self, graphs: jraph.GraphsTuple) -> Float[Array, "nodes dim"]:
        """Final node states of every node of ``graphs`` (padding nodes included)."""
        num_nodes = graphs.nodes.shape[0]
        h = self.atom_embed(graphs.nodes)
        for layer in range(self.layers):
            e = self.bond_embed[layer](graphs.edges)
            messages = jax.nn.relu(h[graphs.senders] + e)
            aggregated = jraph.segment_sum(messages, graphs.receivers, num_nodes)
            h = (1.0 + self.eps[layer]) * h + aggregated
            h = self.mlp_out[layer](jax.nn.relu(self.mlp_hidden[layer](h)))
            if layer < self.layers - 1:
                h = jax.nn.relu(h)
        return h

    def graph_embeddings(self, batch: MoleculeBatch) -> Float[Array, "graphs dim"]:
        """Mean of the node states of each graph (padding graphs included; 0 for empty graphs)."""
        graphs = batch.graphs
        num_nodes, num_graphs = graphs.nodes.shape[0], graphs.n_node.shape[0]
        node_graph = jnp.repeat(
            jnp.arange(num_graphs), graphs.n_node, total_repeat_length=num_nodes
        )
        summed = jraph.segment_sum(self.node_states(graphs), node_graph, num_graphs)
        count = jnp.maximum(graphs.n_node, 1).astype(summed.dtype)
        return summed / count[:, None]

    def __call__(self, batch: MoleculeBatch) -> Float[Array, "drugs dim"]:
        """Embeds every drug of ``batch``: the mean over its molecules, ``unknown`` if none."""
        pooled = self.graph_embeddings(batch)
        weight = batch.graph_mask.astype(pooled.dtype)
        summed = jraph.segment_sum(pooled * weight[:, None], batch.graph_drug, batch.num_drugs)
        count = jraph.segment_sum(weight, batch.graph_drug, batch.num_drugs)
        mean = summed / jnp.maximum(count, 1.0)[:, None]
        return jnp.where((count > 0)[:, None], mean, self.unknown[None, :])


@jax.jit
def normalized_adjacency(
    adjacency: Shaped[ArrayLike, "nodes nodes"],
) -> Float[Array, "nodes nodes"]:
    """Symmetrically normalised adjacency with self loops: ``D^-1/2 (A + I) D^-1/2``.

    ``D`` is the diagonal of the row sums of ``A + I``. Rows whose degree is not positive (only
    possible with negative weights) are zeroed. Integer or boolean input becomes float32; float
    input keeps its dtype.

    Args:
        adjacency: [nodes, nodes] adjacency (0/1 or weighted), normally symmetric.

    Returns:
        The normalised matrix, [nodes, nodes].

    Examples:
        >>> import numpy as np
        >>> normalized_adjacency(np.array([[0, 1], [1, 0]], np.uint8)).tolist()
        [[0.5, 0.5], [0.5, 0.5]]

    References:
        Kipf & Welling, "Semi-Supervised Classification with Graph Convolutional Networks",
        ICLR 2017.
    """
    a = jnp.asarray(adjacency)
    if not jnp.issubdtype(a.dtype, jnp.floating):
        a = a.astype(jnp.float32)
    a = a + jnp.eye(a.shape[0], dtype=a.dtype)
    degree = jnp.sum(a, axis=1)
    degree = jnp.where(degree > 0, degree, 0)
    scale = jnp.sqrt(degree[:, None] * degree[None, :])  # one rounding: exact for 0/1 graphs
    return jnp.where(scale > 0, a / jnp.where(scale > 0, scale, 1), 0)


class GCN(nnx.Module):
    """Graph convolutional network over one dense graph (Kipf & Welling; GAMENet's graph memory).

    ``H⁰ = X``; ``H^{l+1} = Â H^l W^l + b^l`` with ``Â = normalized_adjacency(A)``; ReLU (then
    dropout, if ``dropout > 0``) between layers, none after the last. GAMENet embeds the
    drug-drug interaction graph and the EHR co-occurrence graph this way, with ``X = I``
    (``in_dim = meds``), two layers, and dropout 0.3 between them.

    GAMENet's own code normalises rows (``D^-1 (A + I)``); this module uses the symmetric form of
    the GCN paper, as the layer was published.

    Args:
        in_dim: node feature width.
        dim: output (and hidden) width.
        layers: number of graph convolutions (>= 1).
        dropout: dropout rate between layers (active in training mode, ``model.train()``).
        rngs: NNX random streams (weights, and dropout's ``dropout`` stream).

    Examples:
        >>> import numpy as np
        >>> from flax import nnx
        >>> gcn = GCN(in_dim=3, dim=4, rngs=nnx.Rngs(0))
        >>> ddi = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 0]], np.uint8)
        >>> gcn(ddi, np.eye(3, dtype=np.float32)).shape
        (3, 4)

    References:
        Kipf & Welling, "Semi-Supervised Classification with Graph Convolutional Networks",
        ICLR 2017. Shang et al., "GAMENet: Graph Augmented MEmory Networks for Recommending
        Medication Combination", AAAI 2019.
    """

    def __init__(
        self, *, in_dim: int, dim: int, layers: int = 2, dropout: float = 0.0, rngs: nnx.Rngs
    ):
        if in_dim < 1 or dim < 1 or layers < 1:
            raise ValueError(
                f"GCN needs in_dim, dim, layers >= 1, got {in_dim=}, {dim=}, {layers=}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"GCN dropout must be in [0, 1), got {dropout}")
        widths = [in_dim] + [dim] * layers
        self.weights = nnx.List(
            [nnx.Linear(a, b, use_bias=False, rngs=rngs) for a, b in itertools.pairwise(widths)]
        )
        self.biases = nnx.List([nnx.Param(jnp.zeros((dim,), jnp.float32)) for _ in range(layers)])
        self.dropout = nnx.Dropout(dropout, rngs=rngs)

    def __call__(
        self,
        adjacency: Shaped[ArrayLike, "nodes nodes"],
        features: Float[ArrayLike, "nodes in_dim"],
    ) -> Float[Array, "nodes dim"]:
        """Node embeddings ``[nodes, dim]`` of the graph ``adjacency`` with node ``features``."""
        a_hat = normalized_adjacency(adjacency)
        h = jnp.asarray(features)
        for layer, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = a_hat @ weight(h) + bias[None, :]
            if layer < len(self.weights) - 1:
                h = self.dropout(jax.nn.relu(h))
        return h
