"""Prompt rendering: slot order matches placeholder order, history is the true previous visit."""

import re

import numpy as np
import pytest

from flame_jax.data import SyntheticConfig, generate_cohort
from flame_jax.flame import (
    PLACEHOLDERS,
    PromptConfig,
    cls_target,
    list_target,
    previous_visit_rows,
    render_cls_prompt,
    render_list_prompt,
)

_KIND_OF = {v: k for k, v in PLACEHOLDERS.items()}
_PLACEHOLDER = re.compile("|".join(re.escape(p) for p in PLACEHOLDERS.values()))


@pytest.fixture(scope="module")
def dataset():
    return generate_cohort(SyntheticConfig.tiny()).dataset


def _second_visit(dataset):
    return int(np.flatnonzero(dataset.visits.visit_index == 1)[0])


def reference_previous(dataset):
    v = dataset.visits
    out = []
    for i in range(len(v)):
        same = [
            j
            for j in range(len(v))
            if v.patient_id[j] == v.patient_id[i] and v.visit_index[j] == v.visit_index[i] - 1
        ]
        out.append(same[0] if same else -1)
    return np.array(out)


def test_previous_visit_rows_match_a_loop(dataset):
    np.testing.assert_array_equal(previous_visit_rows(dataset), reference_previous(dataset))


def test_slots_follow_placeholder_order(dataset):
    row = _second_visit(dataset)
    prev = int(previous_visit_rows(dataset)[row])
    prompt = render_list_prompt(dataset, row, [3, 1, 2], "add", prev=prev)
    kinds = [_KIND_OF[m] for m in _PLACEHOLDER.findall(prompt.text)]
    assert kinds == [k for k, _ in prompt.slots]
    v = dataset.visits
    diag_refs = [r for k, r in prompt.slots if k == "diagnosis"]
    assert diag_refs == sorted(v.diag[prev].tolist()) + sorted(v.diag[row].tolist())
    drug_refs = [r for k, r in prompt.slots if k == "drug"]
    assert drug_refs == [*sorted(v.med[prev].tolist()), 1, 2, 3]
    assert [r for k, r in prompt.slots if k == "patient"] == [row]
    # each slot's entity name is written right before its placeholder
    for (kind, ref), m in zip(prompt.slots, _PLACEHOLDER.finditer(prompt.text), strict=True):
        if kind == "drug":
            name = dataset.med_vocab.titles[ref]
            assert prompt.text[: m.start()].endswith(name + " ")
    assert prompt.text.endswith("### Drugs to add:\n")


def test_cls_prompt_ends_with_candidate_and_answer_header(dataset):
    prompt = render_cls_prompt(dataset, 0, 5)
    assert prompt.slots[-1] == ("drug", 5)
    assert prompt.text.endswith(
        f"Candidate drug: {dataset.med_vocab.titles[5]} [DrugEmb].\n### Answer:\n"
    )
    assert "Previous hospitalization" not in prompt.text


def test_text_only_mode_has_no_slots(dataset):
    row = _second_visit(dataset)
    prompt = render_list_prompt(
        dataset, row, [0], "remove", prev=row - 1, config=PromptConfig(entity_slots=False)
    )
    assert prompt.slots == ()
    assert not _PLACEHOLDER.search(prompt.text)
    assert prompt.text.endswith("### Drugs to remove:\n")


def test_history_switch_and_code_cap(dataset):
    row = _second_visit(dataset)
    with_history = render_cls_prompt(dataset, row, 0, prev=row - 1)
    without = render_cls_prompt(dataset, row, 0, prev=row - 1, config=PromptConfig(history=False))
    assert "Previous hospitalization" in with_history.text
    assert "Previous hospitalization" not in without.text
    capped = render_cls_prompt(dataset, row, 0, config=PromptConfig(max_codes=1))
    assert sum(k == "diagnosis" for k, _ in capped.slots) == min(1, len(dataset.visits.diag[row]))


def test_targets_and_bad_input(dataset):
    assert cls_target(np.True_) == "Yes."
    titles = dataset.med_vocab.titles
    assert list_target(dataset, [4, 2, 4]) == f"{titles[2]}\n{titles[4]}"
    assert list_target(dataset, []) == ""
    assert list_target(dataset, [4, 2, 4], keep_order=True) == f"{titles[4]}\n{titles[2]}"
    with pytest.raises(ValueError, match="task must be"):
        render_list_prompt(dataset, 0, [], "swap")
    with pytest.raises(IndexError, match="visit row"):
        render_cls_prompt(dataset, len(dataset.visits), 0)
    with pytest.raises(ValueError, match="max_codes"):
        PromptConfig(max_codes=0)


def test_candidates_and_interaction_notes(dataset):
    ddi = dataset.ddi.astype(bool)
    a, b, c = next(
        (int(a), int(b), c)
        for a, b in np.argwhere(np.triu(ddi, 1))
        for c in range(dataset.num_meds)
        if c not in (a, b) and ddi[c, a] and not ddi[c, b]
    )
    config = PromptConfig(history=False, candidates=2, interaction_notes=True)
    titles = dataset.med_vocab.titles
    row = 0
    add = render_list_prompt(dataset, row, [a, b], "add", config=config, candidates=[c])
    assert f"### Candidate drugs:\n{titles[c]} [DrugEmb] (interacts with {titles[a]})\n" in add.text
    assert f"{titles[a]} [DrugEmb] (interacts with {titles[b]})\n" in add.text
    assert [r for k, r in add.slots if k == "drug"] == [*sorted([a, b]), c]
    # remove prompts and the paper's prompt list no candidates; notes need the option
    remove = render_list_prompt(dataset, row, [a, b], "remove", config=config, candidates=[c])
    assert "Candidate" not in remove.text
    plain = render_list_prompt(dataset, row, [a, b], "add", config=PromptConfig(), candidates=[c])
    assert "Candidate" not in plain.text and "interacts" not in plain.text
    with pytest.raises(ValueError, match=r"already in P0"):
        render_list_prompt(dataset, row, [a, b], "add", config=config, candidates=[a])
    with pytest.raises(ValueError, match="PromptConfig.candidates"):
        PromptConfig(candidates=-1)
