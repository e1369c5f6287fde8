"""The built-in synthetic cohort: MIMIC-III-shaped raw tables, a dataset and its planted truth.

Everything is a pure function of :class:`SyntheticConfig` (one root seed, split into named NumPy
generators for the world, the patients, the raw-table formatting and the splits), so the same
config gives the same bytes on disk.

**The world.** ``drugs`` medications: ward drugs (saline, electrolytes, acetaminophen, ...; real
names and structures, several of them salts whose ions share no bond) plus therapeutic classes
(heparins "-parin", proton pump inhibitors "-prazole", beta blockers "-olol", ACE inhibitors
"-opril", statins "-vastatin", ...). Therapeutic drugs have invented names that carry the class
stem, SMILES built from a class scaffold with two substituents (checked with RDKit; members of a
class are structurally similar), 1-3 NDC codes and sometimes a brand-like synonym. Latent diseases
(chronic: hypertension, heart failure, ...; acute: pneumonia, sepsis, ...) have ICD-9 codes and
indicate classes; some trigger ICD-9 procedures, and procedures can indicate classes themselves.

**The patients.** 1..``max_visits`` admissions (``multi_visit_fraction`` have two or more) at
increasing times, age 18-90. Chronic diseases persist (their prevalence grows with age); each
admission usually has one acute reason. An active disease always records its primary code (so a
model can see it), its secondary codes with ``p_secondary_code``, and it may trigger procedures;
unrelated diagnoses and procedures are added at random.

**The medications** follow :class:`~flame_jax.data.PlantedRules` (see its docstring): indicated
classes given with ``p_give`` (withheld by age rules and contraindications); exactly one member of
a given class, the patient's earlier drug of that class kept with ``p_stick``; planted interactions
between indicated drugs avoided with ``p_avoid`` (swap to a non-interacting member or drop the
lower-priority drug); companion drugs (a gastro-protective drug with an anticoagulant or NSAID,
potassium with a loop diuretic, a laxative with an opioid) with ``p_companion``; ward drugs with
their own probabilities; and ``noise_drug_rate`` random drugs per visit. The ground-truth sets
thus have exactly-one-of-class, co-prescription and avoided-interaction structure, and a low but
non-zero DDI rate (about 0.08 on the default config, as in MIMIC-III).

**On disk** (:func:`write_cohort`)::

    raw/ADMISSIONS.csv.gz, PATIENTS, DIAGNOSES_ICD, PROCEDURES_ICD, PRESCRIPTIONS,
        D_ICD_DIAGNOSES, D_ICD_PROCEDURES   MIMIC-III v1.4 schemas (upper-case columns)
    raw/ndc2drug.csv.gz       NDC, DRUG_CODE, DRUG_NAME
    raw/drug_smiles.csv.gz    DRUG_CODE, DRUG_NAME, SMILES
    raw/ddi_pairs.csv.gz      DRUG_CODE_1, DRUG_CODE_2, INTERACTION_TYPE
    dataset/                  the flame_jax dataset format (see flame_jax.data._format)
    truth/rules.json          the planted rules (:func:`~flame_jax.data.load_rules`)
    truth/oracle.parquet      per visit: visit_id, patient_id, split, med (the oracle's set),
                              scores (its marginal probability of every drug)

The same raw tables in the MIMIC-IV hosp and eICU-CRD layouts: :func:`mimic4_tables`,
:func:`eicu_tables`, :func:`write_raw_layout` (``flame-jax data synth-raw``); ingesting any layout
with :func:`~flame_jax.data.prepare` gives back the cohort's visits.

The medication set of a visit is exactly what its MAIN rows of PRESCRIPTIONS with a valid NDC map
to through ``ndc2drug`` (BASE diluent rows carry NDC "0" or NDCs that are not drugs; ADDITIVE rows
repeat drugs of the set). As in MIMIC, some MAIN rows have NDC "0" or none, a few DIAGNOSES_ICD
rows have no code, and DRUG names vary (strength suffixes, brand names, upper case).
"""

import dataclasses
import datetime
import io
import itertools
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from flame_jax import _io
from flame_jax.data import _synthetic_vocab as V
from flame_jax.data._format import (
    Dataset,
    RaggedIds,
    VisitTable,
    Vocabulary,
    cooccurrence_adjacency,
    save_dataset,
)
from flame_jax.data._oracle import (
    AgeRule,
    BackgroundDrug,
    Companion,
    Contraindication,
    Disease,
    DrugClass,
    Interaction,
    PlantedRules,
    ProcedureIndication,
    RuleTables,
    oracle_recommend,
    update_history,
)

__all__ = [
    "RAW_LAYOUTS",
    "RAW_TABLES",
    "SyntheticCohort",
    "SyntheticConfig",
    "eicu_tables",
    "generate_cohort",
    "mimic4_tables",
    "synthesize",
    "write_cohort",
    "write_raw_layout",
]

# Raw tables in the order they are written; MIMIC-III v1.4 column sets and orders.
RAW_TABLES: dict[str, tuple[str, ...]] = {
    "PATIENTS": ("ROW_ID", "SUBJECT_ID", "GENDER", "DOB", "DOD", "DOD_HOSP", "DOD_SSN",
                 "EXPIRE_FLAG"),
    "ADMISSIONS": ("ROW_ID", "SUBJECT_ID", "HADM_ID", "ADMITTIME", "DISCHTIME", "DEATHTIME",
                   "ADMISSION_TYPE", "ADMISSION_LOCATION", "DISCHARGE_LOCATION", "INSURANCE",
                   "LANGUAGE", "RELIGION", "MARITAL_STATUS", "ETHNICITY", "EDREGTIME",
                   "EDOUTTIME", "DIAGNOSIS", "HOSPITAL_EXPIRE_FLAG", "HAS_CHARTEVENTS_DATA"),
    "DIAGNOSES_ICD": ("ROW_ID", "SUBJECT_ID", "HADM_ID", "SEQ_NUM", "ICD9_CODE"),
    "PROCEDURES_ICD": ("ROW_ID", "SUBJECT_ID", "HADM_ID", "SEQ_NUM", "ICD9_CODE"),
    "PRESCRIPTIONS": ("ROW_ID", "SUBJECT_ID", "HADM_ID", "ICUSTAY_ID", "STARTDATE", "ENDDATE",
                      "DRUG_TYPE", "DRUG", "DRUG_NAME_POE", "DRUG_NAME_GENERIC",
                      "FORMULARY_DRUG_CD", "GSN", "NDC", "PROD_STRENGTH", "DOSE_VAL_RX",
                      "DOSE_UNIT_RX", "FORM_VAL_DISP", "FORM_UNIT_DISP", "ROUTE"),
    "D_ICD_DIAGNOSES": ("ROW_ID", "ICD9_CODE", "SHORT_TITLE", "LONG_TITLE"),
    "D_ICD_PROCEDURES": ("ROW_ID", "ICD9_CODE", "SHORT_TITLE", "LONG_TITLE"),
    "ndc2drug": ("NDC", "DRUG_CODE", "DRUG_NAME"),
    "drug_smiles": ("DRUG_CODE", "DRUG_NAME", "SMILES"),
    "ddi_pairs": ("DRUG_CODE_1", "DRUG_CODE_2", "INTERACTION_TYPE"),
}  # fmt: skip

_EPOCH = np.datetime64("2100-01-01T00:00", "m")


