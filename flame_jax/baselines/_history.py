"""History-aware visit batches: each row is a visit with its patient's earlier visits.

GAMENet and SafeDrug read a patient's visits up to the current one: the GRUs run over every
visit's codes, and GAMENet's dynamic memory also reads the earlier visits' medications. A
:class:`HistoryBatch` holds them left-aligned on a ``visits`` axis, padded to power-of-two
buckets of history length and code length, so one epoch compiles a handful of programs.
"""

from collections.abc import Iterator
from typing import NamedTuple

import numpy as np

from flame_jax.arraytypes import Array, Bool, Int
from flame_jax.data import Dataset, bucket_size, pad_ragged

__all__ = ["HistoryBatch", "history_starts", "iterate_history_batches", "pad_histories"]


class HistoryBatch(NamedTuple):
    """A padded batch of visits with their histories (host NumPy arrays).

    Position ``t`` of the ``visits`` axis holds the patient's ``t``-th visit; the current visit
    is at ``length - 1`` and positions ``>= length`` are padding.

    Attributes:
      diag: [batch, visits, codes] int32 diagnosis indices (0 where masked).
      diag_mask: [batch, visits, codes] bool.
      proc: [batch, visits, codes] int32 procedure indices (0 where masked).
      proc_mask: [batch, visits, codes] bool.
      visit_mask: [batch, visits] bool, true for the history's visits (current one included).
      length: [batch] int32 number of visits in the history (0 on padding rows).
      past_meds: [batch, visits, meds] bool medications of the earlier visits (the current visit's
        row and padding are all false: the label never leaks into the input).
      meds: [batch, meds] bool ground truth of the current visit.
      patient: [batch] int32 patient number (for the bootstrap), -1 on padding rows.
      row: [batch] int64 visit-table row of the current visit, -1 on padding rows.
      mask: [batch] bool, true for real rows.
    """

    diag: Int[Array, "batch visits codes"]
    diag_mask: Bool[Array, "batch visits codes"]
    proc: Int[Array, "batch visits codes"]
    proc_mask: Bool[Array, "batch visits codes"]
    visit_mask: Bool[Array, "batch visits"]
    length: Int[Array, " batch"]
    past_meds: Bool[Array, "batch visits meds"]
    meds: Bool[Array, "batch meds"]
    patient: Int[Array, " batch"]
    row: Int[Array, " batch"]
    mask: Bool[Array, " batch"]


def history_starts(dataset: Dataset) -> np.ndarray:
    """[visits] int64: the table row of each visit's patient's first visit.

    The visit table is sorted by (patient_id, visit_index), so a visit's history is the rows
    ``history_starts[r] .. r``.

    Examples:
      >>> from flame_jax.data import SyntheticConfig, generate_cohort
      >>> ds = generate_cohort(SyntheticConfig.tiny()).dataset
      >>> starts = history_starts(ds)
      >>> bool((np.arange(len(starts)) - starts == ds.visits.visit_index).all())
      True
    """
    pid = dataset.visits.patient_id
    new = np.ones(len(pid), dtype=bool)
    new[1:] = pid[1:] != pid[:-1]
    first = np.flatnonzero(new)
    return first[np.cumsum(new) - 1].astype(np.int64)


