"""Clinical vignettes with gold medication sets: rendered from a dataset, or read from JSONL.

A vignette is the request one collaboration round answers (Sanchez et al., arXiv 2512.05066): a
short case description plus the expert (gold) medication set. The built-in generator renders
visits of a dataset (the synthetic cohort, or an ingested MIMIC dataset) as text: age, sex,
diagnoses and procedures with their codes and titles, and the medications of the patient's
earlier admissions. The gold set is the visit's recorded medication set.

User vignette sets are JSONL files, one object per line::

    {"id": "case-1", "text": "A 67-year-old man ...", "gold": ["Metformin", "Lisinopril"]}
    {"id": "case-2", "text": "...", "gold": [...], "visit_id": 1234}

``id`` (unique, non-empty string), ``text`` (non-empty string) and ``gold`` (list of drug names)
are required; ``visit_id`` (integer) is optional and lets dataset-backed recommenders answer the
vignette. Unknown keys are errors. With a drug vocabulary, every gold name must name a drug of
it (after normalisation); it is stored under its canonical name.
"""

import dataclasses
import json
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from flame_jax._io import write_bytes_atomic
from flame_jax.data import Dataset, DrugVocabulary, Vocabulary

__all__ = [
    "Vignette",
    "VignetteError",
    "canonical_drugs",
    "case_id",
    "load_vignettes",
    "render_vignettes",
    "save_vignettes",
]

_CASE_ID = re.compile(r"^Case ID:\s*(\S+)\s*$", re.MULTILINE)
_VISIT_ID = re.compile(r"^visit-(-?\d+)$")
_KEYS = ("id", "text", "gold", "visit_id")