@dataclasses.dataclass(frozen=True, kw_only=True)
class SyntheticConfig:
    """Knobs of the synthetic cohort; the cohort is a pure function of them.

    Raises:
      ValueError: naming the field, when a value is out of its range.

    Examples:
      >>> SyntheticConfig.tiny().patients
      120
      >>> SyntheticConfig(drugs=5)
      Traceback (most recent call last):
      ...
      ValueError: SyntheticConfig.drugs must be an integer in [12, 400], got 5
    """

    seed: int = 0  # root seed of every random choice
    patients: int = 2000  # number of patients
    drugs: int = 60  # medication vocabulary size (ward drugs + therapeutic classes)
    diag_codes: int = 150  # diagnosis vocabulary size (disease codes + unrelated codes)
    proc_codes: int = 50  # procedure vocabulary size
    max_visits: int = 5  # each patient has 1..max_visits admissions
    multi_visit_fraction: float = 0.6  # fraction of patients with two or more admissions
    acute_admission_rate: float = 0.85  # fraction of admissions with an acute reason
    p_give: float = 0.9  # an indicated class is prescribed (< 1: omissions)
    p_stick: float = 0.8  # a patient keeps its earlier drug of a class (history effect)
    p_avoid: float = 0.9  # clinicians avoid an interaction between two indicated drugs
    p_companion: float = 0.85  # a companion drug is co-prescribed with its trigger drug
    p_age_avoid: float = 0.9  # an age rule withholds its class from older patients
    p_contraindication: float = 0.95  # a class is withheld while a contraindicating disease is on
    p_secondary_code: float = 0.4  # each secondary code of an active disease is recorded
    noise_diag_rate: float = 4.0  # mean number of unrelated diagnosis codes per visit
    noise_proc_rate: float = 0.8  # mean number of unrelated procedures per visit
    noise_drug_rate: float = 0.3  # mean number of random extra drugs per visit
    ddi_density: float = 0.4  # interacting fraction of therapeutic pairs (low-prob ward: a third)
    class_ddi_density: float = 0.0  # interacting fraction of curated class-level member pairs
    popularity_skew: float = 2.0  # Zipf exponent of the popularity of the members of a class

    def __post_init__(self):
        ints = {
            "seed": (0, 2**63 - 1),
            "patients": (6, 1_000_000),
            "drugs": (12, 400),
            "diag_codes": (20, 10_000),
            "proc_codes": (10, 1_500),
            "max_visits": (1, 20),
        }
        for name, (lo, hi) in ints.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise ValueError(f"SyntheticConfig.{name} must be an integer, got {value!r}")
            if not lo <= value <= hi:
                raise ValueError(
                    f"SyntheticConfig.{name} must be an integer in [{lo}, {hi}], got {value!r}"
                )
            object.__setattr__(self, name, int(value))
        floats = {f.name: f for f in dataclasses.fields(self) if f.name not in ints}
        for name in floats:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"SyntheticConfig.{name} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"SyntheticConfig.{name} must be finite, got {value!r}")
            lo, hi = (
                (0.0, 1.0)
                if name.startswith("p_")
                or name.endswith(("_fraction", "_density", "admission_rate"))
                else (0.0, 100.0)
            )
            if not lo <= value <= hi:
                raise ValueError(f"SyntheticConfig.{name} must be in [{lo}, {hi}], got {value!r}")
            object.__setattr__(self, name, float(value))

    @classmethod
    def tiny(cls, **overrides: Any) -> "SyntheticConfig":
        """A small cohort for tests (about 120 patients, 24 drugs) that still has every rule."""
        kwargs: dict[str, Any] = {
            "patients": 120,
            "drugs": 24,
            "diag_codes": 60,
            "proc_codes": 24,
            "max_visits": 4,
        }
        kwargs.update(overrides)
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class SyntheticCohort:
    """A generated cohort.

    Attributes:
      dataset: the cohort in the flame_jax dataset format.
      raw: table name -> ``pandas.DataFrame`` (the MIMIC-III tables and the side tables, keys as
        in :data:`RAW_TABLES`).
      rules: the planted rules, indices matching the dataset vocabularies.
      config: the config that generated it.
    """

    dataset: Dataset
    raw: Mapping[str, Any]
    rules: PlantedRules
    config: SyntheticConfig


# --------------------------------------------------------------------------------------------------
# The world: vocabularies, drug attributes and planted rules


@dataclasses.dataclass
class _Drug:
    code: str
    name: str
    smiles: str
    synonyms: tuple[str, ...]
    ndcs: list[str]
    strengths: tuple[str, ...]
    route: str
    form: str
    form_unit: str
    dose_unit: str
    gsn: str


@dataclasses.dataclass
class _World:
    drugs: list[_Drug]
    diag: list[tuple[str, str]]  # (code, long title), vocabulary order
    proc: list[tuple[str, str]]
    rules: PlantedRules
    chronic: np.ndarray  # disease indices
    acute: np.ndarray
    acute_weights: np.ndarray  # probability of each acute disease as an admission's reason
    noise_diag: np.ndarray  # diagnosis indices of the unrelated codes
    noise_diag_weights: np.ndarray
    proc_weights: np.ndarray  # [procedures] probability as an unrelated procedure
    salts: frozenset[int]  # ward electrolytes that may also appear as ADDITIVE rows
    interaction_kinds: dict[tuple[int, int], str]


def _normalise(name: str) -> str:
    return name.lower().replace(" ", "").replace("-", "")


def _pick(rng: np.random.Generator, options: tuple) -> Any:
    return options[int(rng.integers(len(options)))]


def _syllable(rng: np.random.Generator) -> str:
    return _pick(rng, V.ONSETS) + _pick(rng, V.VOWELS)


def _unique(used: set[str], make: Callable[[], str]) -> str:
    """A fresh name from ``make`` whose normalised form is not in ``used`` (then added)."""
    while True:
        name = make()
        if _normalise(name) not in used:
            used.add(_normalise(name))
            return name


def _generic_name(rng: np.random.Generator, spec: V.ClassSpec) -> str:
    if spec.prefix:  # "cef" + syllable + ending: Cefprexime
        return (spec.stem + _syllable(rng) + _pick(rng, V.CEF_ENDINGS)).capitalize()
    prefix = _syllable(rng) + _syllable(rng)
    if spec.stem[0] in V.VOWELS:  # "vela" + "opril" -> "velopril"
        prefix = prefix[:-1]
    return (prefix + spec.stem).capitalize()


def _brand_name(rng: np.random.Generator) -> str:
    return (_syllable(rng) + _syllable(rng)[:1] + _pick(rng, V.BRAND_ENDINGS)).capitalize()


def _ndcs(rng: np.random.Generator, used: set[str]) -> list[str]:
    """1-3 fresh 11-digit NDCs (labeler 5, product 4, package 2)."""
    out = []
    for _ in range(int(rng.integers(1, 4))):
        out.append(
            _unique(
                used,
                lambda: (
                    _pick(rng, V.NDC_LABELERS)
                    + f"{int(rng.integers(1, 10_000)):04d}{int(rng.integers(1, 100)):02d}"
                ),
            )
        )
    return out


