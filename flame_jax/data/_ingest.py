"""Raw EHR tables -> the flame_jax dataset format: filters, vocabularies, DDI, splits, report.

``prepare(root, config)`` reads the raw tables of ``config.source`` (see
:mod:`flame_jax.data._tables`), maps medications to the chosen vocabulary
(:mod:`flame_jax.data._mappings`), applies the named filters in a loop until nothing changes,
builds the vocabularies in first-appearance order (as SafeDrug and FLAME do), the optional DDI
adjacency (:mod:`flame_jax.data._ddi`) and the split, and returns the :class:`Dataset` with a
report of what every step removed. ``prepare_dataset`` also writes it, atomically.

The filters, in the order one pass applies them (a pass repeats until a fixed point):

=====================  =========================================================================
name                   keeps
=====================  =========================================================================
top_k_meds             the K drugs prescribed in the most visits (ties: code order). FLAME's
                       ``.loc[:200]`` keeps K+1 = 201; ``topk_off_by_one=True`` reproduces that.
top_k_diag, top_k_proc the K most frequent codes (SafeDrug: 2000 diagnoses)
min_diag_count, ...    codes that occur in at least N visits (FLAME: count > 5, i.e. N = 6)
require_smiles         drugs with a SMILES string in the drug info table (FLAME)
require_all_tables     visits with at least one diagnosis, procedure and drug (off: at least
                       one drug)
min_visits             patients with at least N visits (SafeDrug, FLAME: 2). FLAME judges this on
                       the raw prescriptions only, before the other filters, so its patients can
                       end with one visit; here it is part of the fixed-point loop.
=====================  =========================================================================

Counts are numbers of visits in which a code occurs (rows after de-duplicating (visit, code)).
Visits are ordered by admission time within a patient (SafeDrug orders by HADM_ID).
"""

import dataclasses
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from flame_jax import _io
from flame_jax.data._ddi import DDI_FORMATS, FLAME_ADVERSE_TYPES, ddi_from_pairs, ddi_from_twosides
from flame_jax.data._format import (
    Dataset,
    RaggedIds,
    VisitTable,
    Vocabulary,
    cooccurrence_adjacency,
    save_dataset,
)
from flame_jax.data._mappings import (
    MED_VOCABS,
    MedMapping,
    load_drug_info,
    map_medications,
    med_smiles,
    med_titles,
)
from flame_jax.data._tables import SOURCES, IngestError, RawCohort, read_raw

__all__ = [
    "FILTERS",
    "SPLIT_PROTOCOLS",
    "PrepareConfig",
    "format_report",
    "prepare",
    "prepare_dataset",
    "split_patients",
]

SPLIT_PROTOCOLS = ("safedrug", "random")
FILTERS = (
    "top_k_meds",
    "top_k_diag",
    "top_k_proc",
    "min_diag_count",
    "min_proc_count",
    "min_med_count",
    "require_smiles",
    "require_all_tables",
    "min_visits",
)
_KINDS = ("diag", "proc", "med")


