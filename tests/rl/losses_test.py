"""GRPO loss against a float64 NumPy reference; gradients, masking, configs, recompilation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flame_jax import rl

AGGREGATIONS = ["token_mean", "sequence_mean_token_mean", "sequence_mean_token_sum", "fixed_length"]


def _reference_loss(logp, old, ref, adv, mask, eps_low, eps_high, beta, estimator, agg, length):
    batch, group, tokens = logp.shape
    per = np.zeros(logp.shape)
    for b, g, k in np.ndindex(*logp.shape):
        ratio = np.exp(logp[b, g, k] - old[b, g, k])
        clipped = min(max(ratio, 1 - eps_low), 1 + eps_high)
        surrogate = min(ratio * adv[b, g, k], clipped * adv[b, g, k])
        d = ref[b, g, k] - logp[b, g, k]
        kl = {"k1": -d, "k2": 0.5 * d * d, "k3": np.exp(d) - d - 1}[estimator]
        per[b, g, k] = -(surrogate - beta * kl)
    seqs = [(b, g) for b in range(batch) for g in range(group)]
    sums = {s: sum(per[s][k] for k in range(tokens) if mask[s][k]) for s in seqs}
    counts = {s: int(mask[s].sum()) for s in seqs}
    live = [s for s in seqs if counts[s] > 0]
    if agg == "token_mean":
        return sum(sums.values()) / max(sum(counts.values()), 1)
    if agg == "sequence_mean_token_mean":
        return sum(sums[s] / counts[s] for s in live) / max(len(live), 1)
    if agg == "sequence_mean_token_sum":
        return sum(sums[s] for s in live) / max(len(live), 1)
    return sum(sums.values()) / (len(seqs) * length)


def _inputs(rng, shape):
    logp = -rng.exponential(size=shape)
    old = logp + rng.normal(scale=0.3, size=shape)
    ref = logp + rng.normal(scale=0.3, size=shape)
    adv = rng.normal(size=shape)
    mask = rng.random(shape) < 0.7
    mask[0, 0] = False  # an all-masked row
    return logp, old, ref, adv, mask


@pytest.mark.parametrize("shape", [(1, 2, 1), (2, 2, 5), (2, 4, 16)])
@pytest.mark.parametrize("aggregation", AGGREGATIONS)
@pytest.mark.parametrize(("estimator", "use_jit"), [("k1", False), ("k2", True), ("k3", True)])
def test_matches_numpy(shape, aggregation, estimator, use_jit):
    rng = np.random.default_rng(shape[2])
    logp, old, ref, adv, mask = _inputs(rng, shape)
    config = rl.LossConfig(
        epsilon_low=0.2,
        epsilon_high=0.28,
        kl_coef=0.1,
        kl_estimator=estimator,
        aggregation=aggregation,
    )
    fn = rl.make_grpo_loss(config)
    fn = jax.jit(fn) if use_jit else fn
    args = [jnp.asarray(x, jnp.float32) for x in (logp, adv)]
    loss, aux = fn(
        *args, jnp.asarray(mask), jnp.asarray(old, jnp.float32), jnp.asarray(ref, jnp.float32)
    )
    want = _reference_loss(
        logp, old, ref, adv, mask, 0.2, 0.28, 0.1, estimator, aggregation, shape[2]
    )
    np.testing.assert_allclose(loss, want, rtol=2e-5, atol=2e-6)
    assert 0.0 <= float(aux.clip_fraction) <= 1.0


def test_all_masked_gives_zero_and_finite_gradient():
    for aggregation in AGGREGATIONS:
        fn = rl.make_grpo_loss(rl.LossConfig(aggregation=aggregation))
        x = jnp.zeros((2, 2, 3))
        grad = jax.grad(
            lambda p, fn=fn, x=x: fn(p, x + 1.0, jnp.zeros((2, 2, 3), bool), None, x)[0]
        )(x)
        np.testing.assert_array_equal(grad, 0.0)
        assert float(fn(x, x + 1.0, jnp.zeros((2, 2, 3), bool), None, x)[0]) == 0.0


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_gradient_matches_analytic_form(aggregation):
    """On-policy (ratio 1): d loss / d logp = -w (A - beta (1 - exp(q - p))) per token (k3)."""
    rng = np.random.default_rng(0)
    logp, _, ref, adv, mask = _inputs(rng, (2, 3, 6))
    beta = 0.04
    fn = rl.make_grpo_loss(rl.LossConfig(kl_coef=beta, aggregation=aggregation))
    grad = jax.jit(
        jax.grad(
            lambda p: fn(
                p,
                jnp.asarray(adv, jnp.float32),
                jnp.asarray(mask),
                None,
                jnp.asarray(ref, jnp.float32),
            )[0]
        )
    )(jnp.asarray(logp, jnp.float32))
    counts = mask.sum(-1, keepdims=True)
    live = (counts > 0).sum()
    weight = {
        "token_mean": np.full(mask.shape, 1.0 / mask.sum()),
        "sequence_mean_token_mean": np.broadcast_to(
            1.0 / (np.maximum(counts, 1) * live), mask.shape
        ),
        "sequence_mean_token_sum": np.full(mask.shape, 1.0 / live),
        "fixed_length": np.full(mask.shape, 1.0 / (6 * 6)),
    }[aggregation]
    want = -weight * mask * (adv - beta * (1.0 - np.exp(ref - logp)))
    np.testing.assert_allclose(grad, want, rtol=1e-5, atol=1e-7)
    assert np.all(np.isfinite(grad))


def test_clipping_stops_the_gradient_outside_the_trust_region():
    fn = rl.make_grpo_loss(rl.LossConfig(kl_coef=0.0, aggregation="token_mean"))
    old = jnp.zeros((1, 1, 2))
    logp = jnp.array([[[0.5, -0.5]]])  # ratios e^0.5 > 1.2 and e^-0.5 < 0.8
    adv = jnp.array([[[1.0, -1.0]]])
    grad = jax.grad(lambda p: fn(p, adv, jnp.ones((1, 1, 2), bool), old)[0])(logp)
    np.testing.assert_array_equal(grad, 0.0)
    _, aux = fn(logp, adv, jnp.ones((1, 1, 2), bool), old)
    assert float(aux.clip_fraction) == 1.0


def test_loss_does_not_recompile():
    traces = []
    fn = rl.make_grpo_loss(rl.LossConfig.paper())

    def counted(*args):
        traces.append(1)
        return jax.value_and_grad(lambda p: fn(p, *args[1:])[0])(args[0])

    jitted = jax.jit(counted)
    rng = np.random.default_rng(0)
    for _ in range(3):
        logp, old, ref, adv, mask = _inputs(rng, (2, 2, 4))
        jitted(
            *(jnp.asarray(x, jnp.float32) for x in (logp, adv)),
            jnp.asarray(mask),
            jnp.asarray(old, jnp.float32),
            jnp.asarray(ref, jnp.float32),
        )
    assert len(traces) == 1


def test_config_validation():
    with pytest.raises(ValueError, match="kl_coef must be >= 0, got -0.1"):
        rl.LossConfig(kl_coef=-0.1)
    with pytest.raises((ValueError, TypeError), match="k4"):
        rl.LossConfig(kl_estimator="k4")
    with pytest.raises(ValueError, match="needs ref_logp"):
        rl.make_grpo_loss(rl.LossConfig(kl_coef=0.1))(
            jnp.zeros((1, 1, 1)), jnp.zeros((1, 1, 1)), jnp.ones((1, 1, 1), bool)
        )
    assert rl.LossConfig.drgrpo(512).max_tokens == 512
