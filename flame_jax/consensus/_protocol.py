"""One collaboration round: generate, canonicalise, merge, anonymise, cross-review, Vancouver.

The protocol of Sanchez et al. (arXiv 2512.05066) as specified in consensus_spec §1.2:

1. **Generate.** Every ensemble slot's member answers the vignette in parallel (one daemon thread
   per call; the stage waits at most ``RoundConfig.stage_timeout_s``). A timeout, an error or an
   answer that names no drug of the vocabulary is a **failure**: the member is dropped from the
   round (it neither answers nor reviews), and the round goes on.
2. **Canonicalise and merge.** Drug names are mapped to the vocabulary (case, spaces, hyphens,
   synonyms, trailing dose words; unknown names are dropped and counted). Identical drug sets
   become one item, which remembers all its authors.
3. **Anonymise.** Items are shuffled with the round's explicit seed and labelled ``Item_0``...
4. **Cross-review.** Every surviving member grades every item it did not author (self-review is
   masked out; a member whose answer is in a merged item does not grade it), in one listwise call
   or one call per item (``RoundConfig.review``). A failed review,
   or an ungradable item, is a missing edge (mask 0), never a grade of 0.
5. **Vancouver** (:func:`flame_jax.consensus._vancouver.vancouver`) on the ``[slots, items]``
   matrix, zero-padded with mask 0 to a power-of-two bucket (at least 4) so that few shapes compile.
6. **Answer.** The item with the highest consensus grade among the reviewed items; ties go to the
   item with more authors, then the lower author latency, then the lower label. Confidence is
   its consensus grade, uncertainty ``sqrt(var_item)``. When no item was reviewed (every
   survivor gave the same answer, or one member survived) the most-authored item is returned
   and the confidence is NaN (undefined; the calibration metrics skip such rounds and count them).
7. **Log** one row per surviving member in the performance-history schema of consensus_spec §1.1
   (:func:`history_rows`).
"""

import dataclasses
import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from flame_jax.consensus._members import Item, Member, MemberError
from flame_jax.consensus._vancouver import VancouverConfig, vancouver
from flame_jax.consensus._vignettes import Vignette, canonical_drugs
from flame_jax.data import DrugVocabulary

__all__ = [
    "HISTORY_FIELDS",
    "MemberOutcome",
    "RoundConfig",
    "RoundResult",
    "history_rows",
    "jaccard",
    "run_round",
]


@dataclasses.dataclass(frozen=True, kw_only=True)
class RoundConfig:
    """Settings of one collaboration round.

    Attributes:
      stage_timeout_s: wall-clock limit of the generation stage and of the review stage; a call
        still running then is a failure (a member's own per-call timeout should be shorter).
      match_threshold: an answer is correct when its Jaccard with the gold set is at least this
        (the binary ``generation_accuracy`` of the logs).
      review: "listwise" (each reviewer sees all items it grades in one prompt, cheaper) or
        "pointwise" (one call per item, less anchoring); consensus_spec §5.
      vancouver: the consensus hyperparameters (default: the published formulation).
    """

    stage_timeout_s: float = 300.0
    match_threshold: float = 0.5
    review: str = "listwise"
    vancouver: VancouverConfig = dataclasses.field(default_factory=VancouverConfig)

    def __post_init__(self):
        if not (isinstance(self.stage_timeout_s, int | float) and self.stage_timeout_s > 0):
            raise ValueError(
                f"RoundConfig.stage_timeout_s must be > 0, got {self.stage_timeout_s!r}"
            )
        if not (isinstance(self.match_threshold, int | float) and 0 < self.match_threshold <= 1):
            raise ValueError(
                f"RoundConfig.match_threshold must be in (0, 1], got {self.match_threshold!r}"
            )
        if self.review not in ("listwise", "pointwise"):
            raise ValueError(
                f"RoundConfig.review must be 'listwise' or 'pointwise', got {self.review!r}"
            )


@dataclasses.dataclass(frozen=True, kw_only=True)
class MemberOutcome:
    """What one ensemble slot did in a round.

    Attributes:
      slot: position in the ensemble (a member drawn twice has two slots).
      name, pool, temperature: the member's.
      item: the label of its answer, None when its generation failed.
      drugs: its canonical answer (None when it failed).
      unknown: names in its answer that named no drug of the vocabulary.
      latency_s: its generation time (up to the stage limit when it did not answer).
      failure: "<kind>: <message>" when its generation failed, else None.
      review_failure: the same for its review call, else None.
      reviewer_variance, reviewer_quality, reliability: its Vancouver outputs, NaN when it gave
        no review.
    """

    slot: int
    name: str
    pool: str
    temperature: float
    item: str | None
    drugs: tuple[str, ...] | None
    unknown: tuple[str, ...]
    latency_s: float
    failure: str | None
    review_failure: str | None
    reviewer_variance: float
    reviewer_quality: float
    reliability: float


