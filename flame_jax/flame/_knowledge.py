"""The frozen external tables of knowledge fusion, built from baselines fitted on train only.

FLAME (spec §7) fuses three kinds of outside knowledge into its prompts. Here every table comes
from the project's own baselines (``flame_jax.baselines``), each fitted on the train split only
(their exports say so: ``fit_split: "train"``), so no test label leaks into a prompt:

* patient ("collaborative information", RAREMed's role): per visit, the GAMENet-style model's
  patient query vector concatenated with its per-drug logits ``log(p / (1 - p))``;
* diagnosis and procedure codes (MICRON's role): the logistic-regression baseline's weights of the
  code over the drugs (column ``c`` of ``W``: how the code moves each drug's logit);
* drugs (Mole-BERT's role): the GAMENet drug memory row concatenated with the SafeDrug
  molecular (MPNN over the drug's SMILES) embedding.

Each table is standardised per column, ``(x - mean) / (std + 1e-6)``; the patient table's
statistics come from the train visits only.
"""

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from jaxtyping import Float

from flame_jax._io import write_npz_atomic
from flame_jax.data import Dataset

__all__ = ["TABLE_NAMES", "knowledge_tables", "load_tables", "save_tables", "standardize"]

TABLE_NAMES = ("patient", "diagnosis", "procedure", "drug")


def standardize(
    x: Float[np.ndarray, "items dim"], fit_rows: np.ndarray | None = None, *, eps: float = 1e-6
) -> Float[np.ndarray, "items dim"]:
    """``(x - mean) / (std + eps)`` per column, the statistics taken over ``fit_rows`` (all: None).

    Returns:
        float32, same shape.

    Examples:
        >>> standardize(np.array([[1.0], [3.0]])).round(3).tolist()
        [[-1.0], [1.0]]
    """
    x = np.asarray(x, np.float64)
    fit = x if fit_rows is None else x[np.asarray(fit_rows)]
    if not len(fit):
        raise ValueError("standardize: no rows to fit the statistics on")
    return ((x - fit.mean(0)) / (fit.std(0) + eps)).astype(np.float32)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, np.float64), 1e-4, 1 - 1e-4)
    return np.log(p) - np.log1p(-p)


def _check_visits(dataset: Dataset, emb: Mapping[str, Any], name: str) -> None:
    if not np.array_equal(np.asarray(emb["visit_id"]), dataset.visits.visit_id):
        raise ValueError(f"{name} embeddings: visit_id differs from the dataset's visits")
    split = np.asarray(emb["split"]).astype(str)
    if not np.array_equal(split, np.asarray(dataset.split_of_visit()).astype(str)):
        raise ValueError(f"{name} embeddings: split column differs from the dataset's")


def knowledge_tables(
    dataset: Dataset,
    *,
    patient: Mapping[str, Any],
    codes: Mapping[str, Any],
    drugs: tuple[Mapping[str, Any], ...],
    evidence: bool = False,
) -> dict[str, np.ndarray]:
    """The four fusion tables from baseline exports (``flame_jax.baselines.load_embeddings``).

    Args:
        dataset: the dataset the baselines were trained on.
        patient: the export whose ``patient`` and ``scores`` give the patient table (GAMENet).
        codes: the logistic-regression export (its ``drug`` rows are ``W^T``, codes =
            diagnoses then procedures).
        drugs: exports whose ``drug`` tables are concatenated (GAMENet, SafeDrug).
        evidence: append one column to the drug table, the patient export's standardised logit
            of the drug for a visit: rows ``0..meds-1`` are the plain drugs (column 0) and row
            ``meds + visit * meds + d`` is drug ``d`` in visit ``visit`` (see
            ``flame_jax.flame.visit_drug_refs``).

    Returns:
        float32 tables ``patient [visits, d_p]``, ``diagnosis [diag, meds]``,
        ``procedure [proc, meds]``, ``drug [meds, d_d]`` (``[meds * (1 + visits), d_d + 1]``
        with ``evidence``).
    """
    _check_visits(dataset, patient, "patient")
    train = dataset.split_rows("train")
    pat = np.concatenate([np.asarray(patient["patient"]), _logit(patient["scores"])], axis=1)
    w = np.asarray(codes["drug"], np.float64)  # [meds, diag + proc]
    num_diag, num_proc = len(dataset.diag_vocab), len(dataset.proc_vocab)
    if w.shape != (dataset.num_meds, num_diag + num_proc):
        raise ValueError(
            f"codes export: drug table has shape {w.shape}, expected "
            f"({dataset.num_meds}, {num_diag + num_proc}) (a logistic-regression export)"
        )
    drug = np.concatenate([np.asarray(d["drug"], np.float64) for d in drugs], axis=1)
    if drug.shape[0] != dataset.num_meds:
        raise ValueError(f"drug tables have {drug.shape[0]} rows, expected {dataset.num_meds}")
    drug = standardize(drug)
    if evidence:
        m, v = dataset.num_meds, len(dataset.visits)
        logit = standardize(_logit(patient["scores"]).reshape(-1, 1), _train_cells(train, m))
        plain = np.concatenate([drug, np.zeros((m, 1), np.float32)], axis=1)
        per_visit = np.concatenate([np.tile(drug, (v, 1)), logit], axis=1)
        drug = np.concatenate([plain, per_visit], axis=0)
    return {
        "patient": standardize(pat, train),
        "diagnosis": standardize(w[:, :num_diag].T),
        "procedure": standardize(w[:, num_diag:].T),
        "drug": drug,
    }


def _train_cells(train: np.ndarray, meds: int) -> np.ndarray:
    return (np.asarray(train)[:, None] * meds + np.arange(meds)[None, :]).reshape(-1)


def save_tables(tables: Mapping[str, np.ndarray], path: str | os.PathLike) -> Path:
    """Writes the tables to one ``.npz`` (atomically)."""
    return write_npz_atomic(Path(path), {k: np.asarray(tables[k]) for k in TABLE_NAMES})


def load_tables(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads tables written by :func:`save_tables`.

    Raises:
        FileNotFoundError: no such file. ValueError: a table is missing.
    """
    with np.load(Path(path)) as z:
        missing = [k for k in TABLE_NAMES if k not in z]
        if missing:
            raise ValueError(f"{path}: missing tables {missing}")
        return {k: np.asarray(z[k], np.float32) for k in TABLE_NAMES}
