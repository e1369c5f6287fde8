"""The synthetic cohort's planted rules, the oracle that decodes them, and a frequency baseline.

:class:`PlantedRules` records every rule :func:`flame_jax.data.generate_cohort` planted, with drug,
diagnosis and procedure *indices* of the cohort's dataset vocabularies (and the codes, so that a
mismatch is caught). It round-trips through JSON (``truth/rules.json``).

:func:`oracle_recommend` is the best achievable recommender under those rules: a deterministic
decoding of the planted prescribing process from what a model may observe (the visit's diagnoses,
procedures and age, and the patient's earlier visits with their medication sets), never the
visit's own medications. Its scores are the planted marginal probabilities of each drug, computed
under three documented approximations:

1. The interaction check for a class conditions on the oracle's own decoded choices for the
   higher-priority classes, not on the distribution of what was actually chosen.
2. The sources of a drug (its class, a companion, the ward background, noise) are treated as
   independent: ``p = 1 - prod(1 - p_source)``.
3. Noise drugs are uniform draws, ``p_noise = 1 - exp(-noise_drug_rate / meds)``; the rejection of
   a noise draw whose substitutable class is already present is ignored.

:func:`most_frequent_recommend` recommends the same K most frequent training drugs to every visit.
"""

import dataclasses
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from jaxtyping import Bool, Float32

from flame_jax._records import record_from_mapping, record_to_plain
from flame_jax.data._format import Dataset

__all__ = [
    "RULES_VERSION",
    "AgeRule",
    "BackgroundDrug",
    "Companion",
    "Contraindication",
    "Disease",
    "DrugClass",
    "Interaction",
    "PlantedRules",
    "ProcedureIndication",
    "load_rules",
    "most_frequent_recommend",
    "oracle_recommend",
]

RULES_VERSION = 1


# --------------------------------------------------------------------------------------------------
# Validation helpers: each raises ValueError naming the field path.


def _check_prob(value: float, where: str) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{where}: probability must be in [0, 1], got {value!r}")


def _check_index(value: int, size: int, where: str, what: str) -> None:
    if not 0 <= value < size:
        raise ValueError(f"{where}: index {value} out of range [0, {size}) of the {what}")


# --------------------------------------------------------------------------------------------------
# Rule records


@dataclasses.dataclass(frozen=True, kw_only=True)
class DrugClass:
    """A class of drugs. Substitutable classes give a visit at most one member (exactly one when
    the class is given); the ward class (background drugs) is not substitutable.

    Attributes:
      name: e.g. "ACE inhibitor".
      stem: the naming stem the members share, e.g. "opril"; "" for the ward class.
      members: medication indices.
      popularity: probability of choosing each member when there is no history, same order.
      substitutable: at most one member per visit.
      priority: lower is resolved first; when two indicated drugs interact, the lower-priority
        one is swapped for a non-interacting substitute or dropped.
    """

    name: str
    stem: str
    members: tuple[int, ...]
    popularity: tuple[float, ...]
    substitutable: bool
    priority: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class Disease:
    """A latent disease. While active it always emits ``primary_code`` (so it is observable).

    Attributes:
      name: human-readable name.
      chronic: persists across the patient's later visits once present.
      prevalence: chronic: probability per patient at age 54 (scaled with age); acute: relative
        weight as the reason for an admission.
      primary_code: diagnosis index, emitted whenever the disease is active.
      secondary_codes: diagnosis indices, each emitted with ``p_secondary`` when active.
      classes: indices into :attr:`PlantedRules.classes` that the disease indicates.
      procedures: procedure indices it may trigger, with probabilities ``procedure_probs``.
    """

    name: str
    chronic: bool
    prevalence: float
    primary_code: int
    secondary_codes: tuple[int, ...]
    classes: tuple[int, ...]
    procedures: tuple[int, ...]
    procedure_probs: tuple[float, ...]


@dataclasses.dataclass(frozen=True, kw_only=True)
class ProcedureIndication:
    """A procedure (index) that indicates drug classes (indices), whatever caused it."""

    procedure: int
    classes: tuple[int, ...]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Companion:
    """When ``trigger`` is prescribed for its class, ``companion`` is added with ``prob`` (unless
    the companion's substitutable class is already represented in the visit)."""

    trigger: int
    companion: int
    prob: float


