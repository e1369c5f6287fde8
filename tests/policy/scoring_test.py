"""Chunked log-probs (values, gradients, memory) and teacher-forced / Yes-No scoring vs float64."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from flame_jax.policy._scoring import (
    chunked_logsumexp,
    chunked_token_logprobs,
    completion_logprobs,
    naive_token_logprobs,
    token_logprobs,
    yes_no_scores,
)
from tests.policy.lm_helpers import full_logits, random_model


def reference_logprobs(h, w, y):
    z = np.asarray(h, np.float64) @ np.asarray(w, np.float64).T
    m = z.max(-1, keepdims=True)
    lse = (m + np.log(np.exp(z - m).sum(-1, keepdims=True)))[..., 0]
    return np.take_along_axis(z, y[..., None], -1)[..., 0] - lse, z, lse


def reference_grads(h, w, y, g):
    """d/dh and d/dW of sum(g * logp), from the formula, in float64."""
    _, z, lse = reference_logprobs(h, w, y)
    p = np.exp(z - lse[..., None])
    onehot = np.eye(w.shape[0])[y]
    d = g[..., None] * (onehot - p)
    dh = d @ np.asarray(w, np.float64)
    dw = d.reshape(-1, w.shape[0]).T @ np.asarray(h, np.float64).reshape(-1, h.shape[-1])
    return dh, dw


CASES = [((1,), 5, 3, 2), ((3, 5), 37, 8, 8), ((2, 4), 64, 16, 16), ((2, 3), 50, 4, 1000)]


@pytest.mark.parametrize(("lead", "vocab", "dim", "chunk"), CASES)
@pytest.mark.parametrize("use_jit", [False, True])
def test_chunked_matches_float64(lead, vocab, dim, chunk, use_jit):
    rng = np.random.default_rng(vocab)
    h = rng.normal(size=(*lead, dim)).astype(np.float32)
    w = rng.normal(size=(vocab, dim)).astype(np.float32)
    y = rng.integers(0, vocab, lead)
    fn = lambda h, w, y: chunked_token_logprobs(h, w, y, chunk_size=chunk)
    fn = jax.jit(fn) if use_jit else fn
    got = np.asarray(fn(jnp.asarray(h), jnp.asarray(w), jnp.asarray(y)))
    want, _, lse = reference_logprobs(h, w, y)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
    got_lse = chunked_logsumexp(jnp.asarray(h), jnp.asarray(w), chunk_size=chunk)
    np.testing.assert_allclose(np.asarray(got_lse), lse, rtol=1e-5, atol=1e-4)
    # Edge targets: first and last vocabulary entries (the last one lies in a padded chunk).
    for edge in (0, vocab - 1):
        ye = np.full(lead, edge)
        got = np.asarray(fn(jnp.asarray(h), jnp.asarray(w), jnp.asarray(ye)))
        np.testing.assert_allclose(got, reference_logprobs(h, w, ye)[0], rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize(("lead", "vocab", "dim", "chunk"), CASES)
def test_chunked_gradients_match_float64(lead, vocab, dim, chunk):
    rng = np.random.default_rng(vocab + 1)
    h = rng.normal(size=(*lead, dim)).astype(np.float32)
    w = rng.normal(size=(vocab, dim)).astype(np.float32)
    y = rng.integers(0, vocab, lead)
    g = rng.normal(size=lead).astype(np.float32)

    def loss(h, w):
        return (chunked_token_logprobs(h, w, jnp.asarray(y), chunk_size=chunk) * g).sum()

    dh, dw = jax.jit(jax.grad(loss, argnums=(0, 1)))(jnp.asarray(h), jnp.asarray(w))
    want_dh, want_dw = reference_grads(h, w, y, g)
    np.testing.assert_allclose(np.asarray(dh), want_dh, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(dw), want_dw, rtol=1e-4, atol=1e-4)


def test_chunked_bfloat16_inputs():
    rng = np.random.default_rng(3)
    h = jnp.asarray(rng.normal(size=(4, 16)), jnp.bfloat16)
    w = jnp.asarray(rng.normal(size=(40, 16)) * 0.3, jnp.bfloat16)
    y = jnp.asarray(rng.integers(0, 40, 4))
    got = chunked_token_logprobs(h, w, y, chunk_size=16)
    assert got.dtype == jnp.float32
    want = reference_logprobs(np.asarray(h, np.float32), np.asarray(w, np.float32), np.asarray(y))
    np.testing.assert_allclose(np.asarray(got), want[0], atol=1e-4)
    dh, dw = jax.grad(lambda h, w: chunked_token_logprobs(h, w, y, chunk_size=16).sum(), (0, 1))(
        h, w
    )
    assert dh.dtype == jnp.bfloat16 and dw.dtype == jnp.bfloat16


def _temp_bytes(fn, *args):
    return jax.jit(fn).lower(*args).compile().memory_analysis().temp_size_in_bytes


def test_chunked_never_materialises_vocab_logits():
    n, dim, vocab, chunk = 256, 16, 16384, 512
    h = jax.ShapeDtypeStruct((n, dim), jnp.float32)
    w = jax.ShapeDtypeStruct((vocab, dim), jnp.float32)
    y = jax.ShapeDtypeStruct((n,), jnp.int32)
    full = n * vocab * 4
    chunked = lambda h, w, y: chunked_token_logprobs(h, w, y, chunk_size=chunk)
    grad_chunked = jax.grad(lambda h, w, y: chunked(h, w, y).sum())
    grad_naive = jax.grad(lambda h, w, y: naive_token_logprobs(h, w, y).sum())
    assert _temp_bytes(naive_token_logprobs, h, w, y) >= full
    assert _temp_bytes(chunked, h, w, y) < full / 4
    assert _temp_bytes(grad_naive, h, w, y) >= full
    assert _temp_bytes(grad_chunked, h, w, y) < full / 4


@pytest.fixture(scope="module")
def model():
    return random_model(3)


def test_token_logprobs_match_full_forward_and_ignore_padding(model):
    seqs = [[5, 6, 7, 8, 9, 10], [11, 12, 13], [14, 15, 16, 17, 18]]
    width = 8
    tokens = np.zeros((3, width), np.int32)
    mask = np.zeros((3, width), bool)
    for i, s in enumerate(seqs):  # left-padded, one row also right-padded
        start = width - len(s) - (1 if i == 2 else 0)
        tokens[i, start : start + len(s)] = s
        mask[i, start : start + len(s)] = True
    fn = nnx.jit(lambda m, t, k: token_logprobs(m, t, k, chunk_size=48))
    got = np.asarray(fn(model, jnp.asarray(tokens), jnp.asarray(mask)))
    for i, s in enumerate(seqs):
        ref = full_logits(model, s)
        want = [ref[t - 1, s[t]] for t in range(1, len(s))]
        real = np.flatnonzero(mask[i])
        np.testing.assert_allclose(got[i, real[1:]], want, atol=2e-5)
        assert (got[i, ~mask[i]] == 0).all() and got[i, real[0]] == 0


def test_completion_logprobs_matches_full_forward(model):
    prompts = np.array([[0, 0, 3, 4], [5, 6, 7, 8]])
    pmask = prompts != 0
    comp = np.array([[9, 10, 11], [12, 0, 0]])
    cmask = comp != 0
    fn = nnx.jit(completion_logprobs, static_argnames="chunk_size")
    args = (model, *(jnp.asarray(a) for a in (prompts, pmask, comp, cmask)))
    got = np.asarray(fn(*args, chunk_size=40))
    for i in range(2):
        p = prompts[i][pmask[i]].tolist()
        c = comp[i][cmask[i]].tolist()
        ref = full_logits(model, p + c)
        want = [ref[len(p) - 1 + t, c[t]] for t in range(len(c))]
        np.testing.assert_allclose(got[i, : len(c)], want, atol=2e-5)
        assert (got[i, len(c) :] == 0).all()
    # Explicit prompt embeddings (the knowledge-fusion path) give the same numbers.
    again = fn(*args, prompt_embeddings=model.embed(jnp.asarray(prompts)), chunk_size=40)
    np.testing.assert_allclose(np.asarray(again), got, atol=1e-6)


@pytest.mark.parametrize("item_block", [None, 2])
def test_yes_no_shared_prefix_equals_independent_scoring(model, item_block):
    yes, no = 30, 31
    prefixes = [[5, 6, 7, 8, 9], [10, 11]]
    suffixes = [[[20, 21], [22], [23, 24, 25]], [[26], [27, 28, 29], [40, 41]]]
    pre = np.zeros((2, 6), np.int32)
    pmask = np.zeros((2, 6), bool)
    for i, p in enumerate(prefixes):
        pre[i, 6 - len(p) :], pmask[i, 6 - len(p) :] = p, True
    suf = np.zeros((2, 3, 4), np.int32)
    smask = np.zeros((2, 3, 4), bool)
    for i, row in enumerate(suffixes):
        for j, s in enumerate(row):
            suf[i, j, : len(s)], smask[i, j, : len(s)] = s, True

    def fn(m, pre, pmask, suf, smask):
        return yes_no_scores(
            m, pre, pmask, suf, smask, yes_id=yes, no_id=no, chunk_size=48, item_block=item_block
        )

    got = nnx.jit(fn)(model, *(jnp.asarray(a) for a in (pre, pmask, suf, smask)))
    for i, p in enumerate(prefixes):
        for j, s in enumerate(suffixes[i]):
            ref = full_logits(model, p + s)[-1]
            np.testing.assert_allclose(float(got.logp_yes[i, j]), ref[yes], atol=2e-5)
            np.testing.assert_allclose(float(got.logp_no[i, j]), ref[no], atol=2e-5)
            p_yes = np.exp(ref[yes]) / (np.exp(ref[yes]) + np.exp(ref[no]))
            np.testing.assert_allclose(float(got.p_yes[i, j]), p_yes, atol=1e-5)


def test_lora_switch_is_forwarded():
    """lora=False scores with the base weights; lora=True with the (non-zero) adapters."""
    from flame_jax.policy._lora import LoraConfig, add_lora

    base = random_model(4, num_layers=1)
    adapted = random_model(4, num_layers=1)
    add_lora(adapted, LoraConfig(rank=2, targets=("q", "v")), rngs=nnx.Rngs(0))
    for proj in (adapted.layers[0].self_attn.q_proj, adapted.layers[0].self_attn.v_proj):
        proj.lora.lora_b[...] = 0.5 * jnp.ones_like(proj.lora.lora_b[...])
    tokens = jnp.asarray([[5, 6, 7, 8]])
    mask = jnp.ones((1, 4), bool)
    fn = nnx.jit(token_logprobs, static_argnames=("chunk_size", "lora"))
    off = fn(adapted, tokens, mask, chunk_size=64, lora=False)
    np.testing.assert_allclose(off, fn(base, tokens, mask, chunk_size=64), atol=1e-6)
    on = fn(adapted, tokens, mask, chunk_size=64)
    assert float(jnp.abs(on - off).max()) > 1e-3


@pytest.mark.parametrize("use_jit", [False, True])
def test_constrained_completion_logprobs_match_float64(model, use_jit):
    """``allowed``: log-softmax renormalised over each position's allowed tokens (float64
    reference from the plain forward), 0 at padding; a token that is the only one allowed has
    log-prob 0 and no gradient."""
    rng = np.random.default_rng(7)
    vocab = model.config.vocab_size
    prompts = np.array([[0, 0, 3, 4], [5, 6, 7, 8], [0, 9, 10, 11]])
    pmask = prompts != 0
    comp = np.array([[9, 10, 11, 12], [12, 13, 0, 0], [14, 15, 16, 0]])
    cmask = comp != 0
    allowed = rng.random((3, 4, vocab)) < 0.4
    allowed[np.arange(3)[:, None], np.arange(4)[None, :], comp] = True  # the drawn token
    allowed[0, 1] = False
    allowed[0, 1, comp[0, 1]] = True  # forced
    allowed[1, 2:] = False  # padding positions: ignored, even with nothing allowed

    def fn(m, *a):
        return completion_logprobs(m, *a, chunk_size=40, allowed=jnp.asarray(allowed))

    fn = nnx.jit(fn) if use_jit else fn
    args = (model, *(jnp.asarray(a) for a in (prompts, pmask, comp, cmask)))
    got = np.asarray(fn(*args))
    for i in range(3):
        p = prompts[i][pmask[i]].tolist()
        c = comp[i][cmask[i]].tolist()
        ref = full_logits(model, p + c)
        for t in range(len(c)):
            z = ref[len(p) - 1 + t]
            ok = allowed[i, t]
            want = z[c[t]] - np.log(np.exp(z[ok]).sum())
            np.testing.assert_allclose(got[i, t], want, atol=2e-5)
        assert (got[i, len(c) :] == 0).all()
    assert got[0, 1] == 0.0
    # unconstrained values where every token is allowed
    everything = np.ones_like(allowed)
    free = completion_logprobs(*args, chunk_size=40, allowed=jnp.asarray(everything))
    plain = completion_logprobs(*args, chunk_size=40)
    np.testing.assert_allclose(np.asarray(free), np.asarray(plain), atol=2e-5)
    graphdef, state = nnx.split(model)
    grads = jax.grad(lambda s: fn(nnx.merge(graphdef, s), *args[1:])[0, 1])(state)
    assert all(float(jnp.abs(g).max()) == 0 for g in jax.tree.leaves(grads))
    grads = jax.grad(lambda s: fn(nnx.merge(graphdef, s), *args[1:]).sum())(state)
    assert all(bool(jnp.isfinite(g).all()) for g in jax.tree.leaves(grads))
    with pytest.raises(ValueError, match="allowed needs a prompt"):
        completion_logprobs(model, jnp.zeros((3, 0), jnp.int32), jnp.zeros((3, 0), bool),
                            *args[3:], allowed=jnp.asarray(allowed))  # fmt: skip
