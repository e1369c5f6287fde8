"""The vmapped shaping / advantage grid against a loop over grid points (float64 reference)."""

import dataclasses
import itertools
import random

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flame_jax import rl


def _episodes(rng, batch, group, num_meds, max_steps):
    """Random parsed episodes (valid, invalid, no-op lines) padded to ``max_steps``."""
    names = tuple(f"drug-{i}" for i in range(num_meds))
    vocab = rl.DrugVocabulary(names=names)
    initial = np.zeros((batch, num_meds), bool)
    truth = np.zeros((batch, num_meds), bool)
    nested = []
    for b in range(batch):
        p0 = rng.sample(range(num_meds), rng.randrange(0, min(num_meds, 5) + 1))
        initial[b, p0] = True
        truth[b, rng.sample(range(num_meds), rng.randrange(0, min(num_meds, 5) + 1))] = True
        task = rng.choice(["add", "remove"])
        row = []
        for _ in range(group):
            lines = [
                rng.choice(names) if rng.random() < 0.75 else "not a drug"
                for _ in range(rng.randrange(0, max_steps + 1))
            ]
            row.append(rl.parse_episode("\n".join(lines), task=task, initial=p0, vocabulary=vocab))
        nested.append(row)
    arrays = rl.pad_episodes(nested, max_steps=max_steps)
    ddi = np.zeros((num_meds, num_meds), bool)
    for i, j in itertools.combinations(range(num_meds), 2):
        if rng.random() < 0.35:
            ddi[i, j] = ddi[j, i] = True
    return (
        jnp.asarray(initial),
        jnp.asarray(truth),
        jnp.asarray(ddi),
        tuple(jnp.asarray(a) for a in arrays),
    )


def _tokens(np_rng, batch, group, steps, tokens):
    token_steps = np_rng.integers(-1, max(steps, 1), size=(batch, group, tokens)).astype(np.int32)
    token_mask = np_rng.random((batch, group, tokens)) < 0.8
    return jnp.asarray(token_steps), jnp.asarray(token_mask)


def _reference(grid, case, token_steps, token_mask, advantage, gamma, refusal):
    """One ``make_reward_fn`` + ``make_advantage_fn`` call per point; stats in float64 NumPy."""
    initial, truth, ddi, (drug, delta, valid, mask) = case
    out = {k: [] for k in ("steps", "outcome", "a", "r", "tokens")}
    stats = {k: [] for k in rl.GridStats._fields}
    for p in range(len(grid.ddi_weight)):
        shaping = rl.ShapingConfig(
            jaccard_weight=float(grid.jaccard_weight[p]),
            ddi_weight=float(grid.ddi_weight[p]),
            refusal_weight=float(grid.refusal_weight[p]),
            gamma=gamma,
            refusal=refusal,
        )
        adv_cfg = dataclasses.replace(advantage, step_weight=float(grid.step_weight[p]))
        rew = rl.make_reward_fn(shaping)(initial, truth, ddi, drug, delta, valid, mask)
        adv = rl.make_advantage_fn(adv_cfg)(rew.outcome, rew.steps, mask, token_steps)
        steps, outcome = (np.asarray(x, np.float64) for x in rew)
        a, r, tok = (np.asarray(x, np.float64) for x in adv)
        for k, v in zip(out, (steps, outcome, a, r, tok), strict=True):
            out[k].append(v)
        m, tm = np.asarray(mask), np.asarray(token_mask)
        rm = r[m]
        stats["reward_mean"].append(outcome.mean())
        stats["reward_std"].append(outcome.std(axis=1).mean())
        stats["zero_advantage_fraction"].append(np.all(a == 0.0, axis=1).mean())
        stats["step_reward_mean"].append(steps[m].mean() if m.any() else 0.0)
        stats["step_advantage_std"].append(rm.std() if rm.size else 0.0)
        stats["token_advantage_abs_mean"].append(np.abs(tok[tm]).mean() if tm.any() else 0.0)
    return {k: np.stack(v) for k, v in out.items()}, {k: np.array(v) for k, v in stats.items()}


