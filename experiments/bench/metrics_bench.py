"""Benchmark: flame_jax.metrics.set_metrics (jitted) against a per-visit Python/NumPy/sklearn loop.

Computes all eight metrics (Jaccard, precision, recall, F1, PRAUC, pooled DDI rate, per-visit DDI
rate, #Med) over ``--visits`` visits x ``--meds`` drugs of seeded random data with realistic
densities (about 15 true drugs per visit out of 151, scores correlated with the truth, the
predicted set = scores > 0.5, a symmetric DDI graph with about 10% density), once with the jitted
``set_metrics`` and once with a straightforward reference: numpy set operations per visit,
``sklearn.metrics.average_precision_score`` per visit and a Python loop over predicted pairs for
the DDI counts. The JAX time is the best of ``--repeats`` runs of the compiled function on
device-resident inputs (``block_until_ready``), compile time is reported separately. The reference
runs on the first ``--ref-visits`` visits; when that is fewer than ``--visits`` its time is scaled
linearly to all visits (``reference_scaled``: true) and both implementations are compared on
those visits.

Prints one JSON line per case and writes the lines to experiments/bench/results/metrics.json.

    python experiments/bench/metrics_bench.py                      # 100,000 x 151, full reference
    python experiments/bench/metrics_bench.py --ref-visits 10000   # quicker; reference time scaled
"""

import argparse
import itertools
import json
import pathlib
import platform
import time

import jax
import numpy as np
from sklearn.metrics import average_precision_score

from flame_jax.metrics import SetMetrics, set_metrics

RESULTS = pathlib.Path(__file__).resolve().parent / "results" / "metrics.json"


def make_data(visits: int, meds: int, *, seed: int, true_per_visit: float, ddi_density: float):
    """Seeded multi-hot truth, correlated scores, thresholded predictions and a symmetric DDI."""
    rng = np.random.default_rng(seed)
    truth = rng.random((visits, meds)) < true_per_visit / meds
    logits = 2.5 * truth - 1.5 + rng.normal(size=(visits, meds))
    scores = (1 / (1 + np.exp(-logits))).astype(np.float32)
    pred = scores > 0.5
    upper = np.triu(rng.random((meds, meds)) < ddi_density, k=1)
    ddi = (upper | upper.T).astype(np.int8)
    return pred, truth, scores, ddi


def reference_metrics(pred, truth, scores, ddi) -> dict[str, float]:
    """What one would write without JAX: a loop over visits, sets, sklearn and a pair loop."""
    jac, prec, rec, f1s, prauc, med, visit_rate = [], [], [], [], [], [], []
    ddi_pairs = all_pairs = 0
    for p_row, y_row, s_row in zip(pred, truth, scores, strict=True):
        p_idx, y_idx = np.flatnonzero(p_row), np.flatnonzero(y_row)
        inter = np.intersect1d(p_idx, y_idx).size
        union = np.union1d(p_idx, y_idx).size
        jac.append(inter / union if union else 0.0)
        p = inter / p_idx.size if p_idx.size else 0.0
        r = inter / y_idx.size if y_idx.size else 0.0
        prec.append(p)
        rec.append(r)
        f1s.append(2 * p * r / (p + r) if p + r > 0 else 0.0)
        prauc.append(average_precision_score(y_row, s_row) if y_idx.size else 0.0)
        med.append(p_idx.size)
        bad = total = 0
        for a, b in itertools.combinations(p_idx, 2):
            total += 1
            if ddi[a, b] > 0 or ddi[b, a] > 0:
                bad += 1
        ddi_pairs += bad
        all_pairs += total
        visit_rate.append(bad / total if total else 0.0)
    return {
        "jaccard": float(np.mean(jac)),
        "precision": float(np.mean(prec)),
        "recall": float(np.mean(rec)),
        "f1": float(np.mean(f1s)),
        "prauc": float(np.mean(prauc)),
        "ddi_rate": ddi_pairs / all_pairs if all_pairs else 0.0,
        "ddi_rate_visit": float(np.mean(visit_rate)),
        "num_meds": float(np.mean(med)),
    }


def time_jax(pred, truth, scores, ddi, repeats: int) -> tuple[SetMetrics, float, float]:
    args = tuple(jax.device_put(x) for x in (pred, truth, scores, ddi))
    jax.block_until_ready(args)
    fn = jax.jit(set_metrics)
    start = time.perf_counter()
    compiled = fn.lower(args[0], args[1], scores=args[2], ddi=args[3]).compile()
    compile_s = time.perf_counter() - start
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        result = jax.block_until_ready(compiled(args[0], args[1], scores=args[2], ddi=args[3]))
        best = min(best, time.perf_counter() - start)
    return result, best, compile_s


def run_case(visits: int, meds: int, ref_visits: int, repeats: int, seed: int) -> dict:
    pred, truth, scores, ddi = make_data(
        visits, meds, seed=seed, true_per_visit=15.0, ddi_density=0.10
    )
    result, jax_s, compile_s = time_jax(pred, truth, scores, ddi, repeats)

    ref_visits = min(ref_visits, visits)
    sub = slice(0, ref_visits)
    start = time.perf_counter()
    expected = reference_metrics(pred[sub], truth[sub], scores[sub], ddi)
    reference_measured_s = time.perf_counter() - start
    reference_s = reference_measured_s * visits / ref_visits
    if ref_visits < visits:  # compare on the visits the reference ran on
        result = jax.jit(set_metrics)(pred[sub], truth[sub], scores=scores[sub], ddi=ddi)
    got = result.as_dict()
    diffs = {k: abs(got[k] - v) for k, v in expected.items()}
    return {
        "bench": "metrics",
        "visits": visits,
        "meds": meds,
        "jax_s": round(jax_s, 6),
        "compile_s": round(compile_s, 4),
        "reference_s": round(reference_s, 3),
        "speedup": round(reference_s / jax_s, 1),
        "max_abs_diff": float(f"{max(diffs.values()):.3g}"),
        "reference_visits": ref_visits,
        "reference_scaled": ref_visits < visits,
        "reference_measured_s": round(reference_measured_s, 3),
        "repeats": repeats,
        "backend": jax.default_backend(),
        "device": str(jax.devices()[0]),
        "cpu": platform.processor() or platform.machine(),
        "mean_true_per_visit": round(float(truth.sum(axis=1).mean()), 2),
        "mean_pred_per_visit": round(float(pred.sum(axis=1).mean()), 2),
        "metrics": {k: round(v, 6) for k, v in got.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--visits", type=int, nargs="+", default=[100_000], help="one case each")
    parser.add_argument("--meds", type=int, default=151)
    parser.add_argument("--ref-visits", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    lines = []
    for visits in args.visits:
        record = run_case(visits, args.meds, args.ref_visits, args.repeats, args.seed)
        line = json.dumps(record)
        print(line, flush=True)
        if record["reference_scaled"]:
            print(
                f"# reference ran on {record['reference_visits']} of {visits} visits; "
                f"its time was scaled linearly to {visits} visits",
                flush=True,
            )
        lines.append(line)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
