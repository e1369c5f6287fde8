"""Benchmark: potential shaping + step-group advantages for step-wise GRPO.

Shapes: 512 prompts x 8 completions x 32 steps over 151 drugs (override with flags). Three
implementations of the same quantities (step rewards, outcome rewards, outcome advantages,
pooled step advantages) in the same run:

* ``python``: per-completion pure Python following FLAME's original reward semantics (§6.1 of
  the spec: explicit sets, pair enumeration, running-fraction refusal term), on a subset of
  prompts and scaled linearly to the full batch (stated in its JSON line);
* ``numpy_f64``: vectorised float64 NumPy (one-hot states for every step);
* ``jax_jit``: ``flame_jax.rl`` under one ``jax.jit`` (after compilation).

Every case prints one JSON line and all lines are written to ``experiments/bench/results/rl.json``.

Usage: ``.venv/bin/python experiments/bench/rl_bench.py [--prompts 512] [--python-prompts 16]``
"""

import argparse
import itertools
import json
import pathlib
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from flame_jax import rl

WEIGHTS = (1.0, 0.5, 0.2)  # Jaccard, DDI (alpha), refusal (beta); alpha > 0 so DDI is exercised
FLOOR = 1e-4


def make_case(prompts, group, steps, meds, seed):
    rng = np.random.default_rng(seed)
    ddi = np.triu(rng.random((meds, meds)) < 0.1, 1)
    ddi = ddi | ddi.T
    initial = rng.random((prompts, meds)) < 0.08
    truth = rng.random((prompts, meds)) < 0.08
    truth[:, 0] |= ~truth.any(-1)
    task_add = rng.random(prompts) < 0.5
    lengths = rng.integers(0, steps + 1, (prompts, group))
    mask = np.arange(steps)[None, None] < lengths[..., None]
    valid = mask & (rng.random((prompts, group, steps)) < 0.85)
    # Draw drugs near the current set so that removals hit and no-ops occur.
    drug = rng.integers(0, meds, (prompts, group, steps))
    delta = np.zeros((prompts, group, steps), np.int32)
    actions = []  # per completion: list of drug ids or None (invalid), for the Python reference
    for b in range(prompts):
        row = []
        for g in range(group):
            s = set(np.flatnonzero(initial[b]).tolist())
            acts = []
            for t in range(lengths[b, g]):
                if not valid[b, g, t]:
                    acts.append(None)
                    continue
                if not task_add[b] and s and rng.random() < 0.7:
                    drug[b, g, t] = rng.choice(sorted(s))
                d = int(drug[b, g, t])
                acts.append(d)
                if task_add[b] and d not in s:
                    delta[b, g, t] = 1
                    s.add(d)
                elif not task_add[b] and d in s:
                    delta[b, g, t] = -1
                    s.discard(d)
            row.append(acts)
        actions.append(row)
    drug = np.where(valid, drug, 0).astype(np.int32)
    return {
        "initial": initial,
        "truth": truth,
        "ddi": ddi,
        "drug": drug,
        "delta": delta,
        "valid": valid,
        "mask": mask,
        "task_add": task_add,
        "actions": actions,
    }


