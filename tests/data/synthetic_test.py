"""The synthetic cohort: config validation, vocabularies, raw MIMIC-III tables consistent with the
dataset, planted set-level structure, determinism, atomic writes."""

import dataclasses
import datetime
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rdkit import Chem

from flame_jax.data._format import load_dataset, save_dataset
from flame_jax.data._oracle import PlantedRules, load_rules, oracle_recommend
from flame_jax.data._synthetic import (
    SyntheticConfig,
    generate_cohort,
    synthesize,
    write_cohort,
)

# MIMIC-III v1.4 column sets and orders, written out independently of the generator.
MIMIC3_COLUMNS = {
    "ADMISSIONS": "ROW_ID SUBJECT_ID HADM_ID ADMITTIME DISCHTIME DEATHTIME ADMISSION_TYPE "
    "ADMISSION_LOCATION DISCHARGE_LOCATION INSURANCE LANGUAGE RELIGION MARITAL_STATUS ETHNICITY "
    "EDREGTIME EDOUTTIME DIAGNOSIS HOSPITAL_EXPIRE_FLAG HAS_CHARTEVENTS_DATA",
    "PATIENTS": "ROW_ID SUBJECT_ID GENDER DOB DOD DOD_HOSP DOD_SSN EXPIRE_FLAG",
    "DIAGNOSES_ICD": "ROW_ID SUBJECT_ID HADM_ID SEQ_NUM ICD9_CODE",
    "PROCEDURES_ICD": "ROW_ID SUBJECT_ID HADM_ID SEQ_NUM ICD9_CODE",
    "PRESCRIPTIONS": "ROW_ID SUBJECT_ID HADM_ID ICUSTAY_ID STARTDATE ENDDATE DRUG_TYPE DRUG "
    "DRUG_NAME_POE DRUG_NAME_GENERIC FORMULARY_DRUG_CD GSN NDC PROD_STRENGTH DOSE_VAL_RX "
    "DOSE_UNIT_RX FORM_VAL_DISP FORM_UNIT_DISP ROUTE",
    "D_ICD_DIAGNOSES": "ROW_ID ICD9_CODE SHORT_TITLE LONG_TITLE",
    "D_ICD_PROCEDURES": "ROW_ID ICD9_CODE SHORT_TITLE LONG_TITLE",
}
TIME = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("cohort") / "out"
    cohort = synthesize(out, SyntheticConfig.tiny(seed=3))
    return cohort, out


def _read(out: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(out / "raw" / f"{name}.csv.gz", dtype=str, keep_default_na=False)


def _substitutable_members(rules: PlantedRules) -> list[np.ndarray]:
    return [np.asarray(c.members) for c in rules.classes if c.substitutable]


# --------------------------------------------------------------------------------------------------
# Config


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("patients", 0),
        ("drugs", 11),
        ("drugs", 401),
        ("max_visits", 0),
        ("diag_codes", 5),
        ("p_give", 1.5),
        ("p_avoid", -0.1),
        ("ddi_density", 2.0),
        ("class_ddi_density", 1.5),
        ("noise_drug_rate", float("nan")),
        ("popularity_skew", -1.0),
    ],
)
def test_config_rejects_bad_values_naming_the_field(field, value):
    with pytest.raises(ValueError, match=rf"SyntheticConfig\.{field}"):
        SyntheticConfig(**{field: value})


def test_config_presets_and_dict():
    tiny = SyntheticConfig.tiny(seed=5)
    assert (tiny.patients, tiny.drugs, tiny.seed) == (120, 24, 5)
    assert SyntheticConfig(**SyntheticConfig().to_dict()) == SyntheticConfig()


# --------------------------------------------------------------------------------------------------
# Vocabularies


def _normalise(name: str) -> str:
    return name.lower().replace(" ", "").replace("-", "")


