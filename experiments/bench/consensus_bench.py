"""Benchmark: Vancouver over many vignettes and exhaustive LLM Chemistry for a 14-model pool.

Vancouver cases (``--vignettes`` vignettes each, default 10,000): peer-review grade matrices of
``3x3`` and ``16x16`` (every model grades every answer but its own; ``--missing`` of the other
reviews fail and are masked out; grades in [0, 1]). Two implementations of the same algorithm
(K = 20, eps 1e-4, leave-one-out) run in the same process:

* JAX: ``jax.jit(flame_jax.consensus.vancouver_batch)`` over all vignettes at once (the batched
  entry point: vignette axis last, chunks that stay in cache), on device-resident inputs;
  ``jax_s`` is the best of ``--repeats`` runs after compilation (``block_until_ready``),
  ``compile_s`` the lower + compile time (not part of any ratio). ``jax_vmap_s`` is the same for
  ``jax.jit(jax.vmap(vancouver))`` (``speedup_vmap``). ``*_cpu_s`` are process CPU times of the
  same best runs (the machines here are shared; CPU time is less sensitive to other load);
  ``jax_cpu_median_s`` / ``speedup_cpu_median`` use the median run instead of the best, the
  fairer match for the reference, which is timed once over many vignettes;
* reference: a per-graph pure-Python implementation (dicts of edges, float64, the message passing
  of de Alfaro's reference code with leave-one-out). It runs on the first ``--ref-vignettes``
  vignettes of each case; with fewer than all its time is scaled linearly to all vignettes
  (``reference_scaled: true``, raw time in ``reference_measured_s``) and the two are compared on
  those vignettes (``max_abs_diff`` over consensus grades and reviewer variances).

Chemistry case: a seeded pool of ``--models`` models (default 14, the pool size of (M)):
subset costs, pairwise chemistry in the replicate and the informative mode (2^n contexts x n^2
pairs) and the exhaustive size-3 recommendation, each timed after compilation (best of
``--repeats``); ``subsets_per_s`` = 2^n / time of the chemistry step. A pure-Python ChemE (the
released loop with a memoised closed-form cost) runs on the same pool for comparison and the
tables are checked equal.

Prints one JSON line per case and writes them to experiments/bench/results/consensus.json.

    python experiments/bench/consensus_bench.py                       # defaults above
    python experiments/bench/consensus_bench.py --ref-vignettes 300   # quicker; reference scaled
    python experiments/bench/consensus_bench.py --ref-vignettes 10000 400  # all 3x3, 400 16x16
"""

import argparse
import itertools
import json
import os
import pathlib
import platform
import time

import jax
import numpy as np

from flame_jax.consensus import (
    pairwise_chemistry,
    recommend_ensemble,
    subset_costs,
    vancouver,
    vancouver_batch,
)

RESULTS = pathlib.Path(__file__).resolve().parent / "results" / "consensus.json"
ITERATIONS, EPS = 20, 1e-4


def make_graphs(vignettes: int, models: int, *, missing: float, seed: int):
    """Peer review: reviewer r grades item i (the answer of model i) unless r == i or it failed."""
    rng = np.random.default_rng(seed)
    quality = rng.random((vignettes, 1, models))  # true answer quality
    noise = rng.uniform(0.02, 0.3, size=(vignettes, models, 1))  # reviewer noise sd
    grades = np.clip(quality + noise * rng.normal(size=(vignettes, models, models)), 0, 1)
    mask = ~np.eye(models, dtype=bool)[None] & (rng.random((vignettes, models, models)) >= missing)
    return grades.astype(np.float32), mask


def python_vancouver(grades, mask):
    """One graph, pure Python: the reference code's messages with leave-one-out (float64)."""
    n_rev, n_items = len(grades), len(grades[0])
    edges = [(r, i) for r in range(n_rev) for i in range(n_items) if mask[r][i]]
    g = {e: float(grades[e[0]][e[1]]) for e in edges}
    reviewers = {i: [r for r in range(n_rev) if mask[r][i]] for i in range(n_items)}
    items = {r: [i for i in range(n_items) if mask[r][i]] for r in range(n_rev)}
    var = dict.fromkeys(edges, 1.0)
    mu, s = {}, {}
    for _ in range(ITERATIONS):
        for r, i in edges:
            ks = reviewers[i]
            if len(ks) >= 2:
                ks = [k for k in ks if k != r]
            w = [1.0 / (EPS + var[k, i]) for k in ks]
            total = sum(w)
            mu[r, i] = sum(wk * g[k, i] for wk, k in zip(w, ks, strict=True)) / total
            s[r, i] = sum(wk * wk * var[k, i] for wk, k in zip(w, ks, strict=True)) / total**2
        new = {}
        for r, i in edges:
            js = items[r]
            if len(js) >= 2:
                js = [j for j in js if j != i]
            c = [1.0 / (EPS + s[r, j]) for j in js]
            new[r, i] = sum(
                cj * (g[r, j] - mu[r, j]) ** 2 for cj, j in zip(c, js, strict=True)
            ) / sum(c)
        var = new
    q = [0.0] * n_items
    for i in range(n_items):
        if reviewers[i]:
            w = [1.0 / (EPS + var[k, i]) for k in reviewers[i]]
            q[i] = sum(wk * g[k, i] for wk, k in zip(w, reviewers[i], strict=True)) / sum(w)
    v = [0.0] * n_rev
    for r in range(n_rev):
        if items[r]:
            c = [1.0 / (EPS + s[r, j]) for j in items[r]]
            v[r] = sum(cj * (g[r, j] - q[j]) ** 2 for cj, j in zip(c, items[r], strict=True)) / sum(
                c
            )
    return q, v


