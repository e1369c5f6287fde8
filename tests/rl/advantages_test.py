"""Outcome, step-group and token advantages against float64 NumPy loops from the formulas."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flame_jax import rl

ESTIMATORS = [("grpo", 1), ("grpo", 0), ("drgrpo", 1), ("rloo", 1)]


def _reference_norm(values, estimator, ddof, floor=1e-4, relative_floor=1e-5):
    """Normalise a 1-D list of finite floats (float64)."""
    x = np.asarray(values, np.float64)
    n = len(x)
    out = np.zeros(n)
    if n == 0:
        return out
    mean = sum(x) / n
    for i in range(n):
        if estimator == "drgrpo":
            out[i] = x[i] - mean
        elif estimator == "rloo":
            out[i] = x[i] - (sum(x) - x[i]) / (n - 1) if n > 1 else 0.0
        else:
            var = sum((v - mean) ** 2 for v in x) / max(n - ddof, 1)
            denom = max(np.sqrt(var), floor, relative_floor * max(abs(v) for v in x))
            out[i] = (x[i] - mean) / denom
    return out


def _reference_group(rewards, valid, estimator, ddof):
    out = np.zeros(rewards.shape)
    for b in range(rewards.shape[0]):
        idx = [g for g in range(rewards.shape[1]) if valid[b, g] and np.isfinite(rewards[b, g])]
        out[b, idx] = _reference_norm([rewards[b, g] for g in idx], estimator, ddof)
    return out


def _reference_steps(rewards, mask, mode, estimator, ddof):
    batch, group, steps = rewards.shape
    out = np.zeros(rewards.shape)
    for b in range(batch):
        idx = [(g, t) for g in range(group) for t in range(steps) if mask[b, g, t]]
        normed = _reference_norm([rewards[b, g, t] for g, t in idx], estimator, ddof)
        for (g, t), v in zip(idx, normed, strict=True):
            out[b, g, t] = v
    if mode == "return_to_go":
        rtg = np.zeros(rewards.shape)
        for b in range(batch):
            for g in range(group):
                for t in range(steps):
                    if mask[b, g, t]:
                        rtg[b, g, t] = sum(out[b, g, u] for u in range(t, steps) if mask[b, g, u])
        out = rtg
    return out


def _random_mask(rng, shape, p=0.7):
    mask = rng.random(shape) < p
    return mask


@pytest.mark.parametrize("shape", [(1, 2), (3, 2), (4, 8), (2, 16)])
@pytest.mark.parametrize(("estimator", "ddof"), ESTIMATORS)
@pytest.mark.parametrize("use_jit", [False, True])
def test_group_advantages_match_numpy(shape, estimator, ddof, use_jit):
    rng = np.random.default_rng(sum(shape) + ddof)
    rewards = rng.normal(size=shape) * rng.choice([1e-3, 1.0, 50.0])
    valid = _random_mask(rng, shape)
    valid[0] = False  # an all-masked group
    if shape[0] > 1:
        rewards[1, 0] = np.nan
    fn = functools.partial(rl.group_advantages, estimator=estimator, std_ddof=ddof)
    fn = jax.jit(fn) if use_jit else fn
    got = fn(jnp.asarray(rewards, jnp.float32), jnp.asarray(valid))
    want = _reference_group(rewards, valid, estimator, ddof)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)
    assert np.all(np.isfinite(got))
    np.testing.assert_array_equal(np.asarray(got)[0], 0.0)


@pytest.mark.parametrize(("estimator", "ddof"), ESTIMATORS)
def test_equal_groups_give_exact_zero(estimator, ddof):
    rng = np.random.default_rng(0)
    values = np.array([0.35, 0.1, 1 / 3, -7.3, 1e6 + 0.1, 0.0], np.float32)
    rewards = np.broadcast_to(values[:, None], (6, 8)).copy()
    got = rl.group_advantages(jnp.asarray(rewards), estimator=estimator, std_ddof=ddof, floor=0.0)
    np.testing.assert_array_equal(got, 0.0)
    # Same for the pooled step advantages with a random mask.
    mask = rng.random((6, 8, 5)) < 0.6
    steps = np.broadcast_to(values[:, None, None], mask.shape)
    got = rl.step_group_advantages(jnp.asarray(steps), jnp.asarray(mask), estimator=estimator)
    np.testing.assert_array_equal(got, 0.0)


def test_rounding_noise_does_not_blow_up():
    """0.35 computed along different paths differs by an ulp; the floors keep A bounded."""
    a = np.float32(0.35)
    b = np.nextafter(a, np.float32(1.0))
    c = np.nextafter(a, np.float32(0.0))
    rewards = jnp.asarray(np.array([[a, b, c, a, b, c, a, a]], np.float32))
    assert len(set(np.asarray(rewards).tolist()[0])) > 1  # really not all equal
    for floor in (1e-4, 0.0):
        got = rl.group_advantages(rewards, floor=floor)
        assert np.all(np.abs(got) < 0.1), (floor, got)
    big = rewards * 1e4
    assert np.all(np.abs(rl.group_advantages(big, floor=0.0)) < 0.1)


def test_nan_rewards_never_give_nan():
    rewards = jnp.array([[np.nan, 1.0, 0.0, np.inf], [np.nan] * 4, [np.nan, 0.35, 0.35, -np.inf]])
    for estimator, ddof in ESTIMATORS:
        got = np.asarray(rl.group_advantages(rewards, estimator=estimator, std_ddof=ddof))
        assert np.all(np.isfinite(got))
        np.testing.assert_array_equal(got[:, 0], 0.0)
        np.testing.assert_array_equal(got[1:], 0.0)
    steps = jnp.array([[[np.nan, 1.0], [0.0, 2.0]]])
    got = rl.step_group_advantages(steps, jnp.ones((1, 2, 2), bool))
    assert np.all(np.isfinite(got)) and float(got[0, 0, 0]) == 0.0


@pytest.mark.parametrize("shape", [(1, 2, 1), (2, 2, 3), (3, 8, 6), (2, 4, 32)])
@pytest.mark.parametrize("mode", ["marginal", "return_to_go"])
@pytest.mark.parametrize(
    ("estimator", "ddof", "use_jit"), [("grpo", 1, False), ("grpo", 0, True), ("rloo", 1, True)]
)
def test_step_group_advantages_match_numpy(shape, mode, estimator, ddof, use_jit):
    rng = np.random.default_rng(shape[2] + ddof)
    rewards = rng.normal(size=shape)
    lengths = rng.integers(0, shape[2] + 1, shape[:2])
    mask = np.arange(shape[2])[None, None] < lengths[..., None]
    fn = functools.partial(rl.step_group_advantages, mode=mode, estimator=estimator, std_ddof=ddof)
    fn = jax.jit(fn) if use_jit else fn
    got = fn(jnp.asarray(rewards, jnp.float32), jnp.asarray(mask))
    want = _reference_steps(rewards, mask, mode, estimator, ddof)
    np.testing.assert_allclose(got, want, rtol=3e-5, atol=3e-5)


def test_zero_mean_per_group_and_padding_invisible():
    rng = np.random.default_rng(5)
    rewards = rng.normal(size=(4, 8, 6)).astype(np.float32)
    mask = rng.random((4, 8, 6)) < 0.6
    adv = np.asarray(rl.step_group_advantages(jnp.asarray(rewards), jnp.asarray(mask)))
    np.testing.assert_allclose((adv * mask).sum((1, 2)), 0.0, atol=1e-5)
    padded_r = np.concatenate([rewards, rng.normal(size=(4, 8, 3)).astype(np.float32)], -1)
    padded_m = np.concatenate([mask, np.zeros((4, 8, 3), bool)], -1)
    got = rl.step_group_advantages(jnp.asarray(padded_r), jnp.asarray(padded_m))
    np.testing.assert_allclose(np.asarray(got)[..., :6], adv, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(got)[..., 6:], 0.0)
    out = np.asarray(rl.group_advantages(jnp.asarray(rewards[..., 0])))
    np.testing.assert_allclose(out.sum(1), 0.0, atol=1e-5)


def _reference_tokens(outcome, steps, token_steps, step_mask, weight, mixing):
    out = np.zeros(token_steps.shape)
    for b, g, k in np.ndindex(*token_steps.shape):
        t = token_steps[b, g, k]
        a = outcome[b, g]
        if 0 <= t < steps.shape[-1] and step_mask[b, g, t]:
            r = steps[b, g, t]
            out[b, g, k] = (1 - weight) * a + weight * r if mixing == "convex" else a + weight * r
        else:
            out[b, g, k] = a
    return out


@pytest.mark.parametrize(
    ("weight", "mixing"), [(0.5, "convex"), (0.0, "convex"), (0.3, "additive")]
)
@pytest.mark.parametrize("use_jit", [False, True])
def test_token_advantages_match_numpy(weight, mixing, use_jit):
    rng = np.random.default_rng(1)
    outcome = rng.normal(size=(3, 4))
    steps = rng.normal(size=(3, 4, 5))
    step_mask = rng.random((3, 4, 5)) < 0.7
    token_steps = rng.integers(-1, 6, (3, 4, 11))  # includes -1 and an out-of-range id 5
    fn = functools.partial(rl.token_advantages, step_weight=weight, mixing=mixing)
    fn = jax.jit(fn) if use_jit else fn
    got = fn(*(jnp.asarray(x) for x in (outcome, steps, token_steps, step_mask)))
    want = _reference_tokens(outcome, steps, token_steps, step_mask, weight, mixing)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("estimator", ["grpo", "drgrpo", "rloo"])
@pytest.mark.parametrize("weight", [0.0, 0.5, 1.0])
def test_one_step_per_completion_is_ordinary_grpo(estimator, weight):
    """One step whose reward is the outcome: every token advantage equals GRPO's A_i."""
    rng = np.random.default_rng(2)
    outcome = rng.normal(size=(4, 8)).astype(np.float32)
    token_steps = np.where(rng.random((4, 8, 9)) < 0.8, 0, -1)
    config = rl.AdvantageConfig(estimator=estimator, step_weight=weight)
    adv = jax.jit(rl.make_advantage_fn(config))(
        jnp.asarray(outcome),
        jnp.asarray(outcome[..., None]),
        jnp.ones((4, 8, 1), bool),
        jnp.asarray(token_steps),
    )
    grpo = rl.group_advantages(jnp.asarray(outcome), estimator=estimator)
    want = np.broadcast_to(np.asarray(grpo)[..., None], (4, 8, 9))
    np.testing.assert_allclose(adv.tokens, want, rtol=1e-6, atol=1e-6)
    # Weight 0 ignores the steps whatever they are.
    adv0 = rl.make_advantage_fn(rl.AdvantageConfig(estimator=estimator, step_weight=0.0))(
        jnp.asarray(outcome),
        jnp.asarray(rng.normal(size=(4, 8, 3)), jnp.float32),
        jnp.asarray(rng.random((4, 8, 3)) < 0.5),
        jnp.asarray(rng.integers(-1, 3, (4, 8, 9))),
    )
    np.testing.assert_array_equal(
        adv0.tokens, np.broadcast_to(np.asarray(grpo)[..., None], (4, 8, 9))
    )


