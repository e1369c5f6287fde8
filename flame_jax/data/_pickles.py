"""Importing the SafeDrug / GAMENet / MoleRec pickles into a :class:`Dataset`.

The files are read with :func:`~flame_jax.data._unpickler.safe_load`, which runs no code and
rebuilds NumPy arrays from checked parts (its docstring lists what is accepted). What the data
describes is bounded by the files too: ``records_final.pkl`` may hold at most 4 codes per byte of
the file + 1 Mi (a list repeated by reference costs a few bytes however long it is), and
``med_voc`` at most 20,000 drugs (the interaction and co-occurrence graphs are dense [meds, meds]
matrices). Running out of memory or recursion depth on a file's content is a refusal naming it.
"""

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from flame_jax import _io
from flame_jax.data._format import (
    Dataset,
    DatasetError,
    RaggedIds,
    VisitTable,
    Vocabulary,
    cooccurrence_adjacency,
    save_dataset,
)
from flame_jax.data._unpickler import (
    _MEMORY_SLACK,
    _RESOURCE_ERRORS,
    PickleRefusedError,
    safe_load,
)

__all__ = ["PICKLE_FILES", "import_pickles", "read_pickles"]

PICKLE_FILES = (
    "records_final.pkl",
    "voc_final.pkl",
    "ddi_A_final.pkl",
    "ehr_adj_final.pkl",
    "atc3toSMILES.pkl",
    "ddi_mask_H.pkl",
)
_IDS_PER_BYTE = 4  # a pickled code takes at least 2 bytes (BININT1); shared lists take fewer
_MAX_MEDS = 20_000  # the dense [meds, meds] graphs: 400 MB of uint8 at most (SafeDrug has 131)


def _load_file(path: Path) -> Any:
    return safe_load(path.read_bytes(), where=str(path))


@contextlib.contextmanager
def _refusing(where: str) -> Iterator[None]:
    """Running out of memory or recursion depth on a file's content is a refusal naming it."""
    try:
        yield
    except _RESOURCE_ERRORS as e:
        raise PickleRefusedError(
            f"{where}: refused: too deeply nested or too large to use ({type(e).__name__})"
        ) from None


def _vocab_words(obj: Any, where: str, key: str) -> list[str]:
    """idx -> word of a Voc-like object (attribute or dict) as a list in index order."""
    idx2word = obj.get("idx2word") if isinstance(obj, Mapping) else getattr(obj, "idx2word", None)
    if not isinstance(idx2word, Mapping):
        raise DatasetError(f"{where}: {key!r} has no idx2word mapping")
    n = len(idx2word)
    words = []
    for i in range(n):
        if i not in idx2word:
            raise DatasetError(f"{where}: {key!r}.idx2word lacks index {i} (has {n} entries)")
        word = idx2word[i]
        if not isinstance(word, str | int | np.integer):
            raise DatasetError(
                f"{where}: {key!r}.idx2word[{i}] is a {type(word).__name__}, expected a code"
            )
        words.append(str(word))
    return words


def _matrix(value: Any, where: str, m: int) -> np.ndarray:
    try:
        adj = np.asarray(value)
        numbers = adj.astype(np.float64)
    except (TypeError, ValueError) as e:
        raise DatasetError(f"{where}: not a numeric matrix ({type(e).__name__})") from None
    if adj.shape != (m, m):
        raise DatasetError(f"{where}: shape {adj.shape}, expected ({m}, {m}) for {m} drugs")
    if not np.isfinite(numbers).all():
        raise DatasetError(f"{where}: holds non-finite values")
    out = (adj != 0).astype(np.uint8)
    out = np.maximum(out, out.T)
    np.fill_diagonal(out, 0)
    return out


