"""GIN and GCN encoders against independent float64 NumPy forwards; padding, jit, recompiles."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from flame_jax.graph import GCN, GINEncoder, molecule_batch, normalized_adjacency, smiles_to_graph

DIM = 8


def _randomize(module, seed):
    """Replaces every parameter (biases, eps and ``unknown`` included) by seeded random values."""
    rng = np.random.default_rng(seed)
    state = nnx.state(module, nnx.Param)
    leaves, treedef = jax.tree.flatten(state)
    new = [
        jnp.asarray(rng.normal(size=x.shape) / np.sqrt(x.shape[0] if x.ndim == 2 else 4), x.dtype)
        for x in leaves
    ]
    nnx.update(module, jax.tree.unflatten(treedef, new))
    return module


def _f64(param):
    return np.asarray(param[...], np.float64)


def reference_gin(encoder, smiles_per_drug):
    """GIN(E) forward in float64 with explicit loops, one molecule and one drug at a time."""
    relu = lambda x: np.maximum(x, 0.0)
    out = []
    for smiles_list in smiles_per_drug:
        molecules = []
        for smiles in smiles_list:
            g = smiles_to_graph(smiles)
            h = g.nodes.astype(np.float64) @ _f64(encoder.atom_embed.kernel)
            h = h + _f64(encoder.atom_embed.bias)
            for layer in range(encoder.layers):
                embed = encoder.bond_embed[layer]
                m = np.zeros_like(h)
                for k in range(len(g.senders)):
                    e = g.edges[k].astype(np.float64) @ _f64(embed.kernel) + _f64(embed.bias)
                    m[g.receivers[k]] += relu(h[g.senders[k]] + e)
                z = (1.0 + _f64(encoder.eps)[layer]) * h + m
                hidden, last = encoder.mlp_hidden[layer], encoder.mlp_out[layer]
                z = relu(z @ _f64(hidden.kernel) + _f64(hidden.bias))
                h = z @ _f64(last.kernel) + _f64(last.bias)
                if layer < encoder.layers - 1:
                    h = relu(h)
            molecules.append(h.mean(axis=0))
        out.append(np.mean(molecules, axis=0) if molecules else _f64(encoder.unknown))
    return np.stack(out)


@pytest.fixture(scope="module")
def drugs(med_vocab):
    """The cohort's drugs plus a drug without SMILES and one with two salt forms."""
    return [*med_vocab.smiles, (), ("[Na+].[Cl-]", "CC(=O)[O-].[K+]")]


@pytest.fixture(scope="module")
def apply():
    """One jitted pure forward (split once, merge inside), counting its traces."""
    traces = []

    @jax.jit
    def forward(graphdef, state, batch):
        traces.append(batch.graphs.nodes.shape)
        return nnx.merge(graphdef, state)(batch)

    return forward, traces


