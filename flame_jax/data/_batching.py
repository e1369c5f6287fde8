"""Padding visits to a few fixed bucket shapes, with masks, for device batches.

Shapes are powers of two (at least ``minimum``), so a whole epoch compiles a handful of times at
most: batch size is fixed per iterator, and code lengths fall into one of a few buckets.
"""

from collections.abc import Iterator
from typing import NamedTuple

import numpy as np

from flame_jax.arraytypes import Array, Bool, Int
from flame_jax.data._format import Dataset, RaggedIds

__all__ = ["VisitBatch", "bucket_size", "iterate_visit_batches", "pad_ragged", "pad_visits"]


class VisitBatch(NamedTuple):
    """A padded batch of visits (host NumPy arrays; ``jax.device_put`` moves the whole tuple).

    Attributes:
      diag: [batch, codes] int32 diagnosis indices, 0 where ``diag_mask`` is false.
      diag_mask: [batch, codes] bool.
      proc: [batch, codes] int32 procedure indices, 0 where ``proc_mask`` is false.
      proc_mask: [batch, codes] bool.
      meds: [batch, meds] bool ground-truth medication multi-hot (all false on padding rows).
      patient: [batch] int32 patient number within the rows the batch was cut from (0..P-1), the
        grouping the bootstrap protocol resamples; -1 on padding rows.
      row: [batch] int64 visit row in the dataset's visit table, -1 on padding rows.
      mask: [batch] bool, true for real visits.
    """

    diag: Int[Array, "batch codes"]
    diag_mask: Bool[Array, "batch codes"]
    proc: Int[Array, "batch codes"]
    proc_mask: Bool[Array, "batch codes"]
    meds: Bool[Array, "batch meds"]
    patient: Int[Array, " batch"]
    row: Int[Array, " batch"]
    mask: Bool[Array, " batch"]


def bucket_size(n: int | np.integer, *, minimum: int = 8) -> int:
    """The smallest power of two that is >= ``n`` and >= ``minimum``.

    Examples:
      >>> bucket_size(3), bucket_size(9), bucket_size(64), bucket_size(0, minimum=1)
      (8, 16, 64, 1)
    """
    if n < 0 or minimum < 1:
        raise ValueError(f"bucket_size needs n >= 0 and minimum >= 1, got n={n}, minimum={minimum}")
    n, size = int(n), int(minimum)
    while size < n:
        size *= 2
    return size


def pad_ragged(ragged: RaggedIds, rows: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``ragged`` as a dense [len(rows), length] int32 array and its bool mask.

    Raises:
      ValueError: a row is longer than ``length``.

    Examples:
      >>> from flame_jax.data import RaggedIds
      >>> ids, mask = pad_ragged(RaggedIds.from_lists([[4, 2], [], [7]]), np.arange(3), 4)
      >>> ids.tolist(), mask.sum(axis=1).tolist()
      ([[4, 2, 0, 0], [0, 0, 0, 0], [7, 0, 0, 0]], [2, 0, 1])
    """
    rows = np.asarray(rows, dtype=np.int64)
    lengths = ragged.lengths()[rows]
    if len(rows) and lengths.max() > length:
        raise ValueError(
            f"a row has {int(lengths.max())} ids, more than the padded length {length}"
        )
    mask = np.arange(length)[None, :] < lengths[:, None]
    ids = np.zeros((len(rows), length), dtype=np.int32)
    starts = ragged.offsets[rows]
    src = (starts[:, None] + np.arange(length)[None, :])[mask]
    ids[mask] = ragged.values[src]
    return ids, mask


def pad_visits(
    dataset: Dataset,
    rows: np.ndarray,
    *,
    batch_size: int | None = None,
    code_length: int | None = None,
    patient: np.ndarray | None = None,
) -> VisitBatch:
    """Pads the visits at ``rows`` of the visit table into one :class:`VisitBatch`.

    Args:
      dataset: the dataset.
      rows: visit-table rows, shape [n].
      batch_size: padded batch size (>= n); default ``bucket_size(n)``.
      code_length: padded code length; default the bucket of the longest diagnosis or procedure
        list among ``rows``.
      patient: [n] patient numbers to store; default numbers the distinct patients of ``rows``
        0..P-1 in order of first appearance.

    Returns:
      The batch; rows n..batch_size-1 are padding (``mask`` false, ``patient`` and ``row`` -1).
    """
    rows = np.asarray(rows, dtype=np.int64)
    n = len(rows)
    batch_size = bucket_size(n) if batch_size is None else batch_size
    if batch_size < n:
        raise ValueError(f"batch_size {batch_size} is smaller than the {n} rows to pad")
    v = dataset.visits
    longest = 0
    if n:
        longest = int(max(v.diag.lengths()[rows].max(), v.proc.lengths()[rows].max()))
    code_length = bucket_size(longest) if code_length is None else code_length
    if patient is None:
        _, first, inverse = np.unique(v.patient_id[rows], return_index=True, return_inverse=True)
        # Number patients by first appearance so the numbering follows the row order.
        rank = np.empty(len(first), dtype=np.int64)
        rank[np.argsort(first, kind="stable")] = np.arange(len(first))
        patient = rank[inverse]
    patient = np.asarray(patient, dtype=np.int32)
    if patient.shape != (n,):
        raise ValueError(f"patient must have shape ({n},), got {patient.shape}")

    def _pad_rows(x: np.ndarray, fill) -> np.ndarray:
        out = np.full((batch_size, *x.shape[1:]), fill, dtype=x.dtype)
        out[:n] = x
        return out

    diag, diag_mask = pad_ragged(v.diag, rows, code_length)
    proc, proc_mask = pad_ragged(v.proc, rows, code_length)
    return VisitBatch(
        diag=_pad_rows(diag, 0),
        diag_mask=_pad_rows(diag_mask, False),
        proc=_pad_rows(proc, 0),
        proc_mask=_pad_rows(proc_mask, False),
        meds=_pad_rows(v.med.multi_hot(dataset.num_meds, rows), False),
        patient=_pad_rows(patient, -1),
        row=_pad_rows(rows, -1),
        mask=_pad_rows(np.ones(n, dtype=bool), False),
    )


def iterate_visit_batches(
    dataset: Dataset,
    rows: np.ndarray,
    batch_size: int,
    *,
    seed: int | None = None,
    drop_remainder: bool = False,
) -> Iterator[VisitBatch]:
    """Yields fixed-size padded batches over ``rows`` (shuffled when ``seed`` is given).

    Every batch has ``batch_size`` rows (the last one padded unless ``drop_remainder``); code
    lengths are bucketed per batch. Patient numbers index the distinct patients of all ``rows``, so
    they are consistent across batches.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    rows = np.asarray(rows, dtype=np.int64)
    _, patient_all = np.unique(dataset.visits.patient_id[rows], return_inverse=True)
    order = np.arange(len(rows))
    if seed is not None:
        order = np.random.default_rng(seed).permutation(len(rows))
    stop = len(rows) - (len(rows) % batch_size if drop_remainder else 0)
    for start in range(0, stop, batch_size):
        take = order[start : start + batch_size]
        yield pad_visits(dataset, rows[take], batch_size=batch_size, patient=patient_all[take])
