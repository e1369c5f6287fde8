"""Raw-table ingestion: round trips of the synthetic cohort through all three layouts, filters,
splits, mappings, DDI, and bad input, all on synthetic raw tables; and the open MIMIC-III demo
(skipped when ../shared/data/mimic3-demo is absent, as on a fresh clone)."""

import datetime
import gzip
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flame_jax.cli.main import main
from flame_jax.data import (
    FLAME_ADVERSE_TYPES,
    IngestError,
    PrepareConfig,
    load_dataset,
    normalise_drug_name,
    prepare,
    prepare_dataset,
    split_patients,
)
from flame_jax.data._synthetic import mimic4_tables, write_raw_layout
from flame_jax.data._tables import _age_years
from tests.data.demo_data import DEMO, requires_demo


@pytest.fixture(scope="module")
def layouts(tiny, tmp_path_factory):
    root = tmp_path_factory.mktemp("layouts")
    for layout in ("mimic3", "mimic4", "eicu"):
        write_raw_layout(tiny, root / layout, layout)
    return root


def _sets(ds, kind, f=lambda c: c):
    codes = getattr(ds, f"{kind}_vocab").codes
    ragged = getattr(ds.visits, kind)
    return {
        int(v): frozenset(f(codes[i]) for i in ragged[j]) for j, v in enumerate(ds.visits.visit_id)
    }


def _assert_same_visits(got, want, kind, f=lambda c: c):
    a, b = _sets(got, kind), _sets(want, kind, f)
    assert a.keys() == b.keys()
    bad = [v for v in a if a[v] != b[v]]
    assert not bad, f"{kind}: visit {bad[0]}: {sorted(a[bad[0]])} != {sorted(b[bad[0]])}"


def _table(root: Path, name: str) -> pd.DataFrame:
    """Raw table ``name`` under ``root`` as written: every value a string, "" when missing."""
    (path,) = root.glob(f"{name}.csv*")
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def _code_counts(ds, kind):
    """Visits per code of ``kind``."""
    lists = getattr(ds.visits, kind)
    return np.bincount(lists.values, minlength=len(getattr(ds, f"{kind}_vocab")))


def test_mimic3_round_trip_drug_codes_and_ddi(tiny, layouts):
    raw = layouts / "mimic3"
    config = PrepareConfig.unfiltered(
        med_vocab="drugbank",
        ndc_map=str(raw / "ndc2drug.csv.gz"),
        drug_info=str(raw / "drug_smiles.csv.gz"),
        ddi=str(raw / "ddi_pairs.csv.gz"),
    )
    ds, report = prepare(raw, config)
    ref = tiny.dataset
    for kind in ("diag", "proc", "med"):
        _assert_same_visits(ds, ref, kind)
    np.testing.assert_array_equal(ds.visits.patient_id, ref.visits.patient_id)
    np.testing.assert_array_equal(ds.visits.visit_index, ref.visits.visit_index)
    np.testing.assert_array_equal(ds.visits.age, ref.visits.age)
    assert list(ds.visits.gender) == list(ref.visits.gender)
    assert list(ds.visits.admit_time) == list(ref.visits.admit_time)
    idx = [ref.med_vocab.index(c) for c in ds.med_vocab.codes]
    np.testing.assert_array_equal(ds.ddi, ref.ddi[np.ix_(idx, idx)])
    assert [ds.med_vocab.titles[i] for i in range(3)] == [ref.med_vocab.titles[j] for j in idx[:3]]
    assert all(len(s) == 1 for s in ds.med_vocab.smiles)
    # BASE/ADDITIVE rows and NDC "0" rows are counted, not silently lost.
    assert report["read"]["med: rows of other DRUG_TYPE than ['MAIN']"] > 0
    assert report["read"]["med: rows with no usable NDC"] > 0


def test_mimic3_round_trip_mapping_free_names(tiny, layouts):
    ds, report = prepare(layouts / "mimic3", PrepareConfig.unfiltered())
    titles = dict(zip(tiny.dataset.med_vocab.codes, tiny.dataset.med_vocab.titles, strict=True))
    _assert_same_visits(ds, tiny.dataset, "med", lambda c: normalise_drug_name(titles[c]))
    assert ds.ddi is None and report["ddi"].startswith("not available")


