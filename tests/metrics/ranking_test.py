"""Average precision (PRAUC) against scikit-learn and a float64 loop, ties included."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from flame_jax import metrics
from flame_jax.metrics import _ranking
from tests.metrics.metrics_reference import random_visits, reference_average_precision

RTOL, ATOL = 1e-5, 1e-6


def _scores(rng, batch, meds, kind):
    raw = rng.random((batch, meds))
    if kind == "continuous":
        return raw
    if kind == "one_decimal":  # heavy ties
        return np.round(raw, 1)
    if kind == "binary":  # 0/1 scores, e.g. a thresholded prediction
        return (raw < 0.3).astype(np.float64)
    if kind == "constant":
        return np.full((batch, meds), 0.5)
    if kind == "logits":  # negative scores: the general (score, label) sort
        return np.round(rng.normal(size=(batch, meds)), 1)
    raise ValueError(kind)


def _sklearn(scores, truth):
    return np.array(
        [
            average_precision_score(y, s) if y.any() else 0.0
            for s, y in zip(scores, truth, strict=True)
        ]
    )


_AP_JIT = jax.jit(metrics.average_precision)


def _ap(scores, truth, use_jit=True):
    fn = _AP_JIT if use_jit else metrics.average_precision
    return np.asarray(fn(jnp.asarray(scores, jnp.float32), jnp.asarray(truth)))


CASES = [
    (batch, meds, kind, use_jit)
    for batch, meds in [(1, 1), (7, 5), (64, 151)]
    for kind in ["continuous", "one_decimal", "binary", "constant", "logits"]
    for use_jit in (False, True)
    # Direct calls (the library jit) and calls inside an outer jit compile separately; the
    # direct path is shape-independent code, so one shape of it keeps the suite fast.
    if use_jit or (batch, meds) == (7, 5)
]


@pytest.mark.parametrize(("batch", "meds", "kind", "use_jit"), CASES)
def test_matches_sklearn_with_ties(batch, meds, kind, use_jit):
    rng = np.random.default_rng(batch * 1000 + meds)
    _, truth, _, _ = random_visits(rng, batch, meds, density=0.2)
    truth[:, 0] = True  # sklearn's AP needs at least one positive per row
    scores = _scores(rng, batch, meds, kind)
    got = _ap(scores, truth, use_jit)
    assert got.shape == (batch,)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, _sklearn(scores, truth), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("kind", ["continuous", "one_decimal", "binary", "logits"])
def test_matches_float64_formula_including_rows_without_positives(kind):
    rng = np.random.default_rng(5)
    _, truth, _, _ = random_visits(rng, 64, 151, density=0.05)
    truth[:4] = False
    truth[4] = True
    scores = _scores(rng, 64, 151, kind)
    expected = np.array(
        [reference_average_precision(s, y) for s, y in zip(scores, truth, strict=True)]
    )
    np.testing.assert_allclose(_ap(scores, truth), expected, rtol=RTOL, atol=ATOL)
    np.testing.assert_array_equal(_ap(scores, truth)[:4], 0.0)


def test_hand_computed_ties():
    # Y = {1, 3}; three drugs tie at 0.5, so prec(0.5) = 1/3 and prec(0.2) = 2/4.
    scores = np.array([[0.5, 0.5, 0.5, 0.2]])
    truth = np.array([[0, 1, 0, 1]], dtype=bool)
    np.testing.assert_allclose(_ap(scores, truth), [(1 / 3 + 1 / 2) / 2], rtol=RTOL)


def test_only_the_order_of_scores_matters():
    rng = np.random.default_rng(9)
    _, truth, scores, _ = random_visits(rng, 64, 151, density=0.3, scores_decimals=2)
    shifted = 3.0 * scores - 1.0  # strictly increasing map, exact ties preserved
    np.testing.assert_allclose(_ap(shifted, truth), _ap(scores, truth), rtol=RTOL, atol=ATOL)


def test_drug_permutation_invariance():
    rng = np.random.default_rng(12)
    _, truth, scores, _ = random_visits(rng, 64, 151, density=0.1, scores_decimals=1)
    perm = rng.permutation(151)
    np.testing.assert_allclose(
        _ap(scores[:, perm], truth[:, perm]), _ap(scores, truth), rtol=RTOL, atol=ATOL
    )


def test_vmap_over_single_visits_matches_batched_call():
    rng = np.random.default_rng(13)
    _, truth, scores, _ = random_visits(rng, 64, 151, density=0.2, scores_decimals=1)
    one = lambda s, y: metrics.average_precision(s[None, :], y[None, :])[0]
    got = jax.jit(jax.vmap(one))(jnp.asarray(scores, jnp.float32), jnp.asarray(truth))
    np.testing.assert_allclose(np.asarray(got), _ap(scores, truth), rtol=RTOL, atol=ATOL)


def test_perfect_and_worst_rankings():
    truth = np.array([[1, 1, 0, 0, 0]], dtype=bool)
    best = np.array([[0.9, 0.8, 0.3, 0.2, 0.1]])
    worst = best[:, ::-1]
    np.testing.assert_allclose(_ap(best, truth), [1.0])
    np.testing.assert_allclose(_ap(worst, truth), [(1 / 4 + 2 / 5) / 2], rtol=RTOL)


def test_integer_key_path_equals_pair_sort_path():
    # Non-negative scores take a packed integer sort; compare it with the general pair sort.
    rng = np.random.default_rng(14)
    _, truth, scores, _ = random_visits(rng, 64, 151, density=0.1, scores_decimals=2)
    scores[0] = 0.0
    scores[1, ::2] = -0.0  # ties with +0.0 in both paths
    scores[2] = np.inf
    s, y = jnp.asarray(scores, jnp.float32), jnp.asarray(truth)
    fast = jax.jit(_ranking._ap_nonnegative)(s, y)
    general = jax.jit(_ranking._ap_general)(s, y)
    np.testing.assert_allclose(np.asarray(fast), np.asarray(general), rtol=RTOL, atol=ATOL)
    expected = [reference_average_precision(s, y) for s, y in zip(scores, truth, strict=True)]
    np.testing.assert_allclose(np.asarray(fast), expected, rtol=RTOL, atol=ATOL)  # sklearn: no inf


def test_mixed_sign_and_signed_zero_scores():
    scores = np.array([[-0.0, 0.0, 0.3, -0.2], [0.0, -0.0, -1.0, -1.0]])
    truth = np.array([[1, 0, 1, 0], [0, 1, 1, 0]], dtype=bool)
    np.testing.assert_allclose(_ap(scores, truth), _sklearn(scores, truth), rtol=RTOL, atol=ATOL)
