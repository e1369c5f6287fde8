"""molecule_batch: power-of-two padding, masks, drug ownership, errors, static num_drugs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flame_jax.graph import GraphError, MoleculeBatch, jraph, molecule_batch, smiles_to_graph


def _is_pow2(n):
    return n >= 1 and n & (n - 1) == 0


def _pow2(x):
    size = 8
    while size < x:
        size *= 2
    return size


def reference_sizes(nodes, edges, graphs):
    """The documented rule: one size class from nodes and edges; edges and graphs tied to it."""
    n_node = _pow2(max(nodes + 1, int(np.ceil(edges / 2))))
    return n_node, max(_pow2(edges), 2 * n_node), max(_pow2(graphs + 1), n_node // 16)


def test_cohort_batch_shapes_masks_and_owners(med_vocab):
    batch = molecule_batch(med_vocab.smiles, names=med_vocab.titles)
    g = batch.graphs
    smiles = [(d, s) for d, ss in enumerate(med_vocab.smiles) for s in ss]
    singles = [smiles_to_graph(s) for _, s in smiles]
    real_nodes = sum(int(x.n_node[0]) for x in singles)
    real_edges = sum(int(x.n_edge[0]) for x in singles)
    n_node, n_edge, n_graph = g.nodes.shape[0], g.edges.shape[0], g.n_node.shape[0]
    assert all(_is_pow2(n) for n in (n_node, n_edge, n_graph))
    assert (n_node, n_edge, n_graph) == reference_sizes(real_nodes, real_edges, len(smiles))
    assert real_nodes < n_node and real_edges <= n_edge and len(smiles) < n_graph
    assert batch.num_drugs == len(med_vocab.smiles)
    assert batch.graph_mask.tolist() == [True] * len(smiles) + [False] * (n_graph - len(smiles))
    assert batch.graph_drug.tolist() == [d for d, _ in smiles] + [0] * (n_graph - len(smiles))
    assert batch.graph_mask.dtype == jnp.bool_ and batch.graph_drug.dtype == jnp.int32
    for leaf in jax.tree.leaves(g):
        assert isinstance(leaf, jax.Array)
    assert g.senders.dtype == jnp.int32 and g.n_node.dtype == jnp.int32
    assert jraph.get_graph_padding_mask(g).tolist() == batch.graph_mask.tolist()
    # Unpadding gives back exactly the graphs of each SMILES, in order.
    host = jax.tree.map(np.array, g)  # writable host copies (unbatch_np edits in place)
    parts = jraph.unbatch_np(jraph.unpad_with_graphs(host))
    assert len(parts) == len(singles)
    for part, single in zip(parts, singles, strict=True):
        for field in ("nodes", "edges", "senders", "receivers", "n_node", "n_edge"):
            np.testing.assert_array_equal(getattr(part, field), getattr(single, field))
    # Padding nodes and edges touch no real node.
    node_mask = np.asarray(jraph.get_node_padding_mask(g))
    edge_mask = np.asarray(jraph.get_edge_padding_mask(g))
    assert node_mask.sum() == real_nodes and edge_mask.sum() == real_edges
    assert not node_mask[np.asarray(g.senders)[~edge_mask]].any()
    assert not node_mask[np.asarray(g.receivers)[~edge_mask]].any()
    np.testing.assert_array_equal(np.asarray(g.nodes)[~node_mask], 0.0)


def test_drugs_without_smiles_and_empty_batches():
    batch = molecule_batch([[], ["[K+]"], []])
    assert batch.num_drugs == 3 and batch.graph_drug.tolist()[:1] == [1]
    assert int(batch.graph_mask.sum()) == 1
    empty = molecule_batch([[], []])
    assert empty.num_drugs == 2 and not bool(empty.graph_mask.any())
    assert empty.graphs.nodes.shape == (8, 50) and empty.graphs.edges.shape == (16, 11)
    none = molecule_batch([])
    assert none.num_drugs == 0 and none.graph_mask.shape == (8,)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bucket_rule_on_random_subsets(med_vocab, seed):
    rng = np.random.default_rng(seed)
    drugs = [med_vocab.smiles[i] for i in rng.integers(0, len(med_vocab.smiles), 5 + 20 * seed)]
    singles = [smiles_to_graph(s) for ss in drugs for s in ss]
    want = reference_sizes(
        sum(int(g.n_node[0]) for g in singles), sum(int(g.n_edge[0]) for g in singles), len(singles)
    )
    g = molecule_batch(drugs).graphs
    assert (g.nodes.shape[0], g.edges.shape[0], g.n_node.shape[0]) == want
    # A size given explicitly is kept; the others follow the rule from it.
    g = molecule_batch(drugs, n_node=2 * want[0]).graphs
    assert g.edges.shape[0] == max(want[1], 4 * want[0]) and g.n_node.shape[0] >= want[2]


def test_explicit_sizes_and_their_errors():
    batch = molecule_batch([["CCO"]], n_node=32, n_edge=16, n_graph=4)
    assert batch.graphs.nodes.shape[0] == 32 and batch.graphs.edges.shape[0] == 16
    assert batch.graph_mask.shape == (4,)
    with pytest.raises(ValueError, match="n_node=3 is too small; the batch needs 4"):
        molecule_batch([["CCO"]], n_node=3)
    with pytest.raises(ValueError, match="n_graph=1 is too small"):
        molecule_batch([["CCO"]], n_graph=1)
    with pytest.raises(ValueError, match="n_edge=2 is too small"):
        molecule_batch([["CCO"]], n_edge=2)


def test_bad_input_errors_name_the_drug():
    with pytest.raises(GraphError, match="drug 'Badamycin': cannot parse SMILES 'C1CC'"):
        molecule_batch([["CCO"], ["C1CC"]], names=["Ethanol", "Badamycin"])
    with pytest.raises(GraphError, match="drug 'drug 1'"):
        molecule_batch([["CCO"], ["CC", "C1CC"]])
    with pytest.raises(ValueError, match="1 names for 2 drugs"):
        molecule_batch([["CCO"], []], names=["a"])
    with pytest.raises(ValueError, match="list of SMILES lists"):
        molecule_batch(["CCO", "CC"])


def test_num_drugs_is_static_under_jit():
    traced = []

    @jax.jit
    def count(batch):
        traced.append(batch.num_drugs)
        return jraph.segment_sum(
            batch.graph_mask.astype(jnp.float32), batch.graph_drug, batch.num_drugs
        )

    a = molecule_batch([["CCO"], ["CC", "CN"]])
    b = molecule_batch([["CCC"], ["CO", "NN"]])
    assert count(a).tolist() == [1.0, 2.0] and count(b).tolist() == [1.0, 2.0]
    assert traced == [2] and isinstance(traced[0], int)  # one trace, num_drugs a Python int
    leaves, treedef = jax.tree.flatten(a)
    assert all(isinstance(x, jax.Array) for x in leaves)
    rebuilt = jax.tree.unflatten(treedef, leaves)
    assert isinstance(rebuilt, MoleculeBatch) and rebuilt.num_drugs == 2
