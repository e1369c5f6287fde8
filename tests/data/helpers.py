"""Small random datasets for the data tests (independent of the synthetic cohort generator)."""

import numpy as np

from flame_jax.data import Dataset, RaggedIds, VisitTable, Vocabulary, cooccurrence_adjacency


def make_dataset(seed: int = 0, *, patients: int = 12, meds: int = 9, with_ddi: bool = True):
    rng = np.random.default_rng(seed)
    n_diag, n_proc = 15, 6
    pids, vids, vidx = [], [], []
    for p in range(patients):
        for k in range(int(rng.integers(1, 4))):
            pids.append(100 + p)
            vids.append(1000 + len(vids))
            vidx.append(k)
    n = len(pids)

    def sets(size, lo, hi):
        return [
            sorted(rng.choice(size, int(rng.integers(lo, hi)), replace=False)) for _ in range(n)
        ]

    ddi = None
    if with_ddi:
        upper = np.triu(rng.random((meds, meds)) < 0.3, 1)
        ddi = (upper | upper.T).astype(np.uint8)
    patient_ids = np.unique(pids)
    perm = rng.permutation(patient_ids)
    n_train = (2 * len(perm)) // 3
    n_val = (len(perm) - n_train) // 2
    splits = {
        "train": np.sort(perm[:n_train]),
        "val": np.sort(perm[n_train : n_train + n_val]),
        "test": np.sort(perm[n_train + n_val :]),
    }
    visits = VisitTable(
        patient_id=np.asarray(pids, np.int64),
        visit_id=np.asarray(vids, np.int64),
        visit_index=np.asarray(vidx, np.int32),
        admit_time=np.asarray([f"2100-01-{1 + k:02d} 08:00:00" for k in vidx], dtype=object),
        age=rng.integers(18, 90, n).astype(np.int32),
        gender=np.asarray(rng.choice(["F", "M"], n), dtype=object),
        diag=RaggedIds.from_lists(sets(n_diag, 1, 6)),
        proc=RaggedIds.from_lists(sets(n_proc, 0, 3)),
        med=RaggedIds.from_lists(sets(meds, 0, 6)),
    )
    train_rows = np.flatnonzero(np.isin(visits.patient_id, splits["train"]))
    return Dataset(
        name="random",
        source="tests",
        diag_vocab=Vocabulary(
            kind="diag",
            codes=tuple(f"D{i:03d}" for i in range(n_diag)),
            titles=tuple(f"diagnosis {i}" for i in range(n_diag)),
        ),
        proc_vocab=Vocabulary(
            kind="proc",
            codes=tuple(f"P{i:02d}" for i in range(n_proc)),
            titles=tuple(f"procedure {i}" for i in range(n_proc)),
        ),
        med_vocab=Vocabulary(
            kind="med",
            codes=tuple(f"M{i:02d}" for i in range(meds)),
            titles=tuple(f"Drug{i}" for i in range(meds)),
            smiles=tuple(("CCO",) for _ in range(meds)),
            synonyms=tuple(() for _ in range(meds)),
        ),
        visits=visits,
        splits=splits,
        ehr=cooccurrence_adjacency(visits.med, train_rows, meds),
        ddi=ddi,
        info={"seed": seed},
    )
