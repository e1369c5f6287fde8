"""Vancouver consensus against the spec's golden values and an edge-by-edge float64 reference."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flame_jax.consensus import (
    VancouverConfig,
    VancouverResult,
    vancouver,
    vancouver_batch,
    vancouver_grid,
)
from tests.consensus.consensus_reference import random_graph, reference_vancouver

FIELDS = ("grade", "item_variance", "reviewer_variance", "reviewer_quality", "reviewer_bias")

# de Alfaro's unit-test graph (consensus_spec.md §5, golden tests), grades on 0-10.
REVIEWERS = ("luca", "mike", "hugo", "anna", "carl")
ITEMS = ("pizza", "pasta", "pollo", "steak")
REVIEWS = {
    "luca": {"pizza": 8.0, "pasta": 9.0, "pollo": 5.0, "steak": 6.0},
    "mike": {"pizza": 7.5, "pollo": 8.0},
    "hugo": {"pizza": 6.0, "pasta": 7.0, "pollo": 7.5},
    "anna": {"pizza": 7.0, "pasta": 8.5, "pollo": 5.5},
    "carl": {"pollo": 5.4},
}
GOLDEN = {
    True: {
        "grade": [7.0808, 8.1532, 6.2322, 6.0],
        "item_variance": [0.5751, 0.6269, 0.0619, 1.6886],
        "reviewer_variance": [1.3843, 2.7698, 1.5630, 0.4069, 0.6925],
        "reviewer_quality": [0.3213, 0.0399, 0.2788, 0.6320, 0.5199],
    },
    False: {
        "grade": [7.0002, 8.5, 5.4991, 6.0],
        "item_variance": [0.0, 0.0, 0.0, 0.5003],
        "reviewer_variance": [0.5003, 3.2377, 2.4130, 0.0, 0.0098],
        "reviewer_quality": [0.592, 0.0, 0.104, 0.9997, 0.943],
    },
}


def _golden_graph():
    grades = np.full((len(REVIEWERS), len(ITEMS)), np.nan)
    for r, name in enumerate(REVIEWERS):
        for i, item in enumerate(ITEMS):
            if item in REVIEWS[name]:
                grades[r, i] = REVIEWS[name][item]
    return grades, ~np.isnan(grades)


def _as_numpy(result: VancouverResult) -> dict:
    return {k: np.asarray(getattr(result, k)) for k in FIELDS}


def _assert_matches(got: dict, expected: dict, *, atol, rtol=0.0):
    for k in FIELDS:
        np.testing.assert_allclose(got[k], expected[k], atol=atol, rtol=rtol, err_msg=k)


@pytest.mark.parametrize("loo", [True, False])
def test_golden_values_of_the_reference_unit_test(loo):
    grades, mask = _golden_graph()
    with jax.enable_x64(True):
        got = vancouver(grades, mask, config=VancouverConfig(leave_one_out=loo))
        assert got.grade.dtype == jnp.float64
        got = {k: np.asarray(getattr(got, k)) for k in GOLDEN[loo]}
    for k, values in GOLDEN[loo].items():
        decimals = 3 if k == "reviewer_quality" and not loo else 4
        np.testing.assert_allclose(got[k], values, atol=0.6 * 10**-decimals, err_msg=k)
    # The reference oracle reproduces the same table.
    ref = reference_vancouver(grades, mask, leave_one_out=loo)
    for k in GOLDEN[loo]:
        np.testing.assert_allclose(got[k], ref[k], atol=1e-9, err_msg=k)


def test_golden_values_float32_with_leave_one_out():
    grades, mask = _golden_graph()
    got = vancouver(grades.astype(np.float32), mask)
    assert got.grade.dtype == jnp.float32
    for k, values in GOLDEN[True].items():
        np.testing.assert_allclose(np.asarray(getattr(got, k)), values, atol=1e-4, err_msg=k)


def test_broken_reviewer_is_recognised():
    """Spec §2.6: one of three peers grades everything 0; LOO Vancouver discounts it."""
    grades = np.array([[0.0, 0.8, 0.35], [0.9, 0.0, 0.30], [0.0, 0.0, 0.0]], np.float32)
    mask = ~np.eye(3, dtype=bool)
    got = vancouver(grades, mask)
    np.testing.assert_allclose(got.grade, [0.896, 0.797, 0.328], atol=6e-4)
    np.testing.assert_allclose(got.reviewer_quality, [0.97, 0.96, 0.0], atol=6e-3)


CONFIGS = [
    VancouverConfig(),
    VancouverConfig(leave_one_out=False),
    VancouverConfig(debias=True),
    VancouverConfig(variance_floor=1e-3, leave_one_out=False, debias=True),
    VancouverConfig(iterations=3, eps=1e-2, init_variance=2.0),
]
CONFIG_IDS = ["loo", "all-data", "debias", "floor-debias-all-data", "short"]
SHAPES = [(1, 1), (3, 3), (2, 5), (6, 4), (1, 7), (8, 8)]
PAD = (8, 8)


def _pad(grades, mask, rng, shape=PAD):
    """Embed a graph top-left in ``shape``; the padding holds garbage (also NaN) under mask 0."""
    r, i = grades.shape
    g = rng.normal(size=shape) * 100
    g[rng.random(shape) < 0.3] = np.nan
    m = np.zeros(shape, bool)
    g[:r, :i] = np.where(mask, grades, np.nan)
    m[:r, :i] = mask
    return g, m


def _random_batch(rng, shapes, *, density=0.6, pad=PAD):
    graphs = []
    for shape in shapes:
        peer = shape[0] == shape[1] and shape[0] > 1
        graphs.append(random_graph(rng, *shape, density=density, peer_review=peer))
    padded = [_pad(g, m, rng, pad) for g, m in graphs]
    return graphs, np.stack([p[0] for p in padded]), np.stack([p[1] for p in padded])


@pytest.mark.parametrize(
    "config", [CONFIGS[k] for k in (0, 2, 3, 4)], ids=[CONFIG_IDS[k] for k in (0, 2, 3, 4)]
)
def test_jit_vmap_over_padded_graphs_matches_float64_reference(config):
    """Random graphs of several shapes, padded to 8x8 and batched: each equals the oracle."""
    rng = np.random.default_rng(CONFIGS.index(config))
    graphs, g_b, m_b = _random_batch(rng, SHAPES * 2)
    with jax.enable_x64(True):
        fn = jax.jit(jax.vmap(lambda g, m: vancouver(g, m, config=config)))
        batched = fn(g_b, m_b)
        assert batched.grade.dtype == jnp.float64
        batched = {k: np.asarray(v) for k, v in batched._asdict().items()}
    for b, (g, m) in enumerate(graphs):
        r, i = g.shape
        expected = reference_vancouver(g, m, **dataclasses.asdict(config))
        got = {
            k: batched[k][b, :i] if k in ("grade", "item_variance") else batched[k][b, :r]
            for k in FIELDS
        }
        _assert_matches(got, expected, atol=1e-8, rtol=1e-7)
        # Padding rows and columns are exactly zero.
        assert np.all(batched["grade"][b, i:] == 0)
        assert np.all(batched["reviewer_variance"][b, r:] == 0)
        assert np.all(batched["edge_variance"][b][~m_b[b]] == 0)
        np.testing.assert_array_equal(batched["item_count"][b], m_b[b].sum(0))


@pytest.mark.parametrize(
    "config", [CONFIGS[k] for k in (0, 3)], ids=[CONFIG_IDS[k] for k in (0, 3)]
)
def test_vancouver_batch_equals_vmap_across_chunks(config):
    """The fast batched path (vignettes last, 3 chunks) = jit(vmap(vancouver)) = oracle, x64.

    Peer-review masks (self-review excluded) and random masks with missing edges, padded to
    16x16 at the end; 16 reviewers take the tree leave-one-out sums, 3 would take the direct ones.
    """
    rng = np.random.default_rng(9)
    shapes = [(16, 16), (5, 7), (3, 3), (1, 1), (6, 5), (16, 9)]
    graphs, g_b, m_b = _random_batch(rng, shapes * 100, pad=(16, 16))  # 600 graphs: 3 chunks
    with jax.enable_x64(True):
        batched = vancouver_batch(g_b, m_b, config=config)
        vmapped = jax.jit(jax.vmap(lambda g, m: vancouver(g, m, config=config)))(g_b, m_b)
        assert batched.grade.dtype == jnp.float64
    assert batched.grade.shape == (600, 16)
    # Rounding differs (summation order, one reciprocal per weight sum); without LOO, symmetric
    # one-item reviewers are an unstable fixed point that amplifies it to ~1e-9 over 20 rounds.
    for k in VancouverResult._fields:
        np.testing.assert_allclose(
            np.asarray(getattr(batched, k)),
            np.asarray(getattr(vmapped, k)),
            rtol=1e-7,
            atol=1e-8,
            err_msg=k,
        )
    batched = {k: np.asarray(v) for k, v in batched._asdict().items()}
    for b in [0, 1, 2, 3, 4, 5, 598, 599]:
        g, m = graphs[b]
        r, i = g.shape
        expected = reference_vancouver(g, m, **dataclasses.asdict(config))
        got = {k: batched[k][b, : i if k in ("grade", "item_variance") else r] for k in FIELDS}
        _assert_matches(got, expected, atol=1e-8, rtol=1e-7)
        assert np.all(batched["grade"][b, i:] == 0) and np.all(
            batched["edge_variance"][b][~m_b[b]] == 0
        )


@pytest.mark.parametrize("pad", [(3, 3), (16, 16), (6, 5)], ids=["3x3", "16x16", "6x5"])
def test_vancouver_batch_float32_matches_float64_reference(pad):
    """Float32 fast path (direct sums on 3 rows, tree sums on 16 and on 6 / 5) vs the oracle."""
    rng = np.random.default_rng(sum(pad))
    shapes = [pad, (pad[0] - 1, pad[1]), (2, 2), (pad[0], 1)] * 3
    graphs, g_b, m_b = _random_batch(rng, shapes, density=0.7, pad=pad)
    got = vancouver_batch(g_b.astype(np.float32), m_b)
    assert got.grade.dtype == jnp.float32
    for b, (g, m) in enumerate(graphs):
        r, i = g.shape
        expected = reference_vancouver(g, m)
        part = {
            k: np.asarray(getattr(got, k))[b, : i if k in ("grade", "item_variance") else r]
            for k in FIELDS
        }
        _assert_matches(part, expected, atol=2e-5, rtol=1e-4)
        assert np.all(np.isfinite(np.asarray(got.reliability)[b]))


def test_vancouver_batch_eager_matches_float64_reference():
    """The fast path op by op (``jax.disable_jit``), short config, x64."""
    config = CONFIGS[4]
    rng = np.random.default_rng(17)
    graphs, g_b, m_b = _random_batch(rng, [(3, 3), (2, 4), (1, 1), (4, 2)], pad=(4, 4))
    with jax.enable_x64(True), jax.disable_jit():
        got = vancouver_batch(g_b, m_b, config=config)
    for b, (g, m) in enumerate(graphs):
        r, i = g.shape
        expected = reference_vancouver(g, m, **dataclasses.asdict(config))
        part = {
            k: np.asarray(getattr(got, k))[b, : i if k in ("grade", "item_variance") else r]
            for k in FIELDS
        }
        _assert_matches(part, expected, atol=1e-8, rtol=1e-7)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 8, 16, 17])
def test_leave_one_out_sums_are_exact_without_cancellation(n):
    """Fast LOO sums (direct and tree) = sum of the others, also when one term dominates."""
    from flame_jax.consensus._vancouver import _direct_others, _tree_others

    rng = np.random.default_rng(n)
    x = rng.random((n, 3, 5)) * 10.0 ** rng.integers(-3, 1, size=(n, 3, 5))
    x[0] = 1e4  # a dominant weight (1 / eps): total - own would cancel in float32
    expected = x.sum(0, keepdims=True) - x  # float64
    for fn in (_tree_others,) + ((_direct_others,) if n <= 4 else ()):
        for axis in (0, 1):
            arr = np.moveaxis(x, 0, axis).astype(np.float32)
            got = np.moveaxis(np.asarray(jax.jit(fn, static_argnums=1)(arr, axis)), axis, 0)
            np.testing.assert_allclose(got, expected, rtol=3e-6, atol=0, err_msg=fn.__name__)


@pytest.mark.parametrize(
    ("config", "shapes"),
    [(CONFIGS[0], [(3, 3), (2, 5)]), (CONFIGS[1], [(1, 1), (4, 3)])],
    ids=["loo", "all-data"],
)
def test_eager_unbatched_matches_float64_reference(config, shapes):
    """Op-by-op (``jax.disable_jit``) on unpadded graphs."""
    rng = np.random.default_rng(21)
    with jax.enable_x64(True), jax.disable_jit():
        for shape in shapes:
            g, m = random_graph(rng, *shape, density=0.7, peer_review=shape[0] == shape[1])
            expected = reference_vancouver(g, m, **dataclasses.asdict(config))
            got = _as_numpy(vancouver(g, m, config=config))
            _assert_matches(got, expected, atol=1e-8, rtol=1e-7)


def test_float32_matches_float64_reference_with_leave_one_out():
    """Float32 is accurate for the published (LOO) variant (all-data mode: see
    ``test_all_data_float32_matches_float64_on_small_graphs``)."""
    rng = np.random.default_rng(4)
    graphs, g_b, m_b = _random_batch(
        rng, [(3, 3), (5, 7), (10, 10), (16, 16)] * 3, density=0.7, pad=(16, 16)
    )
    batched = jax.vmap(vancouver)(g_b.astype(np.float32), m_b)
    assert batched.grade.dtype == jnp.float32
    for b, (g, m) in enumerate(graphs):
        r, i = g.shape
        expected = reference_vancouver(g, m)
        got = {
            k: np.asarray(getattr(batched, k))[b, : i if k in ("grade", "item_variance") else r]
            for k in FIELDS
        }
        _assert_matches(got, expected, atol=2e-5, rtol=1e-4)


def _peer_graphs_with_missing_reviews(rng, n, size):
    """``n`` random peer-review graphs (self-review masked) with at least one missing review."""
    graphs = []
    while len(graphs) < n:
        g, m = random_graph(rng, size, size, density=0.6, peer_review=True)
        if m.sum() < size * (size - 1):
            graphs.append((g, m))
    return graphs


def test_all_data_float32_keeps_a_symmetric_pair_symmetric():
    """Two reviewers whose only review is the same item: an unstable symmetric fixed point.

    Exact arithmetic (and float64) stays on it: equal variances, consensus at the midpoint. The
    float32 residuals g - mu used to differ by an ulp between the two, the gap doubled every
    round, and after 20 rounds one reviewer had taken the item (0.45 off the midpoint here).
    """
    grades = np.array([[np.nan, np.nan, 0.9], [np.nan, np.nan, 0.0], [0.6, 0.2, np.nan]])
    mask = ~np.isnan(grades)
    config = VancouverConfig.reference_2014()
    expected = reference_vancouver(grades, mask, leave_one_out=False)
    g32 = np.nan_to_num(grades).astype(np.float32)
    for got in (
        vancouver(g32, mask, config=config),
        jax.tree.map(lambda x: x[0], vancouver_batch(g32[None], mask[None], config=config)),
    ):
        _assert_matches(_as_numpy(got), expected, atol=2e-5, rtol=1e-4)
        # Reviewers 0 and 1 grade only item 2: the consensus is their midpoint, 0.45.
        assert abs(float(got.grade[2]) - 0.45) < 1e-5
        assert float(got.reviewer_variance[0]) == float(got.reviewer_variance[1])


def test_all_data_float32_matches_float64_on_small_graphs():
    """Issue 17: without leave-one-out, float32 settled on another fixed point than float64 in
    one small peer-review graph with missing reviews in seven (up to 0.45 in the grade).

    Measured after the fix on 1,872 such 3x3 graphs: grade within 8.2e-5 (vancouver) / 2.0e-4
    (vancouver_batch), reviewer quality within 5.3e-4 / 1.3e-3; larger graphs are closer.
    """
    rng = np.random.default_rng(17)
    graphs = _peer_graphs_with_missing_reviews(rng, 400, 3)
    graphs += [random_graph(rng, 5, 5, density=1.0, peer_review=True) for _ in range(40)]
    graphs += [random_graph(rng, 8, 8, density=0.5, peer_review=True) for _ in range(40)]
    config = VancouverConfig.reference_2014()
    padded = [_pad(g, m, rng) for g, m in graphs]
    g_b = np.stack([p[0] for p in padded]).astype(np.float32)
    m_b = np.stack([p[1] for p in padded])
    vmapped = jax.jit(jax.vmap(lambda g, m: vancouver(g, m, config=config)))(g_b, m_b)
    batched = vancouver_batch(g_b, m_b, config=config)
    worst = dict.fromkeys(("vmap_grade", "vmap_quality", "batch_grade", "batch_quality"), 0.0)
    for b, (g, m) in enumerate(graphs):
        r, i = g.shape
        expected = reference_vancouver(g, m, leave_one_out=False)
        for name, res in (("vmap", vmapped), ("batch", batched)):
            grade = np.abs(np.asarray(res.grade)[b, :i] - expected["grade"]).max()
            quality = np.abs(
                np.asarray(res.reviewer_quality)[b, :r] - expected["reviewer_quality"]
            ).max()
            worst[f"{name}_grade"] = max(worst[f"{name}_grade"], grade)
            worst[f"{name}_quality"] = max(worst[f"{name}_quality"], quality)
    assert worst["vmap_grade"] < 2e-4 and worst["batch_grade"] < 4e-4, worst
    assert worst["vmap_quality"] < 1e-3 and worst["batch_quality"] < 2.5e-3, worst


@pytest.mark.parametrize("loo", [True, False])
def test_equal_grades_give_reviewer_quality_one(loo):
    """A deliberate difference from the original code: when every observed grade is equal, SD
    is 0 and the original's 0/0 NaN ends as quality 0; ours gives every reviewer with a review 1
    (each agrees with the consensus exactly). Reviewers without a review get 0."""
    config = VancouverConfig(leave_one_out=loo)
    mask = np.array([[0, 1, 1], [1, 0, 0], [1, 1, 0], [0, 0, 0]], bool)
    grades = np.where(mask, 0.35, np.nan)
    want = [1.0, 1.0, 1.0, 0.0]
    for dtype in (np.float32, np.float64):
        with jax.enable_x64(dtype == np.float64):
            g = np.nan_to_num(grades).astype(dtype)
            single = vancouver(g, mask, config=config)
            batch = vancouver_batch(g[None], mask[None], config=config)
            np.testing.assert_array_equal(np.asarray(single.reviewer_quality), want)
            np.testing.assert_array_equal(np.asarray(batch.reviewer_quality)[0], want)
            np.testing.assert_allclose(np.asarray(single.grade), 0.35, rtol=1e-6)
    np.testing.assert_array_equal(
        reference_vancouver(grades, mask, leave_one_out=loo)["reviewer_quality"], want
    )


def test_padding_anywhere_changes_nothing_float32():
    """Masked reviewers/items inserted at random positions (not only at the end) are inert."""
    rng = np.random.default_rng(11)
    grades, mask = random_graph(rng, 7, 5, density=0.7)
    base = vancouver(grades.astype(np.float32), mask)
    rows = np.sort(rng.choice(9, size=7, replace=False))
    cols = np.sort(rng.choice(8, size=5, replace=False))
    g = rng.normal(size=(9, 8)).astype(np.float32)
    m = np.zeros((9, 8), bool)
    g[np.ix_(rows, cols)] = grades
    m[np.ix_(rows, cols)] = mask
    got = vancouver(g, m)
    for k in FIELDS:
        full = np.asarray(getattr(got, k))
        part = full[cols] if k in ("grade", "item_variance") else full[rows]
        np.testing.assert_allclose(part, np.asarray(getattr(base, k)), rtol=1e-5, atol=1e-6)
    assert np.all(np.asarray(got.grade)[np.setdiff1d(np.arange(8), cols)] == 0)


def test_self_review_excluded_by_mask_and_missing_review_is_missing_edge():
    rng = np.random.default_rng(3)
    grades = rng.random((4, 4)).astype(np.float32)
    mask = ~np.eye(4, dtype=bool)
    base = vancouver(grades, mask)
    # What an author would say about its own item does not matter.
    selfish = grades.copy()
    np.fill_diagonal(selfish, 1.0)
    np.testing.assert_array_equal(vancouver(selfish, mask).grade, base.grade)
    # A failed review (NaN, masked) is a missing edge: the same as never asking.
    failed = grades.copy()
    failed[0, 1] = np.nan
    mask2 = mask.copy()
    mask2[0, 1] = False
    missing = vancouver(failed, mask2)
    assert np.all(np.isfinite(np.asarray(missing.grade)))
    zero = grades.copy()
    zero[0, 1] = 0.0
    np.testing.assert_array_equal(vancouver(zero, mask2).grade, missing.grade)
    # ... and not a grade of 0.
    as_zero = vancouver(zero, mask)
    assert abs(float(as_zero.grade[1]) - float(missing.grade[1])) > 1e-3
    assert int(missing.item_count[1]) == 2 and int(missing.reviewer_count[0]) == 2


def test_permutation_equivariance():
    rng = np.random.default_rng(8)
    grades, mask = random_graph(rng, 7, 5, density=0.7)
    grades = grades.astype(np.float32)
    base = vancouver(grades, mask)
    pr, pi = rng.permutation(7), rng.permutation(5)
    got = vancouver(grades[pr][:, pi], mask[pr][:, pi])
    np.testing.assert_allclose(got.grade, np.asarray(base.grade)[pi], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        got.item_variance, np.asarray(base.item_variance)[pi], rtol=1e-5, atol=1e-6
    )
    for k in ("reviewer_variance", "reviewer_quality", "reliability"):
        np.testing.assert_allclose(
            getattr(got, k), np.asarray(getattr(base, k))[pr], rtol=1e-4, atol=1e-6, err_msg=k
        )


def test_empty_rows_columns_and_empty_graph_are_zero_not_nan():
    grades = np.array([[0.5, np.nan, 0.2], [np.nan] * 3, [np.nan] * 3], np.float32)
    mask = np.array([[True, False, True], [False] * 3, [False] * 3])
    got = vancouver(grades, mask)
    for k, v in got._asdict().items():
        assert np.all(np.isfinite(np.asarray(v))), k
    assert float(got.grade[1]) == 0.0 and float(got.reviewer_variance[1]) == 0.0
    assert float(got.reliability[1]) == 0.0 and int(got.reviewer_count[1]) == 0
    np.testing.assert_allclose(np.asarray(got.grade)[[0, 2]], [0.5, 0.2])
    empty = vancouver(np.zeros((3, 3), np.float32), np.zeros((3, 3), bool))
    for k, v in empty._asdict().items():
        assert np.all(np.asarray(v) == 0), k
    # Unanimous grades: zero variance, quality 1, no division by zero.
    same = vancouver(np.full((3, 3), 0.7, np.float32), ~np.eye(3, dtype=bool))
    np.testing.assert_allclose(same.grade, 0.7, rtol=1e-6)
    np.testing.assert_allclose(same.reviewer_quality, 1.0)


def test_gradients_are_finite():
    rng = np.random.default_rng(2)
    grades, mask = random_graph(rng, 4, 4, density=0.8, peer_review=True)
    grades = np.nan_to_num(grades).astype(np.float32)
    grad = jax.grad(lambda g: jnp.sum(vancouver(g, mask).grade))(jnp.asarray(grades))
    assert np.all(np.isfinite(np.asarray(grad)))
    assert np.all(np.asarray(grad)[~mask] == 0)


def test_compiles_once_per_shape():
    fn = jax.jit(vancouver, static_argnames="config")
    rng = np.random.default_rng(0)
    for _ in range(3):
        g, m = random_graph(rng, 4, 4)
        fn(np.nan_to_num(g).astype(np.float32), m)
    assert fn._cache_size() == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"iterations": 0}, "iterations"),
        ({"eps": 0.0}, "eps"),
        ({"variance_floor": -1.0}, "variance_floor"),
        ({"init_variance": float("nan")}, "init_variance"),
    ],
)
def test_config_validation_names_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message):
        VancouverConfig(**kwargs)


GRID = {
    "eps": np.array([1e-4, 1e-2, 1e-3, 5e-4]),
    "variance_floor": np.array([0.0, 1e-3, np.nan, 0.05]),
    "init_variance": np.array([1.0, 2.0, 0.5, 1.0]),
}


@pytest.mark.parametrize(("loo", "debias"), [(True, False), (False, True)], ids=["loo", "debias"])
def test_grid_equals_vancouver_per_grid_point_x64(loo, debias):
    """jit(vmap over vignettes) of vancouver_grid = vancouver with the matching config (x64)."""
    rng = np.random.default_rng(31)
    graphs, g_b, m_b = _random_batch(rng, [(3, 3), (2, 5), (6, 4), (8, 8)], pad=(8, 8))
    with jax.enable_x64(True):
        grid = {k: jnp.asarray(v) for k, v in GRID.items()}
        fn = jax.jit(
            jax.vmap(
                lambda g, m: vancouver_grid(
                    g, m, **grid, iterations=7, leave_one_out=loo, debias=debias
                )
            )
        )
        got = fn(g_b, m_b)
        assert got.grade.shape == (len(graphs), 4, 8) and got.grade.dtype == jnp.float64
        got = {k: np.asarray(v) for k, v in got._asdict().items()}
        for p in range(4):
            floor = float(GRID["variance_floor"][p])
            config = VancouverConfig(
                iterations=7,
                leave_one_out=loo,
                debias=debias,
                eps=float(GRID["eps"][p]),
                variance_floor=None if np.isnan(floor) or floor == 0 else floor,
                init_variance=float(GRID["init_variance"][p]),
            )
            for b, (g, m) in enumerate(graphs):
                r, i = g.shape
                expected = reference_vancouver(g, m, **dataclasses.asdict(config))
                _assert_matches(
                    {
                        k: got[k][b, p, : i if k in ("grade", "item_variance") else r]
                        for k in FIELDS
                    },
                    expected,
                    atol=1e-8,
                    rtol=1e-7,
                )
            if loo:  # every field, padding included, equals vancouver's
                expected = vancouver(g_b[1], m_b[1], config=config)
                for k in VancouverResult._fields:
                    np.testing.assert_allclose(
                        got[k][1, p], np.asarray(getattr(expected, k)), rtol=1e-12, atol=1e-12
                    )


def test_grid_eager_scalar_broadcast_and_validation():
    rng = np.random.default_rng(5)
    g, m = random_graph(rng, 4, 4, density=0.8, peer_review=True)
    g = g.astype(np.float32)
    got = vancouver_grid(  # called outside any user jit, float32
        g, m, eps=np.array([1e-4, 1e-2]), variance_floor=0.0, init_variance=1.0, iterations=3
    )
    assert got.grade.shape == (2, 4) and got.grade.dtype == jnp.float32
    for p, eps in enumerate((1e-4, 1e-2)):
        expected = reference_vancouver(g, m, iterations=3, eps=eps)
        np.testing.assert_allclose(got.grade[p], expected["grade"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(
            got.reviewer_variance[p], expected["reviewer_variance"], rtol=1e-4, atol=1e-6
        )
    with pytest.raises(ValueError, match="eps must be finite and > 0"):
        vancouver_grid(g, m, eps=np.array([1e-4, 0.0]), variance_floor=0.0, init_variance=1.0)
    with pytest.raises(ValueError, match="variance_floor"):
        vancouver_grid(g, m, eps=1e-4, variance_floor=np.array([-1.0]), init_variance=1.0)
    with pytest.raises(ValueError, match="do not broadcast"):
        vancouver_grid(
            g, m, eps=np.array([1e-4, 1e-3]), variance_floor=np.array([0.0] * 3), init_variance=1.0
        )
    with pytest.raises(ValueError, match=r"one grid axis \[P\]"):
        vancouver_grid(g, m, eps=1e-4, variance_floor=0.0, init_variance=1.0)
    with pytest.raises(ValueError, match="iterations"):
        vancouver_grid(
            g, m, eps=np.array([1e-4]), variance_floor=0.0, init_variance=1.0, iterations=0
        )