@dataclasses.dataclass(frozen=True, kw_only=True)
class RoundResult:
    """The outcome of one round (host-side record).

    Attributes:
      vignette: the vignette's id; trial: the trial label ("<vignette> <repetition>").
      strategy: the strategy that chose the ensemble.
      items: the anonymised items in label order; authors: slot indices per item.
      grades, mask: float64 / bool [slots, items] review matrix (NaN off the mask).
      consensus: float64 [items] consensus grade (NaN for an unreviewed item).
      item_sd: float64 [items] sqrt of the consensus variance (NaN for an unreviewed item).
      answer: the final answer's label, None when every member failed.
      answer_drugs: its canonical drugs.
      confidence, uncertainty: its consensus grade and sd (NaN when undefined).
      members: per slot outcomes.
      generation_s, review_s, elapsed_s: wall time of the stages and of the whole round.
      jaccard, correct: of the final answer with the gold set (jaccard 0, correct false when every
        member failed).
    """

    vignette: str
    trial: str
    strategy: str
    items: tuple[Item, ...]
    authors: tuple[tuple[int, ...], ...]
    grades: np.ndarray
    mask: np.ndarray
    consensus: np.ndarray
    item_sd: np.ndarray
    answer: str | None
    answer_drugs: tuple[str, ...]
    confidence: float
    uncertainty: float
    members: tuple[MemberOutcome, ...]
    generation_s: float
    review_s: float
    elapsed_s: float
    jaccard: float
    correct: bool

    @property
    def failures(self) -> int:
        """Generation failures of the round (members dropped)."""
        return sum(m.failure is not None for m in self.members)

    @property
    def review_failures(self) -> int:
        return sum(m.review_failure is not None for m in self.members)


def jaccard(a: Sequence[Any], b: Sequence[Any]) -> float:
    """|a & b| / |a | b| of two sets (1.0 when both are empty).

    Examples:
      >>> jaccard(["a", "b"], ["b", "c"]), jaccard([], [])
      (0.3333333333333333, 1.0)
    """
    sa, sb = set(a), set(b)
    union = sa | sb
    return 1.0 if not union else len(sa & sb) / len(union)


def _call_all(
    calls: Sequence[Callable[[], Any]], timeout_s: float
) -> list[tuple[Any, MemberError | None, float]]:
    """Runs every call in its own daemon thread; (value, error, seconds) each, within timeout_s.

    Daemon threads, not a pool: a member that never returns cannot block the round, or the
    interpreter's exit.
    """
    n = len(calls)
    results: list[Any] = [None] * n
    done = threading.Semaphore(0)
    start = time.perf_counter()

    def run(i: int, fn: Callable[[], Any]) -> None:
        t0 = time.perf_counter()
        try:
            value, error = fn(), None
        except MemberError as e:
            value, error = None, e
        except Exception as e:  # any member bug is that member's failure, never the round's
            value, error = None, MemberError("error", f"{type(e).__name__}: {e}")
        results[i] = (value, error, time.perf_counter() - t0)
        done.release()

    for i, fn in enumerate(calls):
        threading.Thread(target=run, args=(i, fn), daemon=True, name=f"member-call-{i}").start()
    deadline = start + timeout_s
    for _ in range(n):
        if not done.acquire(timeout=max(deadline - time.perf_counter(), 0.0)):
            break
    out = []
    for r in results:
        if r is None:  # still running: abandoned
            msg = f"no answer within the stage limit of {timeout_s} s"
            out.append((None, MemberError("timeout", msg), timeout_s))
        else:
            out.append(r)
    return out


def _describe(error: MemberError) -> str:
    return str(error)


