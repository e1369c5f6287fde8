"""Importing the SafeDrug / GAMENet / MoleRec pickles through a restricted unpickler.

Pickles from other projects are untrusted: unpickling calls whatever globals the file names.
:func:`safe_load` allows only what these files need and calls nothing else:

* plain containers and scalars (pickle opcodes, no globals), ``collections.OrderedDict`` and
  ``collections.defaultdict`` (with a list / set / dict / int factory);
* NumPy arrays and scalars (``_reconstruct``, ``_frombuffer``, ``scalar``, ``ndarray``,
  ``dtype``; dill's ``_create_array`` over NumPy's own ``_reconstruct`` only; protocol 2's
  ``_codecs.encode(text, "latin1")`` only);
* dill's by-value class of ``voc_final.pkl`` (a ``Voc`` defined in ``__main__``). dill writes the
  class as ``_create_type(_load_type('type'), 'Voc', (object,), {..., '__init__':
  _create_function(_create_code(...), ...)})`` followed by ``builtins.setattr``. Here
  ``_create_type`` returns a fresh data-only class that ignores the pickled namespace,
  ``_load_type``, ``_create_function`` and ``_create_code`` return inert placeholders (no code
  object is ever built, no builtin type is handed out), and ``setattr`` is a no-op. Instances
  then get only their attribute dict (``idx2word``, ``word2idx``); calling a placeholder is
  refused.

Anything else (``os.system``, ``builtins.eval``, ``subprocess``, an unknown class) raises
:class:`PickleRefusedError` naming the file and the global, before it is imported.
"""

import io
import os
import pickle
from collections import OrderedDict, defaultdict
from collections.abc import Mapping, Sequence
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

__all__ = ["PICKLE_FILES", "PickleRefusedError", "import_pickles", "read_pickles", "safe_load"]

PICKLE_FILES = (
    "records_final.pkl",
    "voc_final.pkl",
    "ddi_A_final.pkl",
    "ehr_adj_final.pkl",
    "atc3toSMILES.pkl",
    "ddi_mask_H.pkl",
)


class PickleRefusedError(DatasetError):
    """A pickle names a global outside the allowlist, or tries to call pickled code."""


class _Inert:
    """Stands in for a function or code object of a dill pickle; it can never be called."""

    def __init__(self, kind: str, name: str = "", where: str = ""):
        self.kind, self.name, self.where = kind, name, where

    def __setstate__(self, state: Any) -> None:  # dill BUILDs function attributes: ignored
        pass

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise PickleRefusedError(
            f"{self.where}: the pickle tries to call a {self.kind} it defines "
            f"({self.name or 'anonymous'}); pickled code is never run"
        )

    def __repr__(self) -> str:
        return f"<inert {self.kind} {self.name}>"


