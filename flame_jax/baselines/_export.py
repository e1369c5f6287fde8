"""Evaluation of trained runs with SafeDrug's bootstrap protocol, and the embedding export.

Embedding file (``embeddings.npz``, read with ``np.load``; no pickles)::

    visit_id    int64   [visits]        every visit of the dataset, in visit-table order
    patient_id  int64   [visits]
    split       <U5     [visits]        "train", "val" or "test"
    patient     float32 [visits, dim_p] patient representation of each visit (history-aware
                                        for GAMENet/SafeDrug: the current visit's query vector;
                                        LR: the current visit's multi-hot codes)
    scores      float32 [visits, meds]  the model's per-drug probabilities
    drug        float32 [meds, dim_d]   drug embeddings (LR: output weights W^T; GAMENet: the
                                        graph memory GCN_ehr - beta GCN_ddi; SafeDrug: the
                                        global molecular embeddings)
    drug_code   <U..    [meds]          medication vocabulary codes, in index order

and ``embeddings.json`` beside it (model, checkpoint epoch, dims, ``fit_split: "train"``). The
model was fitted on the train split only (validation chose the epoch); val and test visits are
embedded by that fitted model, never fitted on, so downstream use has no test leakage.
"""

import os
from pathlib import Path
from typing import Any

import jax
import numpy as np

from flame_jax._io import write_json_atomic, write_npz_atomic
from flame_jax.baselines._train import TrainedBaseline, predict
from flame_jax.metrics import MetricsReport, evaluate_sets

__all__ = ["evaluate_trained", "export_embeddings", "load_embeddings"]


def evaluate_trained(
    trained: TrainedBaseline,
    *,
    split: str = "test",
    rounds: int = 10,
    seed: int = 0,
    name: str | None = None,
) -> MetricsReport:
    """Bootstrap metrics (SafeDrug: ``rounds`` x 80% of the patients) of a run on ``split``.

    Predicted sets are the drugs with probability ``>= config.threshold``; PRAUC uses the
    probabilities; DDI uses the dataset's DDI graph.

    Raises:
        KeyError: unknown split. ValueError: the split has no visits.
    """
    ds = trained.dataset
    rows = ds.split_rows(split)
    if not len(rows):
        raise ValueError(f"dataset {ds.name!r}: split {split!r} has no visits")
    probs, _ = predict(trained.model, trained.context, ds, rows)
    truth = ds.visits.med.multi_hot(ds.num_meds, rows)
    return evaluate_sets(
        name or trained.config.model,
        probs >= trained.config.threshold,
        truth,
        ds.visits.patient_id[rows],
        key=jax.random.key(seed),
        scores=probs,
        ddi=ds.ddi,
        rounds=rounds,
    )


def export_embeddings(trained: TrainedBaseline, path: str | os.PathLike) -> Path:
    """Writes ``embeddings.npz`` (see the module docstring) and ``.json`` metadata beside it.

    Returns:
        The path of the ``.npz`` file.
    """
    path = Path(path)
    ds = trained.dataset
    rows = np.arange(len(ds.visits), dtype=np.int64)
    probs, patient = predict(trained.model, trained.context, ds, rows)
    drug = np.asarray(trained.model.drug_embeddings(trained.context), np.float32)
    split = ds.split_of_visit().astype(str)
    arrays = {
        "visit_id": ds.visits.visit_id.astype(np.int64),
        "patient_id": ds.visits.patient_id.astype(np.int64),
        "split": split,
        "patient": patient.astype(np.float32),
        "scores": probs.astype(np.float32),
        "drug": drug,
        "drug_code": np.asarray(ds.med_vocab.codes, dtype=str),
    }
    write_npz_atomic(path, arrays)
    write_json_atomic(
        path.with_suffix(".json"),
        {
            "format": "flame_jax baseline embeddings v1",
            "model": trained.config.model,
            "checkpoint_epoch": trained.epoch,
            "dataset": ds.name,
            "fit_split": "train",
            "visits": len(rows),
            "patient_dim": int(patient.shape[1]),
            "drug_dim": int(drug.shape[1]),
            "meds": ds.num_meds,
        },
    )
    return path


def load_embeddings(path: str | os.PathLike) -> dict[str, Any]:
    """Reads an ``embeddings.npz`` into a dict of arrays (no pickles allowed).

    Raises:
        FileNotFoundError: no such file. ValueError: a required array is missing or misshapen.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such embeddings file")
    with np.load(path, allow_pickle=False) as z:
        out = {k: z[k] for k in z.files}
    need = ("visit_id", "patient_id", "split", "patient", "scores", "drug", "drug_code")
    missing = [k for k in need if k not in out]
    if missing:
        raise ValueError(f"{path}: missing arrays {missing}")
    n, m = len(out["visit_id"]), len(out["drug_code"])
    if out["patient"].shape[0] != n or out["scores"].shape != (n, m) or out["drug"].shape[0] != m:
        raise ValueError(f"{path}: inconsistent shapes {[(k, v.shape) for k, v in out.items()]}")
    return out
