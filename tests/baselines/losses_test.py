"""Baseline losses against independent float64 references (NumPy loops, PyTorch)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from flame_jax.baselines import (
    bce_loss,
    controlled_loss,
    ddi_controller_weight,
    ddi_loss,
    multilabel_margin_loss,
    predicted_ddi_rate,
)

SHAPES = [(1, 2), (5, 11)]


def _random(shape, seed):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2, shape)
    target = rng.random(shape) < 0.4
    m = shape[1]
    upper = np.triu(rng.random((m, m)) < 0.3, 1)
    return logits, target, (upper | upper.T).astype(np.uint8)


def reference_margin(x, y):
    out = np.zeros(len(x))
    for b in range(len(x)):
        for j in np.flatnonzero(y[b]):
            for i in np.flatnonzero(~y[b]):
                out[b] += max(0.0, 1.0 - (x[b, j] - x[b, i]))
    return out / x.shape[1]


def reference_ddi_loss(p, a, scale):
    out = np.zeros(len(p))
    for b in range(len(p)):
        for i in range(p.shape[1]):
            for j in range(p.shape[1]):
                out[b] += p[b, i] * p[b, j] * a[i, j]
    return scale * out


def reference_rate(pred, a):
    out = np.zeros(len(pred))
    for b in range(len(pred)):
        s = np.flatnonzero(pred[b])
        pairs = [(i, j) for k, i in enumerate(s) for j in s[k + 1 :]]
        out[b] = sum(bool(a[i, j] or a[j, i]) for i, j in pairs) / len(pairs) if pairs else 0.0
    return out


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("jit", [False, True])
def test_margin_loss_matches_torch_and_loops(shape, jit):
    logits, target, _ = _random(shape, seed=shape[1])
    x = 1 / (1 + np.exp(-logits))
    fn = jax.jit(multilabel_margin_loss) if jit else multilabel_margin_loss
    got = np.asarray(fn(jnp.asarray(x, jnp.float32), target))
    np.testing.assert_allclose(got, reference_margin(x, target), rtol=1e-5, atol=1e-6)
    # torch's index format: the true classes first, then -1.
    idx = np.full(shape, -1, np.int64)
    for b in range(shape[0]):
        t = np.flatnonzero(target[b])
        idx[b, : len(t)] = t
    want = torch.nn.functional.multilabel_margin_loss(
        torch.tensor(x, dtype=torch.float64), torch.tensor(idx), reduction="none"
    ).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_margin_loss_edge_cases_are_zero():
    x = jnp.array([[0.3, 0.9, 0.1], [0.3, 0.9, 0.1]])
    y = jnp.array([[False, False, False], [True, True, True]])
    assert multilabel_margin_loss(x, y).tolist() == [0.0, 0.0]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("jit", [False, True])
def test_ddi_loss_and_rate_match_loops(shape, jit):
    logits, target, a = _random(shape, seed=10 + shape[1])
    p = 1 / (1 + np.exp(-logits))
    loss_fn = jax.jit(ddi_loss, static_argnames="scale") if jit else ddi_loss
    got = np.asarray(loss_fn(jnp.asarray(p, jnp.float32), a, scale=0.0005))
    np.testing.assert_allclose(got, reference_ddi_loss(p, a, 0.0005), rtol=1e-5, atol=1e-9)
    rate_fn = jax.jit(predicted_ddi_rate) if jit else predicted_ddi_rate
    np.testing.assert_allclose(np.asarray(rate_fn(target, a)), reference_rate(target, a), atol=1e-6)


@pytest.mark.parametrize("shape", SHAPES)
def test_bce_matches_torch(shape):
    logits, target, _ = _random(shape, seed=20 + shape[1])
    want = (
        torch.nn.functional.binary_cross_entropy_with_logits(
            torch.tensor(logits), torch.tensor(target, dtype=torch.float64), reduction="none"
        )
        .numpy()
        .mean(axis=1)
    )
    got = np.asarray(bce_loss(jnp.asarray(logits, jnp.float32), target))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_controller_weight_formula():
    rate = np.array([0.0, 0.05, 0.06, 0.07, 0.1, 0.5])
    want = np.where(rate <= 0.06, 1.0, np.maximum(0.0, 1.0 + (0.06 - rate) / 0.05))
    got = np.asarray(ddi_controller_weight(rate, target=0.06, kp=0.05))
    np.testing.assert_allclose(got, want, atol=1e-6)


@pytest.mark.parametrize("control", [False, True])
def test_controlled_loss_combines_terms(control):
    logits, target, a = _random((6, 9), seed=3)
    kw = {"bce_weight": 0.95, "margin_weight": 0.05, "target_ddi": 0.06, "kp": 0.05}
    x = jnp.asarray(logits, jnp.float32)
    loss, beta = controlled_loss(x, target, a, ddi_control=control, ddi_scale=0.0005, **kw)
    p = 1 / (1 + np.exp(-logits))
    bce = np.mean(np.logaddexp(0, logits) - target * logits, axis=1)
    acc = 0.95 * bce + 0.05 * reference_margin(p, target)
    if control:
        rate = reference_rate(p >= 0.5, a)
        b = np.where(rate <= 0.06, 1.0, np.maximum(0.0, 1.0 + (0.06 - rate) / 0.05))
        want = b * acc + (1 - b) * reference_ddi_loss(p, a, 0.0005)
    else:
        b, want = np.ones(6), acc
    np.testing.assert_allclose(np.asarray(beta), b, atol=1e-6)
    np.testing.assert_allclose(np.asarray(loss), want, rtol=1e-5, atol=1e-6)
    grad = jax.grad(lambda z: controlled_loss(z, target, a, ddi_control=control, **kw)[0].sum())(x)
    assert np.isfinite(np.asarray(grad)).all()
