"""The jraph functions flame_jax.graph relies on, on graphs shaped like ours (no globals, no edges).

``jraph_compat_test.py`` covers the shim and the jnp-side utilities; this file covers the host
NumPy path that ``molecule_batch`` takes: ``batch_np``, ``pad_with_graphs`` with ``globals=None``
and zero-edge graphs, the three padding masks, ``unpad_with_graphs`` and ``unbatch_np``, and
``segment_sum`` with empty segments, against plain NumPy.
"""

import jax
import numpy as np
import pytest

from flame_jax.graph import jraph


def _graph(n_node, n_edge, seed):
    rng = np.random.default_rng(seed)
    return jraph.GraphsTuple(
        nodes=rng.normal(size=(n_node, 3)).astype(np.float32),
        edges=rng.normal(size=(n_edge, 2)).astype(np.float32),
        senders=rng.integers(0, n_node, n_edge).astype(np.int32),
        receivers=rng.integers(0, n_node, n_edge).astype(np.int32),
        globals=None,
        n_node=np.array([n_node], np.int32),
        n_edge=np.array([n_edge], np.int32),
    )


SIZES = [(3, 4), (1, 0), (2, 0), (5, 8)]  # includes a bare ion and an edgeless salt


def test_batch_np_offsets_senders_and_keeps_numpy():
    graphs = [_graph(n, e, i) for i, (n, e) in enumerate(SIZES)]
    joined = jraph.batch_np(graphs)
    assert isinstance(joined.nodes, np.ndarray) and joined.globals is None
    np.testing.assert_array_equal(joined.nodes, np.concatenate([g.nodes for g in graphs]))
    np.testing.assert_array_equal(joined.edges, np.concatenate([g.edges for g in graphs]))
    offsets = np.cumsum([0] + [n for n, _ in SIZES[:-1]])
    want = np.concatenate([g.senders + o for g, o in zip(graphs, offsets, strict=True)])
    np.testing.assert_array_equal(joined.senders, want)
    assert joined.n_node.tolist() == [n for n, _ in SIZES]
    assert joined.n_edge.tolist() == [e for _, e in SIZES]
    parts = jraph.unbatch_np(jax.tree.map(np.copy, joined))
    for part, g in zip(parts, graphs, strict=True):
        np.testing.assert_array_equal(part.senders, g.senders)
        np.testing.assert_array_equal(part.nodes, g.nodes)


@pytest.mark.parametrize(("n_node", "n_edge", "n_graph"), [(12, 12, 5), (16, 32, 8)])
def test_pad_with_graphs_masks_and_unpad(n_node, n_edge, n_graph):
    joined = jraph.batch_np([_graph(n, e, i) for i, (n, e) in enumerate(SIZES)])
    real_n, real_e, real_g = int(joined.n_node.sum()), int(joined.n_edge.sum()), len(SIZES)
    padded = jraph.pad_with_graphs(joined, n_node=n_node, n_edge=n_edge, n_graph=n_graph)
    assert padded.nodes.shape == (n_node, 3) and padded.edges.shape == (n_edge, 2)
    assert padded.n_node.tolist() == joined.n_node.tolist() + [n_node - real_n] + [0] * (
        n_graph - real_g - 1
    )
    assert padded.n_edge.tolist()[real_g] == n_edge - real_e and padded.globals is None
    # Padding edges connect the first padding node to itself.
    assert set(padded.senders[real_e:].tolist()) <= {real_n}
    assert set(padded.receivers[real_e:].tolist()) <= {real_n}
    assert jraph.get_node_padding_mask(padded).tolist() == [True] * real_n + [False] * (
        n_node - real_n
    )
    assert jraph.get_edge_padding_mask(padded).tolist() == [True] * real_e + [False] * (
        n_edge - real_e
    )
    assert jraph.get_graph_padding_mask(padded).tolist() == [True] * real_g + [False] * (
        n_graph - real_g
    )
    back = jraph.unpad_with_graphs(padded)
    for field in ("nodes", "edges", "senders", "receivers", "n_node", "n_edge"):
        np.testing.assert_array_equal(getattr(back, field), getattr(joined, field))
    with pytest.raises(RuntimeError, match="too large"):
        jraph.pad_with_graphs(joined, n_node=real_n, n_edge=n_edge, n_graph=n_graph)


def test_segment_sum_with_empty_segments_eager_and_jit():
    rng = np.random.default_rng(0)
    data = rng.normal(size=(9, 4)).astype(np.float32)
    ids = np.array([0, 0, 2, 2, 2, 5, 5, 0, 2], np.int32)  # segments 1, 3, 4, 6 are empty
    want = np.zeros((7, 4), np.float64)
    for row, segment in zip(data, ids, strict=True):
        want[segment] += row
    eager = jraph.segment_sum(data, ids, 7)
    jitted = jax.jit(jraph.segment_sum, static_argnums=2)(data, ids, 7)
    np.testing.assert_allclose(eager, want, rtol=1e-6)
    np.testing.assert_allclose(jitted, want, rtol=1e-6)
    np.testing.assert_array_equal(jraph.segment_sum(data[:0], ids[:0], 3), np.zeros((3, 4)))