@dataclasses.dataclass(frozen=True, kw_only=True)
class Interaction:
    """A planted drug-drug interaction between medication indices ``a < b``."""

    a: int
    b: int
    kind: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class BackgroundDrug:
    """A ward drug given to any visit independently with ``prob``."""

    drug: int
    prob: float


@dataclasses.dataclass(frozen=True, kw_only=True)
class AgeRule:
    """An indicated class is withheld with ``prob`` when the patient is ``min_age`` or older."""

    drug_class: int
    min_age: int
    prob: float


@dataclasses.dataclass(frozen=True, kw_only=True)
class Contraindication:
    """An indicated class is withheld with ``prob`` while ``disease`` is active."""

    disease: int
    drug_class: int
    prob: float


@dataclasses.dataclass(frozen=True, kw_only=True)
class PlantedRules:
    """Every rule of the synthetic prescribing process, with indices into the dataset vocabularies.

    The process for one visit (see :mod:`flame_jax.data._synthetic` for the whole cohort):

    1. Indicated classes: those of the active diseases and of the visit's procedures.
    2. In priority order, each indicated class is given with ``p_give`` (times ``1 - prob`` of
       every age rule and contraindication that applies). A given class gets one member: the
       patient's drug of that class from the most recent earlier visit that had one, kept with
       ``p_stick``, otherwise a draw by popularity. If the drug interacts with a drug already
       chosen, with ``p_avoid`` it is swapped for a non-interacting member (drawn by popularity)
       or, when none exists, dropped.
    3. Companions of the chosen drugs are added with their probability (unless their
       substitutable class is already present); background drugs with theirs; then a
       Poisson(``noise_drug_rate``) number of uniform noise drugs (a draw whose substitutable
       class is already present is discarded). A visit left without drugs gets
       ``fallback_drug``.

    Attributes:
      med_codes, diag_codes, proc_codes: the vocabulary codes the indices refer to.
      classes: drug classes; every drug is in exactly one.
      diseases, procedure_indications, companions, interactions, background, age_rules,
        contraindications: the rules (see each record's docstring).
      fallback_drug: the drug of a visit that would otherwise get none.
      p_give, p_stick, p_avoid: probabilities of the process above.
      p_secondary: probability of each secondary code of an active disease.
      noise_drug_rate: mean number of noise drug draws per visit.
      version: format version of the JSON file.
    """

    med_codes: tuple[str, ...]
    diag_codes: tuple[str, ...]
    proc_codes: tuple[str, ...]
    classes: tuple[DrugClass, ...]
    diseases: tuple[Disease, ...]
    procedure_indications: tuple[ProcedureIndication, ...]
    companions: tuple[Companion, ...]
    interactions: tuple[Interaction, ...]
    background: tuple[BackgroundDrug, ...]
    age_rules: tuple[AgeRule, ...]
    contraindications: tuple[Contraindication, ...]
    fallback_drug: int
    p_give: float
    p_stick: float
    p_avoid: float
    p_secondary: float
    noise_drug_rate: float
    version: int = RULES_VERSION

    def __post_init__(self):
        if self.version != RULES_VERSION:
            raise ValueError(
                f"version: this flame_jax reads version {RULES_VERSION}, got {self.version!r}"
            )
        m, n_diag, n_proc = len(self.med_codes), len(self.diag_codes), len(self.proc_codes)
        n_cls, n_dis = len(self.classes), len(self.diseases)
        if m == 0:
            raise ValueError("med_codes: must not be empty")
        for name in ("p_give", "p_stick", "p_avoid", "p_secondary"):
            _check_prob(getattr(self, name), name)
        if not (self.noise_drug_rate >= 0 and math.isfinite(self.noise_drug_rate)):
            raise ValueError(f"noise_drug_rate: must be >= 0, got {self.noise_drug_rate!r}")
        _check_index(self.fallback_drug, m, "fallback_drug", "medications")

        owner: dict[int, int] = {}
        for i, c in enumerate(self.classes):
            w = f"classes[{i}]"
            if not c.members:
                raise ValueError(f"{w}.members: must not be empty")
            if len(c.popularity) != len(c.members):
                raise ValueError(
                    f"{w}.popularity: {len(c.popularity)} values for {len(c.members)} members"
                )
            for j, d in enumerate(c.members):
                _check_index(d, m, f"{w}.members[{j}]", "medications")
                if d in owner:
                    raise ValueError(f"{w}.members[{j}]: drug {d} is also in classes[{owner[d]}]")
                owner[d] = i
            if min(c.popularity) < 0 or abs(sum(c.popularity) - 1.0) > 1e-6:
                raise ValueError(f"{w}.popularity: must be >= 0 and sum to 1, got {c.popularity}")
        if len(owner) != m:
            missing = min(set(range(m)) - set(owner))
            raise ValueError(f"classes: drug {missing} ({self.med_codes[missing]}) is in no class")

        seen_codes: dict[int, int] = {}
        for i, d in enumerate(self.diseases):
            w = f"diseases[{i}]"
            _check_index(d.primary_code, n_diag, f"{w}.primary_code", "diagnoses")
            for j, c in enumerate(d.secondary_codes):
                _check_index(c, n_diag, f"{w}.secondary_codes[{j}]", "diagnoses")
            for code in (d.primary_code, *d.secondary_codes):
                if code in seen_codes:
                    raise ValueError(
                        f"{w}: diagnosis {code} ({self.diag_codes[code]}) also belongs to "
                        f"diseases[{seen_codes[code]}]"
                    )
                seen_codes[code] = i
            for j, c in enumerate(d.classes):
                _check_index(c, n_cls, f"{w}.classes[{j}]", "classes")
            if len(d.procedure_probs) != len(d.procedures):
                raise ValueError(
                    f"{w}.procedure_probs: {len(d.procedure_probs)} values for "
                    f"{len(d.procedures)} procedures"
                )
            for j, (p, q) in enumerate(zip(d.procedures, d.procedure_probs, strict=True)):
                _check_index(p, n_proc, f"{w}.procedures[{j}]", "procedures")
                _check_prob(q, f"{w}.procedure_probs[{j}]")
            if not (d.prevalence >= 0 and math.isfinite(d.prevalence)):
                raise ValueError(f"{w}.prevalence: must be >= 0, got {d.prevalence!r}")
        procs = set()
        for i, r in enumerate(self.procedure_indications):
            w = f"procedure_indications[{i}]"
            _check_index(r.procedure, n_proc, f"{w}.procedure", "procedures")
            if r.procedure in procs:
                raise ValueError(f"{w}.procedure: procedure {r.procedure} is listed twice")
            procs.add(r.procedure)
            for j, c in enumerate(r.classes):
                _check_index(c, n_cls, f"{w}.classes[{j}]", "classes")
        for i, r in enumerate(self.companions):
            w = f"companions[{i}]"
            _check_index(r.trigger, m, f"{w}.trigger", "medications")
            _check_index(r.companion, m, f"{w}.companion", "medications")
            if r.trigger == r.companion:
                raise ValueError(f"{w}: a drug cannot be its own companion ({r.trigger})")
            _check_prob(r.prob, f"{w}.prob")
        pairs = set()
        for i, r in enumerate(self.interactions):
            w = f"interactions[{i}]"
            _check_index(r.a, m, f"{w}.a", "medications")
            _check_index(r.b, m, f"{w}.b", "medications")
            if not r.a < r.b:
                raise ValueError(f"{w}: needs a < b (no self-interactions), got ({r.a}, {r.b})")
            if (r.a, r.b) in pairs:
                raise ValueError(f"{w}: pair ({r.a}, {r.b}) is listed twice")
            pairs.add((r.a, r.b))
        drugs = set()
        for i, r in enumerate(self.background):
            w = f"background[{i}]"
            _check_index(r.drug, m, f"{w}.drug", "medications")
            if r.drug in drugs:
                raise ValueError(f"{w}.drug: drug {r.drug} is listed twice")
            drugs.add(r.drug)
            _check_prob(r.prob, f"{w}.prob")
        for i, r in enumerate(self.age_rules):
            w = f"age_rules[{i}]"
            _check_index(r.drug_class, n_cls, f"{w}.drug_class", "classes")
            if r.min_age < 0:
                raise ValueError(f"{w}.min_age: must be >= 0, got {r.min_age}")
            _check_prob(r.prob, f"{w}.prob")
        for i, r in enumerate(self.contraindications):
            w = f"contraindications[{i}]"
            _check_index(r.disease, n_dis, f"{w}.disease", "diseases")
            _check_index(r.drug_class, n_cls, f"{w}.drug_class", "classes")
            _check_prob(r.prob, f"{w}.prob")

    @property
    def num_meds(self) -> int:
        return len(self.med_codes)

    def drug_class(self) -> np.ndarray:
        """int64 [meds]: the class index of every drug."""
        out = np.zeros(self.num_meds, np.int64)
        for i, c in enumerate(self.classes):
            out[list(c.members)] = i
        return out

    def ddi_adjacency(self) -> np.ndarray:
        """uint8 [meds, meds]: the symmetric planted interaction graph, zero diagonal."""
        adj = np.zeros((self.num_meds, self.num_meds), np.uint8)
        for r in self.interactions:
            adj[r.a, r.b] = adj[r.b, r.a] = 1
        return adj

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict; :meth:`from_json` inverts it exactly."""
        return record_to_plain(self)

    @classmethod
    def from_json(cls, obj: Any) -> "PlantedRules":
        """Parses and validates the output of :meth:`to_json`.

        Raises:
          ValueError: naming the field at fault (e.g. ``classes[2].members[0]``).
        """
        return record_from_mapping(cls, obj)


def load_rules(path: str | os.PathLike) -> PlantedRules:
    """Reads ``truth/rules.json`` written by :func:`flame_jax.data.write_cohort`.

    Raises:
      FileNotFoundError: ``path`` does not exist.
      ValueError: the file is not valid JSON or a field is wrong; the message names the file and
        the field.
    """
    path = Path(path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such rules file") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    try:
        return PlantedRules.from_json(obj)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


# --------------------------------------------------------------------------------------------------
# Tables shared by the generator and the oracle


@dataclasses.dataclass(frozen=True)
class RuleTables:
    """Lookup tables compiled from :class:`PlantedRules` (host-side, used per visit)."""

    rules: PlantedRules
    drug_class: np.ndarray  # int64 [meds]
    substitutable: np.ndarray  # bool [classes]
    ddi: np.ndarray  # bool [meds, meds]
    members: tuple[np.ndarray, ...]  # per class, int64
    popularity: tuple[np.ndarray, ...]  # per class, float64
    cum_popularity: tuple[np.ndarray, ...]
    class_rank: dict[int, int]  # class -> position in priority order
    disease_of_primary: dict[int, int]
    disease_classes: tuple[frozenset[int], ...]
    procedure_classes: dict[int, frozenset[int]]
    companions_of: dict[int, tuple[tuple[int, float], ...]]
    age_rules: dict[int, tuple[tuple[int, float], ...]]  # class -> ((min_age, prob), ...)
    contraindications: dict[int, tuple[tuple[int, float], ...]]  # class -> ((disease, prob), ...)

    @classmethod
    def build(cls, rules: PlantedRules) -> "RuleTables":
        order = sorted(range(len(rules.classes)), key=lambda i: (rules.classes[i].priority, i))
        companions: dict[int, list[tuple[int, float]]] = {}
        for r in rules.companions:
            companions.setdefault(r.trigger, []).append((r.companion, r.prob))
        age: dict[int, list[tuple[int, float]]] = {}
        for r in rules.age_rules:
            age.setdefault(r.drug_class, []).append((r.min_age, r.prob))
        contra: dict[int, list[tuple[int, float]]] = {}
        for r in rules.contraindications:
            contra.setdefault(r.drug_class, []).append((r.disease, r.prob))
        pops = tuple(np.asarray(c.popularity, np.float64) for c in rules.classes)
        return cls(
            rules=rules,
            drug_class=rules.drug_class(),
            substitutable=np.asarray([c.substitutable for c in rules.classes], bool),
            ddi=rules.ddi_adjacency().astype(bool),
            members=tuple(np.asarray(c.members, np.int64) for c in rules.classes),
            popularity=pops,
            cum_popularity=tuple(np.cumsum(p) for p in pops),
            class_rank={c: i for i, c in enumerate(order)},
            disease_of_primary={d.primary_code: i for i, d in enumerate(rules.diseases)},
            disease_classes=tuple(frozenset(d.classes) for d in rules.diseases),
            procedure_classes={
                r.procedure: frozenset(r.classes) for r in rules.procedure_indications
            },
            companions_of={k: tuple(v) for k, v in companions.items()},
            age_rules={k: tuple(v) for k, v in age.items()},
            contraindications={k: tuple(v) for k, v in contra.items()},
        )

    def indicated(self, diseases: Sequence[int], procedures: Sequence[int]) -> list[int]:
        """Indicated classes in priority order."""
        out: set[int] = set()
        for d in diseases:
            out |= self.disease_classes[d]
        for p in procedures:
            out |= self.procedure_classes.get(p, frozenset())
        return sorted(out, key=self.class_rank.__getitem__)

    def give_prob(self, c: int, age: int, diseases: frozenset[int]) -> float:
        """Probability that the indicated class ``c`` is given (age < 0 means unknown)."""
        p = self.rules.p_give
        for min_age, prob in self.age_rules.get(c, ()):
            if age >= 0 and age >= min_age:
                p *= 1.0 - prob
        for disease, prob in self.contraindications.get(c, ()):
            if disease in diseases:
                p *= 1.0 - prob
        return p

    def interacts(self, drug: int, chosen: Sequence[int]) -> bool:
        return bool(chosen) and bool(self.ddi[drug, list(chosen)].any())

    def blocked(self, c: int, present: set[int], meds: set[int], drug: int) -> bool:
        """Whether adding ``drug`` (of class ``c``) would give its substitutable class a second
        member."""
        return bool(self.substitutable[c]) and c in present and drug not in meds


def update_history(tables: RuleTables, history: dict[int, int], meds: Sequence[int]) -> None:
    """Records the visit's member of each substitutable class as the patient's history drug."""
    for d in meds:
        c = int(tables.drug_class[d])
        if tables.substitutable[c]:
            history[c] = int(d)


# --------------------------------------------------------------------------------------------------
# Recommenders


def _check_rules_match(rules: PlantedRules, dataset: Dataset) -> None:
    for kind, codes in (
        ("med", rules.med_codes),
        ("diag", rules.diag_codes),
        ("proc", rules.proc_codes),
    ):
        vocab = getattr(dataset, f"{kind}_vocab")
        if tuple(vocab.codes) != codes:
            raise ValueError(
                f"the rules' {kind}_codes ({len(codes)} codes) do not match the dataset's {kind} "
                f"vocabulary ({len(vocab)} codes); use the rules written with this dataset"
            )
    if dataset.ddi is not None and not np.array_equal(dataset.ddi > 0, rules.ddi_adjacency() > 0):
        raise ValueError(
            "the dataset's DDI graph is not the rules' planted interactions; use the rules "
            "written with this dataset"
        )


def _rows(dataset: Dataset, rows: np.ndarray | Sequence[int]) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.int64).reshape(-1)
    n = len(dataset.visits)
    if rows.size and (rows.min() < 0 or rows.max() >= n):
        bad = int(rows[(rows < 0) | (rows >= n)][0])
        raise ValueError(f"rows: row {bad} out of range [0, {n}) of the visit table")
    return rows


def _decode_visit(
    t: RuleTables,
    diag: np.ndarray,
    proc: np.ndarray,
    age: int,
    history: Mapping[int, int],
) -> tuple[list[int], np.ndarray]:
    """The oracle's set (sorted) and float64 [meds] marginal scores of one visit."""
    r = t.rules
    m = r.num_meds
    active = [t.disease_of_primary[int(c)] for c in diag if int(c) in t.disease_of_primary]
    active_set = frozenset(active)
    class_score = np.zeros(m)
    chosen: list[int] = []
    for c in t.indicated(active, [int(p) for p in proc]):
        members, pop = t.members[c], t.popularity[c]
        q = pop.copy()
        h = history.get(c)
        if h is not None:
            q *= 1.0 - r.p_stick
            q[members == h] += r.p_stick
        drop = 0.0
        if chosen:
            bad = t.ddi[np.ix_(members, chosen)].any(axis=1)
            if bad.any():
                moved = r.p_avoid * q[bad].sum()
                q[bad] *= 1.0 - r.p_avoid
                ok = np.where(bad, 0.0, pop)
                if ok.sum() > 0:
                    q += moved * ok / ok.sum()
                else:
                    drop = moved
        pg = t.give_prob(c, age, active_set)
        class_score[members] = pg * q
        if pg > 0.5:
            k = int(np.argmax(q))
            if q[k] >= drop:
                chosen.append(int(members[k]))

    meds = set(chosen)
    present = {int(t.drug_class[d]) for d in chosen}
    miss = 1.0 - class_score
    for a in np.flatnonzero(class_score):
        for b, prob in t.companions_of.get(int(a), ()):
            cb = int(t.drug_class[b])
            free = 1.0
            if t.substitutable[cb]:
                free = 1.0 - float(class_score[t.members[cb]].sum() - class_score[b])
            miss[b] *= 1.0 - class_score[a] * prob * max(free, 0.0)
    for a in chosen:
        for b, prob in t.companions_of.get(a, ()):
            cb = int(t.drug_class[b])
            if prob > 0.5 and not t.blocked(cb, present, meds, b):
                meds.add(b)
                present.add(cb)
    for bg in r.background:
        miss[bg.drug] *= 1.0 - bg.prob
        if bg.prob > 0.5:
            meds.add(bg.drug)
    if not meds:
        meds.add(r.fallback_drug)
    miss *= math.exp(-r.noise_drug_rate / m)
    return sorted(meds), 1.0 - miss