class VignetteError(ValueError):
    """A vignette file or record is invalid; the message names the file, line and field."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Vignette:
    """One clinical request and its gold answer.

    Attributes:
      id: unique name of the vignette (rendered ones: ``visit-<visit_id>``).
      text: the case description shown to every member.
      gold: the expert medication set, canonical drug names, sorted by vocabulary index when
        rendered from a dataset.
      visit_id: the dataset visit it describes, or None; dataset-backed recommenders need it.
    """

    id: str
    text: str
    gold: tuple[str, ...]
    visit_id: int | None = None

    def __post_init__(self):
        if not isinstance(self.id, str) or not self.id.strip():
            raise VignetteError(f"Vignette.id must be a non-empty string, got {self.id!r}")
        if not isinstance(self.text, str) or not self.text.strip():
            raise VignetteError(f"Vignette {self.id}: text must be a non-empty string")
        gold = tuple(self.gold)
        for i, g in enumerate(gold):
            if not isinstance(g, str) or not g.strip():
                raise VignetteError(f"Vignette {self.id}: gold[{i}] must be a drug name, got {g!r}")
        object.__setattr__(self, "gold", gold)
        if self.visit_id is not None:
            if isinstance(self.visit_id, bool) or not isinstance(self.visit_id, int | np.integer):
                raise VignetteError(
                    f"Vignette {self.id}: visit_id must be an integer, got {self.visit_id!r}"
                )
            object.__setattr__(self, "visit_id", int(self.visit_id))

    def to_json(self) -> dict:
        row: dict = {"id": self.id, "text": self.text, "gold": list(self.gold)}
        if self.visit_id is not None:
            row["visit_id"] = self.visit_id
        return row


_LEAD = re.compile(r"^\s*(?:[-*•·]+|\d+[.)]|\(\d+\))\s*")
_TRIM = " \t\"'`.,;:!?()[]{}"


def _lookup(vocab: DrugVocabulary, text: str) -> int | None:
    """The drug named by ``text``; drops list bullets and trailing dose/route words if needed."""
    name = _LEAD.sub("", text).strip(_TRIM)
    if not name:
        return None
    hit = vocab.lookup(name)
    if hit is not None:
        return hit
    # "Metformin 500 mg PO bid" -> the longest leading run of words that names a drug.
    words = name.split()
    for n in range(len(words) - 1, 0, -1):
        hit = vocab.lookup(" ".join(words[:n]).strip(_TRIM))
        if hit is not None:
            return hit
    return None


def canonical_drugs(
    names: Iterable[str], vocab: DrugVocabulary
) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """Maps free-text drug names to vocabulary indices.

    Normalisation: list bullets and numbering, surrounding quotes and punctuation are dropped;
    case, whitespace and hyphens are ignored; synonyms and codes count; when the whole string
    names no drug, the longest leading run of words that does is used (so doses and routes
    after the name are ignored).

    Args:
      names: the drug names of one answer.
      vocab: the medication lookup table (:func:`drug_vocabulary`).

    Returns:
      ``(indices, unknown)``: the sorted unique drug indices, and the names that named no drug.

    Examples:
      >>> dv = DrugVocabulary(names=("Aspirin", "Insulin Glargine"), synonyms={"ASA": 0})
      >>> canonical_drugs(["1. insulin-glargine 10 units", "ASA", "aspirin", "tea"], dv)
      ((0, 1), ('tea',))
    """
    found: set[int] = set()
    unknown: list[str] = []
    for name in names:
        hit = _lookup(vocab, str(name))
        if hit is None:
            unknown.append(str(name))
        else:
            found.add(hit)
    return tuple(sorted(found)), tuple(unknown)


# --------------------------------------------------------------------------------------------------
# Rendering dataset visits


def _sex(code: str) -> str:
    return {"F": "woman", "M": "man"}.get(str(code), "patient (sex not recorded)")


def _coded(vocab: Vocabulary, ids: np.ndarray) -> list[str]:
    return [f"- {vocab.codes[int(i)]} {vocab.titles[int(i)]}" for i in ids] or ["- none"]


def render_vignettes(
    dataset: Dataset, rows: Sequence[int] | np.ndarray, *, history: bool = True
) -> list[Vignette]:
    """Renders visits of ``dataset`` as clinical vignettes whose gold set is the visit's drugs.

    The text holds what a clinician would see at admission: a ``Case ID`` line (``visit-<id>``),
    age and sex, the admission's diagnoses and procedures with codes and titles, and (with
    ``history``) the medication sets of the patient's earlier admissions. Never the visit's own
    medications.

    Args:
      dataset: any flame_jax dataset.
      rows: visit rows of ``dataset.visits``.
      history: include the earlier admissions' medications.

    Returns:
      One :class:`Vignette` per row, in order.

    Raises:
      ValueError: a row is out of range.

    Examples:
      >>> from flame_jax.data import SyntheticConfig, generate_cohort
      >>> ds = generate_cohort(SyntheticConfig.tiny()).dataset
      >>> (v,) = render_vignettes(ds, ds.split_rows("test")[:1])
      >>> v.text.splitlines()[0] == f"Case ID: visit-{v.visit_id}", len(v.gold) > 0
      (True, True)
    """
    v = dataset.visits
    meds = dataset.med_vocab.titles
    out = []
    for row in np.asarray(rows, dtype=np.int64).reshape(-1).tolist():
        if not 0 <= row < len(v):
            raise ValueError(f"rows: row {row} out of range [0, {len(v)}) of the visit table")
        k = int(v.visit_index[row])
        age = int(v.age[row])
        who = f"{age}-year-old {_sex(v.gender[row])}" if age >= 0 else _sex(v.gender[row])
        lines = [
            f"Case ID: visit-{int(v.visit_id[row])}",
            f"Patient: {who}, admission {k + 1} in the record.",
            "Diagnoses (ICD code, title):",
            *_coded(dataset.diag_vocab, v.diag[row]),
            "Procedures (ICD code, title):",
            *_coded(dataset.proc_vocab, v.proc[row]),
        ]
        if history:
            lines.append("Medications of earlier admissions:")
            earlier = range(row - k, row)
            lines += [
                f"- admission {j - (row - k) + 1}: "
                + (", ".join(meds[int(m)] for m in v.med[j]) or "none")
                for j in earlier
            ] or ["- none (first admission)"]
        lines.append("Which medications should be prescribed during this admission?")
        out.append(
            Vignette(
                id=f"visit-{int(v.visit_id[row])}",
                text="\n".join(lines),
                gold=tuple(meds[int(m)] for m in np.sort(v.med[row])),
                visit_id=int(v.visit_id[row]),
            )
        )
    return out


def case_id(text: str) -> tuple[str | None, int | None]:
    """The ``Case ID`` of a rendered vignette text and the visit id in it (None when absent).

    Examples:
      >>> case_id("Case ID: visit-42\\nPatient: ...")
      ('visit-42', 42)
      >>> case_id("no id here")
      (None, None)
    """
    m = _CASE_ID.search(text)
    if m is None:
        return None, None
    visit = _VISIT_ID.match(m.group(1))
    return m.group(1), (int(visit.group(1)) if visit else None)


# --------------------------------------------------------------------------------------------------
# JSONL


def _record(obj: object, where: str, vocab: DrugVocabulary | None) -> Vignette:
    if not isinstance(obj, dict):
        raise VignetteError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    unknown = sorted(set(obj) - set(_KEYS))
    if unknown:
        raise VignetteError(f"{where}: unknown field {unknown[0]!r} (known: {', '.join(_KEYS)})")
    for key in ("id", "text", "gold"):
        if key not in obj:
            raise VignetteError(f"{where}: field {key!r} is missing")
    for key in ("id", "text"):
        if not isinstance(obj[key], str) or not obj[key].strip():
            raise VignetteError(f"{where}: field {key!r} must be a non-empty string")
    gold = obj["gold"]
    if not isinstance(gold, list):
        raise VignetteError(f"{where}: field 'gold' must be a list of drug names, got {gold!r}")
    names = []
    for i, g in enumerate(gold):
        if not isinstance(g, str) or not g.strip():
            raise VignetteError(f"{where}: field gold[{i}] must be a drug name, got {g!r}")
        names.append(g)
    if vocab is not None:
        canon = []
        for i, g in enumerate(names):
            idx, _ = canonical_drugs([g], vocab)
            if not idx:
                raise VignetteError(
                    f"{where}: field gold[{i}] = {g!r} names no drug of the vocabulary"
                )
            canon.append(idx[0])
        names = [vocab.names[i] for i in sorted(set(canon))]
    visit_id = obj.get("visit_id")
    if visit_id is not None and (isinstance(visit_id, bool) or not isinstance(visit_id, int)):
        raise VignetteError(f"{where}: field 'visit_id' must be an integer, got {visit_id!r}")
    return Vignette(id=obj["id"], text=obj["text"], gold=tuple(names), visit_id=visit_id)


def load_vignettes(
    path: str | os.PathLike, *, vocab: DrugVocabulary | None = None
) -> list[Vignette]:
    """Reads a JSONL vignette set strictly (format in the module docstring).

    Args:
      path: the ``.jsonl`` file; blank lines are skipped.
      vocab: when given, every gold name must name one of its drugs; stored canonically.

    Returns:
      The vignettes in file order.

    Raises:
      VignetteError: naming the file, the line number and the field.
      FileNotFoundError: the file does not exist.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    out: list[Vignette] = []
    seen: dict[str, int] = {}
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}: line {n}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise VignetteError(f"{where}: not valid JSON ({e.msg})") from None
        vignette = _record(obj, where, vocab)
        if vignette.id in seen:
            raise VignetteError(
                f"{where}: field 'id' = {vignette.id!r} repeats line {seen[vignette.id]}"
            )
        seen[vignette.id] = n
        out.append(vignette)
    if not out:
        raise VignetteError(f"{path}: no vignettes")
    return out


def save_vignettes(path: str | os.PathLike, vignettes: Sequence[Vignette]) -> Path:
    """Writes vignettes as JSONL, one object per line, atomically (:func:`load_vignettes`)."""
    lines = [json.dumps(v.to_json(), ensure_ascii=False) for v in vignettes]
    return write_bytes_atomic(path, ("\n".join(lines) + "\n").encode("utf-8"))
