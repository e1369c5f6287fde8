"""Prompt rendering for FLAME: visit text with entity slots, classification and list-editing tasks.

A prompt is plain text (no chat template, as in the original) plus the list of its entity slots in
text order. Each slot is a placeholder string (``[PatEmb]``, ``[DiasEmb]``, ``[ProEmb]``,
``[DrugEmb]``) written right after the entity's name, so the model sees the name and, through
knowledge fusion, a projected external vector at the placeholder's position. The k-th placeholder
of a kind in the text is the k-th slot of that kind in :attr:`Prompt.slots`.

Where the original is inconsistent we choose (see docs/flame.md):

* history is the patient's true previous visit (``visit_index - 1``), not the adjacent row of a
  filtered table, so the first visit of a val/test patient's second admission still gets history;
* age and sex are always rendered (the synthetic and demo data have no discharge notes);
* drug lists are sorted by vocabulary index; the targets too.

References:
    Fan et al., "Fine-grained List-wise Alignment for Generative Medication Recommendation"
    (FLAME), arXiv 2505.20218 (2025), prompt templates and entity placeholders.
"""

import dataclasses
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from flame_jax.data import Dataset

__all__ = [
    "PLACEHOLDERS",
    "SLOT_KINDS",
    "Prompt",
    "PromptConfig",
    "cls_target",
    "list_target",
    "previous_visit_rows",
    "render_cls_prompt",
    "render_list_prompt",
]

SLOT_KINDS = ("patient", "diagnosis", "procedure", "drug")
PLACEHOLDERS = {
    "patient": "[PatEmb]",
    "diagnosis": "[DiasEmb]",
    "procedure": "[ProEmb]",
    "drug": "[DrugEmb]",
}

_CLS_INSTRUCTION = (
    "Decide whether the candidate drug is effective and safe for this patient. "
    "Answer <Yes.> or <No.> and give no explanation."
)
_LIST_INSTRUCTION = {
    "add": (
        "Refine the pre-predicted drug list for this patient: write the relevant drugs that are "
        "missing from it, one drug name per line."
    ),
    "remove": (
        "Refine the pre-predicted drug list for this patient: write the drugs in it that are "
        "unnecessary or unsuitable, one drug name per line."
    ),
}
_LIST_HEADER = {"add": "### Drugs to add:\n", "remove": "### Drugs to remove:\n"}


@dataclasses.dataclass(frozen=True, kw_only=True)
class PromptConfig:
    """How visits are rendered.

    Attributes:
        history: include the patient's previous visit (with its prescribed drugs).
        entity_slots: write placeholders after entity names (knowledge fusion); off gives text only.
        max_codes: at most this many diagnoses and procedures per visit (in vocabulary order);
            None keeps all. Small models need short prompts.
        code_names: write diagnosis and procedure titles; False writes only their placeholders
            (compact prompts for a small model trained from scratch; needs ``entity_slots``,
            since the codes are then known only through knowledge fusion).
        candidates: the "add" prompt lists up to this many candidate drugs outside P0 (the caller
            passes them: pi_cls's highest-scored, best first), each with its slot. 0 (the paper's
            prompt) lists none. A model trained from scratch has never seen drug names outside
            its training prompts, so it cannot name a missing drug it was never shown; a
            pretrained LLM can (see docs/flame.md).
        interaction_notes: after each drug of P0 and each candidate, write which drugs of P0 it
            interacts with (``dataset.ddi``; at most two names) -- the interaction knowledge a
            pretrained LLM brings, spelled out for a model trained from scratch. Off in the paper.
    """

    history: bool = True
    entity_slots: bool = True
    max_codes: int | None = None
    code_names: bool = True
    candidates: int = 0
    interaction_notes: bool = False

    def __post_init__(self):
        if self.max_codes is not None and self.max_codes < 1:
            raise ValueError(f"PromptConfig.max_codes must be >= 1 or None, got {self.max_codes}")
        if isinstance(self.candidates, bool) or not isinstance(self.candidates, int):
            raise ValueError(
                f"PromptConfig.candidates must be an int >= 0, got {self.candidates!r}"
            )
        if self.candidates < 0:
            raise ValueError(f"PromptConfig.candidates must be an int >= 0, got {self.candidates}")
        if not self.code_names and not self.entity_slots:
            raise ValueError(
                "PromptConfig.code_names=False needs entity_slots=True (the codes would vanish)"
            )