@pytest.mark.parametrize("drugs", [12, 24, 60, 400])
def test_drug_vocabulary(drugs):
    cohort = generate_cohort(SyntheticConfig.tiny(drugs=drugs, patients=6))
    vocab = cohort.dataset.med_vocab
    assert len(vocab) == drugs
    names = [
        n for title, syn in zip(vocab.titles, vocab.synonyms, strict=True) for n in (title, *syn)
    ]
    assert len({_normalise(n) for n in names}) == len(names), "names clash after normalising"
    assert any(vocab.synonyms), "some drugs have brand-like synonyms"
    canonical = set()
    for smiles in vocab.smiles:
        assert len(smiles) == 1
        mol = Chem.MolFromSmiles(smiles[0])
        assert mol is not None, smiles[0]
        canonical.add(Chem.MolToSmiles(mol))
    assert len(canonical) == drugs, "every drug has its own structure"
    # Salts: several fragments, and a metal ion without any bond.
    mols = [Chem.MolFromSmiles(s[0]) for s in vocab.smiles]
    assert any(len(Chem.GetMolFrags(m)) > 1 for m in mols)
    assert any(
        a.GetDegree() == 0 and a.GetSymbol() in {"Na", "K", "Mg", "Ca", "Li"}
        for m in mols
        for a in m.GetAtoms()
    )
    # Therapeutic drugs carry their class stem.
    for c in cohort.rules.classes:
        stem = c.stem.strip("-").lower()
        for d in c.members:
            title = vocab.titles[d].lower()
            assert title.endswith(stem) or title.startswith(stem), (title, c.stem)
    # NDCs: 1-3 per drug, 11 digits, never shared.
    ndc = cohort.raw["ndc2drug"]
    assert ndc["NDC"].str.fullmatch(r"\d{11}").all()
    assert ndc["NDC"].is_unique
    per_drug = ndc.groupby("DRUG_CODE").size()
    assert set(per_drug.index) == set(vocab.codes)
    assert per_drug.between(1, 3).all()


def test_code_vocabularies_look_like_icd9(tiny):
    ds = tiny.dataset
    assert len(ds.diag_vocab) == 60 and len(ds.proc_vocab) == 24
    for code in ds.diag_vocab.codes:
        assert re.fullmatch(r"(V\d{2,4}|E\d{3,4}|\d{3,5})", code), code
    for code in ds.proc_vocab.codes:
        assert re.fullmatch(r"\d{3,4}", code), code
    for vocab in (ds.diag_vocab, ds.proc_vocab):
        assert all(len(t) > 3 and not t.isdigit() for t in vocab.titles)
    assert "4019" in ds.diag_vocab.codes  # hypertension, indicated in every cohort


# --------------------------------------------------------------------------------------------------
# Dataset


def test_dataset_visits_ages_splits(tiny):
    ds = tiny.dataset
    v = ds.visits
    assert len(ds.patients) == 120
    counts = np.bincount(np.unique(v.patient_id, return_inverse=True)[1])
    assert counts.min() >= 1 and counts.max() <= 4
    assert (counts >= 2).mean() > 0.4, "most patients have a history"
    assert ((v.age >= 18) & (v.age <= 90)).all()
    assert set(v.gender) <= {"F", "M"}
    assert all(TIME.match(t) for t in v.admit_time)
    for p in ds.patients:
        rows = np.flatnonzero(v.patient_id == p)
        times = list(v.admit_time[rows])
        assert times == sorted(times) and len(set(times)) == len(times)
        assert (np.diff(v.age[rows]) >= 0).all()
    assert np.unique(v.visit_id).size == len(v)
    # Splits: patient level, 2/3, 1/6, 1/6.
    sizes = {k: len(p) for k, p in ds.splits.items()}
    assert sizes == {"train": 80, "val": 20, "test": 20}
    assert np.array_equal(np.sort(np.concatenate(list(ds.splits.values()))), ds.patients)
    # Graphs: EHR co-occurrence of the train split, planted DDI graph.
    train = ds.split_rows("train")
    ehr = np.zeros_like(ds.ehr)
    for i in train:
        meds = v.med[int(i)]
        for a in meds:
            for b in meds:
                if a != b:
                    ehr[a, b] = 1
    np.testing.assert_array_equal(ds.ehr, ehr)
    np.testing.assert_array_equal(ds.ddi, tiny.rules.ddi_adjacency())
    assert ds.ddi.dtype == np.uint8 and (ds.ddi == ds.ddi.T).all() and not np.diag(ds.ddi).any()
    assert ds.info["config"] == SyntheticConfig.tiny().to_dict()


