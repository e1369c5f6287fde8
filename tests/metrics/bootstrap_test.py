"""SafeDrug's bootstrap: patient resampling as visit weights, and mean/std over rounds."""

import jax
import numpy as np
import pytest

from flame_jax import metrics
from tests.metrics.metrics_reference import (
    random_visits,
    reference_set_metrics,
    reference_summary,
    reference_visit_metrics,
)

RTOL, ATOL = 1e-5, 1e-6
STATIC = ("rounds", "num_patients", "replace", "fraction")
_WEIGHTS_JIT = jax.jit(metrics.bootstrap_weights, static_argnames=STATIC)
_BOOTSTRAP_JIT = jax.jit(metrics.bootstrap, static_argnames=STATIC)
_SET_METRICS_JIT = jax.jit(metrics.set_metrics)


def _patients(rng, num_patients, pad):
    """Each patient owns 1..4 visits, rows shuffled, then `pad` padding rows (-1)."""
    visits = rng.integers(1, 5, size=num_patients)
    patient = np.repeat(np.arange(num_patients), visits)
    rng.shuffle(patient)
    return np.concatenate([patient, -np.ones(pad, int)]).astype(np.int32)


def _per_patient_counts(weights, patient, num_patients):
    """Recover each patient's draw count from the visit weights (all its visits must agree)."""
    counts = np.zeros((weights.shape[0], num_patients))
    for p in range(num_patients):
        rows = weights[:, patient == p]
        np.testing.assert_array_equal(rows, np.repeat(rows[:, :1], rows.shape[1], axis=1))
        counts[:, p] = rows[:, 0]
    return counts


def _draw(patient, key, num_patients, replace=True):
    """One call signature everywhere, so that equal shapes share one compiled program."""
    return np.asarray(_WEIGHTS_JIT(patient, key=key, num_patients=num_patients, replace=replace))


@pytest.mark.parametrize("replace", [True, False])
@pytest.mark.parametrize("num_patients", [1, 20])
def test_weights_count_patient_draws(num_patients, replace):
    if num_patients == 20:
        patient = _inputs()[0]  # the visits used below: their compiled programs are shared
    else:
        patient = _patients(np.random.default_rng(1), num_patients, pad=3)
    w = _draw(patient, jax.random.key(1), num_patients, replace)
    assert w.shape == (10, len(patient))
    np.testing.assert_array_equal(w[:, patient == -1], 0.0)
    counts = _per_patient_counts(w, patient, num_patients)
    draws = round(0.8 * num_patients)
    np.testing.assert_array_equal(counts.sum(axis=1), draws)
    # The visit weights add up to the visits of the drawn patients.
    visits_per_patient = np.bincount(patient[patient >= 0], minlength=num_patients)
    np.testing.assert_array_equal(w.sum(axis=1), counts @ visits_per_patient)
    if not replace:
        assert set(np.unique(counts)) <= {0.0, 1.0}  # distinct patients
    if replace and num_patients == 20:
        assert counts.max() > 1  # 10 rounds of 16 draws of 20 with replacement: repeats


def test_same_key_same_weights_new_key_new_weights():
    patient = _inputs()[0]
    np.testing.assert_array_equal(
        _draw(patient, jax.random.key(3), 20), _draw(patient, jax.random.key(3), 20)
    )
    assert not np.array_equal(
        _draw(patient, jax.random.key(3), 20), _draw(patient, jax.random.key(4), 20)
    )
    # Legacy uint32 keys are accepted too.
    legacy = _draw(patient, jax.random.PRNGKey(3), 20)
    assert legacy.shape == (10, len(patient)) and legacy.sum() > 0


def test_fraction_uses_python_round():
    # round(0.5 * 5) = round(2.5) = 2 (half to even, as in SafeDrug's Python), not 3.
    patient = np.arange(5, dtype=np.int32)
    w = _WEIGHTS_JIT(patient, key=jax.random.key(0), rounds=2, fraction=0.5, num_patients=5)
    np.testing.assert_array_equal(np.asarray(w).sum(axis=1), 2)


