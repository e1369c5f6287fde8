"""Error profiles of pi_cls and the seeded synthetic edit tasks that pi_list is fine-tuned on.

pi_list learns to repair the mistakes pi_cls makes. Its SFT tasks take a ground-truth set G and
inject errors that follow pi_cls's measured error profile: how many drugs it misses and how many it
adds for a visit with |G| = n, and which drugs it tends to miss or add. The pre-predicted list is
P0 = (G - missed) | extra; the "add" target is the missed drugs, the "remove" target the extra ones.

Differences from the original generator (arXiv 2505.20218's repository), each a fix:

* seeded (``numpy.random.Generator``), so the tasks are reproducible;
* per-drug weights are smoothed (+``smoothing``), so a sparse profile never crashes the sampler
  (the original ``np.random.choice`` fails when fewer drugs than requested have non-zero weight);
* a set size never observed in the profile borrows the counts of the nearest observed size;
* miss and extra counts are capped at what the visit allows.

References:
    Fan et al., "Fine-grained List-wise Alignment for Generative Medication Recommendation"
    (FLAME), arXiv 2505.20218 (2025), list SFT data synthesis.
"""

import dataclasses
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from jaxtyping import Bool

__all__ = ["EditTask", "ErrorProfile", "error_profile", "synthesize_edit_tasks", "with_candidates"]


class ErrorProfile(NamedTuple):
    """pi_cls's mistakes on a set of visits (host-side NumPy).

    Attributes:
        truth_size: int64 [visits], |G| per visit.
        miss: int64 [visits], |G - P| per visit.
        extra: int64 [visits], |P - G| per visit.
        drug_miss: int64 [meds], visits in which the drug was missed.
        drug_extra: int64 [meds], visits in which the drug was wrongly predicted.
    """

    truth_size: np.ndarray
    miss: np.ndarray
    extra: np.ndarray
    drug_miss: np.ndarray
    drug_extra: np.ndarray

    def to_json(self) -> dict:
        return {k: [int(x) for x in v] for k, v in self._asdict().items()}


def error_profile(
    pred: Bool[np.ndarray, "visits meds"], truth: Bool[np.ndarray, "visits meds"]
) -> ErrorProfile:
    """Counts pi_cls's misses and extras per visit and per drug.

    Args:
        pred: predicted sets P as multi-hot rows.
        truth: ground-truth sets G, same shape.

    Returns:
        The profile.

    Examples:
        >>> import numpy as np
        >>> p = np.array([[1, 1, 0], [0, 0, 1]], bool)
        >>> g = np.array([[1, 0, 1], [0, 0, 1]], bool)
        >>> prof = error_profile(p, g)
        >>> prof.miss.tolist(), prof.extra.tolist(), prof.drug_miss.tolist()
        ([1, 0], [1, 0], [0, 0, 1])
    """
    if pred.shape != truth.shape:
        raise ValueError(f"pred has shape {pred.shape} but truth has shape {truth.shape}")
    missed = truth & ~pred
    extra = pred & ~truth
    i64 = np.int64
    return ErrorProfile(
        truth_size=truth.sum(1).astype(i64),
        miss=missed.sum(1).astype(i64),
        extra=extra.sum(1).astype(i64),
        drug_miss=missed.sum(0).astype(i64),
        drug_extra=extra.sum(0).astype(i64),
    )


@dataclasses.dataclass(frozen=True)
class EditTask:
    """One synthetic list-editing example.

    Attributes:
        row: the visit row whose ground truth was corrupted.
        pre_list: P0, sorted drug indices.
        add: the drugs the "add" task should write (missed by P0), sorted.
        remove: the drugs the "remove" task should write (extra in P0), sorted.
        candidates: drugs outside P0 that the "add" prompt lists (``PromptConfig.candidates``),
            best first; empty for the paper's prompt.
    """

    row: int
    pre_list: tuple[int, ...]
    add: tuple[int, ...]
    remove: tuple[int, ...]
    candidates: tuple[int, ...] = ()


def _counts_by_size(profile: ErrorProfile) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    out = {}
    for n in np.unique(profile.truth_size):
        sel = profile.truth_size == n
        out[int(n)] = (profile.miss[sel], profile.extra[sel])
    return out


def _nearest(sizes: np.ndarray, n: int) -> int:
    return int(sizes[np.argmin(np.abs(sizes - n) * 2 + (sizes > n))])  # ties -> the smaller size


