"""Potentials and shaped rewards against a plain-Python reading of the spec (float64)."""

import itertools
import random

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flame_jax import rl


def _names(num_meds):
    return tuple(f"drug-{i}" for i in range(num_meds))


def _random_case(rng, batch, group, num_meds, max_lines):
    """Random prompts (P0, Y, task) and completions with invalid lines, no-ops, blank lines."""
    names = _names(num_meds)
    prompts, completions = [], []
    for _ in range(batch):
        y = set(rng.sample(range(num_meds), rng.randrange(0, min(num_meds, 6) + 1)))
        p0 = set(rng.sample(range(num_meds), rng.randrange(0, min(num_meds, 6) + 1)))
        prompts.append((p0, y, rng.choice(["add", "remove"])))
        row = []
        for _ in range(group):
            lines = []
            for _ in range(rng.randrange(0, max_lines + 1)):
                u = rng.random()
                if u < 0.6:
                    lines.append(rng.choice(names).upper())
                elif u < 0.8:
                    lines.append("not a drug")
                else:
                    lines.append("")
            text = "\n".join(lines)
            steps = sum(1 for line in text.split("\n") if line.strip())
            while steps > max_lines:  # keep the step bucket valid
                lines.pop(0)
                text = "\n".join(lines)
                steps = sum(1 for line in text.split("\n") if line.strip())
            row.append(text + ("\n" if rng.random() < 0.3 else ""))
        completions.append(row)
    ddi = np.zeros((num_meds, num_meds), bool)
    for i, j in itertools.combinations(range(num_meds), 2):
        if rng.random() < 0.3:
            ddi[i, j] = ddi[j, i] = True
    return prompts, completions, ddi


def _reference_rewards(prompt, completion, ddi, weights, gamma, refusal):
    """Literal reading of FLAME §6.1 / DESIGN §5 for one completion, in float64."""
    p0, y, task = prompt
    table = {n.lower().replace("-", ""): i for i, n in enumerate(_names(len(ddi)))}
    w_j, w_d, w_f = weights

    def jac(s):
        return len(s & y) / len(s | y) if s | y else 0.0

    def ddi_rate(s):
        if len(s) < 2:
            return 0.0
        pairs = [(i, j) for i, j in itertools.combinations(sorted(s), 2) if ddi[i, j]]
        return len(pairs) / (len(s) * (len(s) - 1) / 2)

    s, invalid = set(p0), 0
    states, counts = [set(s)], [0]
    for line in completion.split("\n"):
        if not line.strip():
            continue
        key = line.strip().lower().replace(" ", "").replace("-", "")
        if key in table:
            if task == "add":
                s.add(table[key])
            else:
                s.discard(table[key])
        else:
            invalid += 1
        states.append(set(s))
        counts.append(invalid)
    use_pot = refusal == "potential"

    def phi(k):
        return (
            w_j * jac(states[k]) - w_d * ddi_rate(states[k]) - (w_f * counts[k] if use_pot else 0)
        )

    num = len(states) - 1
    steps = [gamma * phi(t) - phi(t - 1) for t in range(1, num + 1)]
    outcome = gamma**num * phi(num) - phi(0)
    if not use_pot:
        steps = [r - w_f * counts[t] / t for t, r in zip(range(1, num + 1), steps, strict=True)]
        outcome -= w_f * counts[num] / num if num else 0.0
    pots = (
        [jac(x) for x in states],
        [ddi_rate(x) for x in states],
        [-float(c) for c in counts],
    )
    return steps, outcome, pots


def _device_inputs(prompts, completions, ddi, max_steps):
    num_meds = len(ddi)
    vocab = rl.DrugVocabulary(names=_names(num_meds))
    episodes = [
        [rl.parse_episode(c, task=p[2], initial=p[0], vocabulary=vocab) for c in row]
        for p, row in zip(prompts, completions, strict=True)
    ]
    arrays = rl.pad_episodes(episodes, max_steps=max_steps)
    initial = np.zeros((len(prompts), num_meds), bool)
    truth = np.zeros((len(prompts), num_meds), bool)
    for b, (p0, y, _) in enumerate(prompts):
        initial[b, list(p0)] = True
        truth[b, list(y)] = True
    return (jnp.asarray(initial), jnp.asarray(truth), jnp.asarray(ddi), *map(jnp.asarray, arrays))