def test_advantage_fn_does_not_recompile():
    traces = []
    fn = rl.make_advantage_fn(rl.AdvantageConfig.paper())

    def counted(*args):
        traces.append(1)
        return fn(*args)

    jitted = jax.jit(counted)
    rng = np.random.default_rng(0)
    for _ in range(3):
        out = jitted(
            jnp.asarray(rng.normal(size=(2, 4)), jnp.float32),
            jnp.asarray(rng.normal(size=(2, 4, 3)), jnp.float32),
            jnp.asarray(rng.random((2, 4, 3)) < 0.5),
            jnp.asarray(rng.integers(-1, 3, (2, 4, 7)), jnp.int32),
        )
    assert len(traces) == 1
    assert out.tokens.shape == (2, 4, 7)


def test_config_validation_names_the_bad_value():
    with pytest.raises((ValueError, TypeError), match="zscore"):
        rl.AdvantageConfig(estimator="zscore")
    with pytest.raises(ValueError, match="std_ddof must be 0 or 1, got 2"):
        rl.AdvantageConfig(std_ddof=2)
    with pytest.raises(ValueError, match="got 1.5"):
        rl.AdvantageConfig(step_weight=1.5)
    with pytest.raises(ValueError, match="floor must be >= 0, got -1"):
        rl.AdvantageConfig(floor=-1.0)
    assert rl.AdvantageConfig(step_weight=1.5, mixing="additive").step_weight == 1.5