def test_rule_indices_match_the_vocabularies(tiny):
    rules, ds = tiny.rules, tiny.dataset
    assert rules.med_codes == ds.med_vocab.codes
    assert rules.diag_codes == ds.diag_vocab.codes
    assert rules.proc_codes == ds.proc_vocab.codes
    # Each disease's primary code is recorded in every visit where the disease shows up.
    for d in rules.diseases:
        secondary = set(d.secondary_codes)
        for i in range(len(ds.visits)):
            codes = set(ds.visits.diag[i].tolist())
            if codes & secondary:
                assert d.primary_code in codes, d.name


# --------------------------------------------------------------------------------------------------
# Planted structure


def test_every_rule_is_exercised_by_the_tiny_preset(tiny):
    r = tiny.rules
    assert sum(c.substitutable and len(c.members) >= 2 for c in r.classes) >= 5
    assert r.companions and r.interactions and r.background
    assert r.age_rules and r.contraindications and r.procedure_indications
    assert any(d.chronic for d in r.diseases) and any(not d.chronic for d in r.diseases)
    assert 0 < tiny.dataset.statistics()["ddi_rate_truth"] < 0.2


def test_at_most_one_drug_per_substitutable_class(medium):
    meds = medium.dataset.visits.med.multi_hot(medium.dataset.num_meds)
    for members in _substitutable_members(medium.rules):
        assert meds[:, members].sum(1).max() <= 1


def test_indicated_class_gives_exactly_one_member_most_of_the_time(medium):
    """Visits whose primary code indicates a class get exactly one of its drugs at about p_give."""
    rules, v = medium.rules, medium.dataset.visits
    meds = v.med.multi_hot(rules.num_meds)
    hits = total = 0
    for d in rules.diseases:
        for c in d.classes:
            if any(r.drug_class == c for r in (*rules.age_rules, *rules.contraindications)):
                continue
            rows = [i for i in range(len(v)) if d.primary_code in v.diag[i]]
            got = meds[np.ix_(rows, rules.classes[c].members)].sum(1)
            assert got.max() <= 1
            hits += int(got.sum())
            total += len(rows)
    # p_give = 0.9, less the drugs dropped for an interaction without a safe substitute.
    assert 0.65 < hits / total <= 0.93


def test_companions_co_occur_far_above_independence(medium):
    rules = medium.rules
    meds = medium.dataset.visits.med.multi_hot(rules.num_meds)
    covered = trig = 0
    with_a, without_a = [], []
    for r in rules.companions:
        a, b = meds[:, r.trigger], meds[:, r.companion]
        if a.sum() < 10:
            continue
        # The companion, or another member of its class already in the visit (gastro-protection
        # by a different PPI counts).
        cls = rules.classes[int(rules.drug_class()[r.companion])]
        b_class = meds[:, cls.members].any(1) if cls.substitutable else b
        covered += int((a & b_class).sum())
        trig += int(a.sum())
        with_a.append(b[a].mean())
        without_a.append(b[~a].mean())
    assert trig > 50
    assert covered / trig > 0.8  # p_companion = 0.85; trigger drugs also come as noise
    assert np.mean(with_a) > np.mean(without_a) + 0.2