@dataclasses.dataclass(frozen=True, kw_only=True)
class PrepareConfig:
    """How raw tables become a dataset. Defaults follow FLAME's filters with a mapping-free
    medication vocabulary; :meth:`flame` and :meth:`safedrug` are the papers' pipelines.

    Raises:
      ValueError: naming the field, when a value is out of range or inconsistent.

    Examples:
      >>> PrepareConfig().top_k_meds, PrepareConfig().min_diag_count
      (200, 6)
      >>> PrepareConfig(split="shuffled")
      Traceback (most recent call last):
      ...
      ValueError: PrepareConfig.split must be one of ('safedrug', 'random'), got 'shuffled'
    """

    source: str = "mimic3"  # mimic3, mimic4 or eicu
    name: str = ""  # dataset name; default: the source
    med_vocab: str = "name"  # name, ndc, atc3, drugbank (see flame_jax.data._mappings)
    ndc_map: str | None = None  # drugbank: NDC -> drug id CSV
    ndc_rxcui: str | None = None  # atc3: NDC -> RXCUI (CSV or GAMENet dict .txt)
    rxcui_atc: str | None = None  # atc3: RXCUI -> ATC CSV
    drug_info: str | None = None  # drug id -> name, SMILES CSV
    drug_types: tuple[str, ...] = ("MAIN",)  # PRESCRIPTIONS.DRUG_TYPE kept; () keeps all
    top_k_meds: int | None = 200  # FLAME 200, SafeDrug 300; None: no limit
    topk_off_by_one: bool = False  # True: keep K+1, as FLAME's .loc[:K] does
    top_k_diag: int | None = None  # SafeDrug 2000
    top_k_proc: int | None = None
    min_diag_count: int = 6  # FLAME keeps codes with count > 5
    min_proc_count: int = 6
    min_med_count: int = 1
    require_smiles: bool = False  # FLAME: drugs without a SMILES are dropped
    require_all_tables: bool = True
    min_visits: int = 2
    fixed_point: bool = True  # repeat the filters until nothing changes
    split: str = "safedrug"  # safedrug: patient order 2/3, then the rest halved; random
    seed: int = 0  # random split
    ddi: str | None = None  # DDI table; None: no DDI (metrics say "not available")
    ddi_format: str = "pairs"  # pairs (DrugBank types) or twosides
    ddi_types: tuple[str, ...] | None = None  # pairs: types kept; None: all
    cid_atc: str | None = None  # twosides: drug-atc.csv
    ddi_top_k: int = 40  # twosides: side effects kept
    ddi_side_effects: str = "least-frequent"  # what SafeDrug/GAMENet's iloc[-40:] keeps
    eicu_procedures: str = "treatment"  # eICU: treatment or physicalExam

    def __post_init__(self):
        choices = {
            "source": SOURCES,
            "med_vocab": MED_VOCABS,
            "split": SPLIT_PROTOCOLS,
            "ddi_format": DDI_FORMATS,
            "ddi_side_effects": ("least-frequent", "most-frequent"),
            "eicu_procedures": ("treatment", "physicalExam"),
        }
        for field, allowed in choices.items():
            if getattr(self, field) not in allowed:
                raise ValueError(
                    f"PrepareConfig.{field} must be one of {allowed}, got {getattr(self, field)!r}"
                )
        for field in ("top_k_meds", "top_k_diag", "top_k_proc"):
            value = getattr(self, field)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise ValueError(f"PrepareConfig.{field} must be None or >= 1, got {value!r}")
        for field in ("min_diag_count", "min_proc_count", "min_med_count", "min_visits", "seed"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"PrepareConfig.{field} must be an integer >= 0, got {value!r}")
        if isinstance(self.ddi_top_k, bool) or self.ddi_top_k < 1:
            raise ValueError(f"PrepareConfig.ddi_top_k must be >= 1, got {self.ddi_top_k!r}")
        object.__setattr__(self, "drug_types", tuple(str(t) for t in self.drug_types))
        if self.ddi_types is not None:
            object.__setattr__(self, "ddi_types", tuple(str(t) for t in self.ddi_types))
        if self.med_vocab == "drugbank" and not self.ndc_map:
            raise ValueError("PrepareConfig.ndc_map is required when med_vocab is 'drugbank'")
        if self.med_vocab == "atc3" and not (self.ndc_rxcui and self.rxcui_atc):
            raise ValueError(
                "PrepareConfig.ndc_rxcui and rxcui_atc are required when med_vocab is 'atc3'"
            )
        if self.source == "eicu" and self.med_vocab != "name":
            raise ValueError(
                f"PrepareConfig.med_vocab {self.med_vocab!r} needs NDCs, which eICU's medication "
                "table does not have; use 'name'"
            )
        if self.ddi_format == "twosides":
            if self.ddi and not self.cid_atc:
                raise ValueError("PrepareConfig.cid_atc is required when ddi_format is 'twosides'")
            if self.ddi and self.med_vocab != "atc3":
                raise ValueError("PrepareConfig.ddi_format 'twosides' needs med_vocab 'atc3'")
        if self.require_smiles and not self.drug_info:
            raise ValueError("PrepareConfig.require_smiles needs drug_info (a SMILES table)")

    @classmethod
    def flame(cls, **overrides: Any) -> "PrepareConfig":
        """FLAME's pipeline: DrugBank ids through ``ndc_map``, top-200 drugs (fixed: 200, not
        201), codes seen in more than 5 visits, drugs with a SMILES, DrugBank adverse types."""
        kwargs: dict[str, Any] = {
            "med_vocab": "drugbank",
            "top_k_meds": 200,
            "min_diag_count": 6,
            "min_proc_count": 6,
            "require_smiles": True,
            "ddi_format": "pairs",
            "ddi_types": FLAME_ADVERSE_TYPES,
        }
        kwargs.update(overrides)
        return cls(**kwargs)

    @classmethod
    def safedrug(cls, **overrides: Any) -> "PrepareConfig":
        """SafeDrug / GAMENet: ATC-3 through NDC -> RXCUI -> ATC, top-300 drugs, top-2000
        diagnoses, no count thresholds, every DRUG_TYPE, TWOSIDES top-40 side effects."""
        kwargs: dict[str, Any] = {
            "med_vocab": "atc3",
            "drug_types": (),
            "top_k_meds": 300,
            "top_k_diag": 2000,
            "min_diag_count": 0,
            "min_proc_count": 0,
            "ddi_format": "twosides",
        }
        kwargs.update(overrides)
        return cls(**kwargs)

    @classmethod
    def unfiltered(cls, **overrides: Any) -> "PrepareConfig":
        """Every filter off except "visits with at least one drug" (round trips, inspection)."""
        kwargs: dict[str, Any] = {
            "top_k_meds": None,
            "min_diag_count": 0,
            "min_proc_count": 0,
            "min_med_count": 0,
            "require_all_tables": False,
            "min_visits": 1,
        }
        kwargs.update(overrides)
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for k, v in out.items():
            if isinstance(v, tuple):
                out[k] = list(v)
        return out


