"""Float64 oracles for flame_jax.metrics, written from the formulas with plain Python loops.

Shared by the tests in this folder; nothing here imports flame_jax.
"""

import itertools

import numpy as np


def random_visits(rng, batch, meds, *, density=0.2, scores_decimals=None):
    """Random boolean pred/truth rows, scores and a symmetric 0/1 DDI matrix (float64, NumPy)."""
    pred = rng.random((batch, meds)) < density
    truth = rng.random((batch, meds)) < density
    scores = rng.random((batch, meds))
    if scores_decimals is not None:
        scores = np.round(scores, scores_decimals)
    upper = np.triu(rng.random((meds, meds)) < 0.3, k=1)
    ddi = (upper | upper.T).astype(np.int32)
    return pred, truth, scores, ddi


def reference_set_scores(p, y):
    """(jaccard, precision, recall, f1) of one visit from Python sets."""
    pset = {i for i, v in enumerate(p) if v}
    yset = {i for i, v in enumerate(y) if v}
    inter = len(pset & yset)
    union = len(pset | yset)
    jac = inter / union if union else 0.0
    prec = inter / len(pset) if pset else 0.0
    rec = inter / len(yset) if yset else 0.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec > 0 else 0.0
    return jac, prec, rec, f1


def reference_average_precision(s, y):
    """AP = mean over positives i of #{pos j: s_j >= s_i} / #{j: s_j >= s_i}; 0 if none."""
    positives = [i for i, v in enumerate(y) if v]
    if not positives:
        return 0.0
    total = 0.0
    for i in positives:
        above = [j for j in range(len(s)) if s[j] >= s[i]]
        total += sum(1 for j in above if y[j]) / len(above)
    return total / len(positives)


def reference_ddi_pairs(p, ddi):
    """SafeDrug's double loop: (interacting pairs, all pairs) among the predicted drugs."""
    drugs = [i for i, v in enumerate(p) if v]
    bad = total = 0
    for a, b in itertools.combinations(drugs, 2):
        total += 1
        if ddi[a][b] > 0 or ddi[b][a] > 0:
            bad += 1
    return bad, total


def reference_visit_metrics(pred, truth, scores=None, ddi=None):
    """Dict of float64 per-visit arrays (prauc / ddi entries only when their input is given)."""
    rows = [reference_set_scores(p, y) for p, y in zip(pred, truth, strict=True)]
    out = {
        name: np.array([r[k] for r in rows], dtype=np.float64)
        for k, name in enumerate(["jaccard", "precision", "recall", "f1"])
    }
    out["num_meds"] = np.array([float(np.sum(p)) for p in pred])
    if scores is not None:
        out["prauc"] = np.array(
            [reference_average_precision(s, y) for s, y in zip(scores, truth, strict=True)]
        )
    if ddi is not None:
        counts = [reference_ddi_pairs(p, ddi) for p in pred]
        out["ddi_pairs"] = np.array([c[0] for c in counts], dtype=np.float64)
        out["num_pairs"] = np.array([c[1] for c in counts], dtype=np.float64)
    return out


def reference_summary(per_visit, weights=None):
    """Weighted macro means, pooled and per-visit DDI rates, from reference per-visit values."""
    n = len(per_visit["jaccard"])
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    total = 0.0
    for k in range(n):
        total += w[k]

    def mean(values):
        acc = 0.0
        for k in range(n):
            if w[k] > 0:
                acc += w[k] * values[k]
        return acc / total if total > 0 else 0.0

    out = {
        name: mean(per_visit[name]) for name in ["jaccard", "precision", "recall", "f1", "num_meds"]
    }
    out["prauc"] = mean(per_visit["prauc"]) if "prauc" in per_visit else None
    if "ddi_pairs" in per_visit:
        bad = pairs = 0.0
        for k in range(n):
            if w[k] > 0:
                bad += w[k] * per_visit["ddi_pairs"][k]
                pairs += w[k] * per_visit["num_pairs"][k]
        out["ddi_rate"] = bad / pairs if pairs > 0 else 0.0
        per_rate = [
            b / t if t > 0 else 0.0
            for b, t in zip(per_visit["ddi_pairs"], per_visit["num_pairs"], strict=True)
        ]
        out["ddi_rate_visit"] = mean(per_rate)
    else:
        out["ddi_rate"] = out["ddi_rate_visit"] = None
    return out


def reference_set_metrics(pred, truth, scores=None, ddi=None, weights=None):
    return reference_summary(reference_visit_metrics(pred, truth, scores, ddi), weights)