class PickledObject:
    """Base of the data-only classes that replace classes pickled by value (dill's ``Voc``)."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {sorted(vars(self))}>"


_LOADABLE_TYPES = ("type", "object")
_FACTORIES = (list, set, dict, int)


def _numpy_globals() -> dict[tuple[str, str], Any]:

    out = {}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        out[(mod, "_reconstruct")] = np._core.multiarray._reconstruct
        out[(mod, "scalar")] = np._core.multiarray.scalar
    for mod in ("numpy.core.numeric", "numpy._core.numeric"):
        out[(mod, "_frombuffer")] = np._core.numeric._frombuffer
    out[("numpy", "ndarray")] = np.ndarray
    out[("numpy", "dtype")] = np.dtype
    for name in ("Float64DType", "Int64DType", "Float32DType", "Int32DType", "BoolDType"):
        if hasattr(np.dtypes, name):
            out[("numpy.dtypes", name)] = getattr(np.dtypes, name)
    return out


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: Any, where: str):
        super().__init__(file)
        self.where = where
        self.allowed = _numpy_globals()
        where_ = where

        def load_type(name: str) -> _Inert:
            # Only the metaclass and base of a by-value class, which create_type ignores; the
            # real builtins never leave the unpickler.
            if name not in _LOADABLE_TYPES:
                raise PickleRefusedError(f"{where_}: refuses dill._dill._load_type({name!r})")
            return _Inert("builtin type", name, where_)

        def create_type(metaclass: Any, name: Any, bases: Any, namespace: Any) -> type:
            return type(str(name), (PickledObject,), {"__module__": "flame_jax.pickled"})

        def create_function(code: Any, globs: Any, name: Any = "", *args: Any) -> _Inert:
            return _Inert("function", str(name), where_)

        def create_code(*args: Any) -> _Inert:
            return _Inert("code object", "", where_)

        def create_cell(*args: Any) -> _Inert:
            return _Inert("cell", "", where_)

        def setattr_(obj: Any, name: Any, value: Any) -> None:
            if not (isinstance(obj, type) and issubclass(obj, PickledObject)):
                raise PickleRefusedError(
                    f"{where_}: refuses builtins.setattr on {type(obj).__name__} ({name!r})"
                )

        def default_dict(factory: Any = None, *args: Any) -> defaultdict:
            if factory is not None and factory not in _FACTORIES:
                raise PickleRefusedError(f"{where_}: refuses defaultdict factory {factory!r}")
            return defaultdict(factory, *args)

        reconstruct = np._core.multiarray._reconstruct

        def create_array(f: Any, args: Any, state: Any, npdict: Any = None) -> np.ndarray:
            # dill's ndarray: f(*args) then __setstate__; only NumPy's own reconstructor.
            if f is not reconstruct or npdict:
                raise PickleRefusedError(f"{where_}: refuses dill._dill._create_array({f!r})")
            array = reconstruct(*args)
            array.__setstate__(state)
            return array

        def create_dtypemeta(scalar_type: Any = None) -> type:
            if scalar_type is None or not isinstance(scalar_type, type):
                raise PickleRefusedError(f"{where_}: refuses dill._dill._create_dtypemeta")
            return type(np.dtype(scalar_type))

        for dill_mod in ("dill._dill", "dill.dill"):
            self.allowed[(dill_mod, "_create_array")] = create_array
            self.allowed[(dill_mod, "_create_dtypemeta")] = create_dtypemeta
            self.allowed[(dill_mod, "_load_type")] = load_type
            self.allowed[(dill_mod, "_create_type")] = create_type
            self.allowed[(dill_mod, "_create_function")] = create_function
            self.allowed[(dill_mod, "_create_code")] = create_code
            self.allowed[(dill_mod, "_create_cell")] = create_cell
        for builtins in ("builtins", "__builtin__"):
            self.allowed[(builtins, "setattr")] = setattr_
            self.allowed[(builtins, "__main__")] = {}  # dill's globals of a __main__ function
            for factory in _FACTORIES:
                self.allowed[(builtins, factory.__name__)] = factory
            self.allowed[(builtins, "frozenset")] = frozenset

        def latin1(text: Any, encoding: Any = "utf-8", *args: Any) -> bytes:
            # Protocol-2 pickles of NumPy arrays carry their bytes as latin-1 text.
            if not isinstance(text, str) or str(encoding).lower() not in ("latin1", "latin-1"):
                raise PickleRefusedError(f"{where_}: refuses _codecs.encode(..., {encoding!r})")
            return text.encode("latin1")

        self.allowed[("_codecs", "encode")] = latin1
        self.allowed[("collections", "OrderedDict")] = OrderedDict
        self.allowed[("collections", "defaultdict")] = default_dict

    def find_class(self, module: str, name: str) -> Any:
        if name == "__dict__":
            return {}  # dill's globals of a pickled function: an empty namespace, nothing imported
        try:
            value = self.allowed[(module, name)]
        except KeyError:
            raise PickleRefusedError(
                f"{self.where}: refuses to load global {module}.{name} (only NumPy arrays, "
                "plain containers and vocabulary objects are allowed)"
            ) from None
        if isinstance(value, dict):
            return {}  # a fresh empty namespace each time
        return value

    def persistent_load(self, pid: Any) -> Any:
        raise PickleRefusedError(f"{self.where}: refuses persistent id {pid!r}")


def safe_load(data: bytes, *, where: str = "pickle") -> Any:
    """Unpickles ``data`` with the allowlist of the module docstring.

    Raises:
      PickleRefusedError: a disallowed global (named in the message), or pickled code is called.
      DatasetError: the bytes are not a valid pickle.

    Examples:
      >>> import pickle
      >>> safe_load(pickle.dumps({"a": [1, 2]}))
      {'a': [1, 2]}
      >>> safe_load(pickle.dumps(print), where="x.pkl")  # doctest: +ELLIPSIS
      Traceback (most recent call last):
      ...
      flame_jax.data._pickles.PickleRefusedError: x.pkl: refuses to load global builtins.print ...
    """
    try:
        return _RestrictedUnpickler(io.BytesIO(data), where).load()
    except PickleRefusedError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError,
            AttributeError, KeyError) as e:  # fmt: skip
        raise DatasetError(f"{where}: not a readable pickle ({type(e).__name__}: {e})") from None


def _load_file(path: Path) -> Any:
    return safe_load(path.read_bytes(), where=str(path))


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
        words.append(str(idx2word[i]))
    return words


def _matrix(value: Any, where: str, m: int) -> np.ndarray:
    adj = np.asarray(value)
    if adj.shape != (m, m):
        raise DatasetError(f"{where}: shape {adj.shape}, expected ({m}, {m}) for {m} drugs")
    if not np.isfinite(adj.astype(np.float64)).all():
        raise DatasetError(f"{where}: holds non-finite values")
    out = (adj != 0).astype(np.uint8)
    out = np.maximum(out, out.T)
    np.fill_diagonal(out, 0)
    return out


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
    for kind, key in keys.items():
        if key not in voc:
            raise DatasetError(f"{vpath}: missing {key!r} (has {sorted(map(str, voc))})")
        words[kind] = _vocab_words(voc[key], str(vpath), key)

    records = loaded["records_final.pkl"]
    if not isinstance(records, Sequence | np.ndarray):
        raise DatasetError(f"{rpath}: must be a list of patients, got {type(records).__name__}")
    pids, vidx, lists = [], [], {k: [] for k in keys}
    for p, patient in enumerate(records):
        if not isinstance(patient, Sequence | np.ndarray) or not len(patient):
            raise DatasetError(f"{rpath}: patient {p} must be a non-empty list of visits")
        for v, visit in enumerate(patient):
            if not isinstance(visit, Sequence | np.ndarray) or len(visit) < 3:
                raise DatasetError(
                    f"{rpath}: patient {p}, visit {v} must be [diag ids, proc ids, med ids, ...]"
                )
            for kind, ids in zip(keys, visit[:3], strict=True):
                try:
                    arr = [int(i) for i in ids]
                except (TypeError, ValueError):
                    raise DatasetError(
                        f"{rpath}: patient {p}, visit {v}, {kind}: not a list of integers"
                    ) from None
                size = len(words[kind])
                bad = [i for i in arr if not 0 <= i < size]
                if bad:
                    raise DatasetError(
                        f"{rpath}: patient {p}, visit {v}, {kind}: index {bad[0]} out of range "
                        f"[0, {size}) of {keys[kind]}"
                    )
                lists[kind].append(list(dict.fromkeys(arr)))
            pids.append(p + 1)
            vidx.append(v)
    n = len(pids)
    if not n:
        raise DatasetError(f"{rpath}: no visits")
    m = len(words["med"])
    smiles = loaded.get("atc3toSMILES.pkl", {})
    if not isinstance(smiles, Mapping):
        raise DatasetError(f"{folder / 'atc3toSMILES.pkl'}: must be a dict code -> SMILES list")
    ddi = None
    if "ddi_A_final.pkl" in loaded:
        ddi = _matrix(loaded["ddi_A_final.pkl"], str(folder / "ddi_A_final.pkl"), m)
    if "ehr_adj_final.pkl" in loaded:
        _matrix(loaded["ehr_adj_final.pkl"], str(folder / "ehr_adj_final.pkl"), m)
    extras = {}
    if "ddi_mask_H.pkl" in loaded:
        mask = np.asarray(loaded["ddi_mask_H.pkl"])
        if mask.ndim != 2 or mask.shape[0] != m:
            raise DatasetError(
                f"{folder / 'ddi_mask_H.pkl'}: shape {mask.shape}, expected ({m}, fragments)"
            )
        extras["ddi_mask_H"] = (mask != 0).astype(np.uint8)

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
                "smiles": tuple(tuple(str(s) for s in smiles.get(c, ()) or ()) for c in codes),
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