# ----------------------------------------------------------------------------- pure Python
def python_reference(case, prompts):
    """Per completion, the original semantics with explicit sets; then group statistics."""
    w_j, w_d, w_f = WEIGHTS
    ddi = case["ddi"]
    pairs_of = {(i, j) for i, j in zip(*np.nonzero(ddi), strict=True) if i < j}

    def jaccard(s, y):
        return len(s & y) / len(s | y) if s | y else 0.0

    def ddi_rate(s):
        if len(s) < 2:
            return 0.0
        hits = sum((i, j) in pairs_of for i, j in itertools.combinations(sorted(s), 2))
        return hits / (len(s) * (len(s) - 1) / 2)

    def z(xs):
        n = len(xs)
        if n == 0:
            return []
        mean = sum(xs) / n
        std = (sum((x - mean) ** 2 for x in xs) / max(n - 1, 1)) ** 0.5
        return [(x - mean) / max(std, FLOOR) for x in xs]

    out_steps, out_outcome, out_adv, out_step_adv = [], [], [], []
    for b in range(prompts):
        p0 = set(np.flatnonzero(case["initial"][b]).tolist())
        y = set(np.flatnonzero(case["truth"][b]).tolist())
        add = bool(case["task_add"][b])
        group_steps, group_outcome = [], []
        for acts in case["actions"][b]:
            s = set(p0)
            prev_j, prev_d = jaccard(s, y), ddi_rate(s)
            first_j, first_d = prev_j, prev_d
            invalid, rewards = 0, []
            for t, d in enumerate(acts, start=1):
                if d is None:
                    invalid += 1
                elif add:
                    s.add(d)
                else:
                    s.discard(d)
                cur_j, cur_d = jaccard(s, y), ddi_rate(s)
                rewards.append(w_j * (cur_j - prev_j) + w_d * (prev_d - cur_d) - w_f * invalid / t)
                prev_j, prev_d = cur_j, cur_d
            refusal = invalid / len(acts) if acts else 0.0
            group_outcome.append(
                w_j * (prev_j - first_j) + w_d * (first_d - prev_d) - w_f * refusal
            )
            group_steps.append(rewards)
        pooled = z([r for rs in group_steps for r in rs])
        k, step_adv = 0, []
        for rs in group_steps:
            step_adv.append(pooled[k : k + len(rs)])
            k += len(rs)
        out_steps.append(group_steps)
        out_outcome.append(group_outcome)
        out_adv.append(z(group_outcome))
        out_step_adv.append(step_adv)
    return out_steps, out_outcome, out_adv, out_step_adv


# ----------------------------------------------------------------------------- NumPy float64
def _np_norm(x, valid, axes):
    n = valid.sum(axes, keepdims=True)
    mean = np.where(valid, x, 0.0).sum(axes, keepdims=True) / np.maximum(n, 1)
    c = np.where(valid, x - mean, 0.0)
    std = np.sqrt((c * c).sum(axes, keepdims=True) / np.maximum(n - 1, 1))
    return c / np.maximum(std, FLOOR)


def numpy_reference(case):
    w_j, w_d, w_f = WEIGHTS
    initial, truth, ddi = case["initial"], case["truth"], case["ddi"].astype(np.float64)
    drug, delta, valid, mask = case["drug"], case["delta"], case["valid"], case["mask"]
    prompts, group, steps = drug.shape
    meds = initial.shape[-1]
    onehot = np.zeros((prompts, group, steps, meds))
    np.put_along_axis(onehot, drug[..., None], delta[..., None].astype(np.float64), axis=-1)
    s0 = np.broadcast_to(initial[:, None, None, :].astype(np.float64), (prompts, group, 1, meds))
    states = np.concatenate([s0, s0 + np.cumsum(onehot, axis=2)], axis=2)  # [B, G, S+1, M]
    y = truth[:, None, None, :].astype(np.float64)
    size = states.sum(-1)
    inter = (states * y).sum(-1)
    union = size + y.sum(-1) - inter
    jac = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
    pairs = np.einsum("bgtm,mn,bgtn->bgt", states, ddi, states, optimize=True) / 2
    rate = np.where(size >= 2, pairs / np.maximum(size * (size - 1) / 2, 1), 0.0)
    invalid = np.cumsum(mask & ~valid, axis=-1)
    t = np.arange(1, steps + 1)[None, None]
    step_r = w_j * np.diff(jac, axis=-1) - w_d * np.diff(rate, axis=-1) - w_f * invalid / t
    step_r = np.where(mask, step_r, 0.0)
    n = mask.sum(-1)
    last = lambda a: np.take_along_axis(a, n[..., None], -1)[..., 0]
    refusal = np.where(n > 0, invalid[..., -1] / np.maximum(n, 1), 0.0)
    outcome = w_j * (last(jac) - jac[..., 0]) - w_d * (last(rate) - rate[..., 0]) - w_f * refusal
    adv = _np_norm(outcome, np.ones_like(outcome, bool), (1,))
    step_adv = np.where(mask, _np_norm(step_r, mask, (1, 2)), 0.0)
    return step_r, outcome, adv, step_adv