def test_mimic4_and_eicu_round_trips(tiny, layouts):
    ref = tiny.dataset
    m4, _ = prepare(
        layouts / "mimic4",
        PrepareConfig.unfiltered(source="mimic4", med_vocab="ndc"),
    )
    for kind in ("diag", "proc"):
        _assert_same_visits(m4, ref, kind, lambda c: f"ICD9:{c}")
    ndc_of = {}
    raw3 = tiny.raw["ndc2drug"]
    for ndc, code in zip(raw3["NDC"], raw3["DRUG_CODE"], strict=True):
        ndc_of.setdefault(code, set()).add(ndc[:9])
    # NDC products of a drug: the visit's products are exactly those of its drugs' prescriptions
    for j, v in enumerate(m4.visits.visit_id.tolist()):
        drugs = {
            ref.med_vocab.codes[i] for i in ref.visits.med[ref.visits.visit_id.tolist().index(v)]
        }
        got = {m4.med_vocab.codes[i] for i in m4.visits.med[j]}
        assert got <= set().union(*(ndc_of[d] for d in drugs))
    assert np.abs(m4.visits.age - ref.visits.age).max() <= 1
    assert m4.diag_vocab.titles[0] != m4.diag_vocab.codes[0]  # titles from d_icd_diagnoses

    eicu, report = prepare(layouts / "eicu", PrepareConfig.unfiltered(source="eicu"))
    _assert_same_visits(eicu, ref, "diag")
    ptitle = dict(zip(ref.proc_vocab.codes, ref.proc_vocab.titles, strict=True))
    _assert_same_visits(eicu, ref, "proc", lambda c: ptitle[c])
    mtitle = dict(zip(ref.med_vocab.codes, ref.med_vocab.titles, strict=True))
    _assert_same_visits(eicu, ref, "med", lambda c: normalise_drug_name(mtitle[c]))
    np.testing.assert_array_equal(eicu.visits.patient_id, ref.visits.patient_id)
    np.testing.assert_array_equal(eicu.visits.age, ref.visits.age)
    assert report["read"]["medication: cancelled orders"] > 0


def _check_default_filters(ds, report, out):
    """What ``prepare_dataset(root, out, PrepareConfig())`` must give on any raw tables."""
    loaded = load_dataset(out)  # validates: indices, splits disjoint and complete
    assert len(loaded.visits) == len(ds.visits) > 0
    names = [r["filter"] for r in report["filters"]]
    assert names == [
        "top_k_meds", "min_diag_count", "min_proc_count", "require_all_tables", "min_visits",
    ]  # fmt: skip
    # The per-filter removals add up to the difference between before and after.
    for key in ("patients", "visits", "diag", "proc", "med", "rows"):
        removed = sum(r[key] for r in report["filters"])
        assert report["initial"][key] - removed == report["final"][key]
    # A fixed point: every filter holds on the output.
    v = ds.visits
    assert (np.bincount(np.unique(v.patient_id, return_inverse=True)[1]) >= 2).all()
    assert _code_counts(ds, "diag").min() >= 6 and _code_counts(ds, "proc").min() >= 6
    assert (v.diag.lengths() > 0).all() and (v.proc.lengths() > 0).all()
    assert (v.med.lengths() > 0).all()
    assert ds.num_meds <= 200 and ds.ddi is None
    assert json.loads((out / "report.json").read_text())["final"] == report["final"]
    assert "min_visits" in (out / "report.txt").read_text()


def test_default_filters_on_raw_tables(tmp_path, layouts):
    raw = layouts / "mimic3"
    out = tmp_path / "ds"
    ds, report = prepare_dataset(raw, out, PrepareConfig())
    _check_default_filters(ds, report, out)
    adm = _table(raw, "ADMISSIONS")
    assert report["initial"]["patients"] == adm["SUBJECT_ID"].nunique()
    assert report["initial"]["visits"] == len(adm)
    # The filters do remove something here, so the sums above are not trivially zero.
    assert report["final"]["visits"] < report["initial"]["visits"]
    assert report["final"]["patients"] < report["initial"]["patients"]


@requires_demo
def test_demo_mapping_free_with_default_filters(tmp_path):
    out = tmp_path / "demo"
    ds, report = prepare_dataset(DEMO, out, PrepareConfig())
    _check_default_filters(ds, report, out)
    assert report["initial"]["patients"] == 100 and report["initial"]["visits"] == 129


def test_single_pass_is_not_a_fixed_point(layouts):
    raw = layouts / "mimic3"
    fixed, rep = prepare(raw, PrepareConfig())
    once, rep1 = prepare(raw, PrepareConfig(fixed_point=False))
    assert rep["passes"] >= 2 and rep1["passes"] == 1
    # After one pass, codes can fall under the threshold again (the patients filter removed
    # visits after the count filters ran); the loop removes them.
    threshold = {"diag": PrepareConfig().min_diag_count, "proc": PrepareConfig().min_proc_count}
    assert any(_code_counts(once, k).min() < n for k, n in threshold.items())
    assert all(_code_counts(fixed, k).min() >= n for k, n in threshold.items())
    assert len(fixed.visits) < len(once.visits)


def test_top_k_count_and_the_flame_off_by_one(layouts):
    raw = layouts / "mimic3"
    base = {"med_vocab": "drugbank", "ndc_map": str(raw / "ndc2drug.csv.gz")}
    ds, _ = prepare(raw, PrepareConfig.unfiltered(top_k_meds=5, **base))
    assert ds.num_meds == 5
    bug, _ = prepare(raw, PrepareConfig.unfiltered(top_k_meds=5, topk_off_by_one=True, **base))
    assert bug.num_meds == 6
    full, _ = prepare(raw, PrepareConfig.unfiltered(**base))
    counts = np.bincount(full.visits.med.values, minlength=full.num_meds)
    top = sorted(range(full.num_meds), key=lambda i: (-counts[i], full.med_vocab.codes[i]))[:5]
    assert set(ds.med_vocab.codes) == {full.med_vocab.codes[i] for i in top}