def test_invalid_arguments_raise():
    patient = np.arange(4, dtype=np.int32)
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="replace"):
        metrics.bootstrap_weights(patient, key=key, fraction=1.5, replace=False, num_patients=4)
    with pytest.raises(ValueError, match="rounds"):
        metrics.bootstrap_weights(patient, key=key, rounds=0, num_patients=4)
    with pytest.raises(ValueError, match="fraction"):
        metrics.bootstrap_weights(patient, key=key, fraction=0.0, num_patients=4)
    with pytest.raises(ValueError, match="num_patients"):
        metrics.bootstrap_weights(patient, key=key, num_patients=-1)


def _inputs(seed=0, num_patients=20, pad=5, meds=23):
    rng = np.random.default_rng(seed)
    patient = _patients(rng, num_patients, pad)
    pred, truth, scores, ddi = random_visits(rng, len(patient), meds, scores_decimals=1)
    pred[:2] = False
    truth[1:3] = False
    return patient, pred, truth, scores, ddi


@pytest.mark.parametrize(
    ("use_jit", "replace"),
    [(True, False), (False, True)],  # each case is a compile, so pair them up
)
def test_mean_and_std_match_numpy_loop_over_the_same_weights(use_jit, replace):
    patient, pred, truth, scores, ddi = _inputs()
    key = jax.random.key(7)
    fn = _BOOTSTRAP_JIT if use_jit else metrics.bootstrap
    mean, std = fn(
        pred, truth, patient, key=key, scores=scores, ddi=ddi, num_patients=20, replace=replace
    )
    weights = _draw(patient, key, 20, replace)
    per_visit = reference_visit_metrics(pred, truth, scores, ddi)
    rounds = [reference_summary(per_visit, w) for w in weights]
    for name in metrics.SetMetrics._fields:
        values = np.array([r[name] for r in rounds])
        np.testing.assert_allclose(
            float(getattr(mean, name)), np.mean(values), rtol=RTOL, atol=ATOL, err_msg=name
        )
        np.testing.assert_allclose(
            float(getattr(std, name)), np.std(values), rtol=1e-4, atol=ATOL, err_msg=name
        )


def test_weighted_round_equals_metrics_on_the_resampled_test_set():
    # What SafeDrug does literally: build the resampled list of patients and evaluate it.
    patient, pred, truth, scores, ddi = _inputs()  # same shapes as above: no new compile
    weights = _draw(patient, jax.random.key(2), 20)
    counts = _per_patient_counts(weights, patient, 20)
    for r in range(3):
        rows = np.concatenate(
            [np.flatnonzero(patient == p) for p in range(20) for _ in range(int(counts[r, p]))]
        )
        expected = reference_set_metrics(pred[rows], truth[rows], scores[rows], ddi)
        got = _SET_METRICS_JIT(pred, truth, scores=scores, ddi=ddi, weights=weights[r])
        for name in metrics.SetMetrics._fields:
            np.testing.assert_allclose(
                float(getattr(got, name)), expected[name], rtol=RTOL, atol=ATOL, err_msg=name
            )


def test_none_inputs_stay_none_and_same_key_same_result():
    patient, pred, truth, _, _ = _inputs()
    a = _BOOTSTRAP_JIT(pred, truth, patient, key=jax.random.key(5), num_patients=20)
    b = _BOOTSTRAP_JIT(pred, truth, patient, key=jax.random.key(5), num_patients=20)
    for stats in a:
        assert stats.prauc is None and stats.ddi_rate is None and stats.ddi_rate_visit is None
    assert a[0].as_dict() == b[0].as_dict() and a[1].as_dict() == b[1].as_dict()


def test_all_padding_gives_zeros_not_nan():
    patient, pred, truth, scores, ddi = _inputs()  # same shapes as above: no new compile
    patient[:] = -1
    mean, std = metrics.bootstrap(
        pred,
        truth,
        patient,
        key=jax.random.key(0),
        scores=scores,
        ddi=ddi,
        num_patients=20,
        replace=True,
    )
    for stats in (mean, std):
        np.testing.assert_array_equal(list(stats.as_dict().values()), 0.0)