def run_round(
    vignette: Vignette,
    ensemble: Sequence[Member],
    vocab: DrugVocabulary,
    *,
    seed: int | np.integer,
    config: RoundConfig = RoundConfig(),
    strategy: str = "",
    trial: str | None = None,
) -> RoundResult:
    """Runs one collaboration round (see the module docstring for every step).

    Args:
      vignette: the request; its ``gold`` set (canonicalised against ``vocab``) scores the answer.
      ensemble: the members, one per slot (a member may appear twice).
      vocab: the medication vocabulary answers are canonicalised against.
      seed: the anonymisation shuffle's seed.
      config: timeouts, match threshold, Vancouver hyperparameters.
      strategy: logged with the round.
      trial: the trial label (default: the vignette id).

    Returns:
      A :class:`RoundResult`. Never raises for a member's failure.
    """
    t_round = time.perf_counter()
    n = len(ensemble)
    if n == 0:
        raise ValueError("run_round: the ensemble is empty")

    # 1. generate
    t0 = time.perf_counter()
    gen = _call_all([(lambda m=m: m.recommend(vignette)) for m in ensemble], config.stage_timeout_s)
    generation_s = time.perf_counter() - t0

    # 2. canonicalise
    answers: dict[int, tuple[int, ...]] = {}
    unknown: dict[int, tuple[str, ...]] = {}
    failure: dict[int, str] = {}
    latency = [g[2] for g in gen]
    for slot, (value, error, _) in enumerate(gen):
        if error is not None:
            failure[slot] = _describe(error)
            continue
        if not isinstance(value, list | tuple):
            failure[slot] = f"parse: the member returned {type(value).__name__}, not a list"
            continue
        idx, bad = canonical_drugs([str(v) for v in value], vocab)
        unknown[slot] = bad
        if value and not idx:
            failure[slot] = "parse: the answer names no drug of the vocabulary"
            continue
        answers[slot] = idx

    # 3. merge identical answers, anonymise with the round's seed
    distinct = sorted(set(answers.values()))
    order = np.random.default_rng(int(seed)).permutation(len(distinct))
    sets = [distinct[k] for k in order]
    items = tuple(Item(f"Item_{k}", tuple(vocab.names[d] for d in s)) for k, s in enumerate(sets))
    item_of = {slot: sets.index(s) for slot, s in answers.items()}
    authors = tuple(
        tuple(slot for slot in sorted(item_of) if item_of[slot] == k) for k in range(len(items))
    )

    # 4. cross-review: every survivor grades the items it did not author
    grades = np.full((n, len(items)), np.nan)
    mask = np.zeros((n, len(items)), bool)
    review_failure: dict[int, str] = {}
    jobs = []
    for slot in sorted(answers):
        todo = [k for k in range(len(items)) if slot not in authors[k]]
        if config.review == "pointwise":
            jobs += [(slot, [k]) for k in todo]
        elif todo:
            jobs.append((slot, todo))
    t0 = time.perf_counter()
    reviews = _call_all(
        [
            (lambda m=ensemble[slot], todo=todo: m.review(vignette, [items[k] for k in todo]))
            for slot, todo in jobs
        ],
        config.stage_timeout_s,
    )
    review_s = time.perf_counter() - t0
    for (slot, todo), (value, error, _) in zip(jobs, reviews, strict=True):
        if error is None and (not isinstance(value, list | tuple) or len(value) != len(todo)):
            error = MemberError("parse", f"expected {len(todo)} grades, got {value!r:.80}")
        if error is not None:  # pointwise: the first failed call of the reviewer is reported
            review_failure.setdefault(slot, _describe(error))
            continue
        for k, g in zip(todo, value, strict=True):
            ok = isinstance(g, int | float | np.integer | np.floating) and not isinstance(g, bool)
            if ok and 0 <= float(g) <= 1:  # NaN fails this too: a missing edge
                grades[slot, k] = float(g)
                mask[slot, k] = True

    # 5. Vancouver, padded to a [b, b] bucket (items <= slots <= b, b a power of two >= 4) so
    # that ensembles of different sizes share a few compilations; padding changes nothing.
    consensus = np.full(len(items), np.nan)
    item_sd = np.full(len(items), np.nan)
    r_var = np.full(n, np.nan)
    r_quality = np.full(n, np.nan)
    r_rel = np.full(n, np.nan)
    if mask.any():
        b = max(4, 1 << (n - 1).bit_length())
        g_pad = np.zeros((b, b), np.float32)
        m_pad = np.zeros((b, b), bool)
        g_pad[:n, : len(items)] = np.where(mask, grades, 0.0)
        m_pad[:n, : len(items)] = mask
        res = vancouver(g_pad, m_pad, config=config.vancouver)
        count = np.asarray(res.item_count)[: len(items)]
        reviewed = count > 0
        consensus[reviewed] = np.asarray(res.grade, np.float64)[: len(items)][reviewed]
        item_sd[reviewed] = np.sqrt(
            np.maximum(np.asarray(res.item_variance, np.float64)[: len(items)][reviewed], 0.0)
        )
        gave = np.asarray(res.reviewer_count)[:n] > 0
        r_var[gave] = np.asarray(res.reviewer_variance, np.float64)[:n][gave]
        r_quality[gave] = np.asarray(res.reviewer_quality, np.float64)[:n][gave]
        r_rel[gave] = np.asarray(res.reliability, np.float64)[:n][gave]

    # 6. final answer
    answer: int | None = None
    if items:

        def rank(k: int) -> tuple:
            q = consensus[k]
            return (
                -(q if math.isfinite(q) else -1.0),
                -len(authors[k]),
                min(latency[s] for s in authors[k]),
                k,
            )

        answer = min(range(len(items)), key=rank)
    gold_idx, _ = canonical_drugs(vignette.gold, vocab)
    if answer is None:
        answer_drugs: tuple[str, ...] = ()
        confidence = uncertainty = float("nan")
        score, correct = 0.0, False
    else:
        answer_drugs = items[answer].drugs
        confidence, uncertainty = float(consensus[answer]), float(item_sd[answer])
        score = jaccard(sets[answer], gold_idx)
        correct = score >= config.match_threshold

    members = tuple(
        MemberOutcome(
            slot=slot,
            name=m.name,
            pool=m.pool,
            temperature=float(m.temperature),
            item=items[item_of[slot]].id if slot in item_of else None,
            drugs=items[item_of[slot]].drugs if slot in item_of else None,
            unknown=unknown.get(slot, ()),
            latency_s=float(latency[slot]),
            failure=failure.get(slot),
            review_failure=review_failure.get(slot),
            reviewer_variance=float(r_var[slot]),
            reviewer_quality=float(r_quality[slot]),
            reliability=float(r_rel[slot]),
        )
        for slot, m in enumerate(ensemble)
    )
    return RoundResult(
        vignette=vignette.id,
        trial=trial if trial is not None else vignette.id,
        strategy=strategy,
        items=items,
        authors=authors,
        grades=grades,
        mask=mask,
        consensus=consensus,
        item_sd=item_sd,
        answer=None if answer is None else items[answer].id,
        answer_drugs=answer_drugs,
        confidence=confidence,
        uncertainty=uncertainty,
        members=members,
        generation_s=generation_s,
        review_s=review_s,
        elapsed_s=time.perf_counter() - t_round,
        jaccard=score,
        correct=bool(correct),
    )


