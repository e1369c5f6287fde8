"""DDI pair counts and DDI rates against SafeDrug-style double loops in float64."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flame_jax import metrics
from tests.metrics.metrics_reference import random_visits, reference_ddi_pairs

RTOL, ATOL = 1e-5, 1e-6
SHAPES = [(1, 1), (7, 5), (64, 151)]

_COUNTS_JIT = jax.jit(metrics.ddi_pair_counts)
_RATE_JIT = jax.jit(metrics.ddi_rate)
_RATE_VISIT_JIT = jax.jit(metrics.ddi_rate_per_visit)


def reference_pooled_rate(pred, ddi, weights=None):
    """SafeDrug's ddi_rate_score: one loop over visits, one over predicted pairs."""
    weights = np.ones(len(pred)) if weights is None else weights
    all_cnt = dd_cnt = 0.0
    for w, p in zip(weights, pred, strict=True):
        drugs = np.flatnonzero(p)
        for a_pos, a in enumerate(drugs):
            for b in drugs[a_pos + 1 :]:
                all_cnt += w
                if ddi[a, b] > 0 or ddi[b, a] > 0:
                    dd_cnt += w
    return 0.0 if all_cnt == 0 else dd_cnt / all_cnt


def reference_visit_rate(pred, ddi, weights=None):
    weights = np.ones(len(pred)) if weights is None else weights
    rates = []
    for p in pred:
        bad, total = reference_ddi_pairs(p, ddi)
        rates.append(bad / total if total else 0.0)
    total_weight = float(np.sum(weights))
    return float(np.dot(weights, rates)) / total_weight if total_weight > 0 else 0.0


CASES = [
    (batch, meds, density, use_jit)
    for batch, meds in SHAPES
    for density in (0.0, 0.1, 0.5)
    for use_jit in (False, True)
    # Direct calls (the library jit) and calls inside an outer jit compile separately; the
    # direct path is shape-independent code, so one shape of it keeps the suite fast.
    if use_jit or (density == 0.1 and (batch, meds) == (7, 5))
]


@pytest.mark.parametrize(("batch", "meds", "density", "use_jit"), CASES)
def test_pair_counts_and_rates_match_double_loop(batch, meds, density, use_jit):
    rng = np.random.default_rng(batch + 31 * meds + int(10 * density))
    pred, _, _, ddi = random_visits(rng, batch, meds, density=density)
    weights = rng.integers(0, 4, size=batch).astype(np.float32)
    counts = _COUNTS_JIT if use_jit else metrics.ddi_pair_counts
    rate = _RATE_JIT if use_jit else metrics.ddi_rate
    rate_visit = _RATE_VISIT_JIT if use_jit else metrics.ddi_rate_per_visit

    bad, total = counts(pred, ddi)
    expected = np.array([reference_ddi_pairs(p, ddi) for p in pred]).reshape(batch, 2)
    assert bad.dtype == total.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(bad), expected[:, 0])
    np.testing.assert_array_equal(np.asarray(total), expected[:, 1])

    np.testing.assert_allclose(
        rate(pred, ddi, weights), reference_pooled_rate(pred, ddi, weights), rtol=RTOL, atol=ATOL
    )
    np.testing.assert_allclose(
        rate_visit(pred, ddi, weights),
        reference_visit_rate(pred, ddi, weights),
        rtol=RTOL,
        atol=ATOL,
    )


def test_hand_computed_rates_differ_between_pooled_and_per_visit():
    ddi = np.array([[0, 1, 0, 0], [1, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0]])
    pred = np.array([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=bool)  # 2 of 6 pairs; 1 of 1 pair
    np.testing.assert_allclose(_RATE_JIT(pred, ddi), 3 / 7, rtol=RTOL)
    np.testing.assert_allclose(_RATE_VISIT_JIT(pred, ddi), (2 / 6 + 1) / 2, rtol=RTOL)


@pytest.mark.parametrize("dtype", [bool, np.int32, np.float32, np.float64])
def test_adjacency_dtypes_diagonal_and_asymmetry(dtype):
    rng = np.random.default_rng(4)
    pred, _, _, ddi = random_visits(rng, 64, 151, density=0.2)
    expected_bad, _ = _COUNTS_JIT(pred, ddi)
    # Weighted entries (> 0 interacts), a full diagonal, and only one triangle stored.
    messy = np.triu(ddi * rng.uniform(1.0, 3.0, ddi.shape), k=1)
    messy[np.diag_indices(151)] = 1
    bad, _ = _COUNTS_JIT(pred, messy.astype(dtype))
    np.testing.assert_array_equal(np.asarray(bad), np.asarray(expected_bad))


def test_interaction_matrix_is_symmetric_zero_diagonal():
    a = metrics.interaction_matrix(np.array([[5, 0, -1], [0, 1, 0], [2, 0, 0]]))
    np.testing.assert_array_equal(np.asarray(a), [[0, 0, 1], [0, 0, 0], [1, 0, 0]])


def test_padding_rows_change_nothing():
    rng = np.random.default_rng(6)
    pred, _, _, ddi = random_visits(rng, 64, 151, density=0.2)
    junk = rng.random((9, 151)) < 0.9  # dense junk rows: many pairs if they counted
    padded = np.concatenate([pred, junk])
    weights = np.concatenate([np.ones(64), np.zeros(9)]).astype(np.float32)
    for fn in (_RATE_JIT, _RATE_VISIT_JIT):
        np.testing.assert_allclose(fn(padded, ddi, weights), fn(pred, ddi), rtol=RTOL, atol=ATOL)


def test_integer_weights_equal_repeated_rows():
    rng = np.random.default_rng(8)
    pred, _, _, ddi = random_visits(rng, 7, 5, density=0.5)
    reps = np.array([0, 1, 2, 3, 1, 0, 5])
    repeated = np.repeat(pred, reps, axis=0)
    for fn in (_RATE_JIT, _RATE_VISIT_JIT):
        np.testing.assert_allclose(
            fn(pred, ddi, reps.astype(np.float32)), fn(repeated, ddi), rtol=RTOL, atol=ATOL
        )


def test_drug_permutation_invariance():
    rng = np.random.default_rng(10)
    pred, _, _, ddi = random_visits(rng, 64, 151, density=0.2)
    perm = rng.permutation(151)
    moved = ddi[np.ix_(perm, perm)]
    np.testing.assert_array_equal(
        np.asarray(_COUNTS_JIT(pred[:, perm], moved)[0]), np.asarray(_COUNTS_JIT(pred, ddi)[0])
    )


def test_degenerate_inputs_give_zero_rates():
    ddi = np.ones((3, 3))
    cases = [
        (np.zeros((4, 3), bool), None),  # all-empty predictions: no pairs at all
        (np.eye(3, dtype=bool), None),  # one drug per visit: no pairs
        (np.ones((4, 3), bool), np.zeros(4, np.float32)),  # all weights zero
    ]
    for pred, weights in cases:
        for fn in (_RATE_JIT, _RATE_VISIT_JIT):
            value = float(fn(pred, ddi, weights))
            assert value == 0.0
    single = _RATE_JIT(np.ones((1, 1), bool), np.ones((1, 1)))  # M = 1, self-loop
    assert float(single) == 0.0