CASES = [  # seed, batch, group, meds, max_lines
    (0, 1, 2, 3, 1),
    (1, 3, 2, 5, 4),
    (2, 2, 4, 12, 6),
    (3, 2, 8, 40, 8),
]

CONFIGS = [
    rl.ShapingConfig.paper(),
    rl.ShapingConfig.original(),
    rl.ShapingConfig(jaccard_weight=0.7, ddi_weight=0.5, refusal_weight=0.3, gamma=0.9),
    rl.ShapingConfig(ddi_weight=2.0, refusal="running_fraction", gamma=0.95),
]


@pytest.mark.parametrize(
    ("case", "use_jit"),
    # Eager runs compile every primitive for every new shape (seconds on CPU): two cases suffice.
    [(c, True) for c in CASES] + [(CASES[0], False), (CASES[2], False)],
)
def test_matches_python_reference(case, use_jit):
    seed, batch, group, num_meds, max_lines = case
    rng = random.Random(seed)
    prompts, completions, ddi = _random_case(rng, batch, group, num_meds, max_lines)
    inputs = _device_inputs(prompts, completions, ddi, max_steps=max_lines + 1)
    phi = jax.tree.map(np.asarray, rl.potentials(*inputs))
    for config in CONFIGS:
        fn = rl.make_reward_fn(config)
        fn = jax.jit(fn) if use_jit else fn
        got = jax.tree.map(np.asarray, fn(*inputs))
        weights = (config.jaccard_weight, config.ddi_weight, config.refusal_weight)
        for b in range(batch):
            for g in range(group):
                steps, outcome, pots = _reference_rewards(
                    prompts[b], completions[b][g], ddi, weights, config.gamma, config.refusal
                )
                n = len(steps)
                np.testing.assert_allclose(got.steps[b, g, :n], steps, atol=2e-6)
                np.testing.assert_array_equal(got.steps[b, g, n:], 0.0)
                np.testing.assert_allclose(got.outcome[b, g], outcome, atol=2e-6)
                for k, field in enumerate((phi.jaccard, phi.ddi, phi.refusal)):
                    np.testing.assert_allclose(field[b, g, : n + 1], pots[k], atol=1e-6)


@pytest.mark.parametrize("gamma", [1.0, 0.8])
@pytest.mark.parametrize("seed", range(2))
def test_rewards_telescope_to_outcome(gamma, seed):
    rng = random.Random(seed)
    prompts, completions, ddi = _random_case(rng, 4, 8, 30, 10)
    inputs = _device_inputs(prompts, completions, ddi, max_steps=12)
    config = rl.ShapingConfig(ddi_weight=0.5, refusal_weight=0.3, gamma=gamma)
    out = jax.jit(rl.make_reward_fn(config))(*inputs)
    discount = gamma ** jnp.arange(12, dtype=jnp.float32)
    np.testing.assert_allclose((out.steps * discount[None, None]).sum(-1), out.outcome, atol=3e-6)
    # The outcome is the potential difference between the final and the initial set.
    phi = rl.potentials(*inputs)
    total = phi.jaccard - 0.5 * phi.ddi + 0.3 * phi.refusal
    last = jnp.take_along_axis(total, inputs[-1].sum(-1)[..., None], axis=-1)[..., 0]
    if gamma == 1.0:
        np.testing.assert_allclose(out.outcome, last - total[..., 0], atol=3e-6)