def _reference_advantages(outcome, steps, step_mask, token_steps, config):
    """make_advantage_fn in float64 loops, with unscorable completions dropped from the group."""
    scored = np.isfinite(outcome)
    pool = step_mask & scored[..., None]  # a dropped completion has no steps in the pool
    est, ddof = config.estimator, config.std_ddof
    a = _reference_group(outcome, scored, est, ddof)
    r = _reference_steps(steps, pool, config.step_mode, est, ddof)
    tok = _reference_tokens(a, r, token_steps, pool, config.step_weight, config.mixing)
    return a, r, tok


ADVANTAGE_CONFIGS = [
    rl.AdvantageConfig(step_mode="return_to_go"),
    rl.AdvantageConfig(),
    rl.AdvantageConfig(estimator="drgrpo", step_mode="return_to_go", step_weight=1.0),
    rl.AdvantageConfig(estimator="rloo", std_ddof=1, step_weight=0.3),
    rl.AdvantageConfig(std_ddof=0, step_mode="return_to_go", mixing="additive", step_weight=2.0),
    rl.AdvantageConfig.outcome_only(),
]


def _episode_batch(rng, batch, group, steps, tokens):
    outcome = rng.random((batch, group))
    lengths = rng.integers(0, steps + 1, (batch, group))
    mask = np.arange(steps)[None, None] < lengths[..., None]
    step_rewards = np.where(mask, rng.normal(size=(batch, group, steps)), 0.0)
    token_steps = rng.integers(-1, steps, (batch, group, tokens))
    return outcome, step_rewards, mask, token_steps


