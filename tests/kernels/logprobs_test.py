"""The fused log-prob kernel in interpret mode against its jnp reference (values, gradients)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flame_jax_kernels import logprobs as tl


def _numpy_logprobs(x, y):
    x = np.asarray(x, np.float64)
    m = x.max(-1, keepdims=True)
    lse = (m + np.log(np.exp(x - m).sum(-1, keepdims=True)))[..., 0]
    return np.take_along_axis(x, np.asarray(y)[..., None], -1)[..., 0] - lse


# (lead shape, vocab, block_rows, chunk): vocab not a multiple of chunk, rows not of block_rows.
CASES = [((3,), 37, 2, 16), ((2, 5), 64, 4, 32), ((1,), 8, 8, 8)]


@pytest.mark.parametrize(("lead", "vocab", "block_rows", "chunk"), CASES)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_interpret_matches_reference(lead, vocab, block_rows, chunk, dtype):
    key_x, key_y = jax.random.split(jax.random.key(vocab))
    logits = (jax.random.normal(key_x, (*lead, vocab)) * 4.0).astype(dtype)
    labels = jax.random.randint(key_y, lead, 0, vocab)
    got = tl.pallas_token_logprobs(
        logits, labels, block_rows=block_rows, chunk=chunk, interpret=True
    )
    want = tl.reference_token_logprobs(logits, labels)
    assert got.shape == lead and got.dtype == jnp.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(want, _numpy_logprobs(logits.astype(jnp.float32), labels), atol=1e-4)

    weights = jax.random.normal(key_y, lead)

    def loss(fn, x):
        return (fn(x, labels) * weights).sum()

    kernel = lambda x, y: tl.pallas_token_logprobs(
        x, y, block_rows=block_rows, chunk=chunk, interpret=True
    )
    g_kernel = jax.grad(lambda x: loss(kernel, x))(logits.astype(jnp.float32))
    g_ref = jax.grad(lambda x: loss(tl.reference_token_logprobs, x))(logits.astype(jnp.float32))
    np.testing.assert_allclose(g_kernel, g_ref, rtol=1e-5, atol=1e-6)
    assert np.all(np.isfinite(g_kernel))


def test_extreme_logits_stay_finite():
    logits = jnp.array([[1e4, -1e4, 0.0, 3.0], [-1e30, -1e30, -1e30, 0.0]])
    labels = jnp.array([1, 3])
    got = tl.pallas_token_logprobs(logits, labels, block_rows=2, chunk=2, interpret=True)
    np.testing.assert_allclose(got, tl.reference_token_logprobs(logits, labels), rtol=1e-6)


def test_dispatch_uses_reference_on_cpu():
    logits = jax.random.normal(jax.random.key(0), (4, 10))
    labels = jnp.arange(4)
    np.testing.assert_array_equal(
        tl.token_logprobs(logits, labels), tl.reference_token_logprobs(logits, labels)
    )


@pytest.mark.gpu
def test_compiled_matches_reference_on_gpu():
    key_x, key_y = jax.random.split(jax.random.key(1))
    logits = jax.random.normal(key_x, (64, 32000), jnp.bfloat16) * 3
    labels = jax.random.randint(key_y, (64,), 0, 32000)
    got = tl.pallas_token_logprobs(logits, labels)
    np.testing.assert_allclose(got, tl.reference_token_logprobs(logits, labels), atol=2e-3)
    g = jax.grad(lambda x: tl.pallas_token_logprobs(x, labels).sum())(logits.astype(jnp.float32))
    g_ref = jax.grad(lambda x: tl.reference_token_logprobs(x, labels).sum())(
        logits.astype(jnp.float32)
    )
    np.testing.assert_allclose(g, g_ref, atol=1e-5)