def test_splits():
    s = split_patients(np.arange(100, 109))
    assert [s[k].tolist() for k in ("train", "val", "test")] == [
        [100, 101, 102, 103, 104, 105], [107, 108], [106],
    ]  # fmt: skip
    a = split_patients(np.arange(50), "random", seed=3)
    b = split_patients(np.arange(50), "random", seed=3)
    c = split_patients(np.arange(50), "random", seed=4)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["train"], c["train"])
    assert sorted(np.concatenate(list(a.values())).tolist()) == list(range(50))
    assert [len(a[k]) for k in ("train", "val", "test")] == [33, 9, 8]


def test_atc3_mapping_and_twosides(tmp_path, layouts, tiny):
    raw = layouts / "mimic3"
    ndc2drug = tiny.raw["ndc2drug"]
    codes = sorted(set(ndc2drug["DRUG_CODE"]))
    atc = {c: f"A{i:02d}X" for i, c in enumerate(codes)}  # 4 characters: an ATC-3 code each
    rx = {c: str(900 + i) for i, c in enumerate(codes)}
    mapping = {n: rx[c] for n, c in zip(ndc2drug["NDC"], ndc2drug["DRUG_CODE"], strict=True)}
    (tmp_path / "ndc2rxnorm_mapping.txt").write_text(repr(mapping))
    pd.DataFrame(
        {"RXCUI": [rx[c] for c in codes], "ATC4": [atc[c] + "1" for c in codes], "YEAR": 2014}
    ).to_csv(tmp_path / "rxcui2atc4.csv", index=False)
    # TWOSIDES: side effect "rare" (1 row) links drugs 0-1; "common" (3 rows) links 2-3.
    (tmp_path / "drug-atc.csv").write_text(
        "\n".join(f"CID{i},{atc[c]}1,{atc[c]}2" for i, c in enumerate(codes[:4])) + "\n"
    )
    pd.DataFrame(
        {
            "STITCH 1": ["CID0", "CID2", "CID2", "CID2"],
            "STITCH 2": ["CID1", "CID3", "CID3", "CID3"],
            "Polypharmacy Side Effect": ["C1", "C2", "C2", "C2"],
            "Side Effect Name": ["rare", "common", "common", "common"],
        }
    ).to_csv(tmp_path / "twosides.csv", index=False)
    config = PrepareConfig.safedrug(
        top_k_meds=None,
        top_k_diag=None,
        min_visits=1,
        require_all_tables=False,
        ndc_rxcui=str(tmp_path / "ndc2rxnorm_mapping.txt"),
        rxcui_atc=str(tmp_path / "rxcui2atc4.csv"),
        ddi=str(tmp_path / "twosides.csv"),
        cid_atc=str(tmp_path / "drug-atc.csv"),
        ddi_top_k=1,
        drug_types=("MAIN",),
    )
    ds, _ = prepare(raw, config)
    _assert_same_visits(ds, tiny.dataset, "med", lambda c: atc[c])
    i = {c: ds.med_vocab.index(atc[c]) for c in codes[:4]}
    assert ds.ddi[i[codes[0]], i[codes[1]]] == 1  # the least frequent side effect, as SafeDrug
    assert ds.ddi[i[codes[2]], i[codes[3]]] == 0 and ds.ddi.sum() == 2
    most = dict(config.__dict__, ddi_side_effects="most-frequent")
    ds2, _ = prepare(raw, PrepareConfig(**most))
    assert ds2.ddi[i[codes[2]], i[codes[3]]] == 1 and ds2.ddi.sum() == 2


def test_ddi_types_filter(tmp_path, layouts):
    raw = layouts / "mimic3"
    pairs = pd.read_csv(raw / "ddi_pairs.csv.gz", dtype=str)
    kind = pairs["INTERACTION_TYPE"].iloc[0]
    base = {
        "med_vocab": "drugbank",
        "ndc_map": str(raw / "ndc2drug.csv.gz"),
        "ddi": str(raw / "ddi_pairs.csv.gz"),
    }
    all_, _ = prepare(raw, PrepareConfig.unfiltered(**base))
    some, rep = prepare(raw, PrepareConfig.unfiltered(ddi_types=(kind,), **base))
    assert some.ddi.sum() == 2 * (pairs["INTERACTION_TYPE"] == kind).sum() < all_.ddi.sum()
    assert rep["ddi"]["other types"] == (pairs["INTERACTION_TYPE"] != kind).sum()


# --------------------------------------------------------------------------------------------------
# Bad input


def _copy_raw(src: Path, dst: Path, skip=(), edit=None) -> Path:
    """The raw tables of ``src`` copied, decompressed, to ``dst``, but those in ``skip``;
    ``edit``: table name -> function of its frame (:func:`_table`) giving the frame written."""
    dst.mkdir()
    for f in sorted(src.iterdir()):
        name = f.name.split(".")[0]
        if name in skip:
            continue
        target = dst / f.name.removesuffix(".gz")
        if edit and name in edit:
            edit[name](_table(src, name)).to_csv(target, index=False, lineterminator="\n")
        else:
            target.write_bytes(gzip.decompress(f.read_bytes()))
    return dst


def _set(frame, row, column, value):
    """A copy of ``frame`` with one value replaced (``row`` is an index label)."""
    frame = frame.copy()
    frame.at[row, column] = value
    return frame


