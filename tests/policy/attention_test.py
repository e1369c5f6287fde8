"""The decoder's attention core (custom VJP) and 2-D projections vs float64 references.

``_attend`` has a FlashAttention-style backward pass; its outputs and its VJP are checked
against NumPy float64 formulas (softmax written out, the softmax backward written the textbook
way, not via the rowsum(dO * O) identity the kernel uses), eagerly and under jit. The whole
decoder's gradient is then checked against plain autodiff through a jnp softmax.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from flame_jax.policy import Projection, _model
from flame_jax.policy._scoring import completion_logprobs, token_logprobs
from tests.policy.lm_helpers import random_model


def reference_attend(q, k, v, allowed, groups, d_out):
    """float64 out [b, kv, rows, h] and (dq, dk, dv) of sum(d_out * out), from the formulas."""
    q, k, v, d_out = (np.asarray(a, np.float64) for a in (q, k, v, d_out))
    b, nk, rows, _ = q.shape
    t = rows // groups
    vis = np.broadcast_to(np.asarray(allowed)[:, None, None], (b, nk, groups, t, k.shape[2]))
    vis = vis.reshape(b, nk, rows, -1)
    s = np.einsum("bkrh,bksh->bkrs", q, k)
    s = np.where(vis, s, -np.inf)
    m = s.max(-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.where(vis, np.exp(s - m), 0.0)
    total = e.sum(-1, keepdims=True)
    p = e / np.where(total > 0, total, 1.0)
    out = np.einsum("bkrs,bksh->bkrh", p, v)
    d_p = np.einsum("bkrh,bksh->bkrs", d_out, v)
    d_s = p * (d_p - (d_p * p).sum(-1, keepdims=True))
    d_q = np.einsum("bkrs,bksh->bkrh", d_s, k)
    d_k = np.einsum("bkrs,bkrh->bksh", d_s, q)
    d_v = np.einsum("bkrs,bkrh->bksh", p, d_out)
    return out, (d_q, d_k, d_v), vis.any(-1)


def _inputs(seed, batch, kv_heads, groups, tokens, slots, head_dim):
    rng = np.random.default_rng(seed)
    rows = groups * tokens
    q = rng.normal(size=(batch, kv_heads, rows, head_dim)).astype(np.float32)
    k = rng.normal(size=(batch, kv_heads, slots, head_dim)).astype(np.float32)
    v = rng.normal(size=(batch, kv_heads, slots, head_dim)).astype(np.float32)
    # Causal over the last `tokens` slots, random left padding; row 0 of batch 0 sees nothing.
    query_slot = slots - tokens + np.arange(tokens)
    causal = np.arange(slots)[None, :] <= query_slot[:, None]
    kv = np.ones((batch, slots), bool)
    for i, pad in enumerate(rng.integers(0, slots, size=batch)):
        kv[i, :pad] = False
    allowed = causal[None] & kv[:, None, :]
    allowed[0, 0] = False
    d_out = rng.normal(size=q.shape).astype(np.float32)
    return q, k, v, allowed, d_out


@pytest.mark.parametrize(
    "batch, kv_heads, groups, tokens, slots, head_dim",
    [(2, 1, 1, 5, 5, 4), (3, 2, 2, 6, 6, 8), (2, 2, 3, 1, 7, 4), (1, 1, 4, 3, 9, 2)],
)
@pytest.mark.parametrize("use_jit", [False, True])
def test_attend_and_its_vjp_match_float64(
    batch, kv_heads, groups, tokens, slots, head_dim, use_jit
):
    q, k, v, allowed, d_out = _inputs(1, batch, kv_heads, groups, tokens, slots, head_dim)
    want, grads_want, visible = reference_attend(q, k, v, allowed, groups, d_out)
    # The caller zeroes rows with no visible key (and so their cotangent); so does this test.
    d_out = np.where(visible[..., None], d_out, 0.0).astype(np.float32)
    want, grads_want, _ = reference_attend(q, k, v, allowed, groups, d_out)

    def run(q, k, v, allowed, d_out):
        out, vjp = jax.vjp(lambda q, k, v: _model._attend(q, k, v, allowed, groups), q, k, v)
        return out, vjp(d_out)

    fn = jax.jit(run) if use_jit else run
    out, grads = fn(*(jnp.asarray(a) for a in (q, k, v, allowed, d_out)))
    out = np.asarray(out)
    np.testing.assert_allclose(out[visible], want[visible], rtol=1e-5, atol=1e-5)
    assert np.isfinite(out).all()
    for got, ref in zip(grads, grads_want, strict=True):
        np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-4, atol=1e-5)


def _plain_attend(q, k, v, allowed, groups):
    """The textbook attention, differentiated by JAX's own autodiff (no custom VJP)."""
    b, nk, rows, _ = q.shape
    s = jnp.einsum("bkrh,bksh->bkrs", q, k, preferred_element_type=jnp.float32)
    s = s.reshape(b, nk, groups, rows // groups, -1)
    s = jnp.where(allowed[:, None, None], s, _model._NEG).reshape(b, nk, rows, -1)
    return jnp.einsum("bkrs,bksh->bkrh", jax.nn.softmax(s, axis=-1).astype(v.dtype), v)


def test_decoder_gradient_equals_plain_autodiff(monkeypatch):
    model = random_model(5, num_heads=4, num_kv_heads=2)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    rng = np.random.default_rng(6)
    prompts = jnp.asarray(rng.integers(3, 128, (3, 5)))
    pmask = jnp.asarray([[False, False, True, True, True], [True] * 5, [False] * 4 + [True]])
    comp = jnp.asarray(rng.integers(3, 128, (3, 4)))
    cmask = jnp.asarray([[True] * 4, [True, True, False, False], [True, True, True, False]])
    weights = jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)

    def loss(params):
        m = nnx.merge(graphdef, params, rest)
        return (weights * completion_logprobs(m, prompts, pmask, comp, cmask)).sum()

    got = jax.jit(jax.grad(loss))(params)
    monkeypatch.setattr(_model, "_attend", _plain_attend)
    want = jax.jit(jax.grad(loss))(params)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert np.isfinite(np.asarray(a)).all()
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-4, atol=2e-5)


