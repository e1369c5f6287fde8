"""The dataset format: round trips, validation messages, atomic and deterministic writes."""

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flame_jax.data import DatasetError, RaggedIds, load_dataset, save_dataset
from tests.data.helpers import make_dataset


def _same(a, b):
    assert a.name == b.name and a.source == b.source
    for kind in ("diag", "proc", "med"):
        assert getattr(a, f"{kind}_vocab") == getattr(b, f"{kind}_vocab")
        assert getattr(a.visits, kind).to_lists() == getattr(b.visits, kind).to_lists()
    for field in ("patient_id", "visit_id", "visit_index", "age", "gender", "admit_time"):
        np.testing.assert_array_equal(getattr(a.visits, field), getattr(b.visits, field))
    assert a.splits.keys() == b.splits.keys()
    for k in a.splits:
        np.testing.assert_array_equal(a.splits[k], b.splits[k])
    np.testing.assert_array_equal(a.ehr, b.ehr)
    if a.ddi is None:
        assert b.ddi is None
    else:
        np.testing.assert_array_equal(a.ddi, b.ddi)
    assert dict(a.info) == dict(b.info)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("with_ddi", [True, False])
def test_round_trip(tmp_path, seed, with_ddi):
    ds = make_dataset(seed, with_ddi=with_ddi)
    save_dataset(ds, tmp_path / "ds")
    back = load_dataset(tmp_path / "ds")
    _same(ds, back)
    assert json.loads((tmp_path / "ds" / "dataset.json").read_text())["has_ddi"] is with_ddi


def test_same_dataset_same_bytes(tmp_path):
    ds = make_dataset(3)
    save_dataset(ds, tmp_path / "a")
    save_dataset(ds, tmp_path / "b")
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == ["dataset.json", "graphs.npz", "splits.json", "visits.parquet", "vocab.json"]
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_statistics_ddi_rate_matches_pair_loop():
    ds = make_dataset(4)
    bad = total = 0
    for i in range(len(ds.visits)):
        meds = ds.visits.med[i].tolist()
        for a in range(len(meds)):
            for b in range(a + 1, len(meds)):
                total += 1
                bad += int(ds.ddi[meds[a], meds[b]] == 1)
    stats = ds.statistics()
    assert stats["ddi_rate_truth"] == pytest.approx(bad / total)
    assert stats["visits"] == len(ds.visits)
    assert sum(stats["split_patients"].values()) == stats["patients"]
    assert make_dataset(4, with_ddi=False).statistics()["ddi_rate_truth"] is None


def test_existing_folder_is_not_overwritten_without_asking(tmp_path):
    ds = make_dataset(0)
    out = tmp_path / "ds"
    out.mkdir()
    (out / "keep.txt").write_text("earlier results")
    with pytest.raises(FileExistsError, match="not empty"):
        save_dataset(ds, out)
    assert (out / "keep.txt").read_text() == "earlier results"
    save_dataset(ds, out, overwrite=True)
    assert not (out / "keep.txt").exists()
    _same(ds, load_dataset(out))


def test_failed_write_leaves_nothing_behind(tmp_path, monkeypatch):
    ds = make_dataset(0)
    save_dataset(ds, tmp_path / "ds")
    before = {p.name: p.read_bytes() for p in (tmp_path / "ds").iterdir()}

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", boom)
    with pytest.raises(OSError, match="disk full"):
        save_dataset(make_dataset(1), tmp_path / "ds", overwrite=True)
    assert {p.name: p.read_bytes() for p in (tmp_path / "ds").iterdir()} == before
    assert sorted(os.listdir(tmp_path)) == ["ds"]  # no temporary folders left


def test_save_refuses_inconsistent_dataset(tmp_path):
    ds = make_dataset(0)
    bad = ds.visits.med.values.copy()
    bad[0] = ds.num_meds + 3
    broken = type(ds)(
        **{
            **ds.__dict__,
            "visits": type(ds.visits)(
                **{**ds.visits.__dict__, "med": RaggedIds(bad, ds.visits.med.offsets)}
            ),
        }
    )
    with pytest.raises(DatasetError, match="out of range"):
        save_dataset(broken, tmp_path / "ds")
    assert not (tmp_path / "ds").exists()


# --- validation messages name the file, the field and the value -----------------------------------


@pytest.fixture
def saved(tmp_path) -> Path:
    save_dataset(make_dataset(5), tmp_path / "ds")
    return tmp_path / "ds"


def _rewrite_visits(path: Path, column: str, fn):
    table = pq.read_table(path / "visits.parquet")
    values = fn(table.column(column).to_pylist())
    idx = table.column_names.index(column)
    table = table.set_column(idx, column, pa.array(values, type=table.schema.field(column).type))
    pq.write_table(table, path / "visits.parquet")