def _best_of(fn, repeats, *, cpu=False):
    """Best wall time of ``repeats`` runs; with ``cpu``, also the best and median CPU times."""
    walls, cpus = [], []
    out = None
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        out = jax.block_until_ready(fn())
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - start_cpu)
    if not cpu:
        return out, min(walls)
    return out, min(walls), min(cpus), float(np.median(cpus))


def run_vancouver_case(vignettes, models, ref_vignettes, repeats, missing, seed) -> dict:
    grades, mask = make_graphs(vignettes, models, missing=missing, seed=seed)
    g_dev, m_dev = jax.device_put(grades), jax.device_put(mask)
    fn = jax.jit(vancouver_batch)
    start = time.perf_counter()
    compiled = fn.lower(g_dev, m_dev).compile()
    compile_s = time.perf_counter() - start
    result, jax_s, jax_cpu_s, jax_cpu_median_s = _best_of(
        lambda: compiled(g_dev, m_dev), repeats, cpu=True
    )
    vmapped = jax.jit(jax.vmap(vancouver)).lower(g_dev, m_dev).compile()
    result_vmap, vmap_s, vmap_cpu_s, _ = _best_of(lambda: vmapped(g_dev, m_dev), repeats, cpu=True)

    ref_vignettes = min(ref_vignettes, vignettes)
    g_list = grades[:ref_vignettes].tolist()
    m_list = mask[:ref_vignettes].tolist()
    start, start_cpu = time.perf_counter(), time.process_time()
    expected = [python_vancouver(g, m) for g, m in zip(g_list, m_list, strict=True)]
    reference_measured_s = time.perf_counter() - start
    reference_cpu_s = (time.process_time() - start_cpu) * vignettes / ref_vignettes
    reference_s = reference_measured_s * vignettes / ref_vignettes
    q_ref = np.array([e[0] for e in expected])
    v_ref = np.array([e[1] for e in expected])
    diff = max(
        float(np.max(np.abs(np.asarray(result.grade[:ref_vignettes]) - q_ref))),
        float(np.max(np.abs(np.asarray(result.reviewer_variance[:ref_vignettes]) - v_ref))),
        float(np.max(np.abs(np.asarray(result_vmap.grade[:ref_vignettes]) - q_ref))),
    )
    return {
        "bench": "vancouver",
        "vignettes": vignettes,
        "shape": [models, models],
        "edges_per_vignette": round(float(mask.sum((1, 2)).mean()), 2),
        "iterations": ITERATIONS,
        "jax_s": round(jax_s, 6),
        "compile_s": round(compile_s, 3),
        "reference_s": round(reference_s, 3),
        "speedup": round(reference_s / jax_s, 1),
        "jax_vmap_s": round(vmap_s, 6),
        "speedup_vmap": round(reference_s / vmap_s, 1),
        "jax_cpu_s": round(jax_cpu_s, 6),
        "jax_vmap_cpu_s": round(vmap_cpu_s, 6),
        "reference_cpu_s": round(reference_cpu_s, 3),
        "speedup_cpu": round(reference_cpu_s / jax_cpu_s, 1),
        "jax_cpu_median_s": round(jax_cpu_median_s, 6),
        "speedup_cpu_median": round(reference_cpu_s / jax_cpu_median_s, 1),
        "jax_vignettes_per_s": round(vignettes / jax_s),
        "max_abs_diff": float(f"{diff:.3g}"),
        "reference_vignettes": ref_vignettes,
        "reference_scaled": ref_vignettes < vignettes,
        "reference_measured_s": round(reference_measured_s, 3),
        "repeats": repeats,
        "backend": jax.default_backend(),
        "load_avg_1min": round(os.getloadavg()[0], 2),  # shared machine: other work running
        "device": str(jax.devices()[0]),
        "cpu": platform.processor() or platform.machine(),
    }


