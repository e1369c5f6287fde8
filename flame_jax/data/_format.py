"""The flame_jax dataset format: one schema for every source (synthetic, MIMIC-III/IV, eICU).

A dataset is a folder of open formats (no pickles)::

    dataset.json     schema version, name, source, counts, provenance (free-form ``info``)
    vocab.json       {"diag": [{"code", "title"}], "proc": [...], "med": [{"code", "title",
                      "smiles": [...], "synonyms": [...]}]}; list position = index
    visits.parquet   one row per visit, sorted by (patient_id, visit_index): patient_id int64,
                     visit_id int64, visit_index int32 (0-based order within the patient),
                     admit_time string (ISO 8601 or ""), age int32 (-1 unknown), gender string
                     ("F", "M" or ""), diag / proc / med list<int32> (vocabulary indices, unique
                     within a visit)
    splits.json      {"train": [patient ids], "val": [...], "test": [...]}
    graphs.npz       "ehr": [meds, meds] uint8 co-prescription adjacency of the train split;
                     "ddi": [meds, meds] uint8 interaction adjacency, absent when the source has
                     no DDI table (DDI metrics then say "not available")

``load_dataset`` validates everything and raises :class:`DatasetError` naming the file, the field
and the offending value. ``save_dataset`` writes into a temporary folder and renames it, so a
failed write never leaves a half-written dataset behind.
"""

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from flame_jax import _io

__all__ = [
    "SCHEMA_VERSION",
    "SPLITS",
    "Dataset",
    "DatasetError",
    "RaggedIds",
    "VisitTable",
    "Vocabulary",
    "cooccurrence_adjacency",
    "load_dataset",
    "save_dataset",
]

SCHEMA_VERSION = 1
SPLITS = ("train", "val", "test")
_VOCAB_KINDS = ("diag", "proc", "med")