@pytest.mark.parametrize("layers", [1, 3])
def test_gin_matches_float64_reference_eager_and_jit(drugs, apply, layers):
    encoder = _randomize(GINEncoder(dim=DIM, layers=layers, rngs=nnx.Rngs(layers)), seed=layers)
    batch = molecule_batch(drugs)
    want = reference_gin(encoder, drugs)
    assert np.abs(want).max() > 0.1  # the check is not vacuous
    eager = np.asarray(encoder(batch))
    jitted = np.asarray(apply[0](*nnx.split(encoder), batch))
    assert eager.shape == (len(drugs), DIM) and eager.dtype == np.float32
    np.testing.assert_allclose(eager, want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(jitted, want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(jitted, eager, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(eager[-2], np.asarray(encoder.unknown[...]))


def test_padding_and_drug_order_change_nothing(drugs, apply):
    forward = apply[0]
    encoder = _randomize(GINEncoder(dim=DIM, layers=2, rngs=nnx.Rngs(0)), seed=7)
    graphdef, state = nnx.split(encoder)
    subset = [drugs[i] for i in (0, 1, 3, 8, len(drugs) - 2, len(drugs) - 1)]
    base = molecule_batch(subset)
    g = base.graphs
    sizes = {"n_node": g.nodes.shape[0], "n_edge": g.edges.shape[0], "n_graph": g.n_node.shape[0]}
    wide = molecule_batch(
        subset,
        n_node=4 * sizes["n_node"],
        n_edge=4 * sizes["n_edge"] + 3,
        n_graph=4 * sizes["n_graph"],
    )
    out = np.asarray(forward(graphdef, state, base))
    np.testing.assert_allclose(forward(graphdef, state, wide), out, rtol=1e-6, atol=1e-6)
    # Unpadded: the first drug's single molecule as a bare GraphsTuple, no padding at all.
    unpadded = jax.tree.map(jnp.asarray, smiles_to_graph(subset[0][0]))
    h = encoder.node_states(unpadded)
    np.testing.assert_allclose(np.asarray(h.mean(axis=0)), out[0], rtol=1e-5, atol=1e-6)
    order = [5, 2, 0, 4, 1, 3]
    reordered = forward(graphdef, state, molecule_batch([subset[i] for i in order], **sizes))
    np.testing.assert_allclose(reordered, out[order], rtol=1e-5, atol=1e-6)
    for i in (0, 5):  # each drug alone, in the same padded shapes
        alone = forward(graphdef, state, molecule_batch([subset[i]], **sizes))
        np.testing.assert_allclose(alone[0], out[i], rtol=1e-5, atol=1e-6)


def test_one_compile_per_bucket(apply):
    forward, traces = apply
    encoder = GINEncoder(dim=DIM, layers=2, rngs=nnx.Rngs(1))
    graphdef, state = nnx.split(encoder)
    sizes = {"n_node": 64, "n_edge": 64, "n_graph": 8}
    batches = [
        molecule_batch([["CCO"], ["c1ccccc1O", "[Na+].[Cl-]"]], **sizes),
        molecule_batch([["CC(=O)Nc1ccc(O)cc1"], []], **sizes),
        molecule_batch([["[K+]"], ["CCN", "CCC", "CO"]], **sizes),
    ]
    before = len(traces)
    outs = [forward(graphdef, state, b) for b in batches]
    assert len(traces) - before == 1
    assert all(o.shape == (2, DIM) for o in outs)
    forward(graphdef, state, molecule_batch([["CCO"], ["CC"]], n_node=128, n_edge=64, n_graph=8))
    assert len(traces) - before == 2  # a new bucket compiles once more


def test_edgeless_and_empty_batches(apply):
    encoder = _randomize(GINEncoder(dim=DIM, layers=2, rngs=nnx.Rngs(5)), seed=5)
    ions = [["[K+]"], ["[Na+].[Cl-]", "[Mg+2].[Cl-].[Cl-]"], []]  # no real edge at all
    batch = molecule_batch(ions)
    assert int(batch.graphs.n_edge[:3].sum()) == 0
    got = apply[0](*nnx.split(encoder), batch)
    np.testing.assert_allclose(got, reference_gin(encoder, ions), rtol=1e-5, atol=1e-5)
    assert encoder(molecule_batch([])).shape == (0, DIM)


def test_gradients_reach_every_parameter():
    encoder = GINEncoder(dim=DIM, layers=2, rngs=nnx.Rngs(2))
    batch = molecule_batch([["CC(=O)Nc1ccc(O)cc1"], [], ["[Mg+2].[O-]S([O-])(=O)=O"]])

    graphdef, state = nnx.split(encoder)

    @jax.jit
    def grad(state):
        return jax.grad(lambda s: jnp.sum(jnp.sin(nnx.merge(graphdef, s)(batch))))(state)

    for path, g in jax.tree_util.tree_leaves_with_path(grad(state)):
        assert bool(jnp.isfinite(g).all()), path
        assert float(jnp.abs(g).max()) > 0, path  # eps, unknown, every layer get a signal


def test_gin_validates_its_config():
    with pytest.raises(ValueError, match="layers=0"):
        GINEncoder(dim=4, layers=0, rngs=nnx.Rngs(0))


# ------------------------------------------------------------------------------------------- GCN
def reference_normalized_adjacency(a):
    a = np.asarray(a, np.float64) + np.eye(len(a))
    d = a.sum(axis=1)
    out = np.zeros_like(a)
    for i in range(len(a)):
        for j in range(len(a)):
            if d[i] > 0 and d[j] > 0:
                out[i, j] = a[i, j] / np.sqrt(d[i] * d[j])
    return out


def reference_gcn(gcn, adjacency, features):
    a_hat = reference_normalized_adjacency(adjacency)
    h = np.asarray(features, np.float64)
    n = len(gcn.weights)
    for layer in range(n):
        h = a_hat @ (h @ _f64(gcn.weights[layer].kernel)) + _f64(gcn.biases[layer])
        if layer < n - 1:
            h = np.maximum(h, 0.0)
    return h


def _graph(n, seed, weighted):
    rng = np.random.default_rng(seed)
    upper = np.triu(rng.random((n, n)) < 0.3, 1)
    a = (upper | upper.T).astype(np.float32)
    if weighted:
        a *= rng.uniform(0.1, 3.0, size=(n, n)).astype(np.float32)
        a = (a + a.T) / 2
    if n > 2:
        a[-1, :] = a[:, -1] = 0  # an isolated node
    return a


@pytest.mark.parametrize(("n", "weighted"), [(1, False), (5, True), (17, False), (17, True)])
def test_normalized_adjacency_matches_reference(n, weighted):
    a = _graph(n, n, weighted)
    want = reference_normalized_adjacency(a)
    np.testing.assert_allclose(normalized_adjacency(a), want, rtol=1e-6, atol=1e-7)
    jitted = jax.jit(lambda x: normalized_adjacency(x))(jnp.asarray(a))
    np.testing.assert_allclose(jitted, want, rtol=1e-6, atol=1e-7)
    if n > 2:
        got = np.asarray(normalized_adjacency(a))
        np.testing.assert_allclose(got[-1], np.eye(n)[-1], atol=0)  # isolated: self loop only


def test_normalized_adjacency_dtypes_and_zero_degree():
    a = np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]])
    want = reference_normalized_adjacency(a)
    for x in (a.astype(np.uint8), a.astype(bool), a.astype(np.int32)):
        got = normalized_adjacency(x)
        assert got.dtype == jnp.float32
        np.testing.assert_allclose(got, want, rtol=1e-6)
    negative = np.array([[0.0, -1.0], [-1.0, 0.0]], np.float32)  # degree 0 on both rows
    np.testing.assert_array_equal(normalized_adjacency(negative), np.zeros((2, 2)))