def _visits(
    records: Any, where: str, words: dict[str, list[str]], keys: dict[str, str], max_ids: int
) -> tuple[list[int], list[int], dict[str, list[list[int]]]]:
    """Patient ids (1..P), visit indices and per-kind id lists of ``records_final.pkl``.

    At most ``max_ids`` ids in all: a pickle may reference one list many times (a few bytes each),
    so a small file can describe far more codes than it holds; such a file is refused.
    """
    pids, vidx, lists = [], [], {k: [] for k in keys}
    total = 0
    for p, patient in enumerate(records):
        if not isinstance(patient, Sequence | np.ndarray) or not len(patient):
            raise DatasetError(f"{where}: patient {p} must be a non-empty list of visits")
        for v, visit in enumerate(patient):
            if not isinstance(visit, Sequence | np.ndarray) or len(visit) < 3:
                raise DatasetError(
                    f"{where}: patient {p}, visit {v} must be [diag ids, proc ids, med ids, ...]"
                )
            for kind, ids in zip(keys, visit[:3], strict=True):
                try:
                    arr = [int(i) for i in ids]
                except (TypeError, ValueError):
                    raise DatasetError(
                        f"{where}: patient {p}, visit {v}, {kind}: not a list of integers"
                    ) from None
                total += len(arr) + 1
                if total > max_ids:
                    raise DatasetError(
                        f"{where}: refuses more than {max_ids} codes from a file of this size "
                        f"({_IDS_PER_BYTE} per byte + 1 Mi: lists repeated by reference?)"
                    )
                size = len(words[kind])
                bad = [i for i in arr if not 0 <= i < size]
                if bad:
                    raise DatasetError(
                        f"{where}: patient {p}, visit {v}, {kind}: index {bad[0]} out of range "
                        f"[0, {size}) of {keys[kind]}"
                    )
                lists[kind].append(list(dict.fromkeys(arr)))
            pids.append(p + 1)
            vidx.append(v)
    return pids, vidx, lists


def _smiles(smiles: Mapping, code: str, where: str) -> tuple[str, ...]:
    """The SMILES strings of one drug code in ``atc3toSMILES.pkl`` (none when absent)."""
    entries = smiles.get(code)
    if entries is None:
        return ()
    if not isinstance(entries, list | tuple | set | frozenset):
        raise DatasetError(f"{where}: {code!r} maps to a {type(entries).__name__}, not a list")
    for entry in entries:
        if not isinstance(entry, str):
            raise DatasetError(
                f"{where}: {code!r} lists a {type(entry).__name__}, expected SMILES strings"
            )
    return tuple(entries)