class DatasetError(ValueError):
    """A dataset folder is missing a file or holds inconsistent content; the message says where."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Vocabulary:
    """Index <-> code mapping for one kind of entity (diagnoses, procedures or medications).

    Attributes:
      kind: "diag", "proc" or "med".
      codes: the source codes (ICD codes, ATC-3, DrugBank IDs, synthetic ids), index order.
      titles: human-readable names, same order (drug names for medications).
      smiles: medications only: SMILES strings per drug (possibly several, possibly none).
      synonyms: medications only: extra names per drug that a list-editing model may write.
    """

    kind: str
    codes: tuple[str, ...]
    titles: tuple[str, ...]
    smiles: tuple[tuple[str, ...], ...] = ()
    synonyms: tuple[tuple[str, ...], ...] = ()

    def __post_init__(self):
        if self.kind not in _VOCAB_KINDS:
            raise ValueError(f"Vocabulary.kind must be one of {_VOCAB_KINDS}, got {self.kind!r}")
        if len(self.titles) != len(self.codes):
            raise ValueError(
                f"{self.kind} vocabulary: {len(self.codes)} codes but {len(self.titles)} titles"
            )
        for name, field in (("smiles", self.smiles), ("synonyms", self.synonyms)):
            if field and len(field) != len(self.codes):
                raise ValueError(
                    f"{self.kind} vocabulary: {len(self.codes)} codes but {len(field)} {name} "
                    "entries"
                )
        index: dict[str, int] = {}
        for i, code in enumerate(self.codes):
            if code in index:
                raise ValueError(
                    f"{self.kind} vocabulary: code {code!r} appears twice "
                    f"(indices {index[code]}, {i})"
                )
            index[code] = i
        object.__setattr__(self, "_index", index)

    def __len__(self) -> int:
        return len(self.codes)

    def index(self, code: str) -> int:
        """The index of ``code``; raises KeyError naming the vocabulary if it is unknown."""
        try:
            return self._index[code]  # type: ignore[attr-defined]
        except KeyError:
            raise KeyError(f"{self.kind} vocabulary has no code {code!r}") from None

    def to_json(self) -> list[dict[str, Any]]:
        rows = []
        for i, (code, title) in enumerate(zip(self.codes, self.titles, strict=True)):
            row: dict[str, Any] = {"code": code, "title": title}
            if self.kind == "med":
                row["smiles"] = list(self.smiles[i]) if self.smiles else []
                row["synonyms"] = list(self.synonyms[i]) if self.synonyms else []
            rows.append(row)
        return rows


@dataclasses.dataclass(frozen=True)
class RaggedIds:
    """Variable-length integer lists in CSR form: row i is ``values[offsets[i]:offsets[i+1]]``."""

    values: np.ndarray  # int32 [total]
    offsets: np.ndarray  # int64 [rows + 1]

    @classmethod
    def from_lists(cls, rows: Sequence[Any]) -> "RaggedIds":
        lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        values = (
            np.concatenate([np.asarray(r, dtype=np.int32) for r in rows])
            if len(rows) and offsets[-1]
            else np.zeros(0, np.int32)
        )
        return cls(values.astype(np.int32, copy=False), offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int | np.integer) -> np.ndarray:
        return self.values[self.offsets[i] : self.offsets[i + 1]]

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def row_ids(self) -> np.ndarray:
        """The row of every value, shape [total]."""
        return np.repeat(np.arange(len(self), dtype=np.int64), self.lengths())

    def to_lists(self) -> list[list[int]]:
        return [self[i].tolist() for i in range(len(self))]

    def take(self, rows: np.ndarray) -> "RaggedIds":
        return RaggedIds.from_lists([self[int(i)] for i in rows])

    def multi_hot(self, size: int, rows: np.ndarray | None = None) -> np.ndarray:
        """Bool [len(rows), size] indicator matrix (all rows when ``rows`` is None)."""
        rows = np.arange(len(self)) if rows is None else np.asarray(rows)
        out = np.zeros((len(rows), size), dtype=bool)
        for out_row, i in enumerate(rows):
            out[out_row, self[int(i)]] = True
        return out


@dataclasses.dataclass(frozen=True, kw_only=True)
class VisitTable:
    """All visits, one row each, sorted by (patient_id, visit_index)."""

    patient_id: np.ndarray  # int64 [visits]
    visit_id: np.ndarray  # int64 [visits]
    visit_index: np.ndarray  # int32 [visits]
    admit_time: np.ndarray  # object (str) [visits]
    age: np.ndarray  # int32 [visits], -1 unknown
    gender: np.ndarray  # object (str) [visits]: "F", "M" or ""
    diag: RaggedIds
    proc: RaggedIds
    med: RaggedIds

    def __len__(self) -> int:
        return len(self.patient_id)

    def take(self, rows: np.ndarray) -> "VisitTable":
        rows = np.asarray(rows, dtype=np.int64)
        return VisitTable(
            patient_id=self.patient_id[rows],
            visit_id=self.visit_id[rows],
            visit_index=self.visit_index[rows],
            admit_time=self.admit_time[rows],
            age=self.age[rows],
            gender=self.gender[rows],
            diag=self.diag.take(rows),
            proc=self.proc.take(rows),
            med=self.med.take(rows),
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class Dataset:
    """A validated dataset in memory (host-side NumPy; see the module docstring for the files).

    Attributes:
      name: short name ("synthetic", "mimic3", ...).
      source: where it came from, free text.
      diag_vocab, proc_vocab, med_vocab: the vocabularies.
      visits: the visit table.
      splits: split name -> sorted patient ids; every patient is in exactly one split.
      ehr: [meds, meds] uint8 co-prescription adjacency, counted on the train split only.
      ddi: [meds, meds] uint8 symmetric interaction adjacency with a zero diagonal, or None.
      info: free-form provenance (filters applied, generator parameters, ...), JSON-serialisable.
    """

    name: str
    source: str
    diag_vocab: Vocabulary
    proc_vocab: Vocabulary
    med_vocab: Vocabulary
    visits: VisitTable
    splits: Mapping[str, np.ndarray]
    ehr: np.ndarray
    ddi: np.ndarray | None
    info: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def num_meds(self) -> int:
        return len(self.med_vocab)

    @property
    def patients(self) -> np.ndarray:
        """Sorted unique patient ids."""
        return np.unique(self.visits.patient_id)

    def split_of_visit(self) -> np.ndarray:
        """Split name per visit row, object [visits]."""
        out = np.empty(len(self.visits), dtype=object)
        for name, pids in self.splits.items():
            out[np.isin(self.visits.patient_id, pids)] = name
        return out

    def split_rows(self, split: str) -> np.ndarray:
        """Visit rows (int64) of the patients in ``split``, in table order."""
        if split not in self.splits:
            raise KeyError(f"unknown split {split!r}; this dataset has {sorted(self.splits)}")
        return np.flatnonzero(np.isin(self.visits.patient_id, self.splits[split]))

    def statistics(self) -> dict[str, Any]:
        """Counts and averages a paper's dataset table reports (host-side, cheap)."""
        v = self.visits
        n_pat = len(self.patients)
        med_len = v.med.lengths()
        stats: dict[str, Any] = {
            "patients": int(n_pat),
            "visits": len(v),
            "visits_per_patient": float(len(v) / max(n_pat, 1)),
            "max_visits": int(v.visit_index.max() + 1) if len(v) else 0,
            "diag_codes": len(self.diag_vocab),
            "proc_codes": len(self.proc_vocab),
            "meds": self.num_meds,
            "diag_per_visit": float(v.diag.lengths().mean()) if len(v) else 0.0,
            "proc_per_visit": float(v.proc.lengths().mean()) if len(v) else 0.0,
            "meds_per_visit": float(med_len.mean()) if len(v) else 0.0,
            "max_meds_per_visit": int(med_len.max()) if len(v) else 0,
            "split_patients": {k: len(p) for k, p in self.splits.items()},
            "split_visits": {k: len(self.split_rows(k)) for k in self.splits},
            "ddi_pairs": None if self.ddi is None else int(np.triu(self.ddi, 1).sum()),
            "ddi_rate_truth": None,
        }
        if self.ddi is not None:
            bad = total = 0
            upper = np.triu(self.ddi > 0, 1)
            for i in range(len(v)):
                meds = np.sort(v.med[i])
                k = len(meds)
                total += k * (k - 1) // 2
                bad += int(upper[np.ix_(meds, meds)].sum())
            stats["ddi_rate_truth"] = bad / total if total else 0.0
        return stats