def _interacting_co_occurrences(cohort) -> int:
    meds = cohort.dataset.visits.med.multi_hot(cohort.rules.num_meds).astype(np.int64)
    therapeutic = cohort.rules.drug_class() != 0
    ddi = np.triu(cohort.dataset.ddi, 1).astype(bool)
    ddi &= therapeutic[:, None] & therapeutic[None, :]
    return int((meds.T @ meds)[ddi].sum())


def test_interacting_drugs_are_avoided_when_both_indicated(medium):
    """The same cohort without avoidance has several times more interacting therapeutic pairs."""
    careless = generate_cohort(dataclasses.replace(medium.config, p_avoid=0.0))
    assert medium.config.p_avoid == 0.9
    assert _interacting_co_occurrences(careless) > 100
    assert _interacting_co_occurrences(medium) < 0.35 * _interacting_co_occurrences(careless)
    assert (
        medium.dataset.statistics()["ddi_rate_truth"]
        < 0.7 * careless.dataset.statistics()["ddi_rate_truth"]
    )


def test_class_level_interactions_plant_the_curated_member_pairs():
    """``class_ddi_density`` adds the curated class-level interactions (every member pair at 1,
    some at 0.5) on top of the random ones, which stay as they were; companions never interact."""
    from flame_jax.data import _synthetic_vocab as V

    base = SyntheticConfig.tiny(drugs=60, patients=60)
    plain, half, full = (
        generate_cohort(dataclasses.replace(base, class_ddi_density=p)) for p in (0.0, 0.5, 1.0)
    )
    titles = list(full.dataset.med_vocab.titles)
    stems = {c.key: c.stem for c in V.CLASSES}
    by_stem = {c.stem.strip("-"): list(c.members) for c in full.rules.classes}

    def members(key):
        if key in stems:
            return by_stem.get(stems[key], [])
        return [titles.index(key)] if key in titles else []

    companions = {tuple(sorted((c.trigger, c.companion))) for c in full.rules.companions}
    kinds = {(r.a, r.b): r.kind for r in full.rules.interactions}
    curated = {}
    for left, right, kind in V.CLASS_INTERACTIONS:
        for a in members(left):
            for b in members(right):
                if tuple(sorted((a, b))) not in companions:
                    curated[tuple(sorted((a, b)))] = kind
    assert len(curated) > 20
    for (a, b), kind in curated.items():
        assert full.dataset.ddi[a, b] and kinds[(a, b)] == kind, (titles[a], titles[b])
    for a, b in companions:
        assert not full.dataset.ddi[a, b]
    # the random interactions are unchanged; what is added is curated
    assert (plain.dataset.ddi <= half.dataset.ddi).all() and (
        half.dataset.ddi <= full.dataset.ddi
    ).all()
    added = np.argwhere(np.triu(full.dataset.ddi > plain.dataset.ddi, 1))
    assert len(added) and all(tuple(p) in curated for p in added.tolist())
    new_half = np.triu(half.dataset.ddi > plain.dataset.ddi, 1).sum()
    assert 0.2 * len(added) < new_half < 0.8 * len(added)
    assert (
        full.dataset.statistics()["ddi_rate_truth"] > plain.dataset.statistics()["ddi_rate_truth"]
    )


def _same_drug_as_last_time(cohort) -> float:
    """Fraction of a patient's class members that repeat the member of its previous visit."""
    v = cohort.dataset.visits
    kept = total = 0
    for members in _substitutable_members(cohort.rules):
        last: dict[int, int] = {}
        for i in range(len(v)):
            p = int(v.patient_id[i])
            if v.visit_index[i] == 0:
                last.pop(p, None)
            drug = np.intersect1d(v.med[i], members)
            if drug.size:
                if p in last:
                    kept += int(last[p] == drug[0])
                    total += 1
                last[p] = int(drug[0])
    return kept / total