def python_cheme(q, a, tau=0.5):
    """The released ChemE loop over all contexts, with a memoised closed-form cost."""
    n = len(q)
    used = {m for m in range(n) if a[m] > tau}
    cache = {}

    def cost(x):
        key = x & used
        if key not in cache:
            if not key:
                cache[key] = 1.0
            else:
                ranked = sorted(key, key=lambda m: (-q[m], m))
                cache[key] = sum(
                    (1.0 / i) * (10.0 - q[m]) / 10.0 * (1 - a[m])
                    for i, m in enumerate(ranked, start=1)
                )
        return cache[key]

    table = {}
    for k in range(n + 1):
        for x in itertools.combinations(range(n), k):
            x = frozenset(x)
            c_x = cost(x)
            if c_x == 0:
                continue
            for i, j in itertools.combinations(sorted(set(range(n)) - x), 2):
                c_a, c_b, c_ab = cost(x | {i}), cost(x | {j}), cost(x | {i, j})
                if c_a == 0 or c_b == 0 or c_ab == 0:
                    continue
                d = min(1.0, abs((c_ab + c_x) - (c_a + c_b)) / c_ab)
                if d > table.get((i, j), -1.0):
                    table[i, j] = d
    return table


def run_chemistry_case(models, repeats, seed, python_reference) -> dict:
    rng = np.random.default_rng(seed)
    q = rng.uniform(3, 10, size=models).astype(np.float32)
    a = rng.uniform(0.3, 1.0, size=models).astype(np.float32)
    costs_fn = jax.jit(subset_costs)
    costs, costs_s = _best_of(lambda: costs_fn(q, a), repeats)
    timings = {"subset_costs_s": costs_s}
    for mode in ("replicate", "informative"):
        defined = costs.defined if mode == "informative" else None
        jax.block_until_ready(pairwise_chemistry(costs.cost, defined, mode=mode))  # compile
        chem, chem_s = _best_of(
            lambda mode=mode, defined=defined: pairwise_chemistry(costs.cost, defined, mode=mode),
            repeats,
        )
        jax.block_until_ready(recommend_ensemble(chem, size=3, accuracy=a))  # compile
        rec, rec_s = _best_of(
            lambda chem=chem: recommend_ensemble(chem, size=3, accuracy=a), repeats
        )
        timings[f"{mode}_chemistry_s"] = chem_s
        timings[f"{mode}_recommend_s"] = rec_s
        timings[f"{mode}_ensemble"] = np.flatnonzero(np.asarray(rec.members)).tolist()
        if mode == "replicate":
            replicate = chem
    record = {
        "bench": "chemistry",
        "models": models,
        "subsets": 2**models,
        "pair_contexts": 2**models * models * (models - 1) // 2,
        "size": 3,
        **{k: round(v, 6) if isinstance(v, float) else v for k, v in timings.items()},
        "subsets_per_s": round(2**models / timings["replicate_chemistry_s"]),
        "informative_subsets_per_s": round(2**models / timings["informative_chemistry_s"]),
        "repeats": repeats,
        "backend": jax.default_backend(),
    }
    if python_reference:
        start = time.perf_counter()
        table = python_cheme(q.astype(np.float64).tolist(), a.astype(np.float64).tolist())
        python_s = time.perf_counter() - start
        value = np.asarray(replicate.value)
        has = np.asarray(replicate.defined)
        diff = max((abs(value[i, j] - d) for (i, j), d in table.items()), default=0.0)
        same_pairs = {(i, j) for (i, j) in table} == {
            (i, j) for i, j in zip(*np.nonzero(has), strict=True) if i < j
        }
        record.update(
            {
                "python_cheme_s": round(python_s, 3),
                "speedup_vs_python": round(python_s / timings["replicate_chemistry_s"], 1),
                "max_abs_diff": float(f"{diff:.3g}"),
                "same_defined_pairs": same_pairs,
            }
        )
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vignettes", type=int, default=10_000)
    parser.add_argument("--shapes", type=int, nargs="+", default=[3, 16], help="models per case")
    parser.add_argument(
        "--ref-vignettes",
        type=int,
        nargs="+",
        default=[10_000],
        help="vignettes the Python reference runs on: one value, or one per --shapes entry",
    )
    parser.add_argument("--missing", type=float, default=0.05, help="fraction of failed reviews")
    parser.add_argument("--models", type=int, default=14, help="chemistry pool size")
    parser.add_argument("--no-python-chemistry", action="store_true")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if len(args.ref_vignettes) not in (1, len(args.shapes)):
        parser.error("--ref-vignettes takes one value or one per --shapes entry")
    refs = args.ref_vignettes * (len(args.shapes) if len(args.ref_vignettes) == 1 else 1)
    lines = []
    for models, ref_vignettes in zip(args.shapes, refs, strict=True):
        record = run_vancouver_case(
            args.vignettes, models, ref_vignettes, args.repeats, args.missing, args.seed
        )
        lines.append(json.dumps(record))
        print(lines[-1], flush=True)
        if record["reference_scaled"]:
            print(
                f"# reference ran on {record['reference_vignettes']} of {args.vignettes} "
                f"vignettes; its time was scaled linearly to {args.vignettes}",
                flush=True,
            )
    record = run_chemistry_case(
        args.models, args.repeats, args.seed, python_reference=not args.no_python_chemistry
    )
    lines.append(json.dumps(record))
    print(lines[-1], flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