class Prompt(NamedTuple):
    """Prompt text and its entity slots.

    Attributes:
        text: the prompt, ending where the answer starts.
        slots: ``(kind, ref)`` per placeholder in text order; ``kind`` is one of
            :data:`SLOT_KINDS`; ``ref`` is the visit row for "patient" and the vocabulary index
            for the others.
    """

    text: str
    slots: tuple[tuple[str, int], ...]


class _Builder:
    def __init__(self, config: PromptConfig):
        self.config = config
        self.parts: list[str] = []
        self.slots: list[tuple[str, int]] = []

    def text(self, s: str) -> None:
        self.parts.append(s)

    def entity(self, name: str, kind: str, ref: int | np.integer) -> None:
        if self.config.entity_slots:
            self.parts.append(f"{name} {PLACEHOLDERS[kind]}" if name else PLACEHOLDERS[kind])
            self.slots.append((kind, int(ref)))
        else:
            self.parts.append(name)

    def entities(self, names: Sequence[str], kind: str, refs: np.ndarray, sep: str) -> None:
        for i, (name, ref) in enumerate(zip(names, refs, strict=True)):
            if i:
                self.text(sep)
            self.entity(name, kind, ref)

    def build(self) -> Prompt:
        return Prompt("".join(self.parts), tuple(self.slots))


def previous_visit_rows(dataset: Dataset) -> np.ndarray:
    """Row of each visit's previous visit of the same patient, -1 for a first visit.

    Args:
        dataset: visits sorted by (patient_id, visit_index), as the format guarantees.

    Returns:
        int64 [visits].
    """
    v = dataset.visits
    prev = np.arange(len(v), dtype=np.int64) - 1
    first = np.ones(len(v), dtype=bool)
    first[1:] = v.patient_id[1:] != v.patient_id[:-1]
    prev[first] = -1
    return prev


def _sex(gender: str) -> str:
    return {"F": "female", "M": "male"}.get(gender, "unknown")


def _codes(dataset: Dataset, row: int, config: PromptConfig) -> tuple[np.ndarray, np.ndarray]:
    diag = np.sort(dataset.visits.diag[row])
    proc = np.sort(dataset.visits.proc[row])
    if config.max_codes is not None:
        diag, proc = diag[: config.max_codes], proc[: config.max_codes]
    return diag, proc


def _visit_body(b: _Builder, dataset: Dataset, row: int, *, drugs: bool) -> None:
    v = dataset.visits
    age = int(v.age[row])
    b.text(f"Age: {age if age >= 0 else 'unknown'}, Sex: {_sex(str(v.gender[row]))}, Diagnoses: [")
    diag, proc = _codes(dataset, row, b.config)
    named = b.config.code_names
    b.entities(
        [dataset.diag_vocab.titles[i] if named else "" for i in diag], "diagnosis", diag, ", "
    )
    b.text("], Procedures: [")
    b.entities(
        [dataset.proc_vocab.titles[i] if named else "" for i in proc], "procedure", proc, ", "
    )
    b.text("]")
    if drugs:
        meds = np.sort(v.med[row])
        b.text(", Drugs: [")
        b.entities([dataset.med_vocab.titles[i] for i in meds], "drug", meds, ", ")
        b.text("]")
    b.text(".\n")


def _context(b: _Builder, dataset: Dataset, row: int, prev: int) -> None:
    if b.config.history and prev >= 0:
        b.text("### Previous hospitalization:\n")
        _visit_body(b, dataset, prev, drugs=True)
    b.text("### Current clinical condition:\nPatient: ")
    b.entity("", "patient", row)
    b.text(". ")
    _visit_body(b, dataset, row, drugs=False)


def _check_row(dataset: Dataset, row: int | np.integer, prev: int | np.integer) -> tuple[int, int]:
    row = int(row)
    if not 0 <= row < len(dataset.visits):
        raise IndexError(f"visit row {row} is outside the dataset's {len(dataset.visits)} visits")
    return row, int(prev)