def test_history_effect_keeps_the_drug_of_a_class(medium):
    forgetful = generate_cohort(dataclasses.replace(medium.config, p_stick=0.0))
    assert medium.config.p_stick == 0.8
    # Less than p_stick + (1 - p_stick) * popularity: interactions and noise also change drugs.
    assert _same_drug_as_last_time(medium) > 0.75
    assert _same_drug_as_last_time(medium) > _same_drug_as_last_time(forgetful) + 0.15


def test_age_rule_withholds_the_class_from_older_patients(medium):
    rules, v = medium.rules, medium.dataset.visits
    rule = rules.age_rules[0]
    members = rules.classes[rule.drug_class].members
    indicating = {d.primary_code for d in rules.diseases if rule.drug_class in d.classes}
    indicating_procs = {
        r.procedure for r in rules.procedure_indications if rule.drug_class in r.classes
    }
    given = {True: [], False: []}
    for i in range(len(v)):
        if set(v.diag[i].tolist()) & indicating or set(v.proc[i].tolist()) & indicating_procs:
            given[bool(v.age[i] >= rule.min_age)].append(bool(np.isin(members, v.med[i]).any()))
    assert len(given[True]) >= 10 and len(given[False]) >= 10
    assert np.mean(given[True]) < 0.3 and np.mean(given[False]) > np.mean(given[True]) + 0.3


# --------------------------------------------------------------------------------------------------
# Raw tables


def test_raw_tables_have_the_mimic3_schema(written):
    cohort, out = written
    for name, columns in MIMIC3_COLUMNS.items():
        frame = _read(out, name)
        assert list(frame.columns) == columns.split(), name
        assert list(cohort.raw[name].columns) == columns.split(), name
        assert frame["ROW_ID"].astype(int).is_unique
    side = {
        "ndc2drug": ["NDC", "DRUG_CODE", "DRUG_NAME"],
        "drug_smiles": ["DRUG_CODE", "DRUG_NAME", "SMILES"],
        "ddi_pairs": ["DRUG_CODE_1", "DRUG_CODE_2", "INTERACTION_TYPE"],
    }
    for name, columns in side.items():
        assert list(_read(out, name).columns) == columns
    # Integer id columns, times as in MIMIC-III.
    adm = cohort.raw["ADMISSIONS"]
    assert adm["HADM_ID"].dtype == np.int64 and adm["SUBJECT_ID"].dtype == np.int64
    assert _read(out, "ADMISSIONS")["ADMITTIME"].map(TIME.match).all()
    rx = _read(out, "PRESCRIPTIONS")
    assert rx["STARTDATE"].map(TIME.match).all() and (rx["ENDDATE"] >= rx["STARTDATE"]).all()
    assert set(rx["DRUG_TYPE"]) == {"MAIN", "BASE", "ADDITIVE"}
    assert (rx["DRUG_TYPE"] == "MAIN").mean() > 0.8
    main = rx[rx["DRUG_TYPE"] == "MAIN"]
    assert (main["NDC"] == "0").any() and (main["NDC"] == "").any()
    assert main.groupby(["HADM_ID", "NDC"]).size().mean() > 1.0
    assert main.groupby(["HADM_ID", "DRUG_NAME_GENERIC"]).size().mean() > 1.3
    titles = set(cohort.dataset.med_vocab.titles)
    assert (~main["DRUG"].isin(titles)).mean() > 0.05, "DRUG names vary (strengths, brands)"
    assert main["DRUG"].str.contains(r"\d(?:mg|mEq|g|mL|mcg|PUFF|gm)$").any()
    dx = _read(out, "DIAGNOSES_ICD")
    assert not dx["ICD9_CODE"].str.contains(r"\.").any()