def oracle_recommend(
    rules: PlantedRules, dataset: Dataset, rows: np.ndarray | Sequence[int]
) -> tuple[Bool[np.ndarray, "batch meds"], Float32[np.ndarray, "batch meds"]]:
    """The planted rules' best set and marginal scores for the visits ``rows``.

    Uses only what a model may observe: each visit's diagnoses, procedures and age, and the
    medication sets of the patient's earlier visits (rows before it with a smaller
    ``visit_index``). Decoding: indicated classes given with probability > 0.5; for each, in
    priority order, the history drug (else the most popular member), resolving interactions with
    the drugs already chosen as clinicians do (the most probable outcome: a non-interacting
    substitute, or none); companions and background drugs with probability > 0.5. Scores: planted
    marginal probabilities under the approximations in the module docstring.

    Args:
      rules: the cohort's :class:`PlantedRules` (``truth/rules.json``).
      dataset: the cohort's dataset; its vocabularies must be the ones the rules index.
      rows: int [batch] visit rows of ``dataset.visits``.

    Returns:
      ``(sets, scores)``: bool [batch, meds] recommended sets and float32 [batch, meds] scores.

    Raises:
      ValueError: the rules belong to another vocabulary, or a row is out of range.
    """
    _check_rules_match(rules, dataset)
    rows = _rows(dataset, rows)
    t = RuleTables.build(rules)
    v = dataset.visits
    m = rules.num_meds
    sets = np.zeros((len(rows), m), bool)
    scores = np.zeros((len(rows), m), np.float32)
    for out, i in enumerate(rows.tolist()):
        history: dict[int, int] = {}
        for j in range(i - int(v.visit_index[i]), i):
            update_history(t, history, v.med[j].tolist())
        meds, s = _decode_visit(t, v.diag[i], v.proc[i], int(v.age[i]), history)
        sets[out, meds] = True
        scores[out] = s
    return sets, scores