@pytest.mark.parametrize(("n", "in_dim", "layers"), [(1, 1, 1), (6, 6, 2), (17, 5, 3)])
def test_gcn_matches_float64_reference_eager_and_jit(n, in_dim, layers):
    gcn = _randomize(GCN(in_dim=in_dim, dim=DIM, layers=layers, rngs=nnx.Rngs(n)), seed=n)
    adjacency = _graph(n, n + 1, weighted=n > 6)
    features = np.random.default_rng(n).normal(size=(n, in_dim)).astype(np.float32)
    want = reference_gcn(gcn, adjacency, features)
    eager = np.asarray(gcn(adjacency, features))
    graphdef, state = nnx.split(gcn)
    jitted = np.asarray(
        jax.jit(lambda s, a, x: nnx.merge(graphdef, s)(a, x))(state, adjacency, features)
    )
    assert eager.shape == (n, DIM)
    np.testing.assert_allclose(eager, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(jitted, want, rtol=1e-5, atol=1e-5)


def test_gcn_identity_features_permutation_equivariance_and_dropout():
    n = 7
    gcn = _randomize(GCN(in_dim=n, dim=DIM, dropout=0.5, rngs=nnx.Rngs(3)), seed=3)
    adjacency = _graph(n, 11, weighted=False).astype(np.uint8)  # a DDI graph as the dataset has it
    eye = np.eye(n, dtype=np.float32)
    gcn.eval()
    out = np.asarray(gcn(adjacency, eye))
    np.testing.assert_allclose(out, reference_gcn(gcn, adjacency, eye), rtol=1e-5, atol=1e-5)
    perm = np.random.default_rng(0).permutation(n)
    permuted = np.asarray(gcn(adjacency[np.ix_(perm, perm)], eye[perm]))
    np.testing.assert_allclose(permuted, out[perm], rtol=1e-5, atol=1e-5)
    gcn.train()
    dropped = np.asarray(gcn(adjacency, eye))
    assert not np.allclose(dropped, out)  # dropout is active in training mode
    with pytest.raises(ValueError, match="dropout must be in"):
        GCN(in_dim=2, dim=2, dropout=1.0, rngs=nnx.Rngs(0))