# --------------------------------------------------------------------------------------------------
# The filter loop


@dataclasses.dataclass
class _State:
    visits: Any  # frame: patient_id, visit_id, ...
    pairs: dict[str, Any]  # kind -> frame (visit_id, code, seq)

    def counts(self) -> dict[str, int]:
        out = {
            "patients": int(self.visits["patient_id"].nunique()),
            "visits": len(self.visits),
        }
        for k in _KINDS:
            out[k] = int(self.pairs[k]["code"].nunique())
        out["rows"] = sum(len(self.pairs[k]) for k in _KINDS)
        return out


def _restrict(state: _State, keep_visits: np.ndarray) -> _State:
    visits = state.visits[np.isin(state.visits["visit_id"].to_numpy(), keep_visits)]
    known = visits["visit_id"].to_numpy()
    pairs = {k: f[np.isin(f["visit_id"].to_numpy(), known)] for k, f in state.pairs.items()}
    return _State(visits, pairs)


def _code_counts(frame: Any) -> Any:
    """Visits per code, sorted by (-count, code)."""
    counts = frame.groupby("code", sort=False).size()
    order = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return order


def _keep_codes(state: _State, kind: str, keep: set) -> _State:
    pairs = dict(state.pairs)
    f = pairs[kind]
    pairs[kind] = f[f["code"].isin(keep)]
    return _State(state.visits, pairs)


def _top_k(kind: str, k: int | None) -> Callable[[_State], _State]:
    def apply(state: _State) -> _State:
        if k is None:
            return state
        ranked = _code_counts(state.pairs[kind])
        return _keep_codes(state, kind, {c for c, _ in ranked[:k]})

    return apply


def _min_count(kind: str, n: int) -> Callable[[_State], _State]:
    def apply(state: _State) -> _State:
        if n <= 1:
            return state
        ranked = _code_counts(state.pairs[kind])
        return _keep_codes(state, kind, {c for c, cnt in ranked if cnt >= n})

    return apply


