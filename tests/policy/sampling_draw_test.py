"""The sampler's draws: the same tokens as ``jax.random.categorical`` / ``jnp.argmax``, faster.

``_first_argmax`` is checked against NumPy's float64 ``argmax`` (first index on ties, first NaN,
0 on an all ``-inf`` row); ``_categorical`` and ``sample_tokens`` against the JAX functions they
replace, on random logits with ``-inf`` masks and ties, eager and under ``jit``; and the whole
generator against the same generator built on ``jax.random.categorical`` / ``jnp.argmax``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flame_jax.policy import _sampling
from flame_jax.policy._sampling import (
    SamplingConfig,
    _categorical,
    _first_argmax,
    filter_logits,
    left_pad,
    make_generator,
    sample_tokens,
)
from tests.policy.lm_helpers import random_model

SHAPES = [(1, 2), (5, 7), (3, 4, 9), (32, 576)]


def random_logits(rng, shape, *, masked, tied):
    """Normal logits; ``tied``: rounded to a coarse grid (many equal values per row);
    ``masked``: about a third set to -inf, never a whole row."""
    z = rng.normal(size=shape) * 3
    if tied:
        z = np.round(z)
    if masked:
        mask = rng.random(shape) < 0.35
        flat = mask.reshape(-1, shape[-1])
        flat[np.arange(flat.shape[0]), rng.integers(0, shape[-1], flat.shape[0])] = False
        z = np.where(flat.reshape(shape), -np.inf, z)
    return z.astype(np.float32)


def reference_argmax(x):
    """float64 NumPy argmax over the last axis (first index on ties, first NaN if any)."""
    return np.argmax(np.asarray(x, np.float64), axis=-1)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("use_jit", [False, True])
def test_first_argmax_matches_numpy_with_ties_masks_and_nan(shape, use_jit):
    rng = np.random.default_rng(shape[-1])
    fn = jax.jit(_first_argmax) if use_jit else _first_argmax
    for masked, tied in [(False, False), (True, False), (False, True), (True, True)]:
        x = random_logits(rng, shape, masked=masked, tied=tied)
        got = np.asarray(fn(jnp.asarray(x)))
        assert got.dtype == np.int32 and got.shape == shape[:-1]
        np.testing.assert_array_equal(got, reference_argmax(x))
    # Edge rows: all -inf (index 0), NaN anywhere (first NaN), +inf (first +inf), a single
    # finite entry among -inf, and the maximum at the last position.
    v = shape[-1]
    edge = np.full((5, v), -np.inf, np.float32)
    edge[1, v // 2 :] = np.nan
    edge[1, 0] = 5.0
    edge[2] = rng.normal(size=v)
    edge[2, v - 1] = edge[2, 0] = np.inf
    edge[3, v - 1] = -1e30
    edge[4] = np.arange(v)
    got = np.asarray(fn(jnp.asarray(edge)))
    np.testing.assert_array_equal(got, reference_argmax(edge))
    np.testing.assert_array_equal(got, np.asarray(jnp.argmax(jnp.asarray(edge), axis=-1)))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("use_jit", [False, True])
def test_categorical_draws_what_jax_random_categorical_draws(shape, use_jit):
    rng = np.random.default_rng(100 + shape[-1])

    def both(key, x):  # one program for the two (under jit)
        return _categorical(key, x), jax.random.categorical(key, x)

    both = jax.jit(both) if use_jit else both
    keys = jax.random.split(jax.random.key(shape[-1]), 6)
    for i, (masked, tied) in enumerate([(False, False), (True, False), (True, True)]):
        x = jnp.asarray(random_logits(rng, shape, masked=masked, tied=tied))
        for key in keys[2 * i : 2 * i + 2]:
            got, want = map(np.asarray, both(key, x))
            assert got.dtype == np.int32 and got.shape == shape[:-1]
            np.testing.assert_array_equal(got, want)
            # -inf entries are never drawn.
            picked = np.take_along_axis(np.asarray(x), got[..., None], axis=-1)
            assert np.isfinite(picked).all()


def test_categorical_on_two_way_rows_and_raw_keys():
    x = jnp.asarray([[0.0, 0.0, -jnp.inf], [-jnp.inf, 3.0, 3.0]], jnp.float32)
    for seed in range(20):
        key = jax.random.key(seed)
        np.testing.assert_array_equal(
            np.asarray(_categorical(key, x)), np.asarray(jax.random.categorical(key, x))
        )
    # With a raw (legacy uint32) key as well.
    raw = jax.random.PRNGKey(3)
    np.testing.assert_array_equal(
        np.asarray(_categorical(raw, x)), np.asarray(jax.random.categorical(raw, x))
    )


@pytest.mark.parametrize(
    ("temperature", "top_k", "top_p", "ban"),
    [(1.0, 0, 1.0, False), (0.7, 5, 1.0, True), (1.3, 0, 0.8, True), (0.5, 10, 0.6, False)],
)
@pytest.mark.parametrize("use_jit", [False, True])
def test_sample_tokens_are_the_categorical_draws_of_the_filtered_logits(
    temperature, top_k, top_p, ban, use_jit
):
    rng = np.random.default_rng(7)
    config = SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p)
    for shape in [(4, 50), (32, 576)]:
        z = jnp.asarray(random_logits(rng, shape, masked=True, tied=True))
        banned = jnp.asarray(rng.random(shape[1]) < 0.2) if ban else None

        def both(key, z, banned):
            x = filter_logits(z, temperature=temperature, top_k=top_k, top_p=top_p, banned=banned)
            want = jax.random.categorical(key, x, axis=-1).astype(jnp.int32)
            return sample_tokens(z, key=key, config=config, banned=banned), want

        both = jax.jit(both) if use_jit else both
        for seed in range(3):
            got, want = both(jax.random.key(seed), z, banned)
            np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


@pytest.mark.parametrize("use_jit", [False, True])
def test_greedy_sample_tokens_equal_argmax_with_ties_and_bans(use_jit):
    rng = np.random.default_rng(11)
    config = SamplingConfig(temperature=0)

    def ours(z, banned):
        return sample_tokens(z, key=jax.random.key(0), config=config, banned=banned)

    fn = jax.jit(ours) if use_jit else ours
    for shape in [(3, 7), (32, 576)]:
        z = random_logits(rng, shape, masked=True, tied=True)
        banned = rng.random(shape[1]) < 0.3
        got = np.asarray(fn(jnp.asarray(z), jnp.asarray(banned)))
        np.testing.assert_array_equal(got, reference_argmax(np.where(banned[None, :], -np.inf, z)))


@pytest.fixture(scope="module")
def model():
    return random_model(3)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_generator_output_is_unchanged_against_the_jax_draws(model, monkeypatch, temperature):
    """Whole decode: the generator with ``jax.random.categorical`` / ``jnp.argmax`` swapped back
    in produces bit-identical tokens, log-probs and lengths."""
    config = SamplingConfig(max_new_tokens=8, temperature=temperature, eos_ids=(2,))
    tokens, mask = left_pad([[5, 6, 7, 8], [9, 10], [11, 12, 13]])
    banned = np.zeros(model.config.vocab_size, bool)
    banned[[0, 1]] = True
    kwargs = {"key": jax.random.key(5), "banned": banned}
    new = make_generator(config)(model, tokens, mask, **kwargs)
    monkeypatch.setattr(
        _sampling,
        "_categorical",
        lambda key, x: jax.random.categorical(key, x, axis=-1).astype(jnp.int32),
    )
    monkeypatch.setattr(
        _sampling, "_first_argmax", lambda x: jnp.argmax(x, axis=-1).astype(jnp.int32)
    )
    old = make_generator(config)(model, tokens, mask, **kwargs)
    np.testing.assert_array_equal(np.asarray(new.tokens), np.asarray(old.tokens))
    np.testing.assert_array_equal(np.asarray(new.logprobs), np.asarray(old.logprobs))
    np.testing.assert_array_equal(np.asarray(new.lengths), np.asarray(old.lengths))