def test_index_out_of_range(saved):
    def bump(rows):
        rows[2] = [*rows[2], 999]
        return rows

    _rewrite_visits(saved, "med", bump)
    with pytest.raises(
        DatasetError, match=r"visits\.parquet: column 'med', visit_id \d+ .*999 out"
    ):
        load_dataset(saved)


def test_repeated_index(saved):
    _rewrite_visits(saved, "diag", lambda rows: [rows[0] + rows[0][:1], *rows[1:]])
    with pytest.raises(DatasetError, match="column 'diag'.*repeated index"):
        load_dataset(saved)


def test_asymmetric_ddi(saved):
    with np.load(saved / "graphs.npz") as npz:
        graphs = {k: npz[k] for k in npz.files}
    graphs["ddi"][1, 4] = 1 - graphs["ddi"][4, 1]
    np.savez(saved / "graphs.npz", **graphs)
    with pytest.raises(DatasetError, match=r"graphs\.npz: array 'ddi' is asymmetric at \(1, 4\)"):
        load_dataset(saved)


def test_ddi_self_loop_and_shape(saved):
    with np.load(saved / "graphs.npz") as npz:
        graphs = {k: npz[k] for k in npz.files}
    graphs["ddi"][2, 2] = 1
    np.savez(saved / "graphs.npz", **graphs)
    with pytest.raises(DatasetError, match="self-loop at drug 2"):
        load_dataset(saved)
    graphs["ddi"] = graphs["ddi"][:3, :3]
    np.savez(saved / "graphs.npz", **graphs)
    with pytest.raises(DatasetError, match=r"array 'ddi' has shape \(3, 3\)"):
        load_dataset(saved)


def test_unknown_split_and_double_assignment(saved):
    splits = json.loads((saved / "splits.json").read_text())
    (saved / "splits.json").write_text(json.dumps({**splits, "holdout": []}))
    with pytest.raises(DatasetError, match="splits.json: unknown split 'holdout'"):
        load_dataset(saved)
    splits["test"].append(splits["train"][0])
    (saved / "splits.json").write_text(json.dumps(splits))
    with pytest.raises(DatasetError, match=f"patient {splits['train'][0]} is in both 'train'"):
        load_dataset(saved)


def test_patient_in_no_split(saved):
    splits = json.loads((saved / "splits.json").read_text())
    lost = splits["val"].pop(0)
    (saved / "splits.json").write_text(json.dumps(splits))
    with pytest.raises(DatasetError, match=f"patient {lost} has visits but is in no split"):
        load_dataset(saved)


def test_schema_version_missing_file_and_bad_json(saved):
    meta = json.loads((saved / "dataset.json").read_text())
    (saved / "dataset.json").write_text(json.dumps({**meta, "schema_version": 99}))
    with pytest.raises(DatasetError, match="'schema_version' is 99"):
        load_dataset(saved)
    (saved / "dataset.json").write_text("{not json")
    with pytest.raises(DatasetError, match=r"dataset\.json: not valid JSON"):
        load_dataset(saved)
    (saved / "dataset.json").write_text(json.dumps(meta))
    (saved / "vocab.json").unlink()
    with pytest.raises(DatasetError, match=r"vocab\.json: missing"):
        load_dataset(saved)
    with pytest.raises(DatasetError, match="not a dataset folder"):
        load_dataset(saved / "nowhere")


def test_bad_vocab_entries(saved):
    vocab = json.loads((saved / "vocab.json").read_text())
    vocab["med"][3]["title"] = 17
    (saved / "vocab.json").write_text(json.dumps(vocab))
    with pytest.raises(DatasetError, match=r"med\[3\]: field 'title' must be a string, got 17"):
        load_dataset(saved)
    vocab["med"][3]["title"] = "ok"
    vocab["diag"][1]["code"] = vocab["diag"][0]["code"]
    (saved / "vocab.json").write_text(json.dumps(vocab))
    with pytest.raises(DatasetError, match="code 'D000' appears twice"):
        load_dataset(saved)


def test_visit_order_and_index(saved):
    _rewrite_visits(
        saved, "visit_index", lambda rows: [r + 1 if i == 0 else r for i, r in enumerate(rows)]
    )
    with pytest.raises(DatasetError, match="visit_index"):
        load_dataset(saved)


def test_bad_gender_and_corrupt_parquet(saved):
    _rewrite_visits(saved, "gender", lambda rows: ["X", *rows[1:]])
    with pytest.raises(DatasetError, match="column 'gender' has value 'X'"):
        load_dataset(saved)
    (saved / "visits.parquet").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match=r"visits\.parquet: cannot be read as Parquet"):
        load_dataset(saved)
