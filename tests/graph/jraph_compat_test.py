"""The jraph functions flame_jax uses, through the compatibility shim, on current JAX."""

import jax
import jax.numpy as jnp
import numpy as np

from flame_jax.graph import jraph


def _graph(n_nodes=(3, 2), seed=0):
    rng = np.random.default_rng(seed)
    senders, receivers, offset = [], [], 0
    n_edge = []
    for n in n_nodes:
        e = rng.integers(0, n, size=(2, n))
        senders += (e[0] + offset).tolist()
        receivers += (e[1] + offset).tolist()
        n_edge.append(n)
        offset += n
    total = sum(n_nodes)
    return jraph.GraphsTuple(
        nodes=jnp.asarray(rng.normal(size=(total, 4)), jnp.float32),
        edges=jnp.asarray(rng.normal(size=(len(senders), 2)), jnp.float32),
        senders=jnp.asarray(senders),
        receivers=jnp.asarray(receivers),
        globals=jnp.ones((len(n_nodes), 1)),
        n_node=jnp.asarray(n_nodes),
        n_edge=jnp.asarray(n_edge),
    )


def test_removed_jax_aliases_are_not_added_to_jax():
    assert not hasattr(jax, "tree_map")  # the shim must not patch the global jax module


def test_zero_out_padding_and_masks():
    g = _graph()
    padded = jraph.pad_with_graphs(g, n_node=8, n_edge=8, n_graph=3)
    nodes = np.array(padded.nodes)
    nodes[5:] = 7.0  # garbage in the padding that zero_out_padding must clear
    padded = padded._replace(nodes=jnp.asarray(nodes))
    zeroed = jraph.zero_out_padding(padded)
    node_mask = jraph.get_node_padding_mask(padded)
    assert node_mask.tolist() == [True] * 5 + [False] * 3
    np.testing.assert_array_equal(zeroed.nodes[5:], 0.0)
    np.testing.assert_allclose(zeroed.nodes[:5], g.nodes)
    assert jraph.get_graph_padding_mask(padded).tolist() == [True, True, False]
    unpadded = jraph.unpad_with_graphs(padded)
    np.testing.assert_allclose(unpadded.nodes, g.nodes)


def test_fully_connected_graph_and_batching():
    fc = jraph.get_fully_connected_graph(
        n_node_per_graph=3, n_graph=2, node_features=np.ones((6, 2)), add_self_edges=False
    )
    assert fc.n_edge.tolist() == [6, 6]
    both = jraph.batch([_graph((3,), 1), _graph((2,), 2)])
    parts = jraph.unbatch(both)
    assert [int(p.n_node[0]) for p in parts] == [3, 2]


def test_segment_sum_and_gcn_under_jit():
    g = _graph()
    summed = jax.jit(jraph.segment_sum, static_argnums=2)(g.nodes, g.receivers, 5)
    want = np.zeros((5, 4), np.float32)
    np.add.at(want, np.asarray(g.receivers), np.asarray(g.nodes))
    np.testing.assert_allclose(summed, want, rtol=1e-6)
    gcn = jraph.GraphConvolution(update_node_fn=lambda x: x * 2.0, add_self_edges=True)
    out = jax.jit(gcn)(g)
    assert out.nodes.shape == g.nodes.shape and bool(jnp.isfinite(out.nodes).all())