def _require_smiles(enabled: bool, smiles: Mapping[str, tuple]) -> Callable[[_State], _State]:
    def apply(state: _State) -> _State:
        if not enabled:
            return state
        codes = set(state.pairs["med"]["code"].tolist())
        return _keep_codes(state, "med", {c for c in codes if smiles.get(c)})

    return apply


def _require_tables(all_tables: bool) -> Callable[[_State], _State]:
    def apply(state: _State) -> _State:
        kinds = _KINDS if all_tables else ("med",)
        keep = state.visits["visit_id"].to_numpy()
        for k in kinds:
            keep = np.intersect1d(keep, state.pairs[k]["visit_id"].to_numpy())
        return _restrict(state, keep)

    return apply


def _min_visits(n: int) -> Callable[[_State], _State]:
    def apply(state: _State) -> _State:
        if n <= 1:
            return state
        per = state.visits.groupby("patient_id")["visit_id"].transform("size").to_numpy()
        return _restrict(state, state.visits["visit_id"].to_numpy()[per >= n])

    return apply


def _run_filters(
    state: _State, config: PrepareConfig, smiles: Mapping[str, tuple]
) -> tuple[_State, list[dict[str, Any]], int]:
    k_meds = config.top_k_meds
    if k_meds is not None and config.topk_off_by_one:
        k_meds += 1
    filters = {
        "top_k_meds": (_top_k("med", k_meds), f"keep the {k_meds} most prescribed drugs"),
        "top_k_diag": (
            _top_k("diag", config.top_k_diag),
            f"keep the {config.top_k_diag} most frequent diagnoses",
        ),
        "top_k_proc": (
            _top_k("proc", config.top_k_proc),
            f"keep the {config.top_k_proc} most frequent procedures",
        ),
        "min_diag_count": (
            _min_count("diag", config.min_diag_count),
            f"diagnoses in >= {config.min_diag_count} visits",
        ),
        "min_proc_count": (
            _min_count("proc", config.min_proc_count),
            f"procedures in >= {config.min_proc_count} visits",
        ),
        "min_med_count": (
            _min_count("med", config.min_med_count),
            f"drugs in >= {config.min_med_count} visits",
        ),
        "require_smiles": (_require_smiles(config.require_smiles, smiles), "drugs with a SMILES"),
        "require_all_tables": (
            _require_tables(config.require_all_tables),
            "visits with diagnoses, procedures and drugs"
            if config.require_all_tables
            else "visits with at least one drug",
        ),
        "min_visits": (
            _min_visits(config.min_visits),
            f"patients with >= {config.min_visits} visits",
        ),
    }
    active = {
        "top_k_meds": k_meds is not None,
        "top_k_diag": config.top_k_diag is not None,
        "top_k_proc": config.top_k_proc is not None,
        "min_diag_count": config.min_diag_count > 1,
        "min_proc_count": config.min_proc_count > 1,
        "min_med_count": config.min_med_count > 1,
        "require_smiles": config.require_smiles,
        "require_all_tables": True,
        "min_visits": config.min_visits > 1,
    }
    report = {
        name: {"filter": name, "keeps": desc, "patients": 0, "visits": 0, "diag": 0, "proc": 0,
               "med": 0, "rows": 0}
        for name, (_, desc) in filters.items()
        if active[name]
    }  # fmt: skip
    iterations = 0
    while True:
        iterations += 1
        changed = False
        for name, (apply, _) in filters.items():
            if not active[name]:
                continue
            before = state.counts()
            state = apply(state)
            after = state.counts()
            for key in before:
                report[name][key] += before[key] - after[key]
            changed |= before != after
        if not changed or not config.fixed_point:
            break
    return state, list(report.values()), iterations


# --------------------------------------------------------------------------------------------------
# Splits