def pad_histories(
    dataset: Dataset,
    rows: np.ndarray,
    *,
    batch_size: int | None = None,
    history_length: int | None = None,
    code_length: int | None = None,
    patient: np.ndarray | None = None,
    starts: np.ndarray | None = None,
    max_history: int | None = None,
) -> HistoryBatch:
    """Pads the visits at ``rows``, each with its patient's earlier visits, into one batch.

    Args:
      dataset: the dataset.
      rows: [n] visit-table rows (the current visits).
      batch_size: padded batch size (>= n); default ``bucket_size(n)``.
      history_length: padded ``visits`` axis; default the bucket (minimum 1) of the longest
        history among ``rows``.
      code_length: padded ``codes`` axis; default the bucket of the longest code list.
      patient: [n] patient numbers; default the distinct patients of ``rows`` numbered 0..P-1.
      starts: :func:`history_starts` of the dataset (computed when None).
      max_history: keep at most this many most recent visits (current one included).

    Returns:
      A :class:`HistoryBatch`.

    Examples:
      >>> from flame_jax.data import SyntheticConfig, generate_cohort
      >>> ds = generate_cohort(SyntheticConfig.tiny()).dataset
      >>> b = pad_histories(ds, np.array([0, 1, 2]))
      >>> b.diag.shape[0], b.length[:3].tolist() == (ds.visits.visit_index[:3] + 1).tolist()
      (8, True)
    """
    rows = np.asarray(rows, dtype=np.int64)
    n = len(rows)
    batch_size = bucket_size(n) if batch_size is None else int(batch_size)
    if batch_size < n:
        raise ValueError(f"batch_size {batch_size} is smaller than the {n} rows to pad")
    if n and (rows.min() < 0 or rows.max() >= len(dataset.visits)):
        raise ValueError(f"rows must be in [0, {len(dataset.visits)}), got {rows.tolist()[:8]}")
    starts = history_starts(dataset) if starts is None else starts
    first = starts[rows]
    if max_history is not None:
        first = np.maximum(first, rows - int(max_history) + 1)
    lengths = (rows - first + 1).astype(np.int32)
    longest = int(lengths.max()) if n else 1
    history_length = bucket_size(longest, minimum=1) if history_length is None else history_length
    if history_length < longest:
        raise ValueError(f"history_length {history_length} < the longest history {longest}")
    t = np.arange(history_length)
    visit_mask = np.zeros((batch_size, history_length), dtype=bool)
    visit_mask[:n] = t[None, :] < lengths[:, None]
    hist = np.full((batch_size, history_length), -1, dtype=np.int64)
    hist[:n] = np.where(visit_mask[:n], first[:, None] + t[None, :], -1)
    flat = hist[visit_mask]
    v = dataset.visits
    if code_length is None:
        longest_codes = 0
        if flat.size:
            longest_codes = int(max(v.diag.lengths()[flat].max(), v.proc.lengths()[flat].max()))
        code_length = bucket_size(longest_codes)

    def _codes(ragged) -> tuple[np.ndarray, np.ndarray]:
        ids = np.zeros((batch_size, history_length, code_length), dtype=np.int32)
        mask = np.zeros((batch_size, history_length, code_length), dtype=bool)
        ids[visit_mask], mask[visit_mask] = pad_ragged(ragged, flat, code_length)
        return ids, mask

    diag, diag_mask = _codes(v.diag)
    proc, proc_mask = _codes(v.proc)
    m = dataset.num_meds
    past = visit_mask.copy()
    past[np.arange(n), lengths - 1] = False  # the current visit's medications are the label
    past_meds = np.zeros((batch_size, history_length, m), dtype=bool)
    past_meds[past] = v.med.multi_hot(m, hist[past])
    meds = np.zeros((batch_size, m), dtype=bool)
    meds[:n] = v.med.multi_hot(m, rows)
    if patient is None:
        _, first_seen, inverse = np.unique(
            v.patient_id[rows], return_index=True, return_inverse=True
        )
        rank = np.empty(len(first_seen), dtype=np.int64)
        rank[np.argsort(first_seen, kind="stable")] = np.arange(len(first_seen))
        patient = rank[inverse]
    patient = np.asarray(patient, dtype=np.int32).reshape(-1)
    if patient.shape != (n,):
        raise ValueError(f"patient must have shape ({n},), got {patient.shape}")
    out_patient = np.full(batch_size, -1, dtype=np.int32)
    out_patient[:n] = patient
    out_row = np.full(batch_size, -1, dtype=np.int64)
    out_row[:n] = rows
    out_length = np.zeros(batch_size, dtype=np.int32)
    out_length[:n] = lengths
    return HistoryBatch(
        diag=diag,
        diag_mask=diag_mask,
        proc=proc,
        proc_mask=proc_mask,
        visit_mask=visit_mask,
        length=out_length,
        past_meds=past_meds,
        meds=meds,
        patient=out_patient,
        row=out_row,
        mask=np.arange(batch_size) < n,
    )


def iterate_history_batches(
    dataset: Dataset,
    rows: np.ndarray,
    batch_size: int,
    *,
    seed: int | None = None,
    buckets: bool = True,
    history_length: int | None = None,
    code_length: int | None = None,
    max_history: int | None = None,
) -> Iterator[HistoryBatch]:
    """Fixed-size history batches over ``rows`` (shuffled when ``seed`` is given).

    Every batch has ``batch_size`` rows (the last one padded). With ``buckets`` the history and
    code lengths are powers of two per batch; without, they are the batch's exact maxima (one
    compile per distinct shape, for comparison). ``history_length`` / ``code_length`` fix them
    for every batch instead. Patient numbers index the distinct patients of all ``rows``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    rows = np.asarray(rows, dtype=np.int64)
    starts = history_starts(dataset)
    _, patient_all = np.unique(dataset.visits.patient_id[rows], return_inverse=True)
    order = np.arange(len(rows))
    if seed is not None:
        order = np.random.default_rng(seed).permutation(len(rows))
    v = dataset.visits
    for begin in range(0, len(rows), batch_size):
        take = order[begin : begin + batch_size]
        h, c = history_length, code_length
        if not buckets and (h is None or c is None):
            first = starts[rows[take]]
            if max_history is not None:
                first = np.maximum(first, rows[take] - int(max_history) + 1)
            lengths = rows[take] - first + 1
            flat = np.concatenate(
                [np.arange(f, r + 1) for f, r in zip(first, rows[take], strict=True)]
            )
            h = int(lengths.max()) if h is None else h
            c = int(max(v.diag.lengths()[flat].max(), v.proc.lengths()[flat].max(), 1))
            c = c if code_length is None else code_length
        yield pad_histories(
            dataset,
            rows[take],
            batch_size=batch_size,
            history_length=h,
            code_length=c,
            patient=patient_all[take],
            starts=starts,
            max_history=max_history,
        )