def cooccurrence_adjacency(med: RaggedIds, rows: np.ndarray, num_meds: int) -> np.ndarray:
    """[meds, meds] uint8: 1 where two drugs were prescribed together in one of ``rows``' visits."""
    adj = np.zeros((num_meds, num_meds), dtype=np.uint8)
    for i in rows:
        meds = med[int(i)]
        adj[np.ix_(meds, meds)] = 1
    np.fill_diagonal(adj, 0)
    return adj


# --------------------------------------------------------------------------------------------------
# Writing


def save_dataset(dataset: Dataset, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Validates ``dataset`` and writes it to the folder ``path`` atomically.

    Raises:
      DatasetError: the dataset is inconsistent (nothing is written).
      FileExistsError: ``path`` is a non-empty folder and ``overwrite`` is false.
    """
    _validate(dataset, where=str(path))
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    v = dataset.visits

    def _list_column(r: RaggedIds) -> pa.Array:
        return pa.ListArray.from_arrays(
            pa.array(r.offsets.astype(np.int32)), pa.array(r.values, type=pa.int32())
        )

    table = pa.table(
        {
            "patient_id": pa.array(v.patient_id, type=pa.int64()),
            "visit_id": pa.array(v.visit_id, type=pa.int64()),
            "visit_index": pa.array(v.visit_index, type=pa.int32()),
            "admit_time": pa.array([str(x) for x in v.admit_time], type=pa.string()),
            "age": pa.array(v.age, type=pa.int32()),
            "gender": pa.array([str(x) for x in v.gender], type=pa.string()),
            "diag": _list_column(v.diag),
            "proc": _list_column(v.proc),
            "med": _list_column(v.med),
        }
    )
    graphs = {"ehr": dataset.ehr.astype(np.uint8)}
    if dataset.ddi is not None:
        graphs["ddi"] = dataset.ddi.astype(np.uint8)
    meta = {
        "schema_version": SCHEMA_VERSION,
        "name": dataset.name,
        "source": dataset.source,
        "counts": {
            "patients": len(dataset.patients),
            "visits": len(v),
            "diag": len(dataset.diag_vocab),
            "proc": len(dataset.proc_vocab),
            "meds": dataset.num_meds,
        },
        "has_ddi": dataset.ddi is not None,
        "info": dict(dataset.info),
    }
    with _io.atomic_directory(path, overwrite=overwrite) as tmp:
        _io.write_json_atomic(tmp / "dataset.json", meta)
        _io.write_json_atomic(
            tmp / "vocab.json",
            {k: getattr(dataset, f"{k}_vocab").to_json() for k in _VOCAB_KINDS},
        )
        _io.write_json_atomic(
            tmp / "splits.json", {k: [int(p) for p in dataset.splits[k]] for k in dataset.splits}
        )
        pq.write_table(table, tmp / "visits.parquet", compression="zstd")
        _io.write_npz_atomic(tmp / "graphs.npz", graphs)
    return path


# --------------------------------------------------------------------------------------------------
# Reading and validation


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise DatasetError(f"{path}: missing")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DatasetError(f"{path}: not valid JSON ({e})") from None


def _parse_vocab(path: Path, kind: str, rows: Any) -> Vocabulary:
    if not isinstance(rows, list):
        raise DatasetError(f"{path}: field {kind!r} must be a list, got {type(rows).__name__}")
    codes, titles, smiles, synonyms = [], [], [], []
    for i, row in enumerate(rows):
        where = f"{path}: {kind}[{i}]"
        if not isinstance(row, dict):
            raise DatasetError(f"{where}: must be an object with 'code' and 'title'")
        for key in ("code", "title"):
            if not isinstance(row.get(key), str):
                raise DatasetError(f"{where}: field {key!r} must be a string, got {row.get(key)!r}")
        codes.append(row["code"])
        titles.append(row["title"])
        if kind == "med":
            for key, out in (("smiles", smiles), ("synonyms", synonyms)):
                val = row.get(key, [])
                if not isinstance(val, list) or not all(isinstance(s, str) for s in val):
                    raise DatasetError(f"{where}: field {key!r} must be a list of strings")
                out.append(tuple(val))
    try:
        return Vocabulary(
            kind=kind,
            codes=tuple(codes),
            titles=tuple(titles),
            smiles=tuple(smiles),
            synonyms=tuple(synonyms),
        )
    except ValueError as e:
        raise DatasetError(f"{path}: {e}") from None


def _ragged_from_arrow(column, path: Path, name: str) -> RaggedIds:
    import pyarrow as pa

    column = column.combine_chunks()
    if not pa.types.is_list(column.type) and not pa.types.is_large_list(column.type):
        raise DatasetError(f"{path}: column {name!r} must be a list of integers, got {column.type}")
    if column.null_count:
        raise DatasetError(f"{path}: column {name!r} has {column.null_count} null rows")
    if not pa.types.is_integer(column.type.value_type):
        raise DatasetError(f"{path}: column {name!r} must hold integers, got {column.type}")
    offsets = np.asarray(column.offsets, dtype=np.int64)
    values = np.asarray(column.values, dtype=np.int64)[offsets[0] : offsets[-1]]
    return RaggedIds(values.astype(np.int32), offsets - offsets[0])


def load_dataset(path: str | os.PathLike) -> Dataset:
    """Reads and validates a dataset folder.

    Raises:
      DatasetError: with the file, field and value at fault, e.g. an index out of range, an
        asymmetric DDI matrix, an unknown split or a patient in two splits.
    """
    import pyarrow.parquet as pq

    root = Path(path)
    if not root.is_dir():
        raise DatasetError(f"{root}: not a dataset folder (it does not exist or is a file)")
    meta = _read_json(root / "dataset.json")
    if not isinstance(meta, dict):
        raise DatasetError(f"{root / 'dataset.json'}: must be a JSON object")
    version = meta.get("schema_version")
    if version != SCHEMA_VERSION:
        raise DatasetError(
            f"{root / 'dataset.json'}: field 'schema_version' is {version!r}; this flame_jax reads "
            f"version {SCHEMA_VERSION}"
        )
    vocab_json = _read_json(root / "vocab.json")
    if not isinstance(vocab_json, dict):
        raise DatasetError(f"{root / 'vocab.json'}: must be a JSON object")
    vocabs = {}
    for kind in _VOCAB_KINDS:
        if kind not in vocab_json:
            raise DatasetError(f"{root / 'vocab.json'}: missing field {kind!r}")
        vocabs[kind] = _parse_vocab(root / "vocab.json", kind, vocab_json[kind])

    vpath = root / "visits.parquet"
    if not vpath.is_file():
        raise DatasetError(f"{vpath}: missing")
    try:
        table = pq.read_table(vpath)
    except Exception as e:  # pyarrow raises several types for corrupt files
        raise DatasetError(f"{vpath}: cannot be read as Parquet ({e})") from None
    required = ("patient_id", "visit_id", "visit_index", "age", "gender", "admit_time")
    for col in (*required, *_VOCAB_KINDS):
        if col not in table.column_names:
            raise DatasetError(f"{vpath}: missing column {col!r} (has {table.column_names})")

    def _ints(col: str, dtype) -> np.ndarray:
        c = table.column(col)
        if c.null_count:
            raise DatasetError(f"{vpath}: column {col!r} has {c.null_count} null values")
        try:
            return np.asarray(c.to_numpy(), dtype=dtype)
        except (TypeError, ValueError) as e:
            raise DatasetError(f"{vpath}: column {col!r} must be integer ({e})") from None

    visits = VisitTable(
        patient_id=_ints("patient_id", np.int64),
        visit_id=_ints("visit_id", np.int64),
        visit_index=_ints("visit_index", np.int32),
        admit_time=np.asarray(table.column("admit_time").to_pylist(), dtype=object),
        age=_ints("age", np.int32),
        gender=np.asarray(table.column("gender").to_pylist(), dtype=object),
        diag=_ragged_from_arrow(table.column("diag"), vpath, "diag"),
        proc=_ragged_from_arrow(table.column("proc"), vpath, "proc"),
        med=_ragged_from_arrow(table.column("med"), vpath, "med"),
    )

    splits_json = _read_json(root / "splits.json")
    if not isinstance(splits_json, dict):
        raise DatasetError(f"{root / 'splits.json'}: must be a JSON object")
    splits = {}
    order = {name: i for i, name in enumerate(SPLITS)}
    for name, pids in sorted(splits_json.items(), key=lambda kv: (order.get(kv[0], 99), kv[0])):
        if not isinstance(pids, list) or not all(
            isinstance(p, int) and not isinstance(p, bool) for p in pids
        ):
            raise DatasetError(f"{root / 'splits.json'}: split {name!r} must be a list of integers")
        splits[name] = np.asarray(sorted(pids), dtype=np.int64)

    gpath = root / "graphs.npz"
    if not gpath.is_file():
        raise DatasetError(f"{gpath}: missing")
    try:
        with np.load(gpath, allow_pickle=False) as npz:
            graphs = {k: npz[k] for k in npz.files}
    except Exception as e:  # zipfile / format errors
        raise DatasetError(f"{gpath}: cannot be read as .npz ({e})") from None
    if "ehr" not in graphs:
        raise DatasetError(f"{gpath}: missing array 'ehr'")
    if meta.get("has_ddi") and "ddi" not in graphs:
        raise DatasetError(f"{gpath}: dataset.json says has_ddi but there is no array 'ddi'")

    info = meta.get("info", {})
    dataset = Dataset(
        name=str(meta.get("name", root.name)),
        source=str(meta.get("source", "")),
        diag_vocab=vocabs["diag"],
        proc_vocab=vocabs["proc"],
        med_vocab=vocabs["med"],
        visits=visits,
        splits=splits,
        ehr=graphs["ehr"],
        ddi=graphs.get("ddi"),
        info=info if isinstance(info, dict) else {},
    )
    _validate(dataset, where=str(root))
    return dataset


def _validate(ds: Dataset, *, where: str) -> None:
    """Raises DatasetError describing the first inconsistency found in ``ds``."""
    v = ds.visits
    vfile = f"{where}/visits.parquet"
    n = len(v)
    for field in ("visit_id", "visit_index", "admit_time", "age", "gender"):
        if len(getattr(v, field)) != n:
            raise DatasetError(
                f"{vfile}: column {field!r} has {len(getattr(v, field))} rows, not {n}"
            )
    for kind in _VOCAB_KINDS:
        ragged: RaggedIds = getattr(v, kind)
        size = len(getattr(ds, f"{kind}_vocab"))
        if len(ragged) != n:
            raise DatasetError(f"{vfile}: column {kind!r} has {len(ragged)} rows, not {n}")
        bad = np.flatnonzero((ragged.values < 0) | (ragged.values >= size))
        if bad.size:
            row = int(ragged.row_ids()[bad[0]])
            raise DatasetError(
                f"{vfile}: column {kind!r}, visit_id {int(v.visit_id[row])} (row {row}): index "
                f"{int(ragged.values[bad[0]])} out of range [0, {size}) of the {kind} vocabulary"
            )
        keys = np.sort(ragged.row_ids() * max(size, 1) + ragged.values)
        dup = np.flatnonzero(keys[1:] == keys[:-1])
        if dup.size:
            row = int(keys[dup[0]] // max(size, 1))
            raise DatasetError(
                f"{vfile}: column {kind!r}, visit_id {int(v.visit_id[row])} (row {row}): "
                f"repeated index in {ragged[row].tolist()}"
            )
    if n:
        order = np.lexsort((v.visit_index, v.patient_id))
        if not np.array_equal(order, np.arange(n)):
            row = int(np.flatnonzero(order != np.arange(n))[0])
            raise DatasetError(
                f"{vfile}: rows must be sorted by (patient_id, visit_index); row {row} "
                f"(patient_id {int(v.patient_id[row])}) is out of order"
            )
        starts = np.r_[True, v.patient_id[1:] != v.patient_id[:-1]]
        expected = np.arange(n) - np.maximum.accumulate(np.where(starts, np.arange(n), 0))
        if not np.array_equal(v.visit_index, expected):
            row = int(np.flatnonzero(v.visit_index != expected)[0])
            raise DatasetError(
                f"{vfile}: column 'visit_index' must count 0, 1, ... within each patient; "
                f"row {row} "
                f"(patient_id {int(v.patient_id[row])}) has {int(v.visit_index[row])}, expected "
                f"{int(expected[row])}"
            )
        uniq, counts = np.unique(v.visit_id, return_counts=True)
        if (counts > 1).any():
            raise DatasetError(f"{vfile}: visit_id {int(uniq[counts > 1][0])} appears twice")
        bad_gender = sorted({str(g) for g in v.gender} - {"F", "M", ""})
        if bad_gender:
            raise DatasetError(
                f"{vfile}: column 'gender' has value {bad_gender[0]!r}; use F, M or ''"
            )

    sfile = f"{where}/splits.json"
    unknown = sorted(set(ds.splits) - set(SPLITS))
    if unknown:
        raise DatasetError(f"{sfile}: unknown split {unknown[0]!r}; splits are {list(SPLITS)}")
    patients = np.unique(v.patient_id)
    seen: dict[int, str] = {}
    for name in (s for s in SPLITS if s in ds.splits):
        for p in np.asarray(ds.splits[name]).tolist():
            if p in seen:
                raise DatasetError(f"{sfile}: patient {p} is in both {seen[p]!r} and {name!r}")
            seen[p] = name
    missing = np.setdiff1d(patients, np.fromiter(seen, dtype=np.int64, count=len(seen)))
    if missing.size:
        raise DatasetError(f"{sfile}: patient {int(missing[0])} has visits but is in no split")
    extra = np.setdiff1d(np.fromiter(seen, dtype=np.int64, count=len(seen)), patients)
    if extra.size:
        raise DatasetError(
            f"{sfile}: patient {int(extra[0])} ({seen[int(extra[0])]!r}) has no visits"
        )

    gfile = f"{where}/graphs.npz"
    m = ds.num_meds
    graphs = {"ehr": ds.ehr} if ds.ddi is None else {"ehr": ds.ehr, "ddi": ds.ddi}
    for name, adj in graphs.items():
        adj = np.asarray(adj)
        if adj.shape != (m, m):
            raise DatasetError(
                f"{gfile}: array {name!r} has shape {adj.shape}, expected ({m}, {m})"
            )
        if not np.isin(adj, (0, 1)).all():
            raise DatasetError(f"{gfile}: array {name!r} must hold only 0 and 1")
        asym = np.argwhere(adj != adj.T)
        if asym.size:
            i, j = (int(x) for x in asym[0])
            raise DatasetError(
                f"{gfile}: array {name!r} is asymmetric at ({i}, {j}): {int(adj[i, j])} vs "
                f"{int(adj[j, i])} ({ds.med_vocab.titles[i]!r}, {ds.med_vocab.titles[j]!r})"
            )
        if np.diagonal(adj).any():
            i = int(np.flatnonzero(np.diagonal(adj))[0])
            raise DatasetError(f"{gfile}: array {name!r} has a self-loop at drug {i}")
    if ds.med_vocab.smiles and len(ds.med_vocab.smiles) != m:
        raise DatasetError(f"{where}/vocab.json: med smiles has {len(ds.med_vocab.smiles)} rows")