def test_raw_tables_are_consistent_with_the_dataset(written):
    _, out = written
    ds = load_dataset(out / "dataset")
    v = ds.visits
    ndc2drug = dict(zip(*(_read(out, "ndc2drug")[c] for c in ("NDC", "DRUG_CODE")), strict=True))
    med_index = {c: i for i, c in enumerate(ds.med_vocab.codes)}
    rx = _read(out, "PRESCRIPTIONS")
    valid = rx[rx["NDC"].isin(ndc2drug)]
    assert set(rx.loc[~rx["NDC"].isin(ndc2drug), "NDC"]) - {"", "0"}, "unmapped diluent NDCs"
    main_sets = (
        valid[valid["DRUG_TYPE"] == "MAIN"]
        .groupby("HADM_ID")["NDC"]
        .agg(lambda s: sorted({med_index[ndc2drug[n]] for n in s}))
    )
    all_sets = valid.groupby("HADM_ID")["NDC"].agg(
        lambda s: sorted({med_index[ndc2drug[n]] for n in s})
    )
    for i in range(len(v)):
        hadm = str(v.visit_id[i])
        assert main_sets[hadm] == sorted(v.med[i].tolist()), hadm
        assert all_sets[hadm] == main_sets[hadm], "BASE/ADDITIVE rows add no other drug"

    for table, kind in (("DIAGNOSES_ICD", "diag"), ("PROCEDURES_ICD", "proc")):
        frame = _read(out, table)
        codes = frame[frame["ICD9_CODE"] != ""].groupby("HADM_ID")["ICD9_CODE"].agg(list)
        vocab = getattr(ds, f"{kind}_vocab")
        for i in range(len(v)):
            expected = [vocab.codes[c] for c in getattr(v, kind)[i]]
            assert codes.get(str(v.visit_id[i]), []) == expected  # in SEQ_NUM order
        titles = _read(out, f"D_ICD_{table.split('_')[0]}")
        assert dict(zip(titles["ICD9_CODE"], titles["LONG_TITLE"], strict=True)) == dict(
            zip(vocab.codes, vocab.titles, strict=True)
        )
        assert titles["SHORT_TITLE"].str.len().max() <= 24
    dx = _read(out, "DIAGNOSES_ICD")
    assert ((dx["ICD9_CODE"] == "") == (dx["SEQ_NUM"] == "")).all()

    adm = _read(out, "ADMISSIONS").set_index("HADM_ID")
    pat = _read(out, "PATIENTS").set_index("SUBJECT_ID")
    assert sorted(adm.index.astype(int)) == sorted(v.visit_id.tolist())
    for i in range(len(v)):
        row = adm.loc[str(v.visit_id[i])]
        assert int(row["SUBJECT_ID"]) == v.patient_id[i]
        assert row["ADMITTIME"] == v.admit_time[i] < row["DISCHTIME"]
        person = pat.loc[row["SUBJECT_ID"]]
        assert person["GENDER"] == v.gender[i]
        dob = datetime.date.fromisoformat(person["DOB"][:10])
        admit = datetime.date.fromisoformat(row["ADMITTIME"][:10])
        age = admit.year - dob.year - ((admit.month, admit.day) < (dob.month, dob.day))
        assert age == v.age[i]
    died = adm["HOSPITAL_EXPIRE_FLAG"] == "1"
    assert (adm.loc[died, "DEATHTIME"] != "").all() and (adm.loc[~died, "DEATHTIME"] == "").all()

    smiles = _read(out, "drug_smiles")
    assert list(smiles["DRUG_CODE"]) == list(ds.med_vocab.codes)
    assert list(smiles["SMILES"]) == [s[0] for s in ds.med_vocab.smiles]
    pairs = _read(out, "ddi_pairs")
    adj = np.zeros_like(ds.ddi)
    for a, b in zip(pairs["DRUG_CODE_1"], pairs["DRUG_CODE_2"], strict=True):
        adj[med_index[a], med_index[b]] = adj[med_index[b], med_index[a]] = 1
    np.testing.assert_array_equal(adj, ds.ddi)
    assert (pairs["INTERACTION_TYPE"] != "").all()


