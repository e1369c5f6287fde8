import json

import pytest

from flame_jax.cli.main import main
from flame_jax.consensus._vignettes import (
    Vignette,
    VignetteError,
    canonical_drugs,
    case_id,
    load_vignettes,
    render_vignettes,
    save_vignettes,
)
from flame_jax.data import DrugVocabulary, save_dataset
from tests.consensus.protocol_helpers import cohort, vocab


def test_render_gold_is_the_visit_medication_set_and_text_has_the_admission():
    ds = cohort().dataset
    rows = ds.split_rows("test")[:6]
    out = render_vignettes(ds, rows)
    assert len(out) == len(rows)
    for v, row in zip(out, rows, strict=True):
        meds = sorted(ds.visits.med[int(row)].tolist())
        assert v.gold == tuple(ds.med_vocab.titles[m] for m in meds)
        assert v.visit_id == int(ds.visits.visit_id[row])
        assert case_id(v.text) == (v.id, v.visit_id)
        for d in ds.visits.diag[int(row)]:
            assert f"- {ds.diag_vocab.codes[d]} {ds.diag_vocab.titles[d]}" in v.text
        for p in ds.visits.proc[int(row)]:
            assert f"- {ds.proc_vocab.codes[p]} {ds.proc_vocab.titles[p]}" in v.text
        assert f"{int(ds.visits.age[row])}-year-old" in v.text
        k = int(ds.visits.visit_index[row])
        if k == 0:
            assert "first admission" in v.text
        else:  # the previous admission's drugs are listed, in vocabulary order
            prev = ds.visits.med[int(row) - 1]
            line = f"- admission {k}: " + ", ".join(ds.med_vocab.titles[m] for m in prev)
            assert line in v.text


def test_render_without_history_and_row_out_of_range():
    ds = cohort().dataset
    rows = ds.split_rows("test")
    second = rows[ds.visits.visit_index[rows] > 0][:1]
    (v,) = render_vignettes(ds, second, history=False)
    assert "admission 1:" not in v.text and "earlier admissions" not in v.text
    with pytest.raises(ValueError, match="out of range"):
        render_vignettes(ds, [len(ds.visits)])


def test_canonical_drugs_normalises_case_space_hyphen_synonym_dose():
    dv = DrugVocabulary(
        names=("Insulin Glargine", "Aspirin", "Co-Trimoxazole"), synonyms={"ASA": 1}
    )
    idx, unknown = canonical_drugs(
        ["insulin-glargine", " INSULIN GLARGINE 10 units sc ", "- asa", "2) Cotrimoxazole.",
         "Aspirin", "tea", ""],
        dv,
    )  # fmt: skip
    assert idx == (0, 1, 2)
    assert unknown == ("tea", "")


def test_canonical_drugs_on_the_synthetic_vocabulary_synonyms_and_codes():
    ds = cohort().dataset
    mv = ds.med_vocab
    i = next(k for k in range(len(mv)) if mv.synonyms[k])
    idx, unknown = canonical_drugs([mv.synonyms[i][0].upper(), mv.codes[3].lower()], vocab())
    assert idx == tuple(sorted({i, 3})) and unknown == ()


def test_jsonl_round_trip(tmp_path):
    ds = cohort().dataset
    out = render_vignettes(ds, ds.split_rows("val")[:5])
    extra = Vignette(id="user-1", text="A 50-year-old woman with fever.", gold=("Acetaminophen",))
    path = save_vignettes(tmp_path / "v.jsonl", [*out, extra])
    back = load_vignettes(path, vocab=vocab())
    assert back == [*out, extra]
    assert load_vignettes(path) == [*out, extra]


def _write(tmp_path, lines):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


GOOD = '{"id": "a", "text": "t", "gold": ["Acetaminophen"]}'


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "line 2: not valid JSON"),
        ('["a"]', "line 2: expected a JSON object"),
        ('{"id": "b", "text": "t"}', "line 2: field 'gold' is missing"),
        ('{"id": "b", "text": "t", "gold": [], "age": 4}', "line 2: unknown field 'age'"),
        ('{"id": "", "text": "t", "gold": []}', "line 2: field 'id' must be a non-empty string"),
        ('{"id": "b", "text": 3, "gold": []}', "line 2: field 'text' must be a non-empty string"),
        ('{"id": "b", "text": "t", "gold": "x"}', "line 2: field 'gold' must be a list"),
        ('{"id": "b", "text": "t", "gold": ["x", 3]}', r"line 2: field gold\[1\] must be a drug"),
        ('{"id": "b", "text": "t", "gold": ["Tea"]}', r"line 2: field gold\[0\] = 'Tea' names no"),
        ('{"id": "a", "text": "t", "gold": []}', "line 2: field 'id' = 'a' repeats line 1"),
        ('{"id": "b", "text": "t", "gold": [], "visit_id": "7"}', "line 2: field 'visit_id'"),
    ],
)
def test_loader_names_file_line_and_field(tmp_path, line, message):
    path = _write(tmp_path, [GOOD, line])
    with pytest.raises(VignetteError, match=message) as e:
        load_vignettes(path, vocab=vocab())
    assert str(path) in str(e.value)


def test_loader_skips_blank_lines_and_rejects_an_empty_file(tmp_path):
    path = _write(tmp_path, ["", GOOD, "   "])
    (v,) = load_vignettes(path, vocab=vocab())
    assert v.gold == ("Acetaminophen",)
    with pytest.raises(VignetteError, match="no vignettes"):
        load_vignettes(_write(tmp_path, [""]))


def test_gold_is_canonicalised_and_deduplicated(tmp_path):
    path = _write(tmp_path, ['{"id": "a", "text": "t", "gold": ["paracetamol", "ACETAMINOPHEN"]}'])
    (v,) = load_vignettes(path, vocab=vocab())
    assert v.gold == ("Acetaminophen",)


def test_cli_vignettes(tmp_path, capsys):
    ds = cohort().dataset
    save_dataset(ds, tmp_path / "ds")
    out = tmp_path / "v.jsonl"
    argv = ["consensus", "vignettes", "--data", str(tmp_path / "ds"), "--out", str(out)]
    assert main([*argv, "--split", "val", "--limit", "4"]) == 0
    assert "wrote 4 vignettes of the val split" in capsys.readouterr().out
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    expected = render_vignettes(ds, ds.split_rows("val")[:4])
    assert rows == [v.to_json() for v in expected]
    assert main(argv) == 2  # exists, no --overwrite
    assert "exists" in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 0
    assert len(out.read_text().splitlines()) == len(ds.split_rows("test"))
    assert all(r["gold"] for r in rows)
