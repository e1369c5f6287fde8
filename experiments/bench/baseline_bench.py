"""Benchmark: baseline training throughput (visits/s), eager vs jit vs padded buckets.

For each model (LR, GAMENet, SafeDrug) on a synthetic cohort, one training epoch over the train
split is timed under four regimes of the same training step:

* ``eager``: the step without ``jax.jit`` (op-by-op dispatch), on the first ``--eager-steps``
  batches, scaled to visits/s;
* ``jit_exact``: jitted, every batch padded only to its own maximum history and code length, so
  each new shape recompiles;
* ``jit_buckets``: jitted, history lengths padded to powers of two and one code length for the
  dataset (what ``train_baseline`` does): a handful of compiles;
* ``jit_single``: jitted, every batch padded to the dataset's longest history and code list: one
  compile, the most padding.

For the jitted regimes the first epoch (compiles included) and a second epoch (steady state) are
timed separately. Every case prints one JSON line with its shapes and ``ratio_vs_buckets`` (the
steady-state throughput relative to ``jit_buckets`` measured in the same run; for eager, its
throughput relative to jit_buckets' steady state). Lines are also written to
``experiments/bench/results/baselines.json``.

    python experiments/bench/baseline_bench.py                    # default cohort, 3 models
    python experiments/bench/baseline_bench.py --patients 400 --models lr safedrug
"""

import argparse
import json
import pathlib
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from flame_jax.baselines import (
    BaselineConfig,
    fit_context,
    history_starts,
    init_model,
    iterate_history_batches,
    make_optimizer,
    make_train_step,
)
from flame_jax.data import SyntheticConfig, bucket_size, generate_cohort

RESULTS = pathlib.Path(__file__).resolve().parent / "results" / "baselines.json"


def _epoch(step, state, batches, context, key):
    params, rest, opt_state = state
    visits = 0
    loss = None
    start = time.perf_counter()
    for i, batch in enumerate(batches):
        params, opt_state, loss, _ = step(
            params, rest, opt_state, jax.tree.map(jnp.asarray, batch), context,
            jax.random.fold_in(key, i),
        )  # fmt: skip
        visits += int(batch.mask.sum())
    jax.block_until_ready(loss)
    return (params, rest, opt_state), visits, time.perf_counter() - start


def bench_model(ds, model: str, *, batch_size: int, eager_steps: int, seed: int):
    config = BaselineConfig(model=model, batch_size=batch_size, seed=seed)
    context = fit_context(ds, config)
    rows = ds.split_rows("train")
    v = ds.visits
    longest_codes = max(int(v.diag.lengths().max()), int(v.proc.lengths().max()))
    starts = history_starts(ds)
    longest_history = int((np.arange(len(v)) - starts).max() + 1)
    regimes = {
        "jit_exact": {"buckets": False},
        "jit_buckets": {"code_length": bucket_size(longest_codes)},
        "jit_single": {
            "history_length": bucket_size(longest_history, minimum=1),
            "code_length": bucket_size(longest_codes),
        },
    }
    key = jax.random.key(seed)
    lines = []
    for name, kwargs in regimes.items():
        m, _ = init_model(ds, config, key=key)
        graphdef, params, rest = nnx.split(m, nnx.Param, ...)
        optimizer = make_optimizer(config)
        step = make_train_step(graphdef, config, optimizer)
        state = (params, rest, optimizer.init(params))
        shapes = set()

        def batches(epoch, kwargs=kwargs, shapes=shapes):
            for b in iterate_history_batches(ds, rows, batch_size, seed=epoch, **kwargs):
                shapes.add(b.diag.shape)
                yield b

        state, n1, t1 = _epoch(step, state, batches(0), context, key)
        state, n2, t2 = _epoch(step, state, batches(1), context, key)
        lines.append({
            "bench": "baseline_train", "model": model, "case": name, "batch": batch_size,
            "shapes": len(shapes), "visits_per_epoch": n1,
            "first_epoch_s": round(t1, 3), "first_epoch_visits_per_s": round(n1 / t1, 1),
            "steady_epoch_s": round(t2, 3), "visits_per_s": round(n2 / t2, 1),
        })  # fmt: skip
    # Eager: the same step without jit, on a few batches of bucketed shapes.
    m, _ = init_model(ds, config, key=key)
    graphdef, params, rest = nnx.split(m, nnx.Param, ...)
    optimizer = make_optimizer(config)
    step = make_train_step(graphdef, config, optimizer, jit=False)
    state = (params, rest, optimizer.init(params))
    it = iterate_history_batches(ds, rows, batch_size, seed=0, **regimes["jit_buckets"])
    few = [next(it) for _ in range(eager_steps + 1)]
    state, _, _ = _epoch(step, state, few[:1], context, key)  # warm-up (op caches)
    state, n, t = _epoch(step, state, few[1:], context, key)
    lines.append({
        "bench": "baseline_train", "model": model, "case": "eager", "batch": batch_size,
        "shapes": 1, "visits_measured": n, "steady_epoch_s": round(t * len(rows) / n, 3),
        "visits_per_s": round(n / t, 1),
    })  # fmt: skip
    ref = next(x["visits_per_s"] for x in lines if x["case"] == "jit_buckets")
    for x in lines:
        x["ratio_vs_buckets"] = round(x["visits_per_s"] / ref, 3)
        x["backend"] = jax.default_backend()
        x["meds"] = ds.num_meds
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=2000)
    parser.add_argument("--models", nargs="+", default=["lr", "gamenet", "safedrug"])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--eager-steps", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    ds = generate_cohort(SyntheticConfig(patients=args.patients, seed=args.seed)).dataset
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("")
    for model in args.models:  # lines are appended per model, so a cut-off run keeps its results
        lines = bench_model(
            ds, model, batch_size=args.batch, eager_steps=args.eager_steps, seed=args.seed
        )
        with RESULTS.open("a") as f:
            for line in lines:
                line["machine"] = platform.machine()
                line["patients"] = args.patients
                print(json.dumps(line), flush=True)
                f.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