# ----------------------------------------------------------------------------- JAX
def make_jax_fn():
    reward_fn = rl.make_reward_fn(
        rl.ShapingConfig(
            jaccard_weight=WEIGHTS[0],
            ddi_weight=WEIGHTS[1],
            refusal_weight=WEIGHTS[2],
            refusal="running_fraction",
        )
    )
    kwargs = {"estimator": "grpo", "std_ddof": 1, "floor": FLOOR, "relative_floor": 0.0}

    @jax.jit
    def fn(initial, truth, ddi, drug, delta, valid, mask):
        shaped = reward_fn(initial, truth, ddi, drug, delta, valid, mask)
        adv = rl.group_advantages(shaped.outcome, **kwargs)
        step_adv = rl.step_group_advantages(shaped.steps, mask, **kwargs)
        return shaped.steps, shaped.outcome, adv, step_adv

    return fn


def timed(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        jax.block_until_ready(out)
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=512)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--meds", type=int, default=151)
    parser.add_argument("--python-prompts", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(pathlib.Path(__file__).parent / "results" / "rl.json"))
    args = parser.parse_args()

    case = make_case(args.prompts, args.group, args.steps, args.meds, args.seed)
    shapes = {"prompts": args.prompts, "group": args.group, "steps": args.steps, "meds": args.meds}
    common = {
        "bench": "rl_shaping_step_advantages",
        "shapes": shapes,
        "backend": jax.default_backend(),
        "machine": platform.machine(),
    }
    lines = []

    sub = min(args.python_prompts, args.prompts)
    py_time, py_out = timed(lambda: python_reference(case, sub), 1)
    py_scaled = py_time * args.prompts / sub
    lines.append(
        dict(
            common,
            case="python",
            seconds=py_scaled,
            measured_seconds=py_time,
            measured_prompts=sub,
            note=f"pure Python on {sub} prompts, scaled linearly to {args.prompts}",
        )
    )

    np_time, np_out = timed(lambda: numpy_reference(case), max(1, args.repeats // 2))
    lines.append(
        dict(common, case="numpy_f64", seconds=np_time, speedup_vs_python=py_scaled / np_time)
    )

    fn = make_jax_fn()
    device_args = [
        jnp.asarray(case[k]) for k in ("initial", "truth", "ddi", "drug", "delta", "valid", "mask")
    ]
    start = time.perf_counter()
    jax.block_until_ready(fn(*device_args))
    compile_time = time.perf_counter() - start
    jax_time, jax_out = timed(lambda: fn(*device_args), args.repeats)
    jax_out = [np.asarray(x, np.float64) for x in jax_out]

    # Agreement: JAX vs NumPy everywhere; JAX vs Python on the subset.
    err_np = max(float(np.max(np.abs(a - b))) for a, b in zip(jax_out, np_out, strict=True))
    py_steps, py_outcome, py_adv, py_step_adv = py_out
    err_py = 0.0
    for b in range(sub):
        for g in range(args.group):
            n = len(py_steps[b][g])
            err_py = max(
                err_py,
                float(np.max(np.abs(jax_out[0][b, g, :n] - py_steps[b][g]), initial=0.0)),
                abs(jax_out[1][b, g] - py_outcome[b][g]),
                abs(jax_out[2][b, g] - py_adv[b][g]),
                float(np.max(np.abs(jax_out[3][b, g, :n] - py_step_adv[b][g]), initial=0.0)),
            )
    lines.append(
        dict(
            common,
            case="jax_jit",
            seconds=jax_time,
            compile_seconds=compile_time,
            speedup_vs_python=py_scaled / jax_time,
            speedup_vs_numpy_f64=np_time / jax_time,
            max_abs_err_vs_numpy=err_np,
            max_abs_err_vs_python=err_py,
        )
    )

    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w") as f:
        for line in lines:
            text = json.dumps(line, sort_keys=True)
            print(text)
            f.write(text + "\n")


if __name__ == "__main__":
    main()
