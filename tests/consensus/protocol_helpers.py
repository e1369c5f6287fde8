"""Shared pieces of the protocol, strategies, members and serve tests: a cohort, fake members."""

import functools
import threading
import time

import numpy as np

from flame_jax.consensus import render_vignettes
from flame_jax.consensus._members import MemberError, RecommenderMember, dataset_recommender
from flame_jax.data import SyntheticConfig, drug_vocabulary, generate_cohort


@functools.lru_cache(maxsize=1)
def cohort():
    return generate_cohort(SyntheticConfig.tiny())


def vocab():
    return drug_vocabulary(cohort().dataset.med_vocab)


def vignettes(split: str, n: int):
    ds = cohort().dataset
    return render_vignettes(ds, ds.split_rows(split)[:n])


def recommender_member(name: str, kind: str = "oracle", *, pool="local", noise=0.0, seed=0):
    c = cohort()
    fn = dataset_recommender(c.dataset, kind, rules=c.rules, noise=noise, seed=seed)
    return RecommenderMember(name, fn, c.dataset.med_vocab.titles, pool=pool)


class Scripted:
    """A member with fixed answers and grades; counts its calls.

    ``grades`` maps a drug tuple (canonical names) to the grade this member gives it; an item it
    has no grade for gets None. ``fail`` is None, "generate" or "review"; ``sleep`` delays
    generation.
    """

    def __init__(self, name, answer, grades=None, *, pool="remote", fail=None, sleep=0.0):
        self.name = name
        self.pool = pool
        self.temperature = 0.0
        self.answer = list(answer)
        self.grades = dict(grades or {})
        self.fail = fail
        self.sleep = sleep
        self.reviewed: list[list[str]] = []
        self.lock = threading.Lock()

    def recommend(self, vignette):
        if self.sleep:
            time.sleep(self.sleep)
        if self.fail == "generate":
            raise MemberError("http", "HTTP 500")
        if self.fail == "crash":
            raise RuntimeError("a bug in the member")
        return list(self.answer)

    def review(self, vignette, items):
        with self.lock:
            self.reviewed.append([it.id for it in items])
        if self.fail == "review":
            raise MemberError("parse", "no valid grade in the review")
        return [self.grades.get(tuple(it.drugs)) for it in items]


def names(*idx):
    """Canonical drug names of vocabulary indices."""
    titles = cohort().dataset.med_vocab.titles
    return [titles[i] for i in idx]


def reference_jaccard(a, b):
    sa, sb = set(a), set(b)
    return 1.0 if not (sa | sb) else len(sa & sb) / len(sa | sb)


def reference_ece(conf, correct, bins):
    """ECE by explicit per-round bin assignment loops (float64)."""
    conf = [float(c) for c in conf]
    correct = [float(c) for c in correct]
    pairs = [(c, y) for c, y in zip(conf, correct, strict=True) if np.isfinite(c)]
    if not pairs:
        return float("nan")
    total = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        members = [(c, y) for c, y in pairs if lo <= c < hi or (b == bins - 1 and c == 1.0)]
        if members:
            acc = sum(y for _, y in members) / len(members)
            avg = sum(c for c, _ in members) / len(members)
            total += len(members) / len(pairs) * abs(acc - avg)
    return total
