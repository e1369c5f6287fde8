"""The flame_ehr TFDS builder on the synthetic config and on synthetic raw MIMIC-III tables, read
back without TensorFlow; and on the open MIMIC-III demo (skipped when it is absent)."""

import sys
from pathlib import Path

import numpy as np
import pytest

from flame_jax.cli.main import main
from flame_jax.data import (
    PrepareConfig,
    build_tfds,
    grain_batches,
    load_dataset,
    pad_visits,
    prepare_dataset,
    tfds_data_source,
)
from flame_jax.data._synthetic import write_raw_layout
from tests.data.demo_data import DEMO, requires_demo


@pytest.fixture(scope="module")
def built(tiny, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds")
    from flame_jax.data import SyntheticConfig

    info = build_tfds("synthetic", data_dir, synthetic_config=SyntheticConfig.tiny())
    return data_dir, info


def test_build_without_tensorflow(built, tiny):
    _data_dir, info = built
    assert "tensorflow" not in sys.modules
    ds = tiny.dataset
    assert info["splits"] == {s: len(ds.split_rows(s)) for s in ("train", "val", "test")}
    files = sorted(p.name for p in Path(info["path"]).iterdir())
    assert any(".array_record-" in f for f in files) and "dataset_info.json" in files


def test_data_source_examples_match_the_dataset(built, tiny):
    data_dir, _ = built
    ds = tiny.dataset
    row_of = {int(v): i for i, v in enumerate(ds.visits.visit_id)}
    for split in ("train", "test"):
        source = tfds_data_source(data_dir, "synthetic", split)
        assert len(source) == len(ds.split_rows(split))
        seen = set()
        for k in range(len(source)):
            ex = source[k]
            i = row_of[int(ex["visit_id"])]
            seen.add(i)
            assert int(ex["patient_id"]) == ds.visits.patient_id[i]
            assert list(ex["diag"]) == ds.visits.diag[i].tolist()
            assert list(ex["med"]) == ds.visits.med[i].tolist()
            assert ex["admit_time"].decode() == ds.visits.admit_time[i]
        assert seen == set(ds.split_rows(split).tolist())


def test_grain_batches_are_pad_visits_batches(built, tiny):
    data_dir, _ = built
    ds = tiny.dataset
    rows = ds.split_rows("test")
    batches = list(grain_batches(data_dir, "synthetic", "test", 16))
    assert len(batches) == -(-len(rows) // 16)
    assert all(b.mask.shape == (16,) for b in batches)
    assert sum(int(b.mask.sum()) for b in batches) == len(rows)
    row_of = {int(v): i for i, v in enumerate(ds.visits.visit_id)}
    source = tfds_data_source(data_dir, "synthetic", "test")
    visit_ids = [int(source[k]["visit_id"]) for k in range(len(source))]
    for b, start in zip(batches, range(0, len(rows), 16), strict=True):
        table_rows = np.asarray([row_of[v] for v in visit_ids[start : start + 16]])
        want = pad_visits(ds, table_rows, batch_size=16)
        for name in ("diag", "diag_mask", "proc", "proc_mask", "meds", "patient", "mask"):
            np.testing.assert_array_equal(getattr(b, name), getattr(want, name), err_msg=name)
    # A seeded shuffle is reproducible and covers the same visits.
    a = list(grain_batches(data_dir, "synthetic", "test", 8, seed=3, drop_remainder=True))
    c = list(grain_batches(data_dir, "synthetic", "test", 8, seed=3, drop_remainder=True))
    assert len(a) == len(rows) // 8 and all(x.mask.all() for x in a)
    for x, y in zip(a, c, strict=True):
        np.testing.assert_array_equal(x.meds, y.meds)


def test_credentialed_configs_need_a_manual_dir(tmp_path):
    with pytest.raises(ValueError, match="physionet.org"):
        build_tfds("mimic4", tmp_path)
    with pytest.raises(ValueError, match="TFDS config must be one of"):
        build_tfds("mimic5", tmp_path)


def _mimic3_config(manual_dir, tmp_path):
    """Builds the mimic3 config from ``manual_dir``; it holds what ``prepare_dataset`` gives."""
    config = PrepareConfig(min_diag_count=2, min_proc_count=2)
    info = build_tfds("mimic3", tmp_path / "tfds", manual_dir=manual_dir, prepare_config=config)
    ds, _ = prepare_dataset(manual_dir, tmp_path / "ds", config)
    assert info["splits"] == {s: len(ds.split_rows(s)) for s in ("train", "val", "test")}
    assert sum(info["splits"].values()) == len(ds.visits) > 0
    return ds


def test_mimic3_config_on_raw_tables_and_cli(tiny, tmp_path, capsys):
    raw = tmp_path / "raw"
    write_raw_layout(tiny, raw, "mimic3")
    ds = _mimic3_config(raw, tmp_path)
    source = tfds_data_source(tmp_path / "tfds", "mimic3", "test")
    assert sorted(int(source[k]["visit_id"]) for k in range(len(source))) == sorted(
        ds.visits.visit_id[ds.split_rows("test")].tolist()
    )
    rc = main(["data", "tfds", "synthetic", "--data-dir", str(tmp_path / "t2"),
               "--dataset", str(tmp_path / "ds")])  # fmt: skip
    assert rc == 0 and "built flame_ehr/synthetic" in capsys.readouterr().out
    loaded = load_dataset(tmp_path / "ds")
    src = tfds_data_source(tmp_path / "t2", "synthetic", "train")
    assert len(src) == len(loaded.split_rows("train"))


@requires_demo
def test_mimic3_config_on_the_open_demo(tmp_path):
    _mimic3_config(DEMO, tmp_path)
