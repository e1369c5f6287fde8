"""set_metrics / summarize / visit_metrics against float64 references, plus invariants."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flame_jax import metrics
from tests.metrics.metrics_reference import (
    random_visits,
    reference_set_metrics,
    reference_visit_metrics,
)

RTOL, ATOL = 1e-5, 1e-6
FIELDS = list(metrics.SetMetrics._fields)
_SET_METRICS_JIT = jax.jit(metrics.set_metrics)


def _assert_close(got: metrics.SetMetrics, expected: dict):
    for name in FIELDS:
        value = getattr(got, name)
        if expected[name] is None:
            assert value is None, name
        else:
            assert value is not None, name
            assert jnp.shape(value) == (), name
            np.testing.assert_allclose(
                float(value), expected[name], rtol=RTOL, atol=ATOL, err_msg=name
            )


def _run(use_jit, pred, truth, **kwargs):
    fn = _SET_METRICS_JIT if use_jit else metrics.set_metrics
    return fn(pred, truth, **kwargs)


CASES = [
    (batch, meds, density, use_jit)
    for batch, meds in [(1, 1), (7, 5), (64, 151)]
    for density in (0.0, 0.2)
    for use_jit in (False, True)
    # Each case is a compile; the per-function tests cover direct calls on every shape.
    if use_jit or (density == 0.2 and (batch, meds) == (7, 5))
]


@pytest.mark.parametrize(("batch", "meds", "density", "use_jit"), CASES)
def test_matches_reference(batch, meds, density, use_jit):
    rng = np.random.default_rng(17 * batch + meds)
    pred, truth, scores, ddi = random_visits(rng, batch, meds, density=density, scores_decimals=1)
    truth[-1] = False  # an empty truth row
    weights = rng.integers(0, 3, size=batch).astype(np.float32)
    got = _run(use_jit, pred, truth, scores=scores, ddi=ddi, weights=weights)
    _assert_close(got, reference_set_metrics(pred, truth, scores, ddi, weights))


def test_missing_inputs_are_none_not_zero():
    rng = np.random.default_rng(0)
    pred, truth, scores, ddi = random_visits(rng, 7, 5)
    m = _SET_METRICS_JIT(pred, truth)
    assert m.prauc is None and m.ddi_rate is None and m.ddi_rate_visit is None
    _assert_close(m, reference_set_metrics(pred, truth))
    m = _SET_METRICS_JIT(pred, truth, ddi=ddi)
    assert m.prauc is None and m.ddi_rate is not None
    m = _SET_METRICS_JIT(pred, truth, scores=scores)
    assert m.prauc is not None and m.ddi_rate is None
    per = metrics.visit_metrics(pred, truth)
    assert per.prauc is None and per.ddi_pairs is None
    assert per.jaccard.shape == per.num_pairs.shape == (7,)


def test_visit_metrics_match_reference_per_visit():
    rng = np.random.default_rng(2)
    pred, truth, scores, ddi = random_visits(rng, 64, 151, scores_decimals=1)
    per = jax.jit(metrics.visit_metrics)(pred, truth, scores=scores, ddi=ddi)
    expected = reference_visit_metrics(pred, truth, scores, ddi)
    for name, values in expected.items():
        np.testing.assert_allclose(
            np.asarray(getattr(per, name)), values, rtol=RTOL, atol=ATOL, err_msg=name
        )


def _all_inputs(seed=3, batch=64, meds=151):
    rng = np.random.default_rng(seed)
    pred, truth, scores, ddi = random_visits(rng, batch, meds, scores_decimals=1)
    pred[:2] = False
    truth[1:3] = False
    weights = rng.uniform(0.5, 2.0, size=batch).astype(np.float32)
    return rng, pred, truth, scores, ddi, weights


def _as_array(m: metrics.SetMetrics):
    return np.array([np.nan if v is None else float(v) for v in m])


def test_padding_rows_change_nothing():
    rng, pred, truth, scores, ddi, weights = _all_inputs()
    pad = 9
    junk_scores = rng.random((pad, 151))
    junk_scores[0, :3] = np.nan  # garbage in padding must not leak through 0 * nan
    padded = {
        "pred": np.concatenate([pred, rng.random((pad, 151)) < 0.8]),
        "truth": np.concatenate([truth, rng.random((pad, 151)) < 0.8]),
        "scores": np.concatenate([scores, junk_scores]),
        "weights": np.concatenate([weights, np.zeros(pad, np.float32)]),
    }
    # Interleave padding rows with real ones too, not only at the end.
    order = np.random.default_rng(4).permutation(64 + pad)
    padded = {k: v[order] for k, v in padded.items()}
    got = _SET_METRICS_JIT(
        padded["pred"],
        padded["truth"],
        scores=padded["scores"],
        ddi=ddi,
        weights=padded["weights"],
    )
    want = _SET_METRICS_JIT(pred, truth, scores=scores, ddi=ddi, weights=weights)
    np.testing.assert_allclose(_as_array(got), _as_array(want), rtol=RTOL, atol=ATOL)


def test_visit_permutation_changes_nothing():
    rng, pred, truth, scores, ddi, weights = _all_inputs()
    order = rng.permutation(64)
    got = _SET_METRICS_JIT(
        pred[order], truth[order], scores=scores[order], ddi=ddi, weights=weights[order]
    )
    want = _SET_METRICS_JIT(pred, truth, scores=scores, ddi=ddi, weights=weights)
    np.testing.assert_allclose(_as_array(got), _as_array(want), rtol=RTOL, atol=ATOL)


def test_drug_permutation_changes_nothing():
    rng, pred, truth, scores, ddi, weights = _all_inputs()
    perm = rng.permutation(151)
    got = _SET_METRICS_JIT(
        pred[:, perm],
        truth[:, perm],
        scores=scores[:, perm],
        ddi=ddi[np.ix_(perm, perm)],
        weights=weights,
    )
    want = _SET_METRICS_JIT(pred, truth, scores=scores, ddi=ddi, weights=weights)
    np.testing.assert_allclose(_as_array(got), _as_array(want), rtol=RTOL, atol=ATOL)


def test_integer_weights_equal_repeated_rows():
    rng = np.random.default_rng(5)
    pred, truth, scores, ddi = random_visits(rng, 7, 5, density=0.4, scores_decimals=1)
    reps = np.array([0, 2, 1, 3, 0, 1, 4])
    got = _SET_METRICS_JIT(pred, truth, scores=scores, ddi=ddi, weights=reps.astype(np.float32))
    rep = lambda a: np.repeat(a, reps, axis=0)
    want = _SET_METRICS_JIT(rep(pred), rep(truth), scores=rep(scores), ddi=ddi)
    np.testing.assert_allclose(_as_array(got), _as_array(want), rtol=RTOL, atol=ATOL)


def test_weights_rescaling_changes_nothing():
    _, pred, truth, scores, ddi, weights = _all_inputs()
    got = _SET_METRICS_JIT(pred, truth, scores=scores, ddi=ddi, weights=3.0 * weights)
    want = _SET_METRICS_JIT(pred, truth, scores=scores, ddi=ddi, weights=weights)
    np.testing.assert_allclose(_as_array(got), _as_array(want), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize(
    "case", ["all_empty_pred", "all_empty_truth", "all_empty", "zero_weights", "single"]
)
def test_degenerate_inputs_are_finite_and_defined(case):
    rng = np.random.default_rng(6)
    pred, truth, scores, ddi = random_visits(rng, 7, 5, density=0.5)
    weights = np.ones(7, np.float32)
    if case in ("all_empty_pred", "all_empty"):
        pred[:] = False
    if case in ("all_empty_truth", "all_empty"):
        truth[:] = False
    if case == "zero_weights":
        weights[:] = 0
    if case == "single":
        pred, truth, scores, ddi, weights = (
            pred[:1, :1],
            truth[:1, :1],
            scores[:1, :1],
            ddi[:1, :1],
            weights[:1],
        )
    got = _SET_METRICS_JIT(pred, truth, scores=scores, ddi=ddi, weights=weights)
    values = _as_array(got)
    assert np.all(np.isfinite(values)), got
    _assert_close(got, reference_set_metrics(pred, truth, scores, ddi, weights))
    if case in ("all_empty", "zero_weights"):
        np.testing.assert_array_equal(values, 0.0)


def test_jitted_set_metrics_traces_once_per_shape():
    traces = []

    def counted(pred, truth, scores, ddi, weights):
        traces.append(1)  # runs only while tracing
        return metrics.set_metrics(pred, truth, scores=scores, ddi=ddi, weights=weights)

    fn = jax.jit(counted)
    for seed in range(3):
        _, pred, truth, scores, ddi, weights = _all_inputs(seed=seed, batch=7, meds=5)
        jax.block_until_ready(fn(pred, truth, scores, ddi, weights))
    assert len(traces) == 1
    _, pred, truth, scores, ddi, weights = _all_inputs(seed=0, batch=8, meds=5)
    fn(pred, truth, scores, ddi, weights)  # a new bucket compiles once more
    assert len(traces) == 2


def test_as_dict_gives_python_floats_and_none():
    m = metrics.set_metrics(np.array([[True, False]]), np.array([[True, True]]))
    d = m.as_dict()
    assert list(d) == FIELDS
    assert d["prauc"] is None and d["ddi_rate"] is None and d["ddi_rate_visit"] is None
    assert type(d["recall"]) is float and d["recall"] == 0.5


def test_shape_mismatch_is_an_error():
    with pytest.raises(Exception, match="shape|meds|batch"):
        metrics.visit_metrics(np.ones((3, 4), bool), np.ones((3, 5), bool))
