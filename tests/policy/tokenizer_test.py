"""The offline tokenizer and the built-in tiny model directory, from the synthetic cohort."""

import json

import numpy as np
import pytest

from flame_jax.data import SyntheticConfig, generate_cohort
from flame_jax.policy import (
    ENTITY_TOKENS,
    ROLE_TOKENS,
    SPECIAL_TOKENS,
    build_tiny_tokenizer,
    from_pretrained,
    load_tokenizer,
    save_pretrained,
    write_tiny_model,
)


@pytest.fixture(scope="module")
def words():
    ds = generate_cohort(SyntheticConfig.tiny()).dataset
    med = ds.med_vocab
    return [
        *med.titles,
        *(s for syn in med.synonyms for s in syn),
        *ds.diag_vocab.titles,
        *ds.proc_vocab.titles,
    ]


@pytest.fixture(scope="module")
def tok_dir(words, tmp_path_factory):
    return build_tiny_tokenizer(words, tmp_path_factory.mktemp("tok") / "tok")


def test_specials_have_fixed_ids(tok_dir):
    tok = load_tokenizer(tok_dir)
    expected = [*SPECIAL_TOKENS, *ENTITY_TOKENS, *ROLE_TOKENS]
    assert tok.convert_tokens_to_ids(expected) == list(range(len(expected)))
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    for t in expected:  # never split, never merged with neighbours
        ids = tok(f"x{t}y")["input_ids"]
        assert tok.convert_tokens_to_ids(t) in ids


def test_cohort_names_are_whole_tokens_and_round_trip(tok_dir, words):
    tok = load_tokenizer(tok_dir)
    med_names = [w for w in words if " " not in w][:30]
    for name in med_names:
        assert len(tok(" " + name)["input_ids"]) == 1, name
    for w in words:
        assert tok.decode(tok(w)["input_ids"]) == w


def test_any_text_round_trips(tok_dir):
    tok = load_tokenizer(tok_dir)
    rng = np.random.default_rng(0)
    alphabet = [*list("abcXYZ 019.,;:-\n\t()[]%é€😀"), "Add: ", "Remove: ", "<drug>"]
    for _ in range(30):
        text = "".join(rng.choice(alphabet, size=int(rng.integers(0, 25))))
        ids = tok(text)["input_ids"]
        assert tok.unk_token_id not in ids
        assert tok.decode(ids) == text


def test_chat_template(tok_dir):
    tok = load_tokenizer(tok_dir)
    text = tok.apply_chat_template(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Drugs?"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    assert text == "<|system|>\nBe brief.\n<|user|>\nDrugs?\n<|assistant|>\n"


def test_build_is_deterministic_and_atomic(words, tmp_path, tok_dir):
    again = build_tiny_tokenizer(words, tmp_path / "again")
    assert (again / "tokenizer.json").read_bytes() == (tok_dir / "tokenizer.json").read_bytes()
    with pytest.raises(FileExistsError, match="not empty"):
        build_tiny_tokenizer(words, again)
    build_tiny_tokenizer(["other"], again, overwrite=True)
    assert len(load_tokenizer(again)) < len(load_tokenizer(tok_dir))
    with pytest.raises(ValueError, match="non-blank"):
        build_tiny_tokenizer(["ok", "  "], tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
    with pytest.raises(ValueError, match="reserved"):
        build_tiny_tokenizer(["ok"], tmp_path / "bad", extra_special_tokens=("<pad>",))
    with pytest.raises(FileNotFoundError):
        load_tokenizer(tmp_path / "missing")


def test_tiny_model_directory(words, tmp_path):
    out = write_tiny_model(tmp_path / "m", words, seed=3)
    tok = load_tokenizer(out)
    model, cfg = from_pretrained(out)
    assert cfg.vocab_size % 64 == 0 and cfg.vocab_size >= len(tok)
    assert (cfg.pad_token_id, cfg.bos_token_id, cfg.eos_token_id) == (0, 1, 2)
    assert json.loads((out / "config.json").read_text())["architectures"] == ["LlamaForCausalLM"]
    again = write_tiny_model(tmp_path / "m2", words, seed=3)
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (again / name).read_bytes() == (out / name).read_bytes()
    exported = save_pretrained(model, None, tmp_path / "export", tokenizer=tok)
    assert load_tokenizer(exported).get_vocab() == tok.get_vocab()
    other = write_tiny_model(tmp_path / "m3", words, seed=4)
    assert (other / "model.safetensors").read_bytes() != (out / "model.safetensors").read_bytes()
