"""Knowledge tables: standardisation against float64 loops; tables from baseline exports."""

import numpy as np
import pytest

from flame_jax.flame import knowledge_tables, load_tables, save_tables, standardize


def reference_standardize(x, rows, eps=1e-6):
    x = np.asarray(x, np.float64)
    out = np.empty_like(x)
    for j in range(x.shape[1]):
        col = [x[i, j] for i in rows]
        mean = sum(col) / len(col)
        std = (sum((v - mean) ** 2 for v in col) / len(col)) ** 0.5
        out[:, j] = (x[:, j] - mean) / (std + eps)
    return out


@pytest.mark.parametrize("shape", [(1, 1), (7, 3), (30, 12)])
def test_standardize_matches_reference(shape):
    rng = np.random.default_rng(shape[0])
    x = rng.normal(3.0, 2.0, size=shape)
    rows = np.sort(rng.choice(shape[0], size=max(1, shape[0] // 2), replace=False))
    np.testing.assert_allclose(standardize(x, rows), reference_standardize(x, rows), rtol=1e-5,
                               atol=1e-5)  # fmt: skip
    np.testing.assert_allclose(standardize(x), reference_standardize(x, range(shape[0])),
                               rtol=1e-5, atol=1e-5)  # fmt: skip
    with pytest.raises(ValueError, match="no rows"):
        standardize(x, np.zeros(0, np.int64))


def _export(dataset, rng, dim, drug_dim):
    n = len(dataset.visits)
    return {
        "visit_id": dataset.visits.visit_id,
        "split": np.asarray(dataset.split_of_visit()).astype(str),
        "patient": rng.normal(size=(n, dim)).astype(np.float32),
        "scores": rng.uniform(0, 1, size=(n, dataset.num_meds)).astype(np.float32),
        "drug": rng.normal(size=(dataset.num_meds, drug_dim)).astype(np.float32),
    }


def test_tables_from_exports(dataset, tmp_path):
    rng = np.random.default_rng(0)
    codes = len(dataset.diag_vocab) + len(dataset.proc_vocab)
    gamenet, safedrug, lr = (_export(dataset, rng, 5, 4), _export(dataset, rng, 5, 3),
                             _export(dataset, rng, codes, codes))  # fmt: skip
    t = knowledge_tables(dataset, patient=gamenet, codes=lr, drugs=(gamenet, safedrug))
    assert t["patient"].shape == (len(dataset.visits), 5 + dataset.num_meds)
    assert t["diagnosis"].shape == (len(dataset.diag_vocab), dataset.num_meds)
    assert t["procedure"].shape == (len(dataset.proc_vocab), dataset.num_meds)
    assert t["drug"].shape == (dataset.num_meds, 7)
    train = dataset.split_rows("train")
    # statistics from train visits only: train rows are centred, others need not be
    np.testing.assert_allclose(t["patient"][train].mean(0), 0.0, atol=1e-4)
    p = np.clip(gamenet["scores"].astype(np.float64), 1e-4, 1 - 1e-4)
    logit = np.log(p / (1 - p))
    ref = reference_standardize(np.concatenate([gamenet["patient"], logit], 1), train)
    np.testing.assert_allclose(t["patient"], ref, rtol=1e-4, atol=1e-4)
    w = lr["drug"].astype(np.float64)
    np.testing.assert_allclose(
        t["diagnosis"],
        reference_standardize(w[:, : len(dataset.diag_vocab)].T, range(len(dataset.diag_vocab))),
        rtol=1e-4, atol=1e-4,
    )  # fmt: skip
    back = load_tables(save_tables(t, tmp_path / "k.npz"))
    for k in t:
        np.testing.assert_array_equal(back[k], t[k])
    bad = dict(gamenet, visit_id=gamenet["visit_id"][::-1])
    with pytest.raises(ValueError, match="visit_id"):
        knowledge_tables(dataset, patient=bad, codes=lr, drugs=(gamenet,))
