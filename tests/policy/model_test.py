"""Decoder: KV-cache decoding equals the full forward, padding invariance, causality, bf16,
and float64 references for RMSNorm and RoPE frequencies (incl. Llama-3 scaling).

The whole forward is checked eagerly and under jit against Hugging Face PyTorch in
hf_parity_test.py; here everything runs jitted.
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from flame_jax.policy import (
    Decoder,
    DecoderConfig,
    RMSNorm,
    RopeScaling,
    rope_inverse_frequencies,
)

CONFIG = DecoderConfig.tiny(
    architecture="qwen3",
    vocab_size=61,
    hidden_size=32,
    intermediate_size=48,
    num_heads=4,
    num_kv_heads=2,
    head_dim=8,
    qkv_bias=True,
    o_bias=True,
    qk_norm=True,
    tie_embeddings=False,
    rope_scaling=RopeScaling(factor=4.0, original_max_position_embeddings=8),
)


def _randomise(model, seed, scale=0.3):
    """Every parameter random (biases and norm weights included), so no branch is trivial."""
    rng = np.random.default_rng(seed)
    state = nnx.state(model, nnx.Param)
    new = jax.tree.map(
        lambda x: jnp.asarray(scale * rng.normal(size=x.shape) + (x == 1).all(), x.dtype), state
    )
    nnx.update(model, new)
    return model


@pytest.fixture(scope="module")
def model():
    return _randomise(Decoder(CONFIG, rngs=nnx.Rngs(0)), 1)


def _positions(mask):
    return jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0)


@nnx.jit
def _full(model, tokens, mask):
    hidden, _ = model(model.embed(tokens), _positions(mask), kv_mask=mask)
    return hidden


@nnx.jit
def _step(model, tokens, positions, kv_mask, cache, index):
    return model(model.embed(tokens), positions, kv_mask=kv_mask, cache=cache, cache_index=index)


def _left_padded(seed, batch, length, vocab=61):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, vocab, size=(batch, length))
    mask = np.ones((batch, length), bool)
    for b, pad in enumerate(rng.integers(0, length - 1, size=batch)):
        mask[b, :pad] = False
    return jnp.asarray(tokens), jnp.asarray(mask)


@pytest.mark.parametrize(("batch", "prompt", "new"), [(3, 7, 5), (1, 1, 3)])
def test_kv_cache_decoding_equals_full_forward(model, batch, prompt, new):
    tokens, mask = _left_padded(batch * 10 + prompt, batch, prompt + new)
    mask = mask.at[:, prompt:].set(True)  # generated tokens are real
    full = _full(model, tokens, mask)
    slots = prompt + new + 2  # spare slots at the end stay masked
    kv_mask = jnp.pad(mask, ((0, 0), (0, slots - prompt - new)))
    positions = _positions(mask)
    # Prefill the prompt, then one token per step; kv_mask of not-yet-written slots may be True:
    # causality alone must hide them.
    hidden, cache = _step(
        model,
        tokens[:, :prompt],
        positions[:, :prompt],
        kv_mask,
        model.init_cache(batch, slots),
        jnp.int32(0),
    )
    outs = [hidden]
    for i in range(prompt, prompt + new):
        h, cache = _step(
            model, tokens[:, i : i + 1], positions[:, i : i + 1], kv_mask, cache, jnp.int32(i)
        )
        outs.append(h)
    inc = jnp.concatenate(outs, axis=1)
    real = np.asarray(mask)
    np.testing.assert_allclose(np.asarray(inc)[real], np.asarray(full)[real], atol=2e-5, rtol=1e-5)
    assert cache.k.shape == (CONFIG.num_layers, batch, slots, CONFIG.num_kv_heads, CONFIG.head_dim)


def test_chunked_prefill_equals_full(model):
    tokens, mask = _left_padded(3, 2, 9)
    full = _full(model, tokens, mask)
    positions = _positions(mask)
    cache = model.init_cache(2, 9)
    h1, cache = _step(model, tokens[:, :4], positions[:, :4], mask, cache, jnp.int32(0))
    h2, cache = _step(model, tokens[:, 4:], positions[:, 4:], mask, cache, jnp.int32(4))
    inc = jnp.concatenate([h1, h2], axis=1)
    real = np.asarray(mask)
    np.testing.assert_allclose(np.asarray(inc)[real], np.asarray(full)[real], atol=2e-5, rtol=1e-5)


def test_left_padding_changes_nothing(model):
    rng = np.random.default_rng(5)
    seq = rng.integers(1, 61, size=6)
    alone = _full(model, jnp.asarray(seq[None]), jnp.ones((1, 6), bool))
    for pad in (1, 4):
        garbage = rng.integers(0, 61, size=pad)  # what sits in padded slots must not matter
        tokens = jnp.asarray(np.concatenate([garbage, seq])[None])
        mask = jnp.asarray(np.r_[np.zeros(pad, bool), np.ones(6, bool)][None])
        padded = _full(model, tokens, mask)
        np.testing.assert_allclose(padded[0, pad:], alone[0], atol=2e-5, rtol=1e-5)
        assert np.isfinite(np.asarray(padded)).all()  # fully masked query rows give no NaN


def test_causality(model):
    tokens, mask = _left_padded(7, 2, 8)
    before = _full(model, tokens, mask)
    changed = tokens.at[:, 5].set((tokens[:, 5] + 1) % 61)
    after = _full(model, changed, mask)
    # Earlier slots (padding ones included: they attend to nothing) do not see slot 5.
    np.testing.assert_allclose(after[:, :5], before[:, :5], atol=1e-6, rtol=1e-6)
    assert np.abs(np.asarray(after[:, 5:] - before[:, 5:])).max() > 1e-3


def test_bfloat16_params_run_and_track_float32(model):
    cfg16 = dataclasses.replace(CONFIG, param_dtype="bfloat16")
    model16 = nnx.eval_shape(lambda: Decoder(cfg16, rngs=nnx.Rngs(0)))
    graphdef, abstract = nnx.split(model16)
    assert {x.dtype for x in jax.tree.leaves(abstract)} == {jnp.dtype(jnp.bfloat16)}
    state = jax.tree.map(lambda x: x.astype(jnp.bfloat16), nnx.state(model, nnx.Param))
    model16 = nnx.merge(graphdef, state)
    tokens, mask = _left_padded(9, 2, 8)
    hidden16 = _full(model16, tokens, mask)
    assert hidden16.dtype == jnp.bfloat16
    logits16 = model16.logits(hidden16)
    assert logits16.dtype == jnp.float32
    logits32 = model.logits(_full(model, tokens, mask))
    real = np.asarray(mask)
    err = np.abs(np.asarray(logits16 - logits32))[real].max()
    assert err < 0.05 * np.abs(np.asarray(logits32))[real].max()
    cache = model16.init_cache(2, 8)
    assert cache.k.dtype == jnp.bfloat16
    h, cache = _step(model16, tokens, _positions(mask), mask, cache, jnp.int32(0))
    assert cache.k.dtype == jnp.bfloat16 and np.isfinite(np.asarray(h, np.float32)).all()


def test_logits_and_unembedding(model):
    hidden = jax.random.normal(jax.random.key(0), (2, 3, 32))
    w = np.asarray(model.unembedding(), np.float64)
    assert w.shape == (61, 32)
    ref = np.einsum("btd,vd->btv", np.asarray(hidden, np.float64), w)
    np.testing.assert_allclose(model.logits(hidden), ref, atol=1e-5, rtol=1e-5)
    tied_config = dataclasses.replace(CONFIG, tie_embeddings=True)
    tied = nnx.eval_shape(lambda: Decoder(tied_config, rngs=nnx.Rngs(0)))
    assert tied.lm_head is None
    graphdef, _ = nnx.split(tied)
    state = nnx.state(model, nnx.Param)
    del state["lm_head"]
    tied = nnx.merge(graphdef, state)
    np.testing.assert_array_equal(tied.unembedding(), model.embed_tokens.embedding[...])


def test_mask_and_cache_shape_errors(model):
    tokens = jnp.ones((1, 4), jnp.int32)
    with pytest.raises(ValueError, match="no cache"):
        model(model.embed(tokens), jnp.zeros((1, 4), jnp.int32), kv_mask=jnp.ones((1, 6), bool))
    with pytest.raises(ValueError, match="the cache has 5"):
        model(
            model.embed(tokens),
            jnp.zeros((1, 4), jnp.int32),
            kv_mask=jnp.ones((1, 6), bool),
            cache=model.init_cache(1, 5),
        )


def reference_rms_norm(x, w, eps):
    out = np.empty_like(x)
    for idx in np.ndindex(x.shape[:-1]):
        row = x[idx]
        out[idx] = w * row / math.sqrt(sum(v * v for v in row) / len(row) + eps)
    return out


@pytest.mark.parametrize("shape", [(5, 8), (2, 3, 16), (1, 1, 1, 4)])
def test_rms_norm_against_float64(shape):
    rng = np.random.default_rng(len(shape))
    x = rng.normal(size=shape) * 3
    w = rng.normal(size=shape[-1])
    norm = RMSNorm(shape[-1], eps=1e-5, param_dtype=jnp.float32)
    norm.weight.set_value(jnp.asarray(w, jnp.float32))
    ref = reference_rms_norm(x, w, 1e-5)
    np.testing.assert_allclose(norm(jnp.asarray(x, jnp.float32)), ref, rtol=1e-5, atol=1e-5)
    jitted = nnx.jit(lambda n, v: n(v))
    np.testing.assert_allclose(jitted(norm, jnp.asarray(x, jnp.float32)), ref, rtol=1e-5, atol=1e-5)


def reference_llama3_frequencies(head_dim, theta, factor, low, high, old):
    out = []
    for i in range(0, head_dim, 2):
        f = theta ** (-i / head_dim)
        wavelen = 2 * math.pi / f
        if wavelen < old / high:
            out.append(f)
        elif wavelen > old / low:
            out.append(f / factor)
        else:
            s = (old / wavelen - low) / (high - low)
            out.append((1 - s) * f / factor + s * f)
    return np.array(out)


@pytest.mark.parametrize(
    ("head_dim", "theta", "scaling"),
    [
        (8, 10000.0, None),
        (64, 500000.0, RopeScaling(factor=8.0)),
        (16, 10000.0, RopeScaling(factor=4.0, original_max_position_embeddings=8)),
        (128, 500000.0, RopeScaling(factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0)),
    ],
)
def test_rope_frequencies_against_float64(head_dim, theta, scaling):
    got = rope_inverse_frequencies(head_dim, theta, scaling)
    if scaling is None:
        ref = np.array([theta ** (-i / head_dim) for i in range(0, head_dim, 2)])
    else:
        ref = reference_llama3_frequencies(
            head_dim,
            theta,
            scaling.factor,
            scaling.low_freq_factor,
            scaling.high_freq_factor,
            scaling.original_max_position_embeddings,
        )
        unscaled = rope_inverse_frequencies(head_dim, theta)
        assert (got < unscaled * 0.99).any()  # the scaling acts
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, ref, rtol=3e-6)