def split_patients(
    patients: np.ndarray, protocol: str = "safedrug", *, seed: int | np.integer = 0
) -> dict[str, np.ndarray]:
    """Patient-level split: train = first ``int(2N/3)``, test = next ``int((N - train)/2)``,
    val = the rest, in patient order ("safedrug", as SafeDrug/GAMENet: file order is
    SUBJECT_ID order) or in a seeded random order ("random").

    SafeDrug's code takes the *test* set before the validation set (``data_test =
    data[split:split + eval_len]``, ``data_eval`` the rest); this keeps that order.

    Examples:
      >>> s = split_patients(np.arange(10))
      >>> [s[k].tolist() for k in ("train", "val", "test")]
      [[0, 1, 2, 3, 4, 5], [8, 9], [6, 7]]
      >>> r = split_patients(np.arange(10), "random", seed=1)
      >>> sorted(np.concatenate([r["train"], r["val"], r["test"]]).tolist())
      [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    """
    if protocol not in SPLIT_PROTOCOLS:
        raise ValueError(f"split protocol must be one of {SPLIT_PROTOCOLS}, got {protocol!r}")
    order = np.sort(np.asarray(patients, np.int64))
    if protocol == "random":
        order = np.random.default_rng(int(seed)).permutation(order)
    n = len(order)
    n_train = (2 * n) // 3
    n_test = (n - n_train) // 2
    return {
        "train": np.sort(order[:n_train]),
        "val": np.sort(order[n_train + n_test :]),
        "test": np.sort(order[n_train : n_train + n_test]),
    }


# --------------------------------------------------------------------------------------------------
# The pipeline


def _dedupe(frame: Any, what: str, drops: dict[str, int], order_col: str) -> Any:
    frame = frame.sort_values(["visit_id", order_col], kind="stable")
    dup = frame.duplicated(subset=["visit_id", "code"])
    if dup.any():
        drops[f"{what}: repeated (visit, code) rows"] = int(dup.sum())
    return frame[~dup]


def _vocab_and_lists(visits: Any, pairs: Any, order_col: str) -> tuple[list[str], RaggedIds]:
    """Codes in first-appearance order over the sorted visits, and each visit's index list."""
    import pandas as pd

    rows = pd.Index(visits["visit_id"].to_numpy()).get_indexer(pairs["visit_id"].to_numpy())
    order = np.lexsort((pairs[order_col].to_numpy(), rows))
    codes = pairs["code"].to_numpy(dtype=object)[order]
    rows = rows[order]
    values, uniques = pd.factorize(pd.Series(codes, dtype=object))  # first-appearance order
    vocab = [str(c) for c in uniques]
    values = values.astype(np.int32)
    offsets = np.zeros(len(visits) + 1, np.int64)
    np.cumsum(np.bincount(rows, minlength=len(visits)), out=offsets[1:])
    return vocab, RaggedIds(values, offsets)


