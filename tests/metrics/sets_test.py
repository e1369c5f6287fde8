"""Per-visit Jaccard, precision, recall and F1 against float64 loops and scikit-learn."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.metrics import f1_score, jaccard_score, precision_score, recall_score

from flame_jax import metrics
from tests.metrics.metrics_reference import random_visits, reference_set_scores

FUNCTIONS = {
    "jaccard": metrics.jaccard,
    "precision": metrics.precision,
    "recall": metrics.recall,
    "f1": metrics.f1,
}
SKLEARN = {
    "jaccard": jaccard_score,
    "precision": precision_score,
    "recall": recall_score,
    "f1": f1_score,
}
SHAPES = [(1, 1), (7, 5), (64, 151)]
RTOL, ATOL = 1e-5, 1e-6


def _call(name, use_jit, pred, truth):
    fn = FUNCTIONS[name]
    return np.asarray((jax.jit(fn) if use_jit else fn)(jnp.asarray(pred), jnp.asarray(truth)))


def _reference(name, pred, truth):
    k = list(FUNCTIONS).index(name)
    return np.array([reference_set_scores(p, y)[k] for p, y in zip(pred, truth, strict=True)])


@pytest.mark.parametrize("use_jit", [False, True])
@pytest.mark.parametrize("density", [0.0, 0.15, 0.6])
@pytest.mark.parametrize(("batch", "meds"), SHAPES)
@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_matches_float64_reference(name, batch, meds, density, use_jit):
    rng = np.random.default_rng(1000 * batch + meds + int(100 * density))
    pred, truth, _, _ = random_visits(rng, batch, meds, density=density)
    pred[0] = False  # always include an empty prediction
    got = _call(name, use_jit, pred, truth)
    assert got.shape == (batch,)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, _reference(name, pred, truth), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize(("batch", "meds"), [(7, 5), (64, 151)])
@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_matches_sklearn_per_row(name, batch, meds):
    rng = np.random.default_rng(7 + batch + meds)
    pred, truth, _, _ = random_visits(rng, batch, meds, density=0.1)
    pred[0], truth[1] = False, False
    pred[2] = truth[2] = False  # both empty
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = np.array(
            [SKLEARN[name](y, p, zero_division=0) for p, y in zip(pred, truth, strict=True)]
        )
    np.testing.assert_allclose(_call(name, False, pred, truth), expected, rtol=RTOL, atol=ATOL)


def test_jaccard_mean_matches_sklearn_samples_average():
    rng = np.random.default_rng(3)
    pred, truth, _, _ = random_visits(rng, 64, 151, density=0.1)
    pred[:3] = False
    truth[2:5] = False
    expected = jaccard_score(truth, pred, average="samples", zero_division=0)
    got = float(jnp.mean(metrics.jaccard(pred, truth)))
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_empty_sets_are_zero_not_nan(name):
    empty = np.zeros((3, 4), dtype=bool)
    some = np.array([[1, 0, 1, 0]] * 3, dtype=bool)
    for pred, truth in [(empty, empty), (empty, some), (some, empty)]:
        got = _call(name, False, pred, truth)
        np.testing.assert_array_equal(got, np.zeros(3, np.float32))


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_identical_sets_score_one(name):
    pred = np.array([[1, 0, 1, 0], [0, 0, 0, 1]], dtype=bool)
    np.testing.assert_allclose(_call(name, False, pred, pred), [1.0, 1.0])


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_drug_permutation_invariance(name):
    rng = np.random.default_rng(11)
    pred, truth, _, _ = random_visits(rng, 64, 151, density=0.2)
    perm = rng.permutation(151)
    np.testing.assert_allclose(
        _call(name, False, pred[:, perm], truth[:, perm]),
        _call(name, False, pred, truth),
        rtol=RTOL,
        atol=ATOL,
    )


def test_rejects_float_inputs_under_type_checking():
    # jaxtyping checks the annotations at test time: sets are boolean multi-hot rows.
    with pytest.raises(Exception, match="pred|Bool|bool"):
        metrics.jaccard(np.ones((2, 3), np.float32), np.ones((2, 3), bool))