CASES = [
    # (batch, group, meds, steps, tokens, advantage config, gamma, refusal); few distinct shapes
    # because every eager op compiles once per shape
    (3, 4, 7, 5, 9, rl.AdvantageConfig(), 1.0, "potential"),
    (2, 2, 5, 1, 3, rl.AdvantageConfig(estimator="drgrpo", step_mode="return_to_go"), 1.0,
     "potential"),
    (3, 4, 7, 5, 9, rl.AdvantageConfig(estimator="rloo", mixing="additive", std_ddof=0), 0.9,
     "running_fraction"),
    (3, 4, 7, 5, 9, rl.AdvantageConfig(step_mode="return_to_go"), 0.95, "potential"),
]  # fmt: skip


@pytest.mark.slow  # a whole sweep grid against a loop over its points
@pytest.mark.parametrize("case_id", range(len(CASES)))
def test_grid_matches_loop_over_points(case_id):
    batch, group, meds, steps, tokens, advantage, gamma, refusal = CASES[case_id]
    rng = random.Random(100 + case_id)
    np_rng = np.random.default_rng(200 + case_id)
    case = _episodes(rng, batch, group, meds, steps)
    token_steps, token_mask = _tokens(np_rng, batch, group, steps, tokens)
    upper = 1.0 if advantage.mixing == "convex" else 2.0
    grid = rl.shaping_grid(
        jaccard_weight=[1.0, 0.5],
        ddi_weight=[0.0, 3.0],
        refusal_weight=[0.2],
        step_weight=[0.3, upper],
    )
    assert grid.ddi_weight.shape == (8,)
    fn = rl.make_grid_fn(advantage, gamma=gamma, refusal=refusal)
    initial, truth, ddi, arrays = case
    want, want_stats = _reference(grid, case, token_steps, token_mask, advantage, gamma, refusal)
    for f in (fn, jax.jit(fn)):  # eager and under jit
        got = f(grid, initial, truth, ddi, *arrays, token_steps, token_mask)
        _compare(got, want, want_stats)
    # the DDI weight changes rewards where some trajectory's DDI rate moves
    drug, delta, valid, mask = arrays
    phi = rl.potentials(initial, truth, ddi, drug, delta, valid, mask)
    if np.any(np.asarray(phi.ddi[..., -1] != phi.ddi[..., 0])):
        assert not np.allclose(got.rewards.outcome[0], got.rewards.outcome[2])


def _compare(got, want, want_stats):
    np.testing.assert_allclose(got.rewards.steps, want["steps"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.rewards.outcome, want["outcome"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.advantages.outcome, want["a"], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got.advantages.steps, want["r"], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got.advantages.tokens, want["tokens"], rtol=1e-4, atol=1e-4)
    for name in rl.GridStats._fields:
        np.testing.assert_allclose(
            getattr(got.stats, name), want_stats[name], rtol=1e-4, atol=1e-4, err_msg=name
        )


def test_equal_rewards_give_zero_advantage_at_every_point():
    # Every completion of the group is empty: all rewards 0, so no learning signal anywhere.
    initial = jnp.array([[True, False, True]])
    truth = jnp.array([[True, True, False]])
    ddi = jnp.zeros((3, 3), bool)
    zeros = jnp.zeros((1, 3, 2), jnp.int32)
    no = jnp.zeros((1, 3, 2), bool)
    grid = rl.shaping_grid(ddi_weight=[0.0, 1.0, 5.0], step_weight=[0.0, 1.0])
    out = jax.jit(rl.make_grid_fn())(
        grid, initial, truth, ddi, zeros, zeros, no, no, -jnp.ones((1, 3, 4), jnp.int32),
        jnp.ones((1, 3, 4), bool),
    )  # fmt: skip
    assert out.stats.zero_advantage_fraction.tolist() == [1.0] * 6
    assert float(jnp.abs(out.advantages.tokens).max()) == 0.0


def test_shaping_grid_validation():
    with pytest.raises(ValueError, match="ddi_weight has no values"):
        rl.shaping_grid(ddi_weight=[])
    with pytest.raises(ValueError, match="step_weight must be finite, got nan"):
        rl.shaping_grid(step_weight=[0.5, float("nan")])
    with pytest.raises(ValueError, match="gamma"):
        rl.make_grid_fn(gamma=0.0)
    with pytest.raises(ValueError, match="refusal"):
        rl.make_grid_fn(refusal="sometimes")
