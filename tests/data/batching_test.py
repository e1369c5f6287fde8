"""Padding to buckets: masks recover exactly the unpadded visits."""

import numpy as np
import pytest

from flame_jax.data import bucket_size, iterate_visit_batches, pad_visits
from tests.data.helpers import make_dataset


def test_bucket_size():
    assert [bucket_size(n) for n in (0, 1, 8, 9, 16, 17, 100)] == [8, 8, 8, 16, 16, 32, 128]
    assert bucket_size(5, minimum=1) == 8 and bucket_size(1, minimum=1) == 1
    with pytest.raises(ValueError, match="n=-1"):
        bucket_size(-1)


@pytest.mark.parametrize("seed", [0, 1])
def test_pad_visits_masks_recover_lists(seed):
    ds = make_dataset(seed, patients=15)
    rows = np.random.default_rng(seed).permutation(len(ds.visits))[:11]
    batch = pad_visits(ds, rows)
    assert batch.mask.shape == (16,) and batch.mask.sum() == 11
    for b, row in enumerate(rows):
        assert batch.diag[b][batch.diag_mask[b]].tolist() == ds.visits.diag[row].tolist()
        assert batch.proc[b][batch.proc_mask[b]].tolist() == ds.visits.proc[row].tolist()
        assert np.flatnonzero(batch.meds[b]).tolist() == sorted(ds.visits.med[row].tolist())
        assert batch.row[b] == row
    pad = ~batch.mask
    assert not batch.meds[pad].any() and not batch.diag_mask[pad].any()
    assert (batch.patient[pad] == -1).all() and (batch.row[pad] == -1).all()
    assert (batch.diag[~batch.diag_mask] == 0).all()
    # Patient numbers: same patient <=> same number, numbered by first appearance.
    pids = ds.visits.patient_id[rows]
    for i in range(11):
        for j in range(11):
            assert (pids[i] == pids[j]) == (batch.patient[i] == batch.patient[j])
    assert batch.patient[0] == 0
    assert batch.diag.shape[1] == bucket_size(
        max(ds.visits.diag.lengths()[rows].max(), ds.visits.proc.lengths()[rows].max())
    )


def test_pad_visits_errors():
    ds = make_dataset(0)
    with pytest.raises(ValueError, match="batch_size 2 is smaller than the 3 rows"):
        pad_visits(ds, np.arange(3), batch_size=2)
    with pytest.raises(ValueError, match="more than the padded length 1"):
        pad_visits(ds, np.arange(len(ds.visits)), code_length=1)


@pytest.mark.parametrize("drop_remainder", [False, True])
def test_iterate_covers_rows_once(drop_remainder):
    ds = make_dataset(2, patients=20)
    rows = ds.split_rows("train")
    seen, patients = [], {}
    for batch in iterate_visit_batches(ds, rows, 8, seed=3, drop_remainder=drop_remainder):
        assert batch.mask.shape == (8,)
        seen.extend(batch.row[batch.mask].tolist())
        for r, p in zip(batch.row[batch.mask], batch.patient[batch.mask], strict=True):
            patients.setdefault(int(ds.visits.patient_id[r]), set()).add(int(p))
    expected = len(rows) - (len(rows) % 8 if drop_remainder else 0)
    assert len(seen) == len(set(seen)) == expected
    assert set(seen) <= set(rows.tolist())
    assert all(len(v) == 1 for v in patients.values())  # numbering consistent across batches
    a = [b.row for b in iterate_visit_batches(ds, rows, 8, seed=3)]
    b = [b.row for b in iterate_visit_batches(ds, rows, 8, seed=3)]
    assert all((x == y).all() for x, y in zip(a, b, strict=True))