def _cli_error(capsys, root, out):
    rc = main(["data", "prepare", "--root", str(root), "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and not out.exists()
    return err


def test_bad_input_errors(tmp_path, layouts, capsys):
    raw = layouts / "mimic3"
    err = _cli_error(
        capsys, _copy_raw(raw, tmp_path / "a", skip=("PROCEDURES_ICD",)), tmp_path / "o"
    )
    assert "table PROCEDURES_ICD not found" in err

    dx = _table(raw, "DIAGNOSES_ICD")
    root = _copy_raw(
        raw, tmp_path / "b", edit={"DIAGNOSES_ICD": lambda f: f.drop(columns="ICD9_CODE")}
    )
    err = _cli_error(capsys, root, tmp_path / "o")
    left = [c for c in dx.columns if c != "ICD9_CODE"]
    assert (
        "DIAGNOSES_ICD.csv: missing column 'ICD9_CODE' (case-insensitive); "
        f"the file has columns {left}"
    ) in err

    # A value in the middle of the file, so that the line number is not the first data line's.
    adm = _table(raw, "ADMISSIONS")
    row = len(adm) // 2
    when = adm.at[row, "ADMITTIME"]  # YYYY-MM-DD HH:MM:SS
    day_first = f"{when[8:10]}/{when[5:7]}/{when[:4]}"
    root = _copy_raw(
        raw, tmp_path / "c", edit={"ADMISSIONS": lambda f: _set(f, row, "ADMITTIME", day_first)}
    )
    err = _cli_error(capsys, root, tmp_path / "o")
    assert f"ADMISSIONS.csv: column 'ADMITTIME', line {row + 2}: cannot parse {day_first!r}" in err

    root = _copy_raw(raw, tmp_path / "d", edit={"PATIENTS": lambda f: f.iloc[:0]})
    err = _cli_error(capsys, root, tmp_path / "o")
    assert "PATIENTS.csv: table PATIENTS has a header but no rows" in err

    subject = adm.at[row, "SUBJECT_ID"]
    bad = subject[:-1] + "x"
    root = _copy_raw(
        raw, tmp_path / "e", edit={"ADMISSIONS": lambda f: _set(f, row, "SUBJECT_ID", bad)}
    )
    err = _cli_error(capsys, root, tmp_path / "o")
    assert f"ADMISSIONS.csv: column 'SUBJECT_ID', line {row + 2}: {bad!r} is not an integer" in err

    # The same admission again at the end, one minute later: a clash, not a duplicate.
    later = (pd.Timestamp(when) + pd.Timedelta(minutes=1)).strftime("%Y-%m-%d %H:%M:%S")

    def clash(frame):
        again = _set(frame.iloc[[row]], row, "ADMITTIME", later)
        return pd.concat([frame, again], ignore_index=True)

    root = _copy_raw(raw, tmp_path / "f", edit={"ADMISSIONS": clash})
    err = _cli_error(capsys, root, tmp_path / "o")
    hadm = adm.at[row, "HADM_ID"]
    assert (
        f"ADMISSIONS.csv: HADM_ID={hadm} appears in 2 rows with different values "
        f"(lines {row + 2} and {len(adm) + 2})"
    ) in err

    root = _copy_raw(raw, tmp_path / "g")
    (root / "PATIENTS.csv").write_bytes(b"")
    assert "PATIENTS.csv: the file is empty" in _cli_error(capsys, root, tmp_path / "o")


def test_duplicates_and_unmapped_codes_are_counted(tmp_path, layouts):
    raw = layouts / "mimic3"
    dx = _table(raw, "DIAGNOSES_ICD")
    coded = dx.index[(dx["ICD9_CODE"] != "") & (dx["HADM_ID"] != "")][:2]
    edit = {
        "ADMISSIONS": lambda f: pd.concat([f, f.iloc[:2]], ignore_index=True),
        "DIAGNOSES_ICD": lambda f: pd.concat([f, f.loc[coded]], ignore_index=True),
    }
    ref, ref_report = prepare(raw, PrepareConfig.unfiltered())
    ds, report = prepare(_copy_raw(raw, tmp_path / "dup", edit=edit), PrepareConfig.unfiltered())
    key = "diag: repeated (visit, code) rows"
    assert "ADMISSIONS: duplicate rows" not in ref_report["read"]
    assert report["read"]["ADMISSIONS: duplicate rows"] == 2
    assert report["read"][key] == ref_report["read"].get(key, 0) + 2
    np.testing.assert_array_equal(ds.visits.visit_id, ref.visits.visit_id)
    for kind in ("diag", "proc", "med"):
        _assert_same_visits(ds, ref, kind)

    # Unmapped NDCs: a mapping of two of the NDC products the prescriptions use.
    rx = _table(raw, "PRESCRIPTIONS")
    rx = rx[rx["DRUG_TYPE"] == "MAIN"]  # the default drug_types
    ndc = rx["NDC"]
    usable = ndc.str.fullmatch(r"\d{11}") & (ndc.str.strip("0") != "")  # not "", "0", all zeros
    products = sorted(set(ndc[usable].str[:9]))
    ids = {products[0]: "DB1", products[len(products) // 2]: "DB2"}  # map only two products
    (tmp_path / "map.csv").write_text(
        "NDC,DRUGBANK_ID\n" + "".join(f"{p},{d}\n" for p, d in ids.items())
    )
    ds, report = prepare(
        raw, PrepareConfig.unfiltered(med_vocab="drugbank", ndc_map=str(tmp_path / "map.csv"))
    )
    mapped = usable & ndc.str[:9].isin(list(ids))
    unmapped = usable & ~mapped
    assert len(products) > 2 and (~usable).sum() > 0 and mapped.sum() > 0
    assert set(ds.med_vocab.codes) == {"DB1", "DB2"}
    assert report["read"]["med: rows with no usable NDC"] == (~usable).sum()
    assert report["read"]["med: rows whose NDC is not in the mapping"] == unmapped.sum()
    assert report["read"]["med: distinct NDCs not in the mapping"] == ndc[unmapped].nunique()
    # Only visits with a mapped drug are left (unfiltered keeps visits with at least one drug),
    # each with the ids of its mapped products.
    want = {}
    for hadm, product in zip(rx["HADM_ID"][mapped], ndc[mapped].str[:9], strict=True):
        want.setdefault(int(hadm), set()).add(ids[product])
    assert _sets(ds, "med") == {v: frozenset(d) for v, d in want.items()}


def test_no_visits_left_is_an_error_and_nothing_is_written(tmp_path, layouts):
    raw = layouts / "mimic3"
    most = _table(raw, "ADMISSIONS").groupby("SUBJECT_ID").size().max()
    out = tmp_path / "out"
    with pytest.raises(IngestError, match="no visit is left after the filters"):
        prepare_dataset(raw, out, PrepareConfig(min_visits=int(most) + 1))
    assert not out.exists() and not list(tmp_path.iterdir())


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="PrepareConfig.ndc_map is required"):
        PrepareConfig(med_vocab="drugbank")
    with pytest.raises(ValueError, match="PrepareConfig.top_k_meds must be None or >= 1"):
        PrepareConfig(top_k_meds=0)
    with pytest.raises(ValueError, match="eICU"):
        PrepareConfig(source="eicu", med_vocab="ndc")


def test_cli_prepare(tmp_path, layouts, capsys):
    raw = layouts / "mimic3"
    out = tmp_path / "ds"
    rc = main(
        ["data", "prepare", "--source", "mimic3", "--root", str(raw), "--out", str(out),
         "--quiet", "--split", "random", "--seed", "1"]
    )  # fmt: skip
    text = capsys.readouterr().out
    assert rc == 0 and "min_visits" in text and "ddi: not available" in text
    assert load_dataset(out).info["prepare"]["config"]["split"] == "random"
    assert (out / "prepare.yaml").is_file()
    rc = main(["data", "prepare", "--root", str(raw), "--out", str(out), "--quiet"])
    assert rc == 2 and "not empty" in capsys.readouterr().err


def test_mimic4_keeps_the_icd_version_in_the_code(tiny, tmp_path):
    tables = mimic4_tables(tiny)
    dx = tables["diagnoses_icd"]
    first = dx.iloc[[0]].copy()
    first["icd_code"], first["icd_version"], first["seq_num"] = "I10", 10, 99
    tables["diagnoses_icd"] = pd.concat([dx, first], ignore_index=True)
    d = tables["d_icd_diagnoses"]
    extra = pd.DataFrame({"icd_code": ["I10"], "icd_version": [10],
                          "long_title": ["Essential (primary) hypertension"]})  # fmt: skip
    tables["d_icd_diagnoses"] = pd.concat([d, extra], ignore_index=True)
    (tmp_path / "hosp").mkdir()
    for name, frame in tables.items():
        frame.to_csv(tmp_path / "hosp" / f"{name}.csv", index=False)
    ds, _ = prepare(tmp_path, PrepareConfig.unfiltered(source="mimic4"))
    i = ds.diag_vocab.index("ICD10:I10")
    assert ds.diag_vocab.titles[i] == "Essential (primary) hypertension"
    row = ds.visits.visit_id.tolist().index(int(first["hadm_id"].iloc[0]))
    assert i in ds.visits.diag[row].tolist()
    assert ds.diag_vocab.codes[0].startswith("ICD9:")


def test_cli_config_file_round_trip(tmp_path, layouts, capsys):
    raw = layouts / "mimic3"
    args = ["data", "prepare", "--root", str(raw), "--quiet", "--preset", "unfiltered",
            "--med-vocab", "drugbank", "--ndc-map", str(raw / "ndc2drug.csv.gz"),
            "--top-k-meds", "10", "--min-visits", "2"]  # fmt: skip
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    again = ["data", "prepare", "--root", str(raw), "--quiet", "--config",
             str(tmp_path / "a" / "prepare.yaml"), "--out", str(tmp_path / "b")]  # fmt: skip
    assert main(again) == 0
    capsys.readouterr()
    a, b = load_dataset(tmp_path / "a"), load_dataset(tmp_path / "b")
    assert a.med_vocab.codes == b.med_vocab.codes and len(a.med_vocab) == 10
    np.testing.assert_array_equal(a.visits.visit_id, b.visits.visit_id)
    assert (
        main(["data", "synth-raw", "--layout", "mimic4", "--tiny", "--out", str(tmp_path / "m4")])
        == 0
    )
    assert (tmp_path / "m4" / "hosp" / "prescriptions.csv.gz").is_file()


def test_cli_flame_preset_with_every_ddi_type_and_no_top_k(tmp_path, layouts, capsys):
    raw = layouts / "mimic3"
    common = ["data", "prepare", "--root", str(raw), "--quiet", "--preset", "flame",
              "--ndc-map", str(raw / "ndc2drug.csv.gz"), "--drug-info",
              str(raw / "drug_smiles.csv.gz"), "--ddi", str(raw / "ddi_pairs.csv.gz"),
              "--min-visits", "1", "--any-table"]  # fmt: skip
    assert main([*common, "--out", str(tmp_path / "flame")]) == 0
    assert main([*common, "--out", str(tmp_path / "all"), "--ddi-types", "all",
                 "--no-top-k-meds"]) == 0  # fmt: skip
    capsys.readouterr()
    flame, every = load_dataset(tmp_path / "flame"), load_dataset(tmp_path / "all")
    # The synthetic interaction kinds are not DrugBank's adverse type codes.
    assert flame.ddi.sum() == 0 and every.ddi.sum() > 0
    assert flame.info["prepare"]["config"]["ddi_types"] == list(FLAME_ADVERSE_TYPES)
    assert every.info["prepare"]["config"]["top_k_meds"] is None
    assert main([*common, "--out", str(tmp_path / "x"), "--ddi-types", ","]) == 2
    assert main([*common[:-3], "--config", str(tmp_path / "all" / "prepare.yaml"),
                 "--out", str(tmp_path / "y")]) == 2  # fmt: skip
    assert "exclude each other" in capsys.readouterr().err


def test_eicu_physical_exam_as_procedures(tiny, layouts):
    ds, _ = prepare(
        layouts / "eicu", PrepareConfig.unfiltered(source="eicu", eicu_procedures="physicalExam")
    )
    ref = tiny.dataset
    titles = dict(zip(ref.proc_vocab.codes, ref.proc_vocab.titles, strict=True))
    path = "notes/Progress Notes/Physical Exam/"
    _assert_same_visits(ds, ref, "proc", lambda c: path + titles[c])


def reference_age(birth, when):
    """Completed years from ``birth`` to ``when`` (negative when ``when`` is earlier)."""
    return when.year - birth.year - ((when.month, when.day) < (birth.month, birth.day))


# --------------------------------------------------------------------------------------------------
# Edge cases in the raw values: negative and shifted ages, control characters, eICU drug names

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def test_negative_age_drops_the_visit_and_ages_over_89_are_capped(tmp_path, layouts):
    raw = layouts / "mimic3"
    adm, pat = _table(raw, "ADMISSIONS"), _table(raw, "PATIENTS")
    admit = pd.to_datetime(adm["ADMITTIME"])
    # Patient a is born the day after an admission in the middle of the file (an error in the
    # data: that admission and any earlier one have a negative age); patient b's date of birth
    # is 300 years back, as MIMIC-III shifts it for patients over 89.
    row = len(adm) // 2
    a = adm.at[row, "SUBJECT_ID"]
    b = next(s for s in adm["SUBJECT_ID"] if s != a)
    dob_a = admit[row].normalize() + pd.Timedelta(days=1)
    gone = adm.loc[(adm["SUBJECT_ID"] == a) & (admit < dob_a), "HADM_ID"].astype(int)
    year_b = int(pat.loc[pat["SUBJECT_ID"] == b, "DOB"].iloc[0][:4])

    def shift(frame):
        frame = frame.copy()
        frame.loc[frame["SUBJECT_ID"] == a, "DOB"] = dob_a.strftime("%Y-%m-%d %H:%M:%S")
        frame.loc[frame["SUBJECT_ID"] == b, "DOB"] = f"{year_b - 300}-01-01 00:00:00"
        return frame

    ref, _ = prepare(raw, PrepareConfig.unfiltered())
    ds, report = prepare(
        _copy_raw(raw, tmp_path / "ages", edit={"PATIENTS": shift}), PrepareConfig.unfiltered()
    )
    assert len(gone) >= 1
    read = report["read"]
    assert read["ADMISSIONS: visits dropped for a negative age (DOB after ADMITTIME)"] == len(gone)
    dx, px, rx = (_table(raw, t) for t in ("DIAGNOSES_ICD", "PROCEDURES_ICD", "PRESCRIPTIONS"))
    in_gone = lambda f: f["HADM_ID"].isin(gone.astype(str))
    assert (
        read["diag: rows of visits dropped for a negative age"]
        == (in_gone(dx) & (dx["ICD9_CODE"] != "")).sum()
    )
    assert read["proc: rows of visits dropped for a negative age"] == in_gone(px).sum()
    assert read["med: rows of visits dropped for a negative age"] == in_gone(rx).sum()
    keep = ~np.isin(ref.visits.visit_id, gone)
    np.testing.assert_array_equal(ds.visits.visit_id, ref.visits.visit_id[keep])
    is_b = ds.visits.patient_id == int(b)
    assert is_b.any() and (ds.visits.age[is_b] == 90).all()  # the documented cap, not ~300
    np.testing.assert_array_equal(ds.visits.age[~is_b], ref.visits.age[keep][~is_b])
    assert ds.visits.age.min() >= 0


def test_negative_age_in_mimic4_and_eicu(tmp_path, tiny, layouts):
    tables = mimic4_tables(tiny)
    pat, adm = tables["patients"], tables["admissions"]
    who = int(pat["subject_id"].iloc[0])
    last = int(pd.to_datetime(adm.loc[adm["subject_id"] == who, "admittime"]).dt.year.max())
    pat.loc[pat["subject_id"] == who, ["anchor_age", "anchor_year"]] = (0, last + 1)
    pat.loc[pat["subject_id"] == int(pat["subject_id"].iloc[1]), "anchor_age"] = 91
    (tmp_path / "hosp").mkdir()
    for name, frame in tables.items():
        frame.to_csv(tmp_path / "hosp" / f"{name}.csv", index=False)
    m4, report = prepare(tmp_path, PrepareConfig.unfiltered(source="mimic4"))
    key = "admissions: visits dropped for a negative age (anchor_age + year - anchor_year < 0)"
    assert report["read"][key] == (adm["subject_id"] == who).sum() >= 1
    assert who not in m4.visits.patient_id and m4.visits.age.min() >= 0
    assert m4.visits.age.max() == 90

    patient = _table(layouts / "eicu", "patient")
    stay = patient.at[len(patient) // 2, "patientunitstayid"]
    root = _copy_raw(
        layouts / "eicu",
        tmp_path / "eicu",
        edit={"patient": lambda f: _set(f, len(f) // 2, "age", "-2")},
    )
    eicu, report = prepare(root, PrepareConfig.unfiltered(source="eicu"))
    assert report["read"]["patient: visits dropped for a negative age"] == 1
    assert int(stay) not in eicu.visits.visit_id and eicu.visits.age.min() >= 0


def test_age_in_completed_years_against_datetime():
    rng = np.random.default_rng(0)
    epoch = datetime.datetime(1970, 1, 1)
    births = [datetime.datetime(1800, 1, 1) + datetime.timedelta(days=int(d))
              for d in rng.integers(0, 150_000, 500)]  # fmt: skip
    births += [datetime.datetime(2096, 2, 29), datetime.datetime(2100, 12, 31)]
    # Admissions up to 110 years after birth (over the cap) and a few years before it.
    whens = [b + datetime.timedelta(days=int(d), seconds=int(s))
             for b, d, s in zip(births, rng.integers(-2_000, 40_000, len(births)),
                                rng.integers(0, 86_400, len(births)), strict=True)]  # fmt: skip
    whens[-2] = datetime.datetime(2101, 2, 28, 23, 0)  # the day before a Feb 29 birthday
    whens[-1] = datetime.datetime(2100, 12, 30, 23, 0)  # born the next day: negative
    sec = lambda ds: np.asarray([int((d - epoch).total_seconds()) for d in ds], np.int64)
    age, negative = _age_years(sec(births), sec(whens))
    years = [reference_age(b, w) for b, w in zip(births, whens, strict=True)]
    np.testing.assert_array_equal(negative, [y < 0 for y in years])
    np.testing.assert_array_equal(age[~negative], [min(y, 90) for y in years if y >= 0])
    assert negative.sum() > 10 and (age == 90).sum() > 10 and negative[-1] and not negative[-2]
    missing = np.asarray([np.iinfo(np.int64).min, 0], np.int64)
    age, negative = _age_years(missing, np.zeros(2, np.int64))
    assert age.tolist() == [-1, 0] and not negative.any()


def _clean_vocab(ds):
    for vocab in (ds.diag_vocab, ds.proc_vocab, ds.med_vocab):
        for text in (*vocab.codes, *vocab.titles):
            assert not _CONTROL.search(text), repr(text)


def test_control_characters_are_removed_and_counted(tmp_path, layouts):
    raw = layouts / "mimic3"
    dx, px, rx = (_table(raw, t) for t in ("DIAGNOSES_ICD", "PROCEDURES_ICD", "PRESCRIPTIONS"))
    coded = dx.index[(dx["ICD9_CODE"].str.len() >= 3) & (dx["HADM_ID"] != "")]
    r1, r2 = coded[len(coded) // 3], coded[2 * len(coded) // 3]
    c1 = dx.at[r1, "ICD9_CODE"]
    named = rx.index[(rx["DRUG_TYPE"] == "MAIN") & rx["DRUG_NAME_GENERIC"].str.contains(" ")]
    r3, r4 = named[0], named[len(named) // 2]
    n3, n4 = rx.at[r3, "DRUG_NAME_GENERIC"], rx.at[r4, "DRUG"]

    def diag(v1, v2):  # codes of rows r1 and r2
        return lambda f: _set(_set(f, r1, "ICD9_CODE", v1), r2, "ICD9_CODE", v2)

    def drugs(f):
        f = _set(f, r3, "DRUG_NAME_GENERIC", n3[:4] + "\x00" + n3[4:].replace(" ", "\t", 1))
        return _set(f, r4, "DRUG", n4[:3] + "\x7f\x85\x9f" + n4[3:])

    ref_root = _copy_raw(raw, tmp_path / "ref", edit={"DIAGNOSES_ICD": diag(c1, "")})
    root = _copy_raw(
        raw,
        tmp_path / "ctl",
        edit={
            "DIAGNOSES_ICD": diag(c1[:2] + "\x00" + c1[2:], "\x00\x7f\x01"),
            "PROCEDURES_ICD": lambda f: _set(f, 0, "ICD9_CODE", px.at[0, "ICD9_CODE"] + "\x1b"),
            "PRESCRIPTIONS": drugs,
        },
    )
    assert "\x00" in (root / "DIAGNOSES_ICD.csv").read_text()
    ref, ref_report = prepare(ref_root, PrepareConfig.unfiltered())
    out = tmp_path / "out"
    ds, report = prepare_dataset(root, out, PrepareConfig.unfiltered())
    for loaded in (ds, load_dataset(out)):
        _clean_vocab(loaded)
        for kind in ("diag", "proc", "med"):
            assert getattr(loaded, f"{kind}_vocab") == getattr(ref, f"{kind}_vocab")
            _assert_same_visits(loaded, ref, kind)
    assert report["cleaned"] == {
        "DIAGNOSES_ICD: control characters removed from ICD9_CODE": 2,
        "PROCEDURES_ICD: control characters removed from ICD9_CODE": 1,
        "PRESCRIPTIONS: control characters removed from DRUG": 1,
        "PRESCRIPTIONS: control characters removed from DRUG_NAME_GENERIC": 1,
    }
    read, ref_read = report["read"], ref_report["read"]
    assert read["DIAGNOSES_ICD: rows whose code is only control characters"] == 1
    no_code = "DIAGNOSES_ICD: rows with no code"
    assert read.get(no_code, 0) == ref_read[no_code] - 1
    assert "cleaned while reading" in (out / "report.txt").read_text()
    assert "cleaned" not in ref_report  # nothing to say: the report is as before


# eICU medication.drugname in its real shapes: quantity, unit and container before " : ".
_EICU_NAMES = {
    # drugname, drughiclseqno -> the vocabulary code
    ("5 ML VIAL : DILTIAZEM HCL 25 MG/5ML IV SOLN", "6212"): "diltiazem hcl",
    ("1 EACH VIAL : HEPARIN (PORCINE) 5000 UNIT/ML IJ SOLN", ""): "heparin",
    ("100 ML PLAS CONT : SODIUM CHLORIDE 0.9 % IV SOLN", "8255"): "sodium chloride",
    ("ASPIRIN 81 MG PO CHEW", "1820"): "aspirin",
    ("ASPI\x00RIN 81 MG PO CHEW", ""): "aspirin",
    ("", "8255"): "HICL:8255",
    ("2 ML VIAL :", "001234"): "HICL:1234",  # nothing after " : "; the number without zeros
    ("0.9 % NS", "8255"): "HICL:8255",
    ("", ""): None,  # dropped: no name, no number
    ("1 EACH :", ""): None,
}


def test_eicu_quantity_first_drug_names_and_the_hicl_fallback(tmp_path, layouts):
    raw = layouts / "eicu"
    med = _table(raw, "medication")
    ok = med.index[med["drugordercancelled"] == "No"]
    rows = ok[:: len(ok) // (len(_EICU_NAMES) + 1)][: len(_EICU_NAMES)]

    def edit(frame):
        for r, (name, hicl) in zip(rows, _EICU_NAMES, strict=True):
            frame = _set(_set(frame, r, "drugname", name), r, "drughiclseqno", hicl)
        return frame

    ds, report = prepare(
        _copy_raw(raw, tmp_path / "eicu", edit={"medication": edit}),
        PrepareConfig.unfiltered(source="eicu"),
    )
    got = _sets(ds, "med")
    for r, want in zip(rows, _EICU_NAMES.values(), strict=True):
        if want is not None:
            assert want in got[int(med.at[r, "patientunitstayid"])], (r, want)
    assert {"diltiazem hcl", "heparin", "HICL:1234"} <= set(ds.med_vocab.codes)
    title = dict(zip(ds.med_vocab.codes, ds.med_vocab.titles, strict=True))
    assert title["diltiazem hcl"] == "DILTIAZEM HCL 25 MG/5ML IV SOLN"
    assert title["HICL:1234"] == "HICL:1234"
    _clean_vocab(ds)
    assert report["cleaned"] == {
        "med: names read after ' : ' (quantity first)": 3,
        "med: names from drughiclseqno (HICL:<number>)": 3,
        "medication: control characters removed from DRUGNAME": 1,
    }
    assert report["read"]["med: rows with no usable name"] == 2
    assert "medication: rows with no drug name" not in report["read"]


def test_eicu_drughiclseqno_must_be_an_integer(tmp_path, layouts, capsys):
    raw = layouts / "eicu"
    row = len(_table(raw, "medication")) // 2
    root = _copy_raw(
        raw, tmp_path / "e", edit={"medication": lambda f: _set(f, row, "drughiclseqno", "12a")}
    )
    rc = main(["data", "prepare", "--source", "eicu", "--root", str(root),
               "--out", str(tmp_path / "o"), "--quiet"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2
    assert f"medication.csv: column 'DRUGHICLSEQNO', line {row + 2}: '12a' is not an integer" in err
