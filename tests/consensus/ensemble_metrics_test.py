"""Ensemble metrics against float64 references written from the definitions in (C)."""

import math

import jax
import numpy as np
import pytest

from flame_jax.consensus import (
    complementarity_index,
    compound_accuracy,
    ensemble_effectiveness,
    reliability_score,
    reviewer_quality,
)
from tests.consensus.consensus_reference import (
    random_graph,
    reference_complementarity,
    reference_effectiveness,
)


def _reference_quality(v, grades, mask):
    observed = grades[mask]
    sigma = np.std(observed) * math.sqrt(2) if observed.size else 0.0
    out = []
    for r in range(grades.shape[0]):
        if not mask[r].any():
            out.append(0.0)
        elif sigma == 0:
            out.append(1.0)
        else:
            out.append(max(0.0, 1 - math.sqrt(v[r]) / sigma))
    return np.array(out)


def test_reviewer_quality_matches_reference():
    rng = np.random.default_rng(0)
    fn = jax.jit(reviewer_quality)
    for shape in [(3, 3), (5, 2), (8, 8)]:
        grades, mask = random_graph(rng, *shape, density=0.6)
        mask[-1] = False  # a reviewer without edges
        v = rng.random(shape[0]) * 0.2
        v[0] = 0.0
        got = np.asarray(fn(v.astype(np.float32), grades.astype(np.float32), mask))
        np.testing.assert_allclose(got, _reference_quality(v, grades, mask), atol=1e-6)
        assert np.all((got >= 0) & (got <= 1))


def test_compound_accuracy():
    gen = np.array([1.0, 0.0, 1.0, 0.5])
    rho = np.array([0.4, 0.8, 0.0, 1.0])
    gold = np.array([True, True, False, False])
    expected = np.where(gold, 0.75 * gen + 0.25 * rho, 0.25 * gen + 0.75 * rho)
    np.testing.assert_allclose(compound_accuracy(gen, rho, gold), expected, rtol=1e-6)
    np.testing.assert_allclose(compound_accuracy(gen, rho, True), 0.75 * gen + 0.25 * rho, 1e-6)


@pytest.mark.parametrize("shape", [(1, 1), (3, 10), (6, 25)], ids=str)
def test_ensemble_effectiveness_matches_reference(shape):
    rng = np.random.default_rng(shape[1])
    for _ in range(4):
        acc = rng.choice([0.0, 0.25, 0.5, 0.75, 1.0], size=shape)
        members = rng.random(shape[0]) < 0.7
        mask = rng.random(shape) < 0.8
        got = float(ensemble_effectiveness(acc.astype(np.float32), members, mask))
        assert got == pytest.approx(reference_effectiveness(acc, members, mask), abs=1e-6)
    full = np.ones(shape, bool)
    got = float(ensemble_effectiveness(acc.astype(np.float32), members))
    assert got == pytest.approx(reference_effectiveness(acc, members, full), abs=1e-6)
    assert float(ensemble_effectiveness(acc, np.zeros(shape[0], bool))) == 0.0


def test_ensemble_effectiveness_is_strict_majority():
    acc = np.array([[1.0, 1.0], [0.0, 0.0]], np.float32)  # mean 0.5 is not > 0.5
    assert float(ensemble_effectiveness(acc, np.array([True, True]))) == 0.0


def test_reliability_score():
    np.testing.assert_allclose(reliability_score(np.array([0.0, 0.3, 1.0, 2.0])), [1, 0.7, 0, 0])


@pytest.mark.parametrize("m", [1, 2, 5, 9])
def test_complementarity_index_matches_reference(m):
    rng = np.random.default_rng(m)
    for _ in range(5):
        pts = rng.random((m, 2))
        pts[0] = np.clip(pts[0] + 0.3, 0, 1.2)  # one point outside the box: clipped
        got = float(complementarity_index(pts.astype(np.float32)))
        assert got == pytest.approx(reference_complementarity(pts), abs=2e-6)


def test_complementarity_padding_and_examples():
    # (C)'s three example ensembles order weak < moderate < strong.
    weak = [[0.90, 0.78], [0.92, 0.76], [0.88, 0.80], [0.91, 0.77], [0.89, 0.79]]
    moderate = [[0.92, 0.55], [0.88, 0.70], [0.81, 0.85], [0.95, 0.40], [0.86, 0.78]]
    strong = [[0.98, 0.30], [0.30, 0.98], [0.91, 0.90], [0.85, 0.55], [0.70, 0.80]]
    scores = [
        float(complementarity_index(np.array(p, np.float32))) for p in (weak, moderate, strong)
    ]
    for p, s in zip((weak, moderate, strong), scores, strict=True):
        assert s == pytest.approx(reference_complementarity(p), abs=2e-6)
    assert scores[0] < scores[1] < scores[2]
    # Padding rows (masked) change nothing, wherever they are.
    padded = np.array([[0.5, 0.5], *moderate, [0.99, 0.99]], np.float32)
    mask = np.array([False] + [True] * 5 + [False])
    assert float(complementarity_index(padded, mask)) == pytest.approx(scores[1], abs=1e-6)
    # Permutation invariance.
    perm = np.random.default_rng(0).permutation(5)
    permuted = float(complementarity_index(np.array(strong, np.float32)[perm]))
    assert permuted == pytest.approx(scores[2], abs=1e-6)
