"""Per-row (traced) sampling settings: one compiled program for every temperature, top-k, top-p
and token cap, drawing exactly what the static sampler draws for the same settings and key."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flame_jax.policy._sampling import (
    SamplingConfig,
    SamplingParams,
    filter_logits,
    filter_logits_per_row,
    left_pad,
    make_generator,
    sample_tokens,
    sample_tokens_per_row,
)
from tests.policy.lm_helpers import random_model
from tests.policy.sampling_test import reference_filter

PROMPTS = [[5, 6, 7, 8, 9], [3, 4], [10, 11, 12], [20, 21, 22, 23, 24, 25, 26]]
NEW = 8

# (temperature, top_k, top_p); top_k 0 or >= vocab and top_p 1 are "off"
SETTINGS = [(1.0, 0, 1.0), (0.7, 5, 1.0), (1.3, 0, 0.8), (0.5, 10, 0.6), (2.0, 1, 0.3),
            (1.0, 50, 0.999), (0.9, 3, 1e-6)]  # fmt: skip


def params(rows, batch=None):
    rows = rows * batch if batch is not None else rows
    t, k, p = (np.array(c) for c in zip(*rows, strict=True))
    return t.astype(np.float32), k.astype(np.int32), p.astype(np.float32)


@pytest.mark.parametrize("use_jit", [False, True])
@pytest.mark.parametrize("ban", [False, True])
def test_filter_logits_per_row_matches_float64(use_jit, ban):
    rng = np.random.default_rng(int(ban))
    z = rng.normal(size=(len(SETTINGS), 50)) * 2
    banned = rng.random(50) < 0.2 if ban else None
    t, k, p = params(SETTINGS)
    fn = jax.jit(filter_logits_per_row) if use_jit else filter_logits_per_row
    got = fn(
        jnp.asarray(z, jnp.float32),
        temperature=jnp.asarray(t),
        top_k=jnp.asarray(k),
        top_p=jnp.asarray(p),
        banned=None if banned is None else jnp.asarray(banned),
    )
    got = np.asarray(jax.nn.softmax(got, axis=-1), np.float64)
    for row, (ti, ki, pi) in enumerate(SETTINGS):
        want = reference_filter(z[row : row + 1], ti, ki, pi, banned)[0]
        np.testing.assert_allclose(got[row], want, atol=1e-6)
        assert ((got[row] > 0) == (want > 0)).all()


def test_top_p_zero_keeps_the_most_likely_token():
    z = jnp.log(jnp.array([[0.2, 0.5, 0.3], [0.4, 0.4, 0.2]]))
    out = filter_logits_per_row(
        z, temperature=jnp.ones(2), top_k=jnp.zeros(2, jnp.int32), top_p=jnp.zeros(2)
    )
    assert jnp.isfinite(out).tolist() == [[False, True, False], [True, True, False]]


@pytest.mark.parametrize("setting", [(0.0, 0, 1.0), (0.0, 3, 0.5), *SETTINGS])
def test_per_row_draws_equal_the_static_sampler(setting):
    """Same settings, same key: the very same tokens (greedy included, with ties and bans)."""
    rng = np.random.default_rng(3)
    z = jnp.asarray(np.round(rng.normal(size=(6, 40)) * 2), jnp.float32)  # many ties
    banned = jnp.asarray(rng.random(40) < 0.2)
    temperature, top_k, top_p = setting
    config = SamplingConfig(temperature=temperature, top_k=top_k, top_p=max(top_p, 1e-6))
    t, k, p = params([setting], batch=6)
    if temperature > 0:  # the filtered logits themselves are the same, bit for bit
        want = filter_logits(z, temperature=temperature, top_k=top_k, top_p=top_p, banned=banned)
        got = filter_logits_per_row(
            z, temperature=jnp.asarray(t), top_k=jnp.asarray(k), top_p=jnp.asarray(p), banned=banned
        )
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    for seed in range(5):
        key = jax.random.key(seed)
        want = sample_tokens(z, key=key, config=config, banned=banned)
        got = jax.jit(sample_tokens_per_row)(
            z,
            key=key,
            temperature=jnp.asarray(t),
            top_k=jnp.asarray(k),
            top_p=jnp.asarray(p),
            banned=banned,
        )
        assert got.tolist() == want.tolist()


@pytest.fixture(scope="module")
def model():
    return random_model(0)


@pytest.fixture(scope="module")
def traced():
    # the config's temperature / top-k / top-p are not used when ``sampling`` is given
    return make_generator(SamplingConfig(max_new_tokens=NEW, eos_ids=(2,), pad_id=0))


def sampling(rows, caps=NEW):
    t, k, p = params(rows)
    return SamplingParams(
        temperature=t, top_k=k, top_p=p, max_new_tokens=np.broadcast_to(caps, t.shape)
    )


def test_traced_settings_reproduce_the_static_generators_row_by_row(model, traced):
    """A batch mixing four settings equals, row by row, four static generators on the batch."""
    rows = [(0.0, 0, 1.0), (1.5, 0, 0.95), (1.0, 3, 1.0), (0.8, 7, 0.7)]
    tokens, mask = left_pad(PROMPTS)
    key = jax.random.key(11)
    got = traced(model, tokens, mask, key=key, sampling=sampling(rows))
    for row, (t, k, p) in enumerate(rows):
        static = make_generator(
            SamplingConfig(max_new_tokens=NEW, temperature=t, top_k=k, top_p=p, eos_ids=(2,))
        )
        want = static(model, tokens, mask, key=key)
        np.testing.assert_array_equal(np.asarray(got.tokens[row]), np.asarray(want.tokens[row]))
        np.testing.assert_array_equal(np.asarray(got.logprobs[row]), np.asarray(want.logprobs[row]))
        assert int(got.lengths[row]) == int(want.lengths[row])


def test_per_row_token_caps_cut_each_row(model, traced):
    tokens, mask = left_pad(PROMPTS)
    rows = [(0.0, 0, 1.0)] * 4
    full = traced(model, tokens, mask, key=jax.random.key(0), sampling=sampling(rows))
    caps = np.array([1, 3, NEW, 5], np.int32)
    cut = traced(model, tokens, mask, key=jax.random.key(0), sampling=sampling(rows, caps))
    for row, cap in enumerate(caps):
        n = min(int(cap), int(full.lengths[row]))
        assert int(cut.lengths[row]) == n
        assert cut.tokens[row, :n].tolist() == full.tokens[row, :n].tolist()
        assert (np.asarray(cut.tokens[row, n:]) == 0).all()
        assert (np.asarray(cut.logprobs[row, n:]) == 0).all()


def test_new_settings_compile_nothing(model):
    gen = make_generator(SamplingConfig(max_new_tokens=4))
    tokens, mask = left_pad(PROMPTS[:3])
    rng = np.random.default_rng(0)
    for i in range(6):
        rows = [
            (float(rng.uniform(0, 2)) * (i % 3 > 0), int(rng.integers(0, 60)), float(rng.uniform()))
            for _ in range(3)
        ]
        caps = rng.integers(1, 5, size=3).astype(np.int32)
        gen(model, tokens, mask, key=jax.random.key(i), sampling=sampling(rows, caps))
    assert gen.compilations() == 1
    gen(model, tokens, mask, key=jax.random.key(0))  # the static path is its own program
    assert gen.compilations() == 2


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("temperature", -0.5, "temperature"),
        ("temperature", np.nan, "temperature"),
        ("top_k", -1, "top_k"),
        ("top_p", 1.5, "top_p"),
        ("top_p", np.nan, "top_p"),
        ("max_new_tokens", 0, "max_new_tokens"),
        ("max_new_tokens", NEW + 1, "max_new_tokens"),
    ],
)
def test_bad_settings_raise(model, traced, field, value, match):
    tokens, mask = left_pad(PROMPTS[:2])
    good = sampling([(1.0, 0, 1.0)] * 2)
    values = np.array(getattr(good, field))
    values[1] = value
    with pytest.raises(ValueError, match=match):
        traced(
            model, tokens, mask, key=jax.random.key(0), sampling=good._replace(**{field: values})
        )
    with pytest.raises(ValueError, match="shape"):
        traced(
            model,
            tokens,
            mask,
            key=jax.random.key(0),
            sampling=good._replace(temperature=np.ones(3, np.float32)),
        )
