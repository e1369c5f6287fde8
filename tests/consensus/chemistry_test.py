"""LLM Chemistry against the spec's toy pool and brute-force float64 references."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flame_jax.consensus import (
    Chemistry,
    configuration_chemistry,
    ensemble_cost,
    host_subset_costs,
    pairwise_chemistry,
    recommend_ensemble,
    recommendation_loss,
    subset_costs,
    subset_members,
)
from tests.consensus.consensus_reference import (
    reference_cheme,
    reference_cost_q,
    reference_informative,
    reference_loss,
    reference_mig,
    reference_mig_cost,
    reference_recommend,
)

# consensus_spec.md §5 toy pool: a, b, c, d with (q, a); d is unused (a <= 0.5).
TOY_Q = np.array([9.0, 6.0, 4.0, 8.0])
TOY_A = np.array([0.9, 0.7, 0.6, 0.4])
A, B, C, D = 1, 2, 4, 8  # bits


def _mask(*bits):
    return sum(bits)


def test_toy_pool_costs():
    costs = subset_costs(TOY_Q, TOY_A)
    golden = {A: 0.01, B: 0.12, C: 0.24, A | B: 0.07, A | C: 0.13, B | C: 0.24, A | B | C: 0.15}
    for x, value in golden.items():
        assert float(costs.cost[x]) == pytest.approx(value, abs=1e-6)
        assert float(costs.cost[x | D]) == pytest.approx(value, abs=1e-6)  # d never counts
    assert float(costs.cost[0]) == 1.0 and float(costs.cost[D]) == 1.0
    assert not bool(costs.defined[D]) and bool(costs.defined[A | D])


def test_toy_pool_chemistry_loss_and_recommendation():
    costs = subset_costs(TOY_Q, TOY_A)
    chem = pairwise_chemistry(costs.cost)
    value = np.asarray(chem.value)
    for i, j in [(0, 1), (0, 2), (1, 2)]:
        assert value[i, j] == value[j, i] == 1.0  # saturated
    for i in range(3):
        assert value[i, 3] == 0.0 and bool(chem.defined[i, 3])  # unused partner: 0, defined
    loss = np.asarray(recommendation_loss(chem))
    for x in (A | B, A | C, B | C):
        assert loss[x] == pytest.approx(2.0)
    for x in (A | B | C, A | D):
        assert loss[x] == pytest.approx(2.5)
    assert loss[A | B | C | D] == pytest.approx(3.0)
    # The released hill-climb returns any of the three tied pairs depending on the hash seed;
    # exhaustive search with the index tie-break returns {a, b}.
    rec = recommend_ensemble(chem)
    assert np.asarray(rec.members).tolist() == [True, True, False, False]
    assert int(rec.subset) == A | B and bool(rec.found) and float(rec.loss) == 2.0
    # With tie-breaks by accuracy the best pair by mean accuracy wins: still {a, b} (0.8).
    rec = recommend_ensemble(chem, accuracy=TOY_A)
    assert int(rec.subset) == A | B
    # Prefer lower latency: {a, c} has the lowest median latency among the tied pairs.
    rec = recommend_ensemble(chem, latency=np.array([1.0, 9.0, 2.0, 0.5]))
    assert int(rec.subset) == A | C


def _random_pool(rng, n):
    q = rng.integers(0, 11, size=n).astype(np.float64)  # integer qualities: ties happen
    a = rng.choice([0.1, 0.3, 0.5, 0.55, 0.7, 0.8, 0.9, 0.95, 1.0], size=n)
    return q, a


@pytest.mark.parametrize("use_jit", [False, True])
def test_ensemble_cost_matches_reference(use_jit):
    rng = np.random.default_rng(0)
    fn = jax.jit(ensemble_cost) if use_jit else ensemble_cost
    for n in (1, 3, 7):
        q, a = _random_pool(rng, n)
        members = rng.random((5, n)) < 0.6
        with jax.enable_x64(True):
            got = np.asarray(fn(q, a, members))
        expected = [reference_cost_q([m for m in range(n) if row[m]], q, a) for row in members]
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("n", [2, 3, 5])
def test_subset_costs_equal_the_mig_lookup(n):
    rng = np.random.default_rng(n)
    for _ in range(3):
        q, a = _random_pool(rng, n)
        nodes = reference_mig(q, a)
        with jax.enable_x64(True):
            costs = subset_costs(q, a)
        members = np.asarray(subset_members(n))
        for x in range(2**n):
            subset = {m for m in range(n) if members[x, m]}
            assert float(costs.cost[x]) == pytest.approx(
                reference_mig_cost(nodes, subset), abs=1e-12
            )
            assert bool(costs.defined[x]) == any(a[m] > 0.5 for m in subset)


# Accuracies a float32 cannot tell from 1 (1 - a < 6e-8) next to ones it can, and exactly 1.
NEAR_ONE = (1 - 1e-9, 1.0, 1 - 3e-8, 1 - 1e-12, 1 - 1e-6)


@pytest.mark.parametrize("n", [3, 6, 8])
def test_host_subset_costs_keep_accuracies_next_to_one(n):
    """Float64 penalties on the host: same costs, same zero tests, same chemistry as float64."""
    rng = np.random.default_rng(n)
    for _ in range(3):
        q = np.round(rng.uniform(4.0, 9.9, size=n), 3)
        a = rng.uniform(0.3, 1.0, size=n)
        a[rng.permutation(n)[: min(n, len(NEAR_ONE))]] = NEAR_ONE[:n]
        costs = host_subset_costs(q, a)  # the default dtype: float32
        assert costs.cost.dtype == jnp.float32
        nodes = reference_mig(q, a)
        members = np.asarray(subset_members(n))
        want = np.array(
            [reference_mig_cost(nodes, set(np.flatnonzero(members[x]))) for x in range(2**n)]
        )
        got = np.asarray(costs.cost, np.float64)
        np.testing.assert_array_equal(got == 0, want == 0)  # 1 - 1e-9 costs > 0, exactly 1 costs 0
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=0)
        np.testing.assert_array_equal(
            np.asarray(costs.defined), [a_ > 0.5 for a_ in a] @ members.T > 0
        )
        chem = pairwise_chemistry(costs.cost)
        value, has = _table_to_arrays(reference_cheme(q, a), n)
        np.testing.assert_array_equal(np.asarray(chem.defined), has)
        np.testing.assert_allclose(np.asarray(chem.value), value, atol=1e-5)
        # x64: the same table as subset_costs (up to the last bit of a division).
        with jax.enable_x64(True):
            host, device = host_subset_costs(q, a), subset_costs(q, a)
        np.testing.assert_allclose(np.asarray(host.cost), np.asarray(device.cost), rtol=1e-15)
        np.testing.assert_array_equal(np.asarray(host.defined), np.asarray(device.defined))
    # A ValueError naming the shapes (a TypeError first when annotations are checked at run time).
    with pytest.raises((ValueError, TypeError), match="models"):
        host_subset_costs(np.ones(3), np.ones(2))


def _table_to_arrays(table, n):
    value, defined = np.zeros((n, n)), np.zeros((n, n), bool)
    for (i, j), v in table.items():
        value[i, j], defined[i, j] = v, True
    return value, defined


@pytest.mark.parametrize("mode", ["replicate", "informative"])
@pytest.mark.parametrize("n", [3, 4, 6])
def test_pairwise_chemistry_matches_reference(n, mode):
    rng = np.random.default_rng(10 * n + (mode == "informative"))
    reference = reference_cheme if mode == "replicate" else reference_informative
    for _ in range(4):
        q, a = _random_pool(rng, n)
        with jax.enable_x64(True):
            costs = subset_costs(q, a)
            defined = costs.defined if mode == "informative" else None
            chem = pairwise_chemistry(costs.cost, defined, mode=mode)
        value, has = _table_to_arrays(reference(q, a), n)
        np.testing.assert_array_equal(np.asarray(chem.defined), has)
        np.testing.assert_allclose(np.asarray(chem.value), value, atol=1e-12)
        np.testing.assert_array_equal(np.asarray(chem.value), np.asarray(chem.value).T)


def test_replicate_saturates_and_informative_discriminates():
    """Spec §3.4: replicate chemistry of used pairs is 1; the informative mode tells them apart."""
    q = np.array([9.0, 7.0, 5.0, 3.0, 8.0])
    a = np.array([0.95, 0.8, 0.7, 0.6, 0.2])
    costs = subset_costs(q, a)
    rep = np.asarray(pairwise_chemistry(costs.cost).value)
    used = [0, 1, 2, 3]
    assert all(rep[i, j] == 1.0 for i, j in itertools.combinations(used, 2))
    inf = pairwise_chemistry(costs.cost, costs.defined, mode="informative")
    values = {round(float(inf.value[i, j]), 5) for i, j in itertools.combinations(used, 2)}
    assert len(values) >= 3 and max(values) - min(values) > 0.05  # signed and spread out
    assert min(values) < 0 < max(values)
    assert np.all(np.asarray(inf.value)[4, :4] == 0)  # unused model: no interaction
    # Homogeneous perfect pool: every cost 0, the replicate table is empty.
    perfect = subset_costs(np.full(3, 10.0), np.ones(3))
    assert not np.any(np.asarray(pairwise_chemistry(perfect.cost).defined))


def _random_chemistry(rng, n, *, ties=False):
    upper = rng.choice([0.0, 0.5, 1.0], size=(n, n)) if ties else rng.random((n, n))
    upper = np.triu(upper, 1)
    defined = np.triu(rng.random((n, n)) < 0.85, 1)
    value = np.where(defined, upper, 0)
    return value + value.T, defined | defined.T


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("n", [4, 7])
def test_recommend_matches_brute_force(n, ties):
    rng = np.random.default_rng(n + 100 * ties)
    for trial in range(3):
        value, defined = _random_chemistry(rng, n, ties=ties)
        chem = Chemistry(jnp.asarray(value, jnp.float32), jnp.asarray(defined))
        table = {(i, j): value[i, j] for i in range(n) for j in range(n) if defined[i, j]}
        loss = np.asarray(recommendation_loss(chem))
        members = np.asarray(subset_members(n))
        for x in range(2**n):
            subset = {m for m in range(n) if members[x, m]}
            expected = reference_loss(subset, table, n)
            if np.isinf(expected):
                assert np.isinf(loss[x])
            else:
                assert loss[x] == pytest.approx(expected, abs=1e-5)
        acc = rng.choice([0.6, 0.8], size=n) if trial else None
        lat = rng.choice([1.0, 2.0, 3.0], size=n) if trial == 2 else None
        for size in (None, 3):
            rec = recommend_ensemble(chem, size=size, accuracy=acc, latency=lat)
            want = reference_recommend(table, n, size=size, accuracy=acc, latency=lat)
            if want is None:
                assert not bool(rec.found)
                continue
            got = tuple(int(i) for i in np.flatnonzero(np.asarray(rec.members)))
            assert got == want, (size, trial)
            assert int(rec.subset) == sum(1 << i for i in want)


def test_recommend_is_permutation_equivariant_without_ties():
    rng = np.random.default_rng(3)
    value, defined = _random_chemistry(rng, 6)
    base = recommend_ensemble(Chemistry(jnp.asarray(value), jnp.asarray(defined)), size=3)
    perm = rng.permutation(6)
    moved = recommend_ensemble(
        Chemistry(jnp.asarray(value[perm][:, perm]), jnp.asarray(defined[perm][:, perm])), size=3
    )
    np.testing.assert_array_equal(np.asarray(moved.members), np.asarray(base.members)[perm])


def test_recommend_fallback_without_chemistry():
    empty = Chemistry(jnp.zeros((4, 4)), jnp.zeros((4, 4), bool))
    rec = recommend_ensemble(empty, size=2, accuracy=np.array([0.2, 0.9, 0.9, 0.5]))
    assert not bool(rec.found) and np.isinf(float(rec.loss))
    assert np.asarray(rec.members).tolist() == [False, True, True, False]
    rec = recommend_ensemble(empty)
    assert np.asarray(rec.members).tolist() == [True, False, False, False]


def test_fourteen_model_pool_exhaustive():
    """The (M) pool size: 2^14 contexts, 91 pairs, C(14, 3) = 364 candidates."""
    rng = np.random.default_rng(14)
    q = rng.uniform(3, 10, size=14)
    a = rng.uniform(0.3, 1.0, size=14)
    costs = subset_costs(q.astype(np.float32), a.astype(np.float32))
    chem = pairwise_chemistry(costs.cost, costs.defined, mode="informative")
    rec = recommend_ensemble(chem, size=3, accuracy=a.astype(np.float32))
    assert int(np.sum(np.asarray(rec.members))) == 3 and bool(rec.found)
    loss = np.asarray(recommendation_loss(chem))
    sizes = np.asarray(subset_members(14)).sum(1)
    assert float(rec.loss) == pytest.approx(np.min(np.where(sizes == 3, loss, np.inf)), rel=1e-6)


def test_configuration_chemistry():
    value = np.array([[0, 1.0, 0.5, 0.2], [1.0, 0, 0.25, 0], [0.5, 0.25, 0, 0], [0.2, 0, 0, 0]])
    defined = value > 0
    chem = Chemistry(jnp.asarray(value), jnp.asarray(defined))
    members = np.array([[1, 1, 1, 0], [1, 0, 0, 1], [1, 0, 0, 0]], bool)
    expected = [(1.0 + 0.5 + 0.25) / 3, 0.2, 0.0]
    np.testing.assert_allclose(configuration_chemistry(chem, members), expected, rtol=1e-6)


def test_input_validation():
    chem = Chemistry(jnp.zeros((3, 3)), jnp.ones((3, 3), bool))
    with pytest.raises(ValueError, match="size"):
        recommend_ensemble(chem, size=4)
    with pytest.raises(ValueError, match="2\\^n"):
        pairwise_chemistry(jnp.ones(6))
    with pytest.raises(ValueError, match="pool"):
        subset_members(0)