def most_frequent_recommend(
    dataset: Dataset,
    rows: np.ndarray | Sequence[int],
    *,
    train_rows: np.ndarray | Sequence[int] | None = None,
) -> tuple[Bool[np.ndarray, "batch meds"], Float32[np.ndarray, "batch meds"]]:
    """The K most frequent training drugs for every visit, K = round(mean training set size).

    Args:
      dataset: any dataset.
      rows: int [batch] visit rows to recommend for.
      train_rows: visit rows whose medications are counted; the train split when None.

    Returns:
      ``(sets, scores)``: bool [batch, meds], the same K drugs in every row (ties broken by the
      lower index), and float32 [batch, meds], each drug's fraction of training visits.

    Raises:
      ValueError: there are no training visits, or a row is out of range.

    Examples:
      >>> from flame_jax.data._synthetic import SyntheticConfig, generate_cohort
      >>> ds = generate_cohort(SyntheticConfig.tiny()).dataset
      >>> sets, scores = most_frequent_recommend(ds, ds.split_rows("test")[:3])
      >>> sets.shape == (3, ds.num_meds), bool((sets == sets[0]).all())
      (True, True)
    """
    rows = _rows(dataset, rows)
    train = _rows(dataset, dataset.split_rows("train") if train_rows is None else train_rows)
    if not train.size:
        raise ValueError("train_rows: no training visits to count")
    m = dataset.num_meds
    counts = np.zeros(m, np.int64)
    sizes = 0
    for i in train.tolist():
        meds = dataset.visits.med[i]
        counts[meds] += 1
        sizes += len(meds)
    freq = counts / len(train)
    k = min(round(sizes / len(train)), m)
    top = np.lexsort((np.arange(m), -counts))[:k]
    sets = np.zeros((len(rows), m), bool)
    sets[:, top] = True
    scores = np.broadcast_to(freq.astype(np.float32), (len(rows), m)).copy()
    return sets, scores
