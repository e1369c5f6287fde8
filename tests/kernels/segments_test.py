"""Segment kernels (token <-> step) in interpret mode against references and NumPy loops."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flame_jax_kernels import segments as sr


def _numpy_sum(values, ids, num):
    out = np.zeros((values.shape[0], num))
    for b, t in np.ndindex(*values.shape):
        if 0 <= ids[b, t] < num:
            out[b, ids[b, t]] += values[b, t]
    return out


def _numpy_broadcast(steps, ids):
    out = np.zeros(ids.shape)
    for b, t in np.ndindex(*ids.shape):
        if 0 <= ids[b, t] < steps.shape[1]:
            out[b, t] = steps[b, ids[b, t]]
    return out


@pytest.mark.parametrize(("batch", "tokens", "num", "block_rows"), [(3, 7, 4, 2), (1, 5, 1, 8)])
def test_interpret_matches_references(batch, tokens, num, block_rows):
    rng = np.random.default_rng(tokens)
    values = rng.normal(size=(batch, tokens)).astype(np.float32)
    ids = rng.integers(-1, num + 1, (batch, tokens)).astype(np.int32)  # -1 and out-of-range ids
    ids[0] = -1  # an all-masked row
    steps = rng.normal(size=(batch, num)).astype(np.float32)
    v, i, s = jnp.asarray(values), jnp.asarray(ids), jnp.asarray(steps)

    got_sum = sr.pallas_segment_sum(v, i, num, block_rows=block_rows, interpret=True)
    np.testing.assert_allclose(got_sum, _numpy_sum(values, ids, num), atol=1e-5)
    np.testing.assert_allclose(sr.reference_segment_sum(v, i, num), got_sum, atol=1e-5)
    got_bc = sr.pallas_segment_broadcast(s, i, block_rows=block_rows, interpret=True)
    np.testing.assert_allclose(got_bc, _numpy_broadcast(steps, ids), atol=1e-6)
    np.testing.assert_allclose(sr.reference_segment_broadcast(s, i), got_bc, atol=1e-6)

    # Gradients: each op's VJP is the other op; compare with the references' autodiff.
    w_s = jnp.asarray(rng.normal(size=(batch, num)), jnp.float32)
    w_t = jnp.asarray(rng.normal(size=(batch, tokens)), jnp.float32)
    kernel_sum = lambda x: (
        sr.pallas_segment_sum(x, i, num, block_rows=block_rows, interpret=True) * w_s
    ).sum()
    ref_sum = lambda x: (sr.reference_segment_sum(x, i, num) * w_s).sum()
    np.testing.assert_allclose(jax.grad(kernel_sum)(v), jax.grad(ref_sum)(v), atol=1e-5)
    kernel_bc = lambda x: (
        sr.pallas_segment_broadcast(x, i, block_rows=block_rows, interpret=True) * w_t
    ).sum()
    ref_bc = lambda x: (sr.reference_segment_broadcast(x, i) * w_t).sum()
    np.testing.assert_allclose(jax.grad(kernel_bc)(s), jax.grad(ref_bc)(s), atol=1e-5)


def test_dispatch_uses_reference_on_cpu():
    v = jnp.arange(6.0).reshape(2, 3)
    i = jnp.array([[0, 1, 1], [-1, 0, 0]])
    np.testing.assert_array_equal(sr.segment_sum(v, i, 2), [[0.0, 3.0], [9.0, 0.0]])
    np.testing.assert_array_equal(
        sr.segment_broadcast(jnp.array([[1.0, 2.0]] * 2), i), [[1.0, 2.0, 2.0], [0.0, 1.0, 1.0]]
    )


@pytest.mark.gpu
def test_compiled_matches_reference_on_gpu():
    rng = np.random.default_rng(0)
    ids = jnp.asarray(rng.integers(-1, 32, (64, 512)), jnp.int32)
    v = jnp.asarray(rng.normal(size=(64, 512)), jnp.float32)
    s = jnp.asarray(rng.normal(size=(64, 32)), jnp.float32)
    np.testing.assert_allclose(
        sr.pallas_segment_sum(v, ids, 32), sr.reference_segment_sum(v, ids, 32), atol=1e-4
    )
    np.testing.assert_allclose(
        sr.pallas_segment_broadcast(s, ids), sr.reference_segment_broadcast(s, ids), atol=1e-6
    )