def read_pickles(
    folder: str | os.PathLike, *, split: str = "safedrug", seed: int | np.integer = 0
) -> tuple[Dataset, dict[str, np.ndarray]]:
    """Reads the standard pickles in ``folder`` into a :class:`Dataset` (nothing is written).

    ``records_final.pkl`` (patients -> visits -> [diag ids, proc ids, med ids, ...]) and
    ``voc_final.pkl`` ({"diag_voc", "pro_voc", "med_voc"}) are required; ``ddi_A_final.pkl``,
    ``atc3toSMILES.pkl``, ``ehr_adj_final.pkl`` and ``ddi_mask_H.pkl`` are optional. Patients
    get ids 1..P in file order (so the SafeDrug split is the original one); visits have no dates
    or demographics. The EHR graph is recomputed on the train split (the pickle's covers every
    patient); the pickle's is checked for shape only.

    Returns:
      ``(dataset, extras)``: extras holds ``ddi_mask_H`` when present.

    Raises:
      PickleRefusedError: a pickle is hostile (nothing is returned).
      DatasetError: a file is missing or inconsistent (index out of range, wrong shape, ...).
    """
    from flame_jax.data._ingest import split_patients

    folder = Path(folder)
    for name in PICKLE_FILES[:2]:
        if not (folder / name).is_file():
            raise DatasetError(f"{folder / name}: missing (needed to import the pickles)")
    loaded = {n: _load_file(folder / n) for n in PICKLE_FILES if (folder / n).is_file()}
    rpath, vpath = folder / "records_final.pkl", folder / "voc_final.pkl"
    voc = loaded["voc_final.pkl"]
    if not isinstance(voc, Mapping):
        raise DatasetError(f"{vpath}: must be a dict of vocabularies, got {type(voc).__name__}")
    keys = {"diag": "diag_voc", "proc": "pro_voc", "med": "med_voc"}
    words = {}
    with _refusing(str(vpath)):
        for kind, key in keys.items():
            if key not in voc:
                names = sorted(k for k in voc if isinstance(k, str))
                raise DatasetError(f"{vpath}: missing {key!r} (has {names})")
            words[kind] = _vocab_words(voc[key], str(vpath), key)

    records = loaded["records_final.pkl"]
    if not isinstance(records, Sequence | np.ndarray):
        raise DatasetError(f"{rpath}: must be a list of patients, got {type(records).__name__}")
    with _refusing(str(rpath)):
        max_ids = _IDS_PER_BYTE * rpath.stat().st_size + _MEMORY_SLACK
        pids, vidx, lists = _visits(records, str(rpath), words, keys, max_ids)
    n = len(pids)
    if not n:
        raise DatasetError(f"{rpath}: no visits")
    m = len(words["med"])
    if m > _MAX_MEDS:
        raise DatasetError(
            f"{vpath}: 'med_voc' has {m} drugs; at most {_MAX_MEDS} are read (the [meds, meds] "
            "interaction and co-occurrence graphs are dense)"
        )
    spath = folder / "atc3toSMILES.pkl"
    smiles = loaded.get("atc3toSMILES.pkl", {})
    if not isinstance(smiles, Mapping):
        raise DatasetError(f"{spath}: must be a dict code -> SMILES list")
    with _refusing(str(spath)):
        med_smiles = tuple(_smiles(smiles, code, str(spath)) for code in words["med"])
    ddi = None
    if "ddi_A_final.pkl" in loaded:
        with _refusing(str(folder / "ddi_A_final.pkl")):
            ddi = _matrix(loaded["ddi_A_final.pkl"], str(folder / "ddi_A_final.pkl"), m)
    if "ehr_adj_final.pkl" in loaded:
        with _refusing(str(folder / "ehr_adj_final.pkl")):
            _matrix(loaded["ehr_adj_final.pkl"], str(folder / "ehr_adj_final.pkl"), m)
    extras = {}
    if "ddi_mask_H.pkl" in loaded:
        hpath = folder / "ddi_mask_H.pkl"
        with _refusing(str(hpath)):
            try:
                mask = np.asarray(loaded["ddi_mask_H.pkl"])
                extras["ddi_mask_H"] = (mask != 0).astype(np.uint8)
            except (TypeError, ValueError) as e:
                raise DatasetError(f"{hpath}: not a numeric matrix ({type(e).__name__})") from None
        if mask.ndim != 2 or mask.shape[0] != m:
            raise DatasetError(f"{hpath}: shape {mask.shape}, expected ({m}, fragments)")

    patient_id = np.asarray(pids, np.int64)
    visits = VisitTable(
        patient_id=patient_id,
        visit_id=np.arange(1, n + 1, dtype=np.int64),
        visit_index=np.asarray(vidx, np.int32),
        admit_time=np.full(n, "", dtype=object),
        age=np.full(n, -1, np.int32),
        gender=np.full(n, "", dtype=object),
        diag=RaggedIds.from_lists(lists["diag"]),
        proc=RaggedIds.from_lists(lists["proc"]),
        med=RaggedIds.from_lists(lists["med"]),
    )
    splits = split_patients(np.unique(patient_id), split, seed=seed)
    train_rows = np.flatnonzero(np.isin(patient_id, splits["train"]))

    def vocab(kind: str) -> Vocabulary:
        codes = tuple(words[kind])
        extra = {}
        if kind == "med":
            extra = {
                "smiles": med_smiles,
                "synonyms": tuple(() for _ in codes),
            }
        return Vocabulary(kind=kind, codes=codes, titles=codes, **extra)

    dataset = Dataset(
        name="pickles",
        source=f"SafeDrug/GAMENet pickles ({folder.name})",
        diag_vocab=vocab("diag"),
        proc_vocab=vocab("proc"),
        med_vocab=vocab("med"),
        visits=visits,
        splits=splits,
        ehr=cooccurrence_adjacency(visits.med, train_rows, m),
        ddi=ddi,
        info={
            "import_pickles": {
                "files": sorted(loaded),
                "split": split,
                "seed": seed,
                "ehr": "recomputed on the train split",
            }
        },
    )
    return dataset, extras


def import_pickles(
    folder: str | os.PathLike,
    out: str | os.PathLike,
    *,
    split: str = "safedrug",
    seed: int | np.integer = 0,
    overwrite: bool = False,
) -> Dataset:
    """Reads the pickles in ``folder`` (:func:`read_pickles`) and writes the dataset to ``out``
    (plus ``extras.npz`` with ``ddi_mask_H`` when present), all or nothing.

    Raises:
      PickleRefusedError, DatasetError: as :func:`read_pickles`; nothing is written.
      FileExistsError: ``out`` is not empty and ``overwrite`` is false.
    """
    out = Path(out)
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(
            f"{out}: folder exists and is not empty (pass overwrite to replace it)"
        )
    dataset, extras = read_pickles(folder, split=split, seed=seed)
    with _io.atomic_directory(out, overwrite=overwrite) as tmp:
        save_dataset(dataset, tmp, overwrite=True)
        if extras:
            _io.write_npz_atomic(tmp / "extras.npz", extras)
    return dataset