def test_running_fraction_does_not_telescope_but_matches_original_total():
    # One invalid line then one valid line: steps -1/1, -1/2 (x w_F), total -1/2 (x w_F).
    inputs = (
        jnp.array([[0, 0]], bool),
        jnp.array([[1, 0]], bool),
        jnp.zeros((2, 2), bool),
        jnp.array([[[0, 1]]]),
        jnp.array([[[0, 1]]]),
        jnp.array([[[False, True]]]),
        jnp.ones((1, 1, 2), bool),
    )
    config = rl.ShapingConfig(refusal_weight=1.0, refusal="running_fraction")
    out = jax.jit(rl.make_reward_fn(config))(*inputs)
    np.testing.assert_allclose(out.steps, [[[-1.0, -0.5]]], atol=1e-7)
    np.testing.assert_allclose(out.outcome, [[-0.5]], atol=1e-7)


def test_padding_is_invisible():
    rng = random.Random(7)
    prompts, completions, ddi = _random_case(rng, 3, 4, 20, 5)
    fn = jax.jit(rl.make_reward_fn(rl.ShapingConfig(ddi_weight=1.0, gamma=0.9)))
    short = fn(*_device_inputs(prompts, completions, ddi, max_steps=5))
    long = fn(*_device_inputs(prompts, completions, ddi, max_steps=16))
    np.testing.assert_array_equal(long.steps[..., :5], short.steps)
    np.testing.assert_array_equal(long.steps[..., 5:], 0.0)
    np.testing.assert_array_equal(long.outcome, short.outcome)


def test_pair_counts_on_full_vocabulary():
    """151 drugs, dense random sets: counts equal s^T A s / 2 computed from explicit states."""
    rng = np.random.default_rng(0)
    batch, group, steps, num_meds = 2, 3, 12, 151
    ddi = rng.random((num_meds, num_meds)) < 0.2
    ddi = np.triu(ddi, 1)
    ddi = ddi | ddi.T
    initial = rng.random((batch, num_meds)) < 0.1
    truth = rng.random((batch, num_meds)) < 0.1
    drug = rng.integers(0, num_meds, (batch, group, steps))
    sign = rng.choice([-1, 1], (batch, group, steps))
    delta = np.zeros_like(drug)
    states = np.zeros((batch, group, steps + 1, num_meds), np.int64)
    for b in range(batch):
        for g in range(group):
            s = initial[b].astype(np.int64)
            states[b, g, 0] = s
            for t in range(steps):
                new = 1 if sign[b, g, t] > 0 else 0
                delta[b, g, t] = new - s[drug[b, g, t]]
                s = s.copy()
                s[drug[b, g, t]] = new
                states[b, g, t + 1] = s
    ones = np.ones((batch, group, steps), bool)
    counts = rl.trajectory_counts(*map(jnp.asarray, (initial, truth, ddi, drug, delta, ones, ones)))
    pairs = np.einsum("bgtm,mn,bgtn->bgt", states, ddi.astype(np.int64), states) // 2
    np.testing.assert_array_equal(counts.pairs, pairs)
    np.testing.assert_array_equal(counts.size, states.sum(-1))
    np.testing.assert_array_equal(counts.overlap, (states * truth[:, None, None]).sum(-1))


def test_jit_does_not_recompile():
    rng = random.Random(3)
    traces = []
    fn = rl.make_reward_fn(rl.ShapingConfig.paper())

    def counted(*args):
        traces.append(1)
        return fn(*args)

    jitted = jax.jit(counted)
    for _ in range(3):
        prompts, completions, ddi = _random_case(rng, 2, 4, 10, 4)
        jitted(*_device_inputs(prompts, completions, ddi, max_steps=5))
    assert len(traces) == 1


def test_vmap_over_an_extra_axis():
    rng = random.Random(11)
    prompts, completions, ddi = _random_case(rng, 2, 2, 8, 3)
    inputs = _device_inputs(prompts, completions, ddi, max_steps=4)
    fn = rl.make_reward_fn(rl.ShapingConfig.paper())
    stacked = [jnp.stack([x, x]) for x in inputs]
    in_axes = (0, 0, 0, 0, 0, 0, 0)
    out = jax.jit(jax.vmap(fn, in_axes=in_axes))(*stacked)
    np.testing.assert_array_equal(out.steps[1], jax.jit(fn)(*inputs).steps)