HISTORY_FIELDS = (
    "trial",
    "model",
    "temperature",
    "latency",
    "elapsed",
    "id",
    "result",
    "quality",
    "generation_accuracy",
    "variance",
    "review_accuracy",
    "accuracy",
    "strategy",
    "created",
)


def history_rows(
    result: RoundResult,
    vocab: DrugVocabulary,
    gold: Sequence[str] | None,
    *,
    match_threshold: float = 0.5,
    created: str = "",
) -> list[dict[str, Any]]:
    """One performance-history row per surviving member (consensus_spec §1.1 schema).

    ``quality`` is 10 x the consensus grade of the member's item (0-10 scale of (C)'s logs,
    clipped to it; 0 when the item was not reviewed); ``variance`` is the reviewer variance in
    squared 0-10 units (x 100; 0 when it gave no review); ``review_accuracy`` its quality rho (0
    when it gave no review); ``generation_accuracy`` is 1 when its answer's Jaccard with
    ``gold`` reaches ``match_threshold``; ``accuracy`` = 0.75 gen + 0.25 rho with gold, else
    0.25 gen + 0.75 rho.
    Failed members get no row, as in (C)'s logs (a trial with fewer than N rows).
    """
    gold_idx = canonical_drugs(gold, vocab)[0] if gold is not None else None
    index = {name: i for i, name in enumerate(vocab.names)}
    labels = {it.id: k for k, it in enumerate(result.items)}
    rows = []
    for m in result.members:
        if m.item is None:
            continue
        q = result.consensus[labels[m.item]]
        rho = m.reviewer_quality if math.isfinite(m.reviewer_quality) else 0.0
        var = m.reviewer_variance if math.isfinite(m.reviewer_variance) else 0.0
        if gold_idx is not None:
            gen = float(jaccard([index[d] for d in m.drugs or ()], gold_idx) >= match_threshold)
            acc = 0.75 * gen + 0.25 * rho
        else:
            gen = 0.0
            acc = 0.25 * gen + 0.75 * rho
        rows.append(
            {
                "trial": result.trial,
                "model": m.name,
                "temperature": m.temperature,
                "latency": m.latency_s,
                "elapsed": result.elapsed_s,
                "id": m.item,
                "result": "; ".join(m.drugs or ()),
                "quality": min(max(10.0 * float(q), 0.0), 10.0) if math.isfinite(q) else 0.0,
                "generation_accuracy": gen,
                "variance": 100.0 * var,
                "review_accuracy": rho,
                "accuracy": acc,
                "strategy": result.strategy,
                "created": created,
            }
        )
    return rows