def prepare(
    root: str | os.PathLike, config: PrepareConfig = PrepareConfig(), *, progress: bool = False
) -> tuple[Dataset, dict[str, Any]]:
    """Turns the raw tables under ``root`` into a :class:`Dataset` (nothing is written).

    Args:
      root: the folder of raw tables of ``config.source``.
      config: mapping, filters, DDI and split.
      progress: show a progress bar over the stages.

    Returns:
      ``(dataset, report)``. ``report`` is JSON-serialisable: ``read`` (rows dropped while
      reading and mapping, by reason: also visits with a negative age, see
      :mod:`flame_jax.data._tables`), ``cleaned`` (only when nonzero: values whose control
      characters were removed, and rows whose drug name was recovered by the quantity-first or
      the drughiclseqno rule, see :mod:`flame_jax.data._mappings`; the rows are kept),
      ``initial`` and ``final`` counts, ``filters`` (per filter:
      patients, visits, diagnosis / procedure / drug codes and (visit, code) rows it removed,
      summed over the passes), ``passes``, and ``ddi`` counts. It is also stored in
      ``dataset.info["prepare"]``.

    Raises:
      IngestError: bad input (see :mod:`flame_jax.data._tables`), or no visit survives the
        filters.
    """

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=5, desc=f"prepare {config.source}", unit="stage")

    def step(what: str) -> None:
        if bar is not None:
            bar.set_postfix_str(what)
            bar.update(1)

    try:
        kwargs = {"procedures": config.eicu_procedures} if config.source == "eicu" else {}
        raw: RawCohort = read_raw(config.source, root, **kwargs)
        step("read")
        drops = dict(raw.drops)
        med = raw.med
        if config.drug_types:
            types = med["drug_type"].to_numpy(dtype=object)
            keep = np.isin(types, list(config.drug_types)) | (types == "")
            if (~keep).any():
                drops[f"med: rows of other DRUG_TYPE than {list(config.drug_types)}"] = int(
                    (~keep).sum()
                )
            med = med[keep]
        mapping = MedMapping(
            config.med_vocab,
            ndc_map=config.ndc_map,
            ndc_rxcui=config.ndc_rxcui,
            rxcui_atc=config.rxcui_atc,
        )
        mapped, map_drops, recovered = map_medications(med.reset_index(drop=True), mapping)
        drops.update(map_drops)
        cleaned = {**raw.cleaned, **recovered}
        info = load_drug_info(config.drug_info)
        step("map")

        mapped = mapped.rename(columns={"order": "seq"})
        pairs = {
            "diag": _dedupe(raw.diag, "diag", drops, "seq"),
            "proc": _dedupe(raw.proc, "proc", drops, "seq"),
            "med": _dedupe(mapped[["visit_id", "code", "seq"]], "med", drops, "seq"),
        }
        all_codes = sorted(set(pairs["med"]["code"].tolist()))
        smiles = med_smiles(all_codes, mapped, info)
        state = _State(raw.visits, pairs)
        initial = state.counts()
        state, filter_report, passes = _run_filters(state, config, smiles)
        final = state.counts()
        step("filter")
        if not len(state.visits):
            lines = "; ".join(f"{r['filter']} removed {r['visits']} visits" for r in filter_report)
            raise IngestError(
                f"{root}: no visit is left after the filters ({lines}); relax the filters "
                "(e.g. min_visits, min_diag_count, min_proc_count, require_all_tables)"
            )

        visits = state.visits.reset_index(drop=True)
        lists, vocabs = {}, {}
        for kind in _KINDS:
            vocabs[kind], lists[kind] = _vocab_and_lists(visits, state.pairs[kind], "seq")
        titles = med_titles(mapped[mapped["code"].isin(vocabs["med"])], mapping, info)
        patient = visits["patient_id"].to_numpy(np.int64)
        starts = np.r_[True, patient[1:] != patient[:-1]]
        first = np.maximum.accumulate(np.where(starts, np.arange(len(patient)), 0))
        table = VisitTable(
            patient_id=patient,
            visit_id=visits["visit_id"].to_numpy(np.int64),
            visit_index=(np.arange(len(patient)) - first).astype(np.int32),
            admit_time=np.asarray(visits["admit_time"].tolist(), dtype=object),
            age=visits["age"].to_numpy(np.int32),
            gender=np.asarray(visits["gender"].tolist(), dtype=object),
            diag=lists["diag"],
            proc=lists["proc"],
            med=lists["med"],
        )
        splits = split_patients(np.unique(patient), config.split, seed=config.seed)
        ddi, ddi_counts = None, {}
        if config.ddi is not None:
            if config.ddi_format == "pairs":
                ddi, ddi_counts = ddi_from_pairs(vocabs["med"], config.ddi, types=config.ddi_types)
            else:
                ddi, ddi_counts = ddi_from_twosides(
                    vocabs["med"],
                    config.ddi,
                    config.cid_atc,
                    top_k=config.ddi_top_k,
                    side_effects=config.ddi_side_effects,
                )
        step("vocabularies, DDI, split")
        report = {
            "source": config.source,
            "root": str(root),
            "read": dict(sorted(drops.items())),
            # Only when something was repaired, so that clean tables give the report as before.
            **({"cleaned": dict(sorted(cleaned.items()))} if cleaned else {}),
            "initial": initial,
            "filters": filter_report,
            "passes": passes,
            "final": final,
            "ddi": ddi_counts if config.ddi is not None else "not available (no DDI table)",
            "splits": {k: len(v) for k, v in splits.items()},
        }
        m = len(vocabs["med"])
        train_rows = np.flatnonzero(np.isin(patient, splits["train"]))
        dataset = Dataset(
            name=config.name or config.source,
            source=f"{config.source} raw tables ({Path(root).name}), med vocabulary "
            f"{config.med_vocab}",
            diag_vocab=Vocabulary(
                kind="diag",
                codes=tuple(vocabs["diag"]),
                titles=tuple(raw.diag_titles.get(c, c) for c in vocabs["diag"]),
            ),
            proc_vocab=Vocabulary(
                kind="proc",
                codes=tuple(vocabs["proc"]),
                titles=tuple(raw.proc_titles.get(c, c) for c in vocabs["proc"]),
            ),
            med_vocab=Vocabulary(
                kind="med",
                codes=tuple(vocabs["med"]),
                titles=tuple(titles[c] for c in vocabs["med"]),
                smiles=tuple(smiles.get(c, ()) for c in vocabs["med"]),
                synonyms=tuple(() for _ in vocabs["med"]),
            ),
            visits=table,
            splits=splits,
            ehr=cooccurrence_adjacency(table.med, train_rows, m),
            ddi=ddi,
            info={"prepare": {"config": config.to_dict(), "report": report}},
        )
        step("done")
    finally:
        if bar is not None:
            bar.close()
    return dataset, report