# --------------------------------------------------------------------------------------------------
# Files


def test_written_truth_round_trips(written):
    cohort, out = written
    rules = load_rules(out / "truth" / "rules.json")
    assert rules == cohort.rules
    assert PlantedRules.from_json(json.loads(json.dumps(rules.to_json()))) == rules
    oracle = pd.read_parquet(out / "truth" / "oracle.parquet")
    ds = load_dataset(out / "dataset")
    sets, scores = oracle_recommend(rules, ds, np.arange(len(ds.visits)))
    assert list(oracle["visit_id"]) == ds.visits.visit_id.tolist()
    assert list(oracle["split"]) == list(ds.split_of_visit())
    assert [list(m) for m in oracle["med"]] == [np.flatnonzero(s).tolist() for s in sets]
    np.testing.assert_array_equal(np.stack(oracle["scores"].to_numpy()), scores)


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (
            lambda j: j["classes"][1]["members"].__setitem__(0, 10_000),
            r"classes\[1\]\.members\[0\]",
        ),
        (
            lambda j: j["diseases"][0].__setitem__("primary_code", -1),
            r"diseases\[0\]\.primary_code",
        ),
        (lambda j: j.__setitem__("p_give", "high"), r"p_give"),
        (lambda j: j["interactions"][0].update(a=5, b=5), r"interactions\[0\]"),
        (lambda j: j["companions"][0].pop("prob"), r"companions\[0\]\.prob: missing"),
        (lambda j: j.__setitem__("surprise", 1), r"surprise"),
    ],
)
def test_load_rules_names_the_file_and_field(written, tmp_path, edit, field):
    _, out = written
    obj = json.loads((out / "truth" / "rules.json").read_text())
    edit(obj)
    path = tmp_path / "rules.json"
    path.write_text(json.dumps(obj))
    with pytest.raises(ValueError, match=rf"rules\.json.*{field}"):
        load_rules(path)


def test_load_rules_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.json"):
        load_rules(tmp_path / "nowhere.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"bad\.json: not valid JSON"):
        load_rules(tmp_path / "bad.json")


def test_same_seed_same_bytes(tmp_path):
    config = SyntheticConfig.tiny(seed=11, patients=40)
    synthesize(tmp_path / "a", config)
    synthesize(tmp_path / "b", config)
    synthesize(tmp_path / "c", dataclasses.replace(config, seed=12))
    files = sorted(
        p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file()
    )
    assert len(files) == 10 + 5 + 2  # raw tables, dataset files, truth files
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    differ = [
        r for r in files if (tmp_path / "a" / r).read_bytes() != (tmp_path / "c" / r).read_bytes()
    ]
    assert Path("raw/PRESCRIPTIONS.csv.gz") in differ and Path("dataset/visits.parquet") in differ


def test_write_is_atomic_and_refuses_to_clobber(tmp_path, monkeypatch, tiny):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("earlier results")
    with pytest.raises(FileExistsError):
        write_cohort(tiny, out)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]

    import flame_jax.data._synthetic as synthetic

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(synthetic, "save_dataset", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        write_cohort(tiny, tmp_path / "fresh")
    with pytest.raises(RuntimeError, match="disk full"):
        write_cohort(tiny, out, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"], "no half-written folder"
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    monkeypatch.undo()
    paths = write_cohort(tiny, out, overwrite=True)
    assert not (out / "keep.txt").exists()
    assert all(p.exists() for p in paths.values())
    assert {"PRESCRIPTIONS", "dataset", "rules", "oracle"} <= set(paths)


def test_synthesize_progress_bar(tmp_path, capsys):
    cohort = synthesize(tmp_path / "out", SyntheticConfig.tiny(patients=10), progress=True)
    assert "synthetic patients" in capsys.readouterr().err
    assert len(cohort.dataset.patients) == 10
    save_dataset(cohort.dataset, tmp_path / "again")  # the in-memory dataset validates