def test_completion_logprobs_gradient_equals_full_sequence_scoring():
    """Scoring only the completion positions changes neither values nor gradients."""
    model = random_model(7)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    rng = np.random.default_rng(8)
    prompts = jnp.asarray(rng.integers(3, 128, (2, 4)))
    pmask = jnp.asarray([[False, True, True, True], [True] * 4])
    comp = jnp.asarray(rng.integers(3, 128, (2, 3)))
    cmask = jnp.asarray([[True, True, False], [True] * 3])

    def new(params):
        m = nnx.merge(graphdef, params, rest)
        return completion_logprobs(m, prompts, pmask, comp, cmask, chunk_size=48)

    def old(params):
        m = nnx.merge(graphdef, params, rest)
        tokens = jnp.concatenate([prompts, comp], 1)
        mask = jnp.concatenate([pmask, cmask], 1)
        return token_logprobs(m, tokens, mask, chunk_size=48)[:, prompts.shape[1] :]

    new, old = jax.jit(new), jax.jit(old)
    np.testing.assert_allclose(np.asarray(new(params)), np.asarray(old(params)), atol=1e-6)
    g_new = jax.jit(jax.grad(lambda p: new(p).sum()))(params)
    g_old = jax.jit(jax.grad(lambda p: old(p).sum()))(params)
    for a, b in zip(jax.tree.leaves(g_new), jax.tree.leaves(g_old), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    # An empty prompt: the first completion token has no predecessor (log-prob 0).
    empty = nnx.jit(completion_logprobs)(model, prompts[:, :0], pmask[:, :0], comp, cmask)
    assert np.asarray(empty)[:, 0].tolist() == [0.0, 0.0]


@pytest.mark.parametrize("use_jit", [False, True])
def test_projection_of_4d_input_matches_float64(use_jit):
    rng = np.random.default_rng(9)
    proj = Projection(6, 5, bias=True, param_dtype=jnp.float32, rngs=nnx.Rngs(0))
    proj.bias[...] = jnp.asarray(rng.normal(size=5), jnp.float32)
    x = rng.normal(size=(2, 3, 4, 6)).astype(np.float32)
    kernel = np.asarray(proj.kernel[...], np.float64)
    want = x.astype(np.float64) @ kernel + np.asarray(proj.bias[...], np.float64)
    call = nnx.jit(lambda p, x: p(x)) if use_jit else (lambda p, x: p(x))
    got = call(proj, jnp.asarray(x))
    assert got.shape == (2, 3, 4, 5)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)
    # With a LoRA adapter: + scale * x A B (and lora=False skips it).
    proj.lora = nnx.LoRA(6, 2, 5, param_dtype=jnp.float32, rngs=nnx.Rngs(1))  # as add_lora
    proj.lora_scale = 2.0
    proj.lora.lora_b[...] = jnp.asarray(rng.normal(size=(2, 5)), jnp.float32)
    a = np.asarray(proj.lora.lora_a[...], np.float64)
    b = np.asarray(proj.lora.lora_b[...], np.float64)
    lora_want = want + proj.lora_scale * (x.astype(np.float64) @ a @ b)
    np.testing.assert_allclose(
        np.asarray(call(proj, jnp.asarray(x))), lora_want, rtol=1e-5, atol=1e-5
    )
    off = nnx.jit(lambda p, x: p(x, lora=False)) if use_jit else (lambda p, x: p(x, lora=False))
    np.testing.assert_allclose(np.asarray(off(proj, jnp.asarray(x))), want, rtol=1e-5, atol=1e-5)