def format_report(report: Mapping[str, Any]) -> str:
    """The report as a plain-text table (what ``flame-jax data prepare`` prints)."""
    lines = [f"source {report['source']} at {report['root']}"]
    if report["read"]:
        lines.append("dropped while reading and mapping:")
        width = max(len(k) for k in report["read"])
        lines += [f"  {k.ljust(width)}  {v}" for k, v in report["read"].items()]
    if report.get("cleaned"):
        lines.append("cleaned while reading and mapping (rows kept):")
        width = max(len(k) for k in report["cleaned"])
        lines += [f"  {k.ljust(width)}  {v}" for k, v in report["cleaned"].items()]
    cols = ("patients", "visits", "diag", "proc", "med", "rows")
    header = f"  {'filter':<20}" + "".join(f"{c:>10}" for c in cols) + "  keeps"
    lines.append(f"filters ({report['passes']} passes to a fixed point), removed:")
    lines.append(header)
    lines.append(
        f"  {'(before filters)':<20}" + "".join(f"{report['initial'][c]:>10}" for c in cols)
    )
    for r in report["filters"]:
        lines.append(
            f"  {r['filter']:<20}" + "".join(f"{r[c]:>10}" for c in cols) + f"  {r['keeps']}"
        )
    lines.append(f"  {'(after filters)':<20}" + "".join(f"{report['final'][c]:>10}" for c in cols))
    ddi = report["ddi"]
    lines.append(
        "ddi: " + (ddi if isinstance(ddi, str) else ", ".join(f"{k} {v}" for k, v in ddi.items()))
    )
    splits = report["splits"]
    lines.append(
        "splits (patients): " + ", ".join(f"{k} {splits[k]}" for k in ("train", "val", "test"))
    )
    return "\n".join(lines)


def prepare_dataset(
    root: str | os.PathLike,
    out: str | os.PathLike,
    config: PrepareConfig = PrepareConfig(),
    *,
    overwrite: bool = False,
    progress: bool = False,
) -> tuple[Dataset, dict[str, Any]]:
    """:func:`prepare`, then writes the dataset to ``out`` with ``report.json`` and
    ``report.txt`` beside its files, all or nothing.

    Raises:
      IngestError: as :func:`prepare` (nothing is written).
      FileExistsError: ``out`` is not empty and ``overwrite`` is false (checked first).
    """
    out = Path(out)
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(
            f"{out}: folder exists and is not empty (pass overwrite to replace it)"
        )
    dataset, report = prepare(root, config, progress=progress)
    with _io.atomic_directory(out, overwrite=overwrite) as tmp:
        save_dataset(dataset, tmp, overwrite=True)
        _io.write_json_atomic(tmp / "report.json", report)
        _io.write_bytes_atomic(tmp / "report.txt", (format_report(report) + "\n").encode())
    return dataset, report