@pytest.mark.parametrize("config", ADVANTAGE_CONFIGS)
@pytest.mark.parametrize("use_jit", [False, True])
def test_unscorable_completion_leaves_the_group(config, use_jit):
    """A NaN outcome: advantage 0 on every token, its steps out of the step pool (issue 17).

    The others equal the group without it: the float64 reference drops it, and so does the
    function itself when the completion is physically removed.
    """
    rng = np.random.default_rng(17)
    outcome, steps, mask, token_steps = _episode_batch(rng, 6, 5, 4, 9)
    steps = steps * 3.0  # the unscorable completions' step rewards are large and finite
    outcome[0, 2] = np.nan  # one unscorable completion
    outcome[1, [0, 3]] = np.nan  # two
    outcome[2, 1:] = np.nan  # all but one: the survivor's group has size 1
    outcome[3] = np.nan  # all
    outcome[4, 4] = np.inf
    mask[0, 2, :3] = True  # make sure the dropped ones have steps
    mask[3, :, 0] = True
    fn = rl.make_advantage_fn(config)
    fn = jax.jit(fn) if use_jit else fn
    args = (outcome, steps, mask, token_steps)
    got = fn(*(jnp.asarray(x, jnp.float32 if x.dtype == np.float64 else None) for x in args))
    for name, g in zip(("outcome", "steps", "tokens"), got, strict=True):
        assert np.all(np.isfinite(np.asarray(g))), name
    want = _reference_advantages(outcome, steps, mask, token_steps, config)
    for name, g, w in zip(("outcome", "steps", "tokens"), got, want, strict=True):
        np.testing.assert_allclose(np.asarray(g), w, rtol=3e-5, atol=3e-5, err_msg=name)
    bad = ~np.isfinite(outcome)
    np.testing.assert_array_equal(np.asarray(got.tokens)[bad], 0.0)
    np.testing.assert_array_equal(np.asarray(got.steps)[bad], 0.0)
    np.testing.assert_array_equal(np.asarray(got.outcome)[bad], 0.0)
    np.testing.assert_array_equal(np.asarray(got.tokens)[3], 0.0)  # all unscorable
    # Row 0 with completion 2 removed: the same advantages for the other four.
    keep = np.arange(5) != 2
    alone = fn(
        *(jnp.asarray(x[:1, keep], jnp.float32 if x.dtype == np.float64 else None) for x in args)
    )
    for name, g, w in zip(("outcome", "steps", "tokens"), got, alone, strict=True):
        np.testing.assert_allclose(
            np.asarray(g)[0, keep], np.asarray(w)[0], rtol=1e-6, atol=1e-6, err_msg=name
        )