def render_cls_prompt(
    dataset: Dataset,
    row: int | np.integer,
    candidate: int | np.integer,
    *,
    prev: int | np.integer = -1,
    config: PromptConfig = PromptConfig(),
) -> Prompt:
    """The Yes/No classification prompt of pi_cls for one (visit, candidate drug).

    Args:
        dataset: the dataset.
        row: the visit's row.
        candidate: the candidate drug's vocabulary index.
        prev: the previous visit's row (see :func:`previous_visit_rows`), -1 for none.
        config: rendering options.

    Returns:
        The prompt; its text ends with ``"### Answer:\\n"``, where ``Yes.`` or ``No.`` follows.
    """
    row, prev = _check_row(dataset, row, prev)
    b = _Builder(config)
    b.text(_CLS_INSTRUCTION + "\n")
    _context(b, dataset, row, prev)
    b.text("Candidate drug: ")
    b.entity(dataset.med_vocab.titles[int(candidate)], "drug", int(candidate))
    b.text(".\n### Answer:\n")
    return b.build()


def render_list_prompt(
    dataset: Dataset,
    row: int | np.integer,
    pre_list: Sequence[int] | np.ndarray,
    task: str,
    *,
    prev: int | np.integer = -1,
    config: PromptConfig = PromptConfig(),
    candidates: Sequence[int] | np.ndarray = (),
) -> Prompt:
    """The list-editing prompt of pi_list: add missing drugs to, or remove drugs from, P0.

    Args:
        dataset: the dataset.
        row: the visit's row.
        pre_list: the pre-predicted list P0 (vocabulary indices; rendered sorted, one per line).
        task: "add" or "remove".
        prev: the previous visit's row, -1 for none.
        config: rendering options.
        candidates: for "add" with ``config.candidates > 0``: drugs outside P0 to choose from, in
            the order given (at most ``config.candidates`` are written); ignored otherwise.

    Returns:
        The prompt; its text ends with the "Drugs to add/remove" header after which the model
        writes one drug name per line (possibly none) and then EOS.

    Raises:
        ValueError: unknown task, or a candidate that is already in P0.
    """
    if task not in _LIST_INSTRUCTION:
        raise ValueError(f"task must be 'add' or 'remove', got {task!r}")
    row, prev = _check_row(dataset, row, prev)
    pre = sorted({int(d) for d in pre_list})
    cands = [int(d) for d in candidates][: config.candidates] if task == "add" else []
    if set(cands) & set(pre):
        raise ValueError(f"candidates {sorted(set(cands) & set(pre))} are already in P0")
    b = _Builder(config)
    b.text(_LIST_INSTRUCTION[task] + "\n")
    _context(b, dataset, row, prev)
    b.text("### Pre-predicted drug list:\n")
    for d in pre:
        b.entity(dataset.med_vocab.titles[d], "drug", d)
        b.text(_interaction_note(dataset, d, pre, config) + "\n")
    if cands:
        b.text(_CANDIDATES_HEADER)
        for d in cands:
            b.entity(dataset.med_vocab.titles[d], "drug", d)
            b.text(_interaction_note(dataset, d, pre, config) + "\n")
    b.text(_LIST_HEADER[task])
    return b.build()


_CANDIDATES_HEADER = "### Candidate drugs:\n"
_NOTE_NAMES = 2


def _interaction_note(dataset: Dataset, drug: int, pre: list[int], config: PromptConfig) -> str:
    """`` (interacts with A, B)`` for the drugs of ``pre`` that interact with ``drug``, or ""."""
    if not config.interaction_notes or dataset.ddi is None:
        return ""
    hits = [d for d in pre if d != drug and dataset.ddi[drug, d]]
    if not hits:
        return ""
    return (
        " (interacts with "
        + ", ".join(dataset.med_vocab.titles[d] for d in hits[:_NOTE_NAMES])
        + ")"
    )


def cls_target(label: bool | np.bool_) -> str:
    """The answer text of a classification example (EOS is appended by the tokenizer side).

    Examples:
        >>> cls_target(True), cls_target(False)
        ('Yes.', 'No.')
    """
    return "Yes." if label else "No."


def list_target(
    dataset: Dataset, drugs: Sequence[int] | np.ndarray, *, keep_order: bool = False
) -> str:
    """The target of a list-editing example: names one per line ("" if none), sorted by index
    (``keep_order``: in the given order), each drug once."""
    ids = [int(d) for d in drugs]
    ids = list(dict.fromkeys(ids)) if keep_order else sorted(set(ids))
    return "\n".join(dataset.med_vocab.titles[d] for d in ids)
