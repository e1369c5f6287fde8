"""Schedules against float64 formulas; the optimizer clips and decays as configured."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from flame_jax.train import OptimizerConfig, make_optimizer, make_schedule


def reference_lr(c: OptimizerConfig, step: int) -> float:
    lr, w, total, end = (
        c.learning_rate,
        c.warmup_steps,
        c.total_steps,
        (c.learning_rate * c.final_fraction),
    )
    if step < w:
        return lr * step / w
    if c.schedule == "constant":
        return lr
    if c.schedule == "linear":
        frac = min((step - w) / max(total - w, 1), 1.0)
        return lr + (end - lr) * frac
    if c.schedule == "cosine":
        frac = min((step - w) / max(total - w, 1), 1.0)
        return end + (lr - end) * 0.5 * (1 + math.cos(math.pi * frac))
    ww = max(w, 1)
    return lr * math.sqrt(ww / (step - w + ww))


@pytest.mark.parametrize("schedule", ["constant", "linear", "cosine", "inverse_sqrt"])
@pytest.mark.parametrize("warmup", [0, 3])
def test_schedules_match_formulas(schedule, warmup):
    c = OptimizerConfig(
        learning_rate=0.3, schedule=schedule, warmup_steps=warmup, total_steps=20,
        final_fraction=0.1,
    )  # fmt: skip
    s = make_schedule(c)
    jitted = jax.jit(s)
    for t in range(0, 30):
        want = reference_lr(c, t)
        np.testing.assert_allclose(float(s(t)), want, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(float(jitted(jnp.int32(t))), want, rtol=1e-6, atol=1e-7)


def test_optimizer_clips_then_adamw():
    c = OptimizerConfig(learning_rate=0.1, clip_norm=1.0, weight_decay=0.0)
    opt = make_optimizer(c)
    params = {"w": jnp.ones(3)}
    grads = {"w": jnp.array([30.0, 40.0, 0.0])}  # norm 50 -> clipped to norm 1
    updates, _ = opt.update(grads, opt.init(params), params)
    # Adam's first step is lr * sign(g) (up to eps) whatever the scale: clipping must not change it
    np.testing.assert_allclose(updates["w"], [-0.1, -0.1, 0.0], atol=1e-6)
    ref = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(0.1, weight_decay=0.0))
    g2 = {"w": jnp.array([0.3, -0.2, 0.1])}
    s1, s2 = opt.init(params), ref.init(params)
    for g in (grads, g2, g2):
        u1, s1 = opt.update(g, s1, params)
        u2, s2 = ref.update(g, s2, params)
        np.testing.assert_allclose(u1["w"], u2["w"], rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"schedule": "step"}, "schedule"),
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"warmup_steps": -1}, "warmup_steps"),
        ({"warmup_steps": 10, "total_steps": 5}, "total_steps"),
        ({"final_fraction": 2.0}, "final_fraction"),
        ({"clip_norm": 0.0}, "clip_norm"),
    ],
)
def test_bad_config_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        OptimizerConfig(**kwargs)