def synthesize_edit_tasks(
    profile: ErrorProfile,
    truth_sets: Sequence[np.ndarray],
    rows: np.ndarray,
    *,
    samples: int | np.integer,
    seed: int | np.integer,
    smoothing: float | int = 1.0,
) -> list[EditTask]:
    """Draws ``samples`` edit tasks from ground-truth sets, following pi_cls's error profile.

    For each draw: a visit uniformly with replacement; ``miss`` and ``extra`` counts drawn from the
    profile's visits with the same |G| (nearest observed size if none); the missed drugs drawn from
    G without replacement with weights ``drug_miss + smoothing``; the extra drugs from the
    complement with weights ``drug_extra + smoothing``.

    Args:
        profile: pi_cls's error profile (on train visits).
        truth_sets: drug indices of the ground truth, one array per candidate visit.
        rows: the dataset row of each entry of ``truth_sets``.
        samples: number of tasks.
        seed: the seed; the same seed gives the same tasks.
        smoothing: added to every per-drug count; must be > 0.

    Returns:
        The tasks.

    Examples:
        >>> import numpy as np
        >>> prof = error_profile(np.array([[1, 0, 1, 0]], bool), np.array([[1, 1, 0, 0]], bool))
        >>> sets, rows = [np.array([0, 1])], np.array([7])
        >>> tasks = synthesize_edit_tasks(prof, sets, rows, samples=2, seed=0)
        >>> [(t.row, len(t.add), len(t.remove)) for t in tasks]
        [(7, 1, 1), (7, 1, 1)]
    """
    if smoothing <= 0:
        raise ValueError(f"smoothing must be > 0, got {smoothing}")
    if len(truth_sets) != len(rows):
        raise ValueError(f"{len(truth_sets)} truth sets but {len(rows)} rows")
    if not len(truth_sets):
        raise ValueError("no visits to draw edit tasks from")
    if not len(profile.truth_size):
        raise ValueError("the error profile is empty (no visits were scored)")
    num_meds = len(profile.drug_miss)
    by_size = _counts_by_size(profile)
    sizes = np.array(sorted(by_size))
    w_miss = profile.drug_miss.astype(np.float64) + smoothing
    w_extra = profile.drug_extra.astype(np.float64) + smoothing
    rng = np.random.default_rng(int(seed))
    tasks = []
    for _ in range(int(samples)):
        i = int(rng.integers(len(truth_sets)))
        g = np.unique(np.asarray(truth_sets[i], dtype=np.int64))
        if g.size and (g.min() < 0 or g.max() >= num_meds):
            raise ValueError(f"truth set of row {rows[i]} has drug ids outside [0, {num_meds})")
        miss_pool, extra_pool = by_size[_nearest(sizes, len(g))]
        n_miss = min(int(rng.choice(miss_pool)), len(g))
        complement = np.setdiff1d(np.arange(num_meds), g)
        n_extra = min(int(rng.choice(extra_pool)), len(complement))
        missed = _weighted_subset(rng, g, w_miss, n_miss)
        extra = _weighted_subset(rng, complement, w_extra, n_extra)
        pre = np.union1d(np.setdiff1d(g, missed), extra)
        tasks.append(
            EditTask(
                row=int(rows[i]),
                pre_list=tuple(int(x) for x in pre),
                add=tuple(int(x) for x in np.sort(missed)),
                remove=tuple(int(x) for x in np.sort(extra)),
            )
        )
    return tasks


def _weighted_subset(
    rng: np.random.Generator, pool: np.ndarray, weights: np.ndarray, k: int
) -> np.ndarray:
    if k == 0:
        return np.zeros(0, np.int64)
    p = weights[pool]
    return rng.choice(pool, size=k, replace=False, p=p / p.sum())


def with_candidates(tasks: Sequence[EditTask], scores: np.ndarray, k: int) -> list[EditTask]:
    """Gives each task the ``k`` best-scored drugs outside its P0 as "add" candidates.

    The "add" target keeps only the missed drugs among the candidates (the prompt offers no
    other drug to add); ``k == 0`` returns the tasks unchanged (the paper's prompt).

    Args:
        tasks: edit tasks.
        scores: float ``[visits, meds]``, e.g. pi_cls's p(Yes) of every visit; ties go to the
            lower drug index.
        k: candidates per task, ``>= 0``.

    Returns:
        The tasks with ``candidates`` (best first) and the restricted ``add``.

    Examples:
        >>> import numpy as np
        >>> t = EditTask(row=0, pre_list=(1,), add=(0, 3), remove=())
        >>> with_candidates([t], np.array([[0.1, 0.9, 0.2, 0.4]]), 2)[0]
        EditTask(row=0, pre_list=(1,), add=(3,), remove=(), candidates=(3, 2))
    """
    if isinstance(k, bool) or int(k) != k or k < 0:
        raise ValueError(f"k must be an int >= 0, got {k!r}")
    if k == 0:
        return list(tasks)
    out = []
    for t in tasks:
        s = np.asarray(scores[t.row], np.float64).copy()
        s[list(t.pre_list)] = -np.inf
        order = np.argsort(-s, kind="stable")
        cands = tuple(int(d) for d in order[: int(k)] if np.isfinite(s[d]))
        add = tuple(d for d in t.add if d in cands)
        out.append(dataclasses.replace(t, add=add, candidates=cands))
    return out