def _class_smiles(rng: np.random.Generator, spec: V.ClassSpec, count: int, seen: set[str]):
    """``count`` valid, distinct SMILES from the class scaffold (RDKit parses each one, and
    canonical forms already in ``seen`` are skipped)."""
    from rdkit import Chem

    n = len(V.SUBSTITUENTS)
    out = []
    for flat in rng.permutation(n * n).tolist():
        smiles = spec.scaffold.format(a=V.SUBSTITUENTS[flat // n], b=V.SUBSTITUENTS[flat % n])
        mol = Chem.MolFromSmiles(smiles)
        if mol is None or Chem.MolToSmiles(mol) in seen:
            continue
        seen.add(Chem.MolToSmiles(mol))
        out.append(smiles)
        if len(out) == count:
            return out
    raise RuntimeError(f"class {spec.key}: fewer than {count} distinct structures")


def _zipf(rng: np.random.Generator, n: int, skew: float) -> tuple[float, ...]:
    """Popularity of ``n`` members: rank ** -skew, normalised, in random member order."""
    weights = (np.arange(n) + 1.0) ** -skew
    weights = weights[rng.permutation(n)]
    return tuple(float(w) for w in weights / weights.sum())


def _make_drugs(config: SyntheticConfig, rng: np.random.Generator):
    """Ward drugs, then the members of the first therapeutic classes of the catalogue.

    Returns:
      ``(drugs, classes, specs)``: the drugs in vocabulary order, the :class:`DrugClass` list
      (class 0 is the ward) and the catalogue entries of classes 1.. .
    """
    from rdkit import Chem

    m = config.drugs
    n_ward = min(max(round(0.15 * m), 3), len(V.WARD_DRUGS))
    n_ther = m - n_ward
    n_cls = min(max(round(n_ther / 2.8), 4), len(V.CLASSES))
    smallest = 2 if n_ther >= 2 * n_cls else 1
    sizes = smallest + rng.multinomial(n_ther - smallest * n_cls, np.full(n_cls, 1.0 / n_cls))
    specs = V.CLASSES[:n_cls]

    used_names = {_normalise(n) for w in V.WARD_DRUGS for n in (w.name, *w.synonyms)}
    used_ndcs = {d[1] for d in V.BASE_DILUENTS}
    used_gsns: set[str] = set()
    seen_smiles: set[str] = set()

    def drug(name, smiles, synonyms, spec) -> _Drug:
        return _Drug(
            code=f"SYN{len(drugs) + 1:03d}",
            name=name,
            smiles=smiles,
            synonyms=synonyms,
            ndcs=_ndcs(rng, used_ndcs),
            strengths=spec.strengths,
            route=spec.route,
            form=spec.form,
            form_unit=spec.form_unit,
            dose_unit=spec.dose_unit,
            gsn=_unique(used_gsns, lambda: f"{int(rng.integers(1000, 80_000)):06d}"),
        )

    drugs: list[_Drug] = []
    for w in V.WARD_DRUGS[:n_ward]:
        mol = Chem.MolFromSmiles(w.smiles)
        if mol is None:  # a catalogue error, never data-dependent
            raise RuntimeError(f"invalid SMILES for {w.name}: {w.smiles}")
        seen_smiles.add(Chem.MolToSmiles(mol))
        drugs.append(drug(w.name, w.smiles, w.synonyms, w))
    classes = [
        DrugClass(
            name="Ward and supportive care",
            stem="",
            members=tuple(range(n_ward)),
            popularity=tuple(1.0 / n_ward for _ in range(n_ward)),
            substitutable=False,
            priority=100,
        )
    ]
    for spec, size in zip(specs, sizes.tolist(), strict=True):
        start = len(drugs)
        for smiles in _class_smiles(rng, spec, size, seen_smiles):
            name = _unique(used_names, lambda spec=spec: _generic_name(rng, spec))
            brand = rng.random() < 0.2
            synonyms = (_unique(used_names, lambda: _brand_name(rng)),) if brand else ()
            drugs.append(drug(name, smiles, synonyms, spec))
        classes.append(
            DrugClass(
                name=spec.name,
                stem=f"{spec.stem}-" if spec.prefix else f"-{spec.stem}",
                members=tuple(range(start, len(drugs))),
                popularity=_zipf(rng, size, config.popularity_skew),
                substitutable=True,
                priority=spec.priority,
            )
        )
    return drugs, classes, specs


def _make_diagnoses(config: SyntheticConfig, rng: np.random.Generator, class_of: dict[str, int]):
    """The diseases whose classes exist and the diagnosis vocabulary.

    Returns:
      ``(diseases, diag, noise)``: (catalogue entry, class indices, primary (code, title),
      secondary ((code, title), ...)) per disease; the vocabulary [(code, title)] sorted by code;
      the unrelated (code, title) entries, most frequent first.
    """
    entries = []
    for spec in V.DISEASES:
        classes = tuple(class_of[k] for k in spec.classes if k in class_of)
        if classes:
            entries.append((spec, classes))
    room = config.diag_codes - max(5, config.diag_codes // 4)  # keep a quarter unrelated
    entries = entries[:room]
    secondary = [list(spec.secondary) for spec, _ in entries]
    while sum(map(len, secondary)) > room - len(entries):  # trim the longest lists first
        longest = max(range(len(secondary)), key=lambda i: (len(secondary[i]), i))
        secondary[longest].pop()
    diseases = [
        (spec, classes, spec.primary, tuple(sec))
        for (spec, classes), sec in zip(entries, secondary, strict=True)
    ]
    taken = {code for *_, p, sec in diseases for code, _ in (p, *sec)}
    n_noise = config.diag_codes - len(taken)
    noise = [c for c in V.NOISE_DIAGNOSES if c[0] not in taken][:n_noise]
    taken |= {code for code, _ in noise}
    titles = {title for _, title in noise}
    if len(noise) < n_noise:  # ICD-9-shaped synthetic codes beyond the catalogue
        codes = [f"{c}{d}" for c in range(680, 1000) for d in (*range(10), *range(10, 100))]
        codes = [c for c in codes if c not in taken]
        titles = [
            f"{q} {f} of {s}{x}"
            for q, f, s, x in itertools.product(
                V.SYNTHETIC_DIAG_QUALIFIERS,
                V.SYNTHETIC_DIAG_FINDINGS,
                V.SYNTHETIC_DIAG_SITES,
                V.SYNTHETIC_DIAG_SUFFIXES,
            )
        ]
        extra = n_noise - len(noise)
        noise += zip(
            (codes[i] for i in np.sort(rng.choice(len(codes), extra, replace=False))),
            (titles[i] for i in rng.choice(len(titles), extra, replace=False)),
            strict=True,
        )
    diag = sorted([p for *_, p, _ in diseases] + [c for *_, sec in diseases for c in sec] + noise)
    return diseases, diag, noise


def _make_procedures(config: SyntheticConfig, rng: np.random.Generator, wanted: list[str]):
    """The procedure vocabulary: the ``wanted`` catalogue codes first, then the rest of the
    catalogue, then synthetic ones; [(code, title, weight as an unrelated procedure)] by code."""
    catalogue = {p.code: p for p in V.PROCEDURES}
    codes = list(dict.fromkeys(wanted + list(catalogue)))[: config.proc_codes]
    entries = [(c, catalogue[c].title, catalogue[c].weight) for c in codes]
    if len(entries) < config.proc_codes:
        spare = [f"{c:04d}" for c in range(100, 10_000) if f"{c:04d}" not in catalogue]
        titles = [
            f"{a} of {s}{x}"
            for a, s, x in itertools.product(
                V.NOISE_PROCEDURE_ACTIONS, V.NOISE_PROCEDURE_SITES, V.NOISE_PROCEDURE_APPROACHES
            )
        ]
        extra = config.proc_codes - len(entries)
        picked = zip(
            rng.choice(len(spare), extra, replace=False).tolist(),
            rng.choice(len(titles), extra, replace=False).tolist(),
            strict=True,
        )
        entries += [(spare[c], titles[t], 0.1) for c, t in picked]
    return sorted(entries)


def _plant_interactions(
    config: SyntheticConfig,
    rng: np.random.Generator,
    drug_class: np.ndarray,
    quiet: np.ndarray,
    companions: set[tuple[int, int]],
    members: Callable[[str], np.ndarray],
) -> dict[tuple[int, int], str]:
    """Random interactions between drugs of different classes, never between companions.

    Therapeutic pairs interact with ``ddi_density``, pairs with a ward drug a third as often,
    ward pairs and ``quiet`` drugs (saline, acetaminophen: in almost every visit) never. With
    ``class_ddi_density > 0``, each member pair of a curated class-level interaction
    (``CLASS_INTERACTIONS``: beta blocker with beta agonist, ACE inhibitor with potassium, ...)
    also interacts with that probability, with the curated kind (random draws are made only
    then, so cohorts with ``class_ddi_density == 0`` are unchanged).
    """
    m = drug_class.size
    ward = drug_class == 0
    density = np.where(ward[:, None] | ward[None, :], config.ddi_density / 3, config.ddi_density)
    density[ward[:, None] & ward[None, :]] = 0.0
    density[quiet] = 0.0
    density[:, quiet] = 0.0
    hits = np.triu(rng.random((m, m)) < density, 1)
    kinds = rng.integers(len(V.DDI_KINDS), size=(m, m))
    out = {}
    for a, b in zip(*np.nonzero(hits), strict=True):
        a, b = int(a), int(b)
        if drug_class[a] != drug_class[b] and (a, b) not in companions:
            out[(a, b)] = V.DDI_KINDS[int(kinds[a, b])]
    if config.class_ddi_density > 0:
        for left, right, kind in V.CLASS_INTERACTIONS:
            ma, mb = members(left), members(right)
            hits = rng.random((len(ma), len(mb))) < config.class_ddi_density
            for i, j in zip(*np.nonzero(hits), strict=True):
                a, b = sorted((int(ma[i]), int(mb[j])))
                if (a, b) not in companions:
                    out[(a, b)] = kind
    return out


def _build_world(config: SyntheticConfig, rng: np.random.Generator) -> _World:
    drugs, classes, specs = _make_drugs(config, rng)
    class_of = {s.key: i + 1 for i, s in enumerate(specs)}  # class 0 is the ward
    ward = {d.name: i for i, d in enumerate(drugs[: len(classes[0].members)])}

    diseases, diag, noise = _make_diagnoses(config, rng, class_of)
    diag_index = {c: i for i, (c, _) in enumerate(diag)}
    wanted = [p for spec, *_ in diseases for p, _ in spec.procedures]
    wanted += [p.code for p in V.PROCEDURES if any(k in class_of for k in p.classes)]
    proc_entries = _make_procedures(config, rng, wanted)
    proc_index = {c: i for i, (c, _, _) in enumerate(proc_entries)}

    disease_rules = []
    for spec, cls, primary, secondary in diseases:
        procs = [(proc_index[p], q) for p, q in spec.procedures if p in proc_index]
        disease_rules.append(
            Disease(
                name=spec.name,
                chronic=spec.chronic,
                prevalence=spec.prevalence,
                primary_code=diag_index[primary[0]],
                secondary_codes=tuple(diag_index[c] for c, _ in secondary),
                classes=cls,
                procedures=tuple(p for p, _ in procs),
                procedure_probs=tuple(q for _, q in procs),
            )
        )
    indications = sorted(
        (
            ProcedureIndication(
                procedure=proc_index[p.code],
                classes=tuple(class_of[k] for k in p.classes if k in class_of),
            )
            for p in V.PROCEDURES
            if p.code in proc_index and any(k in class_of for k in p.classes)
        ),
        key=lambda r: r.procedure,
    )

    # Companions: each member of a trigger class gets one companion, a member of the target
    # class chosen by popularity, or the named ward drug.
    companions = []
    for spec, cls in zip(specs, classes[1:], strict=True):
        for target in spec.companions:
            for a in cls.members:
                if target in class_of:
                    tc = classes[class_of[target]]
                    b = tc.members[int(rng.choice(len(tc.members), p=tc.popularity))]
                elif target in ward:
                    b = ward[target]
                else:
                    continue
                companions.append(Companion(trigger=a, companion=b, prob=config.p_companion))

    drug_class = np.zeros(len(drugs), np.int64)
    for i, c in enumerate(classes):
        drug_class[list(c.members)] = i
    quiet = np.zeros(len(drugs), bool)
    quiet[[i for i, w in enumerate(V.WARD_DRUGS[: len(ward)]) if w.prob > 0.5]] = True
    pairs = {(min(c.trigger, c.companion), max(c.trigger, c.companion)) for c in companions}

    def members(key: str) -> np.ndarray:  # the drugs of a class key or a ward drug name
        if key in class_of:
            return np.asarray(classes[class_of[key]].members, np.int64)
        return np.asarray([ward[key]] if key in ward else [], np.int64)

    kinds = _plant_interactions(config, rng, drug_class, quiet, pairs, members)

    disease_index = {spec.name: i for i, (spec, *_) in enumerate(diseases)}
    rules = PlantedRules(
        med_codes=tuple(d.code for d in drugs),
        diag_codes=tuple(c for c, _ in diag),
        proc_codes=tuple(c for c, _, _ in proc_entries),
        classes=tuple(classes),
        diseases=tuple(disease_rules),
        procedure_indications=tuple(indications),
        companions=tuple(companions),
        interactions=tuple(Interaction(a=a, b=b, kind=k) for (a, b), k in kinds.items()),
        background=tuple(
            BackgroundDrug(drug=i, prob=w.prob) for i, w in enumerate(V.WARD_DRUGS[: len(ward)])
        ),
        age_rules=tuple(
            AgeRule(drug_class=class_of[k], min_age=age, prob=config.p_age_avoid)
            for k, age in V.AGE_RULES
            if k in class_of
        ),
        contraindications=tuple(
            Contraindication(
                disease=disease_index[d], drug_class=class_of[k], prob=config.p_contraindication
            )
            for d, k in V.CONTRAINDICATIONS
            if d in disease_index and k in class_of
        ),
        fallback_drug=0,
        p_give=config.p_give,
        p_stick=config.p_stick,
        p_avoid=config.p_avoid,
        p_secondary=config.p_secondary_code,
        noise_drug_rate=config.noise_drug_rate,
    )
    acute = np.asarray([i for i, d in enumerate(disease_rules) if not d.chronic], np.int64)
    acute_w = np.asarray([disease_rules[i].prevalence for i in acute], np.float64)
    noise_w = (np.arange(len(noise)) + 1.0) ** -0.8
    proc_w = np.asarray([w for *_, w in proc_entries])
    salts = ("Potassium Chloride", "Magnesium Sulfate", "Calcium Chloride", "Sodium Bicarbonate")
    return _World(
        drugs=drugs,
        diag=diag,
        proc=[(c, t) for c, t, _ in proc_entries],
        rules=rules,
        chronic=np.asarray([i for i, d in enumerate(disease_rules) if d.chronic], np.int64),
        acute=acute,
        acute_weights=acute_w / acute_w.sum() if acute_w.size else acute_w,
        noise_diag=np.asarray([diag_index[c] for c, _ in noise], np.int64),
        noise_diag_weights=noise_w / noise_w.sum(),
        proc_weights=proc_w / proc_w.sum(),
        salts=frozenset(ward[n] for n in salts if n in ward),
        interaction_kinds=kinds,
    )


# --------------------------------------------------------------------------------------------------
# Patients and visits


@dataclasses.dataclass
class _Visits:
    """The simulated cohort, one entry per visit in (patient, visit_index) order."""

    patient: list[int] = dataclasses.field(default_factory=list)
    visit_index: list[int] = dataclasses.field(default_factory=list)
    admit: list[int] = dataclasses.field(default_factory=list)  # minutes since _EPOCH
    los: list[int] = dataclasses.field(default_factory=list)  # minutes
    age: list[int] = dataclasses.field(default_factory=list)
    diag: list[list[int]] = dataclasses.field(default_factory=list)  # in SEQ_NUM order
    proc: list[list[int]] = dataclasses.field(default_factory=list)
    med: list[list[int]] = dataclasses.field(default_factory=list)  # sorted
    reason: list[int] = dataclasses.field(default_factory=list)  # disease index or -1
    died: list[bool] = dataclasses.field(default_factory=list)
    gender: list[str] = dataclasses.field(default_factory=list)  # per patient
    dob: list[datetime.date] = dataclasses.field(default_factory=list)  # per patient


def _age(dob: datetime.date, when: datetime.date) -> int:
    return when.year - dob.year - ((when.month, when.day) < (dob.month, dob.day))


def _date(minutes: int) -> datetime.date:
    return (_EPOCH + np.timedelta64(minutes, "m")).astype(datetime.datetime).date()


def _sample(rng: np.random.Generator, cum: np.ndarray, members: np.ndarray) -> int:
    """A member drawn with the probabilities whose cumulative sums are ``cum``."""
    k = int(np.searchsorted(cum, rng.random() * cum[-1], side="right"))
    return int(members[min(k, len(members) - 1)])


def _prescribe(
    t: RuleTables,
    rng: np.random.Generator,
    active: list[int],
    procs: list[int],
    age: int,
    history: dict[int, int],
) -> list[int]:
    """One visit's medication set (sorted), following :class:`PlantedRules`; the oracle's
    ``_decode_visit`` mirrors this function."""
    r = t.rules
    active_set = frozenset(active)
    chosen: list[int] = []
    for c in t.indicated(active, procs):
        if rng.random() >= t.give_prob(c, age, active_set):
            continue
        members, cum = t.members[c], t.cum_popularity[c]
        h = history.get(c)
        drug = h if h is not None and rng.random() < r.p_stick else _sample(rng, cum, members)
        if t.interacts(drug, chosen) and rng.random() < r.p_avoid:
            ok = ~t.ddi[np.ix_(members, chosen)].any(axis=1)
            if not ok.any() or t.popularity[c][ok].sum() == 0:
                continue  # no safe substitute: the lower-priority drug is dropped
            drug = _sample(rng, np.cumsum(t.popularity[c][ok]), members[ok])
        chosen.append(drug)
    meds = set(chosen)
    present = {int(t.drug_class[d]) for d in chosen}
    for a in chosen:
        for b, prob in t.companions_of.get(a, ()):
            cb = int(t.drug_class[b])
            if rng.random() < prob and not t.blocked(cb, present, meds, b):
                meds.add(b)
                present.add(cb)
    for bg in r.background:
        if rng.random() < bg.prob:
            meds.add(bg.drug)
    for d in rng.integers(r.num_meds, size=int(rng.poisson(r.noise_drug_rate))).tolist():
        cd = int(t.drug_class[d])
        if not t.blocked(cd, present, meds, d):
            meds.add(d)
            present.add(cd)
    if not meds:
        meds.add(r.fallback_drug)
    return sorted(meds)


def _record_codes(
    world: _World, config: SyntheticConfig, rng: np.random.Generator, active: list[int]
) -> tuple[list[int], list[int]]:
    """Diagnosis codes (the first disease's primary code first) and procedures of a visit."""
    diseases = world.rules.diseases
    codes = [diseases[d].primary_code for d in active]
    procs = []
    for d in active:
        dis = diseases[d]
        keep = rng.random(len(dis.secondary_codes)) < world.rules.p_secondary
        codes += [c for c, k in zip(dis.secondary_codes, keep.tolist(), strict=True) if k]
        hit = rng.random(len(dis.procedures)) < np.asarray(dis.procedure_probs)
        procs += [p for p, h in zip(dis.procedures, hit.tolist(), strict=True) if h]
    n_noise = min(int(rng.poisson(config.noise_diag_rate)), world.noise_diag.size)
    if n_noise or not codes:
        codes += rng.choice(
            world.noise_diag, max(n_noise, 1), replace=False, p=world.noise_diag_weights
        ).tolist()
    codes = list(dict.fromkeys(codes))
    rest = codes[1:]
    codes = codes[:1] + [rest[i] for i in rng.permutation(len(rest)).tolist()]
    procs += rng.choice(
        len(world.proc), int(rng.poisson(config.noise_proc_rate)), p=world.proc_weights
    ).tolist()
    procs = list(dict.fromkeys(procs))
    return codes, [procs[i] for i in rng.permutation(len(procs)).tolist()]


def _simulate(
    world: _World, config: SyntheticConfig, rng: np.random.Generator, progress: Any
) -> _Visits:
    t = RuleTables.build(world.rules)
    out = _Visits()
    chronic_prev = np.asarray([world.rules.diseases[i].prevalence for i in world.chronic])
    acute_cum = np.cumsum(world.acute_weights)
    for p in range(config.patients):
        out.gender.append("F" if rng.random() < 0.45 else "M")
        n_vis = 1
        if config.max_visits > 1 and rng.random() < config.multi_visit_fraction:
            n_vis = int(rng.integers(2, config.max_visits + 1))
        # Admissions in 2100-2190 (MIMIC-III shifts dates into the future), 1-46 days long,
        # 20-800 days apart; age 18-90 throughout.
        start = int(rng.integers(0, 90 * 365)) * 1440 + int(rng.integers(0, 1440))
        admits, los = [], []
        for _ in range(n_vis):
            admits.append(start)
            los.append(int((1 + min(rng.gamma(1.6, 3.5), 45)) * 1440))
            start += los[-1] + int(rng.integers(20, 800)) * 1440 + int(rng.integers(-300, 300))
        first, last = _date(admits[0]), _date(admits[-1])
        age0 = int(np.clip(round(rng.normal(64, 15)), 18, 89))
        dob = first - datetime.timedelta(days=int(age0 * 365.25 + rng.integers(0, 365)))
        while _age(dob, last) > 90:
            dob += datetime.timedelta(days=365)
        out.dob.append(dob)
        died_in_hospital = rng.random() < 0.08

        chronic: set[int] = set()
        history: dict[int, int] = {}
        for v in range(n_vis):
            age = _age(dob, _date(admits[v]))
            # Chronic diseases: prevalence grows with age; new onsets are rarer later on.
            prob = np.minimum(chronic_prev * (0.5 + (age - 18) / 72.0), 0.95)
            prob *= 1.0 if v == 0 else 0.15
            chronic.update(world.chronic[rng.random(prob.size) < prob].tolist())
            acute: list[int] = []
            if world.acute.size and rng.random() < config.acute_admission_rate:
                acute.append(_sample(rng, acute_cum, world.acute))
            extra = world.acute[rng.random(world.acute.size) < 0.03].tolist()
            acute += [d for d in extra if d not in acute]
            active = acute + sorted(chronic)

            codes, procs = _record_codes(world, config, rng, active)
            meds = _prescribe(t, rng, active, procs, age, history)
            update_history(t, history, meds)

            out.patient.append(p)
            out.visit_index.append(v)
            out.admit.append(admits[v])
            out.los.append(los[v])
            out.age.append(age)
            out.diag.append(codes)
            out.proc.append(procs)
            out.med.append(meds)
            out.reason.append(active[0] if active else -1)
            out.died.append(died_in_hospital and v == n_vis - 1)
        if progress is not None:
            progress.update(1)
    return out


# --------------------------------------------------------------------------------------------------
# Raw tables


def _times(minutes: np.ndarray) -> np.ndarray:
    """'YYYY-MM-DD HH:MM:SS' strings (object array) of minutes since 2100-01-01."""
    stamps = _EPOCH + np.asarray(minutes, np.int64).astype("timedelta64[m]")
    return np.char.replace(np.datetime_as_string(stamps, unit="s"), "T", " ").astype(object)


def _dates(minutes: np.ndarray) -> np.ndarray:
    """'YYYY-MM-DD 00:00:00' strings of the days of ``minutes``."""
    return _times(np.asarray(minutes, np.int64) // 1440 * 1440)


def _where(mask: np.ndarray, values: np.ndarray) -> list:
    """``values`` where ``mask``, else None (a missing value)."""
    return [v if k else None for v, k in zip(values.tolist(), mask.tolist(), strict=True)]


def _frame(name: str, columns: Mapping[str, Any]) -> Any:
    """A DataFrame with the columns of ``RAW_TABLES[name]``: int64 for integer arrays, nullable
    Int64 for float arrays (integers with NaN holes), strings (None: missing) otherwise."""
    import pandas as pd

    if tuple(columns) != RAW_TABLES[name]:
        raise AssertionError(f"{name}: columns {list(columns)}")  # a bug, never user input

    def dtype(values: Any) -> str:
        if isinstance(values, np.ndarray) and values.dtype.kind in "iu":
            return "int64"
        if isinstance(values, np.ndarray) and values.dtype.kind == "f":
            return "Int64"
        return "str"

    return pd.DataFrame({k: pd.array(v, dtype=dtype(v)) for k, v in columns.items()})


def _choose(rng: np.random.Generator, table: tuple, size: int) -> np.ndarray:
    """``size`` draws from a (values, probabilities) table, as an object array."""
    values, probs = table
    return np.asarray(values, dtype=object)[rng.choice(len(values), size, p=probs)]


def _raw_tables(
    world: _World, sim: _Visits, subject: np.ndarray, hadm: np.ndarray, rng: np.random.Generator
) -> dict[str, Any]:
    n_vis, n_pat = len(sim.patient), len(sim.gender)
    patient = np.asarray(sim.patient, np.int64)
    admit = np.asarray(sim.admit, np.int64)
    disch = admit + np.asarray(sim.los, np.int64)
    died = np.asarray(sim.died, bool)
    raw: dict[str, Any] = {}

    last_visit = np.r_[np.flatnonzero(np.diff(patient)), n_vis - 1]
    dead_hosp = died[last_visit]
    dead_later = ~dead_hosp & (rng.random(n_pat) < 0.2)
    later = disch[last_visit] + rng.integers(30, 1500, n_pat) * 1440
    dod = _dates(np.where(dead_hosp, disch[last_visit], later))
    raw["PATIENTS"] = _frame(
        "PATIENTS",
        {
            "ROW_ID": np.arange(1, n_pat + 1, dtype=np.int64),
            "SUBJECT_ID": subject,
            "GENDER": list(sim.gender),
            "DOB": [f"{d.isoformat()} 00:00:00" for d in sim.dob],
            "DOD": _where(dead_hosp | dead_later, dod),
            "DOD_HOSP": _where(dead_hosp, dod),
            "DOD_SSN": _where(dead_later | (dead_hosp & (rng.random(n_pat) < 0.7)), dod),
            "EXPIRE_FLAG": (dead_hosp | dead_later).astype(np.int64),
        },
    )

    kind = _choose(rng, V.ADMISSION_TYPES, n_vis)
    location = _choose(rng, V.ADMISSION_LOCATIONS, n_vis)
    location[kind == "ELECTIVE"] = V.ELECTIVE_LOCATION
    discharge = _choose(rng, V.DISCHARGE_LOCATIONS, n_vis)
    discharge[died] = "DEAD/EXPIRED"
    insurance = _choose(rng, V.INSURANCES, n_vis)
    insurance[(np.asarray(sim.age) >= 65) & (rng.random(n_vis) < 0.9)] = "Medicare"
    attributes = {k: _choose(rng, t, n_pat)[patient] for k, t in V.PATIENT_ATTRIBUTES.items()}
    ed = (kind == "EMERGENCY") & (rng.random(n_vis) < 0.75)
    names = [d.name.upper() for d in world.rules.diseases]
    raw["ADMISSIONS"] = _frame(
        "ADMISSIONS",
        {
            "ROW_ID": np.arange(1, n_vis + 1, dtype=np.int64),
            "SUBJECT_ID": subject[patient],
            "HADM_ID": hadm,
            "ADMITTIME": list(_times(admit)),
            "DISCHTIME": list(_times(disch)),
            "DEATHTIME": _where(died, _times(disch)),
            "ADMISSION_TYPE": list(kind),
            "ADMISSION_LOCATION": list(location),
            "DISCHARGE_LOCATION": list(discharge),
            "INSURANCE": list(insurance),
            **{k: _where(v != "", v) for k, v in attributes.items()},
            "EDREGTIME": _where(ed, _times(admit - rng.integers(60, 600, n_vis))),
            "EDOUTTIME": _where(ed, _times(admit + rng.integers(0, 120, n_vis))),
            "DIAGNOSIS": [names[r] if r >= 0 else "FEVER" for r in sim.reason],
            "HOSPITAL_EXPIRE_FLAG": died.astype(np.int64),
            "HAS_CHARTEVENTS_DATA": (rng.random(n_vis) < 0.97).astype(np.int64),
        },
    )

    # A few diagnosis rows without SEQ_NUM and code, as in MIMIC-III.
    for name, lists, vocab, blank_rate in (
        ("DIAGNOSES_ICD", sim.diag, world.diag, 0.003),
        ("PROCEDURES_ICD", sim.proc, world.proc, 0.0),
    ):
        counts = np.asarray([len(x) for x in lists], np.int64)
        blank = np.flatnonzero(rng.random(n_vis) < blank_rate)
        visit = np.r_[np.repeat(np.arange(n_vis), counts), blank]
        seq = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts) + 1.0
        seq = np.r_[seq, np.full(blank.size, np.nan)]
        codes = np.asarray([vocab[c][0] for x in lists for c in x] + [None] * blank.size, object)
        order = np.argsort(visit, kind="stable")
        raw[name] = _frame(
            name,
            {
                "ROW_ID": np.arange(1, order.size + 1, dtype=np.int64),
                "SUBJECT_ID": subject[patient[visit[order]]],
                "HADM_ID": hadm[visit[order]],
                "SEQ_NUM": seq[order],
                "ICD9_CODE": list(codes[order]),
            },
        )

    raw["PRESCRIPTIONS"] = _prescriptions(world, sim, subject, hadm, rng)
    for name, vocab in (("D_ICD_DIAGNOSES", world.diag), ("D_ICD_PROCEDURES", world.proc)):
        raw[name] = _frame(
            name,
            {
                "ROW_ID": np.arange(1, len(vocab) + 1, dtype=np.int64),
                "ICD9_CODE": [c for c, _ in vocab],
                "SHORT_TITLE": [V.short_title(t) for _, t in vocab],
                "LONG_TITLE": [t for _, t in vocab],
            },
        )
    ndcs = sorted((ndc, d.code, d.name) for d in world.drugs for ndc in d.ndcs)
    raw["ndc2drug"] = _frame(
        "ndc2drug", dict(zip(RAW_TABLES["ndc2drug"], zip(*ndcs, strict=True), strict=True))
    )
    raw["drug_smiles"] = _frame(
        "drug_smiles",
        {
            "DRUG_CODE": [d.code for d in world.drugs],
            "DRUG_NAME": [d.name for d in world.drugs],
            "SMILES": [d.smiles for d in world.drugs],
        },
    )
    pairs = sorted(world.interaction_kinds.items())
    raw["ddi_pairs"] = _frame(
        "ddi_pairs",
        {
            "DRUG_CODE_1": [world.drugs[a].code for (a, _), _ in pairs],
            "DRUG_CODE_2": [world.drugs[b].code for (_, b), _ in pairs],
            "INTERACTION_TYPE": [k for _, k in pairs],
        },
    )
    return {name: raw[name] for name in RAW_TABLES}


def _prescriptions(
    world: _World, sim: _Visits, subject: np.ndarray, hadm: np.ndarray, rng: np.random.Generator
) -> Any:
    """PRESCRIPTIONS: 1-6 MAIN rows per drug of a visit (the first with a valid NDC, later ones
    sometimes with NDC "0" or none), ADDITIVE rows repeating electrolytes of the set, and BASE
    rows of diluents whose NDCs are no drug's."""
    n_vis = len(sim.patient)
    drugs = world.drugs
    admit_day = np.asarray(sim.admit, np.int64) // 1440
    los_days = np.asarray(sim.los, np.int64) // 1440
    icu = np.where(rng.random(n_vis) < 0.6, rng.integers(200_001, 300_000, n_vis), -1)

    pair_visit = np.repeat(np.arange(n_vis), [len(m) for m in sim.med])
    pair_drug = np.asarray([d for m in sim.med for d in m], np.int64)
    n_main = 1 + np.minimum(rng.poisson(1.2, pair_drug.size), 5)
    main_pair = np.repeat(np.arange(pair_drug.size), n_main)
    first = np.r_[True, main_pair[1:] != main_pair[:-1]]
    salt = np.flatnonzero(np.isin(pair_drug, list(world.salts)))
    salt = salt[rng.random(salt.size) < 0.25]
    base_visit = np.repeat(np.arange(n_vis), rng.poisson(0.7, n_vis))
    base_kind = rng.integers(len(V.BASE_DILUENTS), size=base_visit.size)

    # One entry per row: MAIN rows, then ADDITIVE, then BASE (drug -1).
    visit = np.r_[pair_visit[main_pair], pair_visit[salt], base_visit]
    drug = np.r_[pair_drug[main_pair], pair_drug[salt], np.full(base_visit.size, -1)]
    row_type = np.r_[
        np.zeros(main_pair.size, np.int64),
        np.full(salt.size, 2),
        np.ones(base_visit.size, np.int64),
    ]
    total = visit.size
    first_base = total - base_visit.size
    n_ndc = np.asarray([len(d.ndcs) for d in drugs])[np.maximum(drug, 0)]
    which = (rng.random(total) * n_ndc).astype(np.int64)
    quirk = rng.random(total)
    quirk[: main_pair.size][first] = 1.0  # the first MAIN row of a drug keeps its NDC
    quirk[main_pair.size :] = 1.0
    start = (rng.random(total) * (los_days[visit] + 1)).astype(np.int64)
    end = start + (rng.random(total) * (los_days[visit] - start + 1)).astype(np.int64)
    variant = rng.random(total)
    mult = rng.choice(np.asarray([1, 1, 1, 2, 2, 3]), total)
    icu_row = np.where(rng.random(total) < 0.8, icu[visit], -1)

    rows: list[tuple] = []
    for i in range(total):
        if row_type[i] == 1:
            name, ndc, strength, dose, unit = V.BASE_DILUENTS[int(base_kind[i - first_base])]
            code = name.upper().replace(" ", "").replace("%", "")[:6] + dose
            gsn = "001210" if ndc != "0" else None
            rows.append(
                ("BASE", name, None, None, code, gsn, ndc, strength, dose, unit, dose, unit, "IV")
            )
            continue
        d = drugs[int(drug[i])]
        strength = d.strengths[int(which[i]) % len(d.strengths)]
        ndc = "0" if quirk[i] < 0.03 else None if quirk[i] < 0.045 else d.ndcs[int(which[i])]
        u = variant[i]
        if u < 0.08:
            shown = f"{d.name} {strength}{d.dose_unit}"
        elif u < 0.14 and d.synonyms:
            shown = d.synonyms[0]
        elif u < 0.17:
            shown = d.name.upper()
        else:
            shown = d.name
        dose = strength if mult[i] == 1 else f"{float(strength) * int(mult[i]):g}"
        rows.append(
            (
                "ADDITIVE" if row_type[i] == 2 else "MAIN",
                shown,
                d.name if u >= 0.05 else None,
                d.name if u < 0.9 else f"{d.name} ({d.form})",
                d.name[:4].upper() + strength + ("I" if d.route == "IV" else ""),
                d.gsn,
                ndc,
                f"{strength}{d.dose_unit} {d.form}",
                dose,
                d.dose_unit,
                str(int(mult[i])),
                d.form_unit,
                d.route,
            )
        )

    order = np.lexsort((row_type, start, visit))
    columns: dict[str, Any] = {
        "ROW_ID": np.arange(1, total + 1, dtype=np.int64),
        "SUBJECT_ID": subject[np.asarray(sim.patient, np.int64)[visit[order]]],
        "HADM_ID": hadm[visit[order]],
        "ICUSTAY_ID": np.where(icu_row < 0, np.nan, icu_row)[order],
        "STARTDATE": list(_dates((admit_day[visit] + start)[order] * 1440)),
        "ENDDATE": list(_dates((admit_day[visit] + end)[order] * 1440)),
    }
    ordered = [rows[i] for i in order.tolist()]
    for j, name in enumerate(RAW_TABLES["PRESCRIPTIONS"][6:]):
        columns[name] = [r[j] for r in ordered]
    return _frame("PRESCRIPTIONS", columns)


# --------------------------------------------------------------------------------------------------
# The dataset, and the public API


def _dataset(
    world: _World,
    sim: _Visits,
    config: SyntheticConfig,
    subject: np.ndarray,
    hadm: np.ndarray,
    rng: np.random.Generator,
) -> Dataset:
    patient = np.asarray(sim.patient, np.int64)
    visits = VisitTable(
        patient_id=subject[patient],
        visit_id=hadm,
        visit_index=np.asarray(sim.visit_index, np.int32),
        admit_time=_times(np.asarray(sim.admit, np.int64)),
        age=np.asarray(sim.age, np.int32),
        gender=np.asarray([sim.gender[p] for p in sim.patient], dtype=object),
        diag=RaggedIds.from_lists(sim.diag),
        proc=RaggedIds.from_lists(sim.proc),
        med=RaggedIds.from_lists(sim.med),
    )
    perm = rng.permutation(subject)
    n_train = round(2 * len(perm) / 3)
    n_val = round(len(perm) / 6)
    splits = {
        "train": np.sort(perm[:n_train]),
        "val": np.sort(perm[n_train : n_train + n_val]),
        "test": np.sort(perm[n_train + n_val :]),
    }
    train_rows = np.flatnonzero(np.isin(visits.patient_id, splits["train"]))
    m = config.drugs
    return Dataset(
        name="synthetic",
        source=f"flame_jax synthetic cohort (seed {config.seed})",
        diag_vocab=Vocabulary(
            kind="diag",
            codes=tuple(c for c, _ in world.diag),
            titles=tuple(t for _, t in world.diag),
        ),
        proc_vocab=Vocabulary(
            kind="proc",
            codes=tuple(c for c, _ in world.proc),
            titles=tuple(t for _, t in world.proc),
        ),
        med_vocab=Vocabulary(
            kind="med",
            codes=tuple(d.code for d in world.drugs),
            titles=tuple(d.name for d in world.drugs),
            smiles=tuple((d.smiles,) for d in world.drugs),
            synonyms=tuple(d.synonyms for d in world.drugs),
        ),
        visits=visits,
        splits=splits,
        ehr=cooccurrence_adjacency(visits.med, train_rows, m),
        ddi=world.rules.ddi_adjacency(),
        info={
            "generator": "flame_jax.data.generate_cohort",
            "description": "Synthetic MIMIC-III-shaped cohort with planted prescribing rules "
            "(exactly-one-of-class substitution, history effect, companion drugs, avoided "
            "interactions, ward background, noise); ground truth in truth/rules.json.",
            "config": config.to_dict(),
        },
    )


def _generate(config: SyntheticConfig, progress: bool) -> SyntheticCohort:
    world_seq, sim_seq, raw_seq, split_seq, id_seq = np.random.SeedSequence(config.seed).spawn(5)
    world = _build_world(config, np.random.default_rng(world_seq))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.patients, desc="synthetic patients", unit="patient")
    try:
        sim = _simulate(world, config, np.random.default_rng(sim_seq), bar)
    finally:
        if bar is not None:
            bar.close()
    id_rng = np.random.default_rng(id_seq)
    n_pat, n_vis = config.patients, len(sim.patient)
    subject = np.sort(id_rng.choice(max(100_000, 4 * n_pat), n_pat, replace=False)) + 10
    hadm = id_rng.choice(max(100_000, 4 * n_vis), n_vis, replace=False).astype(np.int64) + 100_000
    subject = subject.astype(np.int64)
    dataset = _dataset(world, sim, config, subject, hadm, np.random.default_rng(split_seq))
    raw = _raw_tables(world, sim, subject, hadm, np.random.default_rng(raw_seq))
    return SyntheticCohort(dataset=dataset, raw=raw, rules=world.rules, config=config)


def generate_cohort(config: SyntheticConfig) -> SyntheticCohort:
    """Generates the synthetic cohort of ``config`` in memory (a pure function of the config).

    Args:
      config: the knobs; ``SyntheticConfig()`` is the default cohort, ``SyntheticConfig.tiny()``
        a small one for tests.

    Returns:
      The :class:`SyntheticCohort`: dataset, raw MIMIC-III-shaped tables and planted rules.

    Examples:
      >>> cohort = generate_cohort(SyntheticConfig.tiny())
      >>> cohort.dataset.num_meds, len(cohort.dataset.patients)
      (24, 120)
      >>> sorted(cohort.raw)[:3]
      ['ADMISSIONS', 'DIAGNOSES_ICD', 'D_ICD_DIAGNOSES']
    """
    return _generate(config, progress=False)


def write_cohort(
    cohort: SyntheticCohort, out: str | os.PathLike, *, overwrite: bool = False
) -> dict[str, Path]:
    """Writes a cohort to the folder ``out`` atomically (all of it or nothing).

    Layout: ``raw/<TABLE>.csv.gz`` for every table of ``cohort.raw``, ``dataset/``,
    ``truth/rules.json`` and ``truth/oracle.parquet`` (see the module docstring). Files are
    deterministic: the same cohort gives the same bytes.

    Args:
      cohort: from :func:`generate_cohort`.
      out: the output folder.
      overwrite: replace a non-empty ``out``.

    Returns:
      Name -> path of everything written: the raw table names, "dataset", "rules", "oracle".

    Raises:
      FileExistsError: ``out`` is not empty and ``overwrite`` is false.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(out)
    paths: dict[str, Path] = {}
    with _io.atomic_directory(out, overwrite=overwrite) as tmp:
        for name, frame in cohort.raw.items():
            rel = Path("raw") / f"{name}.csv.gz"
            text = frame.to_csv(index=False, lineterminator="\n")
            _io.write_gzip_atomic(tmp / rel, text.encode("utf-8"))
            paths[name] = out / rel
        save_dataset(cohort.dataset, tmp / "dataset")
        paths["dataset"] = out / "dataset"
        _io.write_json_atomic(tmp / "truth" / "rules.json", cohort.rules.to_json())
        paths["rules"] = out / "truth" / "rules.json"

        ds = cohort.dataset
        rows = np.arange(len(ds.visits))
        sets, scores = oracle_recommend(cohort.rules, ds, rows)
        m = ds.num_meds
        offsets = np.arange(len(rows) + 1, dtype=np.int32) * m
        oracle_med = RaggedIds.from_lists([np.flatnonzero(s) for s in sets])
        table = pa.table(
            {
                "visit_id": pa.array(ds.visits.visit_id, type=pa.int64()),
                "patient_id": pa.array(ds.visits.patient_id, type=pa.int64()),
                "split": pa.array([str(s) for s in ds.split_of_visit()], type=pa.string()),
                "med": pa.ListArray.from_arrays(
                    pa.array(oracle_med.offsets.astype(np.int32)),
                    pa.array(oracle_med.values, type=pa.int32()),
                ),
                "scores": pa.ListArray.from_arrays(
                    pa.array(offsets), pa.array(scores.reshape(-1), type=pa.float32())
                ),
            }
        )
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        _io.write_bytes_atomic(tmp / "truth" / "oracle.parquet", buf.getvalue())
        paths["oracle"] = out / "truth" / "oracle.parquet"
    return paths


def synthesize(
    out: str | os.PathLike,
    config: SyntheticConfig = SyntheticConfig(),  # frozen: safe as a default
    *,
    overwrite: bool = False,
    progress: bool = False,
) -> SyntheticCohort:
    """Generates the cohort of ``config`` and writes it to ``out`` (see :func:`write_cohort`).

    Args:
      out: the output folder.
      config: the knobs (default: the default cohort).
      overwrite: replace a non-empty ``out``.
      progress: show a progress bar over patients.

    Returns:
      The generated :class:`SyntheticCohort`.
    """
    cohort = _generate(config, progress=progress)
    write_cohort(cohort, out, overwrite=overwrite)
    return cohort


# --------------------------------------------------------------------------------------------------
# Other raw layouts of the same cohort: MIMIC-IV (hosp module) and eICU-CRD

RAW_LAYOUTS = ("mimic3", "mimic4", "eicu")


def _lower(frame: Any, rename: Mapping[str, str] | None = None, drop: tuple = ()) -> Any:
    frame = frame.drop(columns=[c for c in drop if c in frame.columns])
    frame = frame.rename(columns=dict(rename or {}))
    return frame.rename(columns={c: c.lower() for c in frame.columns})


def mimic4_tables(cohort: SyntheticCohort) -> dict[str, Any]:
    """The cohort's raw tables in the MIMIC-IV hosp layout (lower-case names and columns).

    Same admissions, codes and prescriptions as the MIMIC-III tables; codes are ICD-9 with
    ``icd_version`` 9; patients carry ``anchor_age`` (age at the first admission) and
    ``anchor_year`` (its year) instead of a date of birth.
    """
    import pandas as pd

    raw = cohort.raw
    ds = cohort.dataset
    first = ds.visits.visit_index == 0
    anchor_year = [int(str(t)[:4]) for t in ds.visits.admit_time[first]]
    pat = raw["PATIENTS"]
    patients = pd.DataFrame(
        {
            "subject_id": pat["SUBJECT_ID"],
            "gender": pat["GENDER"],
            "anchor_age": ds.visits.age[first].astype(np.int64),
            "anchor_year": np.asarray(anchor_year, np.int64),
            "anchor_year_group": [f"{y - y % 3} - {y - y % 3 + 2}" for y in anchor_year],
            "dod": pat["DOD"].str.slice(0, 10),
        }
    )
    admissions = _lower(
        raw["ADMISSIONS"],
        {"ETHNICITY": "RACE"},
        ("ROW_ID", "RELIGION", "DIAGNOSIS", "HAS_CHARTEVENTS_DATA"),
    )
    admit_of = dict(zip(raw["ADMISSIONS"]["HADM_ID"], raw["ADMISSIONS"]["ADMITTIME"], strict=True))
    out = {"patients": patients, "admissions": admissions}
    for name, src in (("diagnoses_icd", "DIAGNOSES_ICD"), ("procedures_icd", "PROCEDURES_ICD")):
        f = _lower(raw[src], {"ICD9_CODE": "ICD_CODE"}, ("ROW_ID",))
        f["icd_version"] = np.full(len(f), 9, np.int64)
        if name == "procedures_icd":
            f.insert(3, "chartdate", [str(admit_of[h])[:10] for h in f["hadm_id"]])
        out[name] = f
    rx = raw["PRESCRIPTIONS"]
    out["prescriptions"] = pd.DataFrame(
        {
            "subject_id": rx["SUBJECT_ID"],
            "hadm_id": rx["HADM_ID"],
            "pharmacy_id": np.arange(1, len(rx) + 1, dtype=np.int64) * 7,
            "poe_id": [f"{s}-{i + 1}" for i, s in enumerate(rx["SUBJECT_ID"])],
            "poe_seq": np.arange(1, len(rx) + 1, dtype=np.int64),
            "order_provider_id": None,
            "starttime": rx["STARTDATE"],
            "stoptime": rx["ENDDATE"],
            "drug_type": rx["DRUG_TYPE"],
            "drug": rx["DRUG"],
            "formulary_drug_cd": rx["FORMULARY_DRUG_CD"],
            "gsn": rx["GSN"],
            "ndc": rx["NDC"],
            "prod_strength": rx["PROD_STRENGTH"],
            "form_rx": None,
            "dose_val_rx": rx["DOSE_VAL_RX"],
            "dose_unit_rx": rx["DOSE_UNIT_RX"],
            "form_val_disp": rx["FORM_VAL_DISP"],
            "form_unit_disp": rx["FORM_UNIT_DISP"],
            "doses_per_24_hrs": None,
            "route": rx["ROUTE"],
        }
    )
    for name, src in (
        ("d_icd_diagnoses", "D_ICD_DIAGNOSES"),
        ("d_icd_procedures", "D_ICD_PROCEDURES"),
    ):
        f = raw[src]
        out[name] = pd.DataFrame(
            {"icd_code": f["ICD9_CODE"], "icd_version": np.full(len(f), 9, np.int64),
             "long_title": f["LONG_TITLE"]}
        )  # fmt: skip
    return out


def _dotted_icd9(code: str) -> str:
    """MIMIC's undotted ICD-9 diagnosis code in eICU's dotted form ('4280' -> '428.0')."""
    head = 4 if code.startswith("E") else 3
    return code if len(code) <= head else f"{code[:head]}.{code[head:]}"


def eicu_tables(cohort: SyntheticCohort) -> dict[str, Any]:
    """The cohort in the eICU-CRD layout: patient, diagnosis, treatment, physicalExam, medication.

    One ICU stay per admission (patientunitstayid = HADM_ID; hospital stay ids in admission
    order); uniquepid is the SUBJECT_ID written as eICU writes ids (123456 -> "001-23456");
    age is a string ("> 89" from 90).
    Diagnoses carry dotted ICD-9 codes (a few rows have only a diagnosis string, as in eICU);
    treatments are the procedures' titles (physicalExam paths end with them); medication rows
    are the MAIN prescriptions with strength-suffixed upper-case names, plus the BASE rows as
    cancelled orders.
    """
    import pandas as pd

    raw = cohort.raw
    ds = cohort.dataset
    v = ds.visits
    stay_of = {int(h): 1_000_000 + i for i, h in enumerate(v.visit_id.tolist())}
    year = np.asarray([int(str(t)[:4]) for t in v.admit_time], np.int64)
    adm = raw["ADMISSIONS"].set_index("HADM_ID")
    disch_year = np.asarray([int(str(adm.loc[h, "DISCHTIME"])[:4]) for h in v.visit_id], np.int64)
    patient = pd.DataFrame(
        {
            "patientunitstayid": v.visit_id,
            "patienthealthsystemstayid": [stay_of[int(h)] for h in v.visit_id],
            "gender": ["Female" if g == "F" else "Male" for g in v.gender],
            "age": ["> 89" if a >= 90 else str(int(a)) for a in v.age],
            "ethnicity": [adm.loc[h, "ETHNICITY"] for h in v.visit_id],
            "hospitalid": (v.patient_id % 7 + 60).astype(np.int64),
            "hospitaladmitoffset": np.zeros(len(v), np.int64),
            "hospitaldischargeyear": disch_year,
            "unitvisitnumber": np.ones(len(v), np.int64),
            "unitdischargeoffset": (disch_year - year + 1) * 1440,
            "uniquepid": [f"{p // 100_000:03d}-{p % 100_000:05d}" for p in v.patient_id.tolist()],
        }
    )
    titles = dict(zip(raw["D_ICD_DIAGNOSES"]["ICD9_CODE"], raw["D_ICD_DIAGNOSES"]["LONG_TITLE"],
                      strict=True))  # fmt: skip
    dx = raw["DIAGNOSES_ICD"]
    codes = [c if isinstance(c, str) else "" for c in dx["ICD9_CODE"].astype(object)]
    diagnosis = pd.DataFrame(
        {
            "diagnosisid": np.arange(1, len(dx) + 1, dtype=np.int64),
            "patientunitstayid": dx["HADM_ID"],
            "activeupondischarge": "True",
            "diagnosisoffset": np.arange(len(dx), dtype=np.int64) % 600,
            "diagnosisstring": [
                f"general|{titles.get(c, 'other')}" if c else "general|unspecified" for c in codes
            ],
            "icd9code": [_dotted_icd9(c) if c else None for c in codes],
            "diagnosispriority": [
                "Primary" if s == 1 else "Other" for s in dx["SEQ_NUM"].fillna(0)
            ],
        }
    )
    ptitle = dict(zip(raw["D_ICD_PROCEDURES"]["ICD9_CODE"], raw["D_ICD_PROCEDURES"]["LONG_TITLE"],
                      strict=True))  # fmt: skip
    px = raw["PROCEDURES_ICD"]
    treatment = pd.DataFrame(
        {
            "treatmentid": np.arange(1, len(px) + 1, dtype=np.int64),
            "patientunitstayid": px["HADM_ID"],
            "treatmentoffset": np.arange(len(px), dtype=np.int64) % 900,
            "treatmentstring": [ptitle[c] for c in px["ICD9_CODE"]],
            "activeupondischarge": "False",
        }
    )
    exam = pd.DataFrame(
        {
            "physicalexamid": np.arange(1, len(px) + 1, dtype=np.int64),
            "patientunitstayid": px["HADM_ID"],
            "physicalexamoffset": np.arange(len(px), dtype=np.int64) % 900,
            "physicalexampath": [f"notes/Progress Notes/Physical Exam/{ptitle[c]}"
                                 for c in px["ICD9_CODE"]],
            "physicalexamvalue": "performed",
            "physicalexamtext": "performed",
        }
    )  # fmt: skip
    rx = raw["PRESCRIPTIONS"]
    keep = rx["DRUG_TYPE"].isin(["MAIN", "BASE"]).to_numpy()
    rx = rx[keep].reset_index(drop=True)
    base = (rx["DRUG_TYPE"] == "BASE").to_numpy()
    generic = [
        g if isinstance(g, str) else d
        for g, d in zip(rx["DRUG_NAME_GENERIC"], rx["DRUG"], strict=True)
    ]
    medication = pd.DataFrame(
        {
            "medicationid": np.arange(1, len(rx) + 1, dtype=np.int64),
            "patientunitstayid": rx["HADM_ID"],
            "drugorderoffset": np.arange(len(rx), dtype=np.int64) % 1440,
            "drugstartoffset": np.arange(len(rx), dtype=np.int64) % 1440 + 5,
            "drugivadmixture": "No",
            "drugordercancelled": np.where(base, "Yes", "No"),
            "drugname": [
                f"{g.upper()} {s}" for g, s in zip(generic, rx["PROD_STRENGTH"], strict=True)
            ],
            "drughiclseqno": rx["GSN"],
            "dosage": [
                f"{d} {u}" for d, u in zip(rx["DOSE_VAL_RX"], rx["DOSE_UNIT_RX"], strict=True)
            ],
            "routeadmin": rx["ROUTE"],
            "frequency": "Q24H",
            "loadingdose": None,
            "prn": "No",
            "drugstopoffset": np.arange(len(rx), dtype=np.int64) % 1440 + 600,
            "gtc": np.zeros(len(rx), np.int64),
        }
    )
    return {"patient": patient, "diagnosis": diagnosis, "treatment": treatment,
            "physicalExam": exam, "medication": medication}  # fmt: skip


def write_raw_layout(
    cohort: SyntheticCohort, out: str | os.PathLike, layout: str, *, overwrite: bool = False
) -> dict[str, Path]:
    """Writes the cohort's raw tables in ``layout`` ("mimic3", "mimic4" or "eicu") to ``out``,
    atomically, as gzipped CSV (MIMIC-IV tables under ``hosp/``). Deterministic bytes.

    Returns:
      Table name -> path.
    """
    if layout not in RAW_LAYOUTS:
        raise ValueError(f"layout must be one of {RAW_LAYOUTS}, got {layout!r}")
    tables = {"mimic3": lambda c: dict(c.raw), "mimic4": mimic4_tables, "eicu": eicu_tables}
    frames = tables[layout](cohort)
    sub = Path("hosp") if layout == "mimic4" else Path()
    out = Path(out)
    paths = {}
    with _io.atomic_directory(out, overwrite=overwrite) as tmp:
        for name, frame in frames.items():
            rel = sub / f"{name}.csv.gz"
            text = frame.to_csv(index=False, lineterminator="\n")
            _io.write_gzip_atomic(tmp / rel, text.encode("utf-8"))
            paths[name] = out / rel
    return paths
