"""Episodes: normaliser, vocabulary, parser and padding against a literal plain-Python reading."""

import random
import unicodedata

import numpy as np
import pytest

from flame_jax import rl


def _reference_parse(completion, task, initial, names, synonyms):
    """Follows the spec literally: split on newlines, skip blank lines, exact normalised match."""

    def norm(s):
        return s.strip().lower().replace(" ", "").replace("-", "")

    table = {norm(n): i for i, n in enumerate(names)}
    table.update({norm(n): i for n, i in synonyms.items()})
    state = set(initial)
    states, kinds = [frozenset(state)], []
    for line in completion.split("\n"):
        if line.strip() == "":
            continue
        key = norm(line)
        if key not in table:
            kinds.append("INVALID")
        else:
            d = table[key]
            if task == "add":
                kinds.append("NOOP" if d in state else "ADD")
                state.add(d)
            else:
                kinds.append("REMOVE" if d in state else "NOOP")
                state.discard(d)
        states.append(frozenset(state))
    return kinds, states


def _random_completion(rng, names, synonyms):
    lines = []
    for _ in range(rng.randrange(0, 7)):
        u = rng.random()
        if u < 0.45:
            name = rng.choice(names)
            name = rng.choice([name, name.upper(), name.title(), " " + name + "  "])
            if len(name) > 3 and rng.random() < 0.3:
                name = name[:2] + rng.choice([" ", "-"]) + name[2:]
            lines.append(name)
        elif u < 0.55 and synonyms:
            lines.append(rng.choice(list(synonyms)))
        elif u < 0.8:
            lines.append(rng.choice(["nothing to add", "??", "drugX", "- "]))
        else:
            lines.append(rng.choice(["", "   "]))
    text = "\n".join(lines)
    if rng.random() < 0.4:
        text += "\n"
    return text


NAMES = ("aspirin", "warfarin", "heparin", "insulin glargine", "metoprolol", "co-trimoxazole")
SYNONYMS = {"ASA": 0, "lantus": 3}


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("task", ["add", "remove"])
def test_parse_matches_reference(seed, task):
    rng = random.Random(seed)
    vocab = rl.DrugVocabulary(names=NAMES, synonyms=SYNONYMS)
    for _ in range(40):
        text = _random_completion(rng, NAMES, SYNONYMS)
        initial = rng.sample(range(len(NAMES)), rng.randrange(0, 4))
        ep = rl.parse_episode(text, task=task, initial=initial, vocabulary=vocab)
        kinds, states = _reference_parse(text, task, initial, NAMES, SYNONYMS)
        assert [a.kind.name for a in ep.actions] == kinds, text
        assert list(ep.states) == states
        assert ep.num_steps == len(kinds)
        assert ep.num_invalid == kinds.count("INVALID")


def test_edge_cases():
    vocab = rl.DrugVocabulary(names=NAMES)
    empty = rl.parse_episode("", task="add", initial=[1], vocabulary=vocab)
    assert empty.num_steps == 0 and empty.states == (frozenset({1}),)
    trailing = rl.parse_episode("aspirin\n", task="add", initial=[], vocabulary=vocab)
    assert [a.kind for a in trailing.actions] == [rl.ActionKind.ADD]
    blank = rl.parse_episode(
        "\n\n  \nInsulin-Glargine\n\n", task="remove", initial=[3], vocabulary=vocab
    )
    assert [(a.drug, a.kind) for a in blank.actions] == [(3, rl.ActionKind.REMOVE)]
    assert blank.states[-1] == frozenset()
    crlf = rl.parse_episode("heparin\r\nheparin\r\n", task="add", initial=[], vocabulary=vocab)
    assert [a.kind for a in crlf.actions] == [rl.ActionKind.ADD, rl.ActionKind.NOOP]


# The rule of normalize_drug_name: tab and the Unicode space separators (category Zs) read as
# spaces and are dropped like them; control and invisible format characters are not.
SPACE_LIKE = ["\t", "\u00a0", "\u202f", "\u3000", "\u2002", "\u2009", "\u205f", "\u1680"]
NOT_SPACES = [
    "\u200b",  # zero-width space
    "\u200c",  # zero-width non-joiner
    "\u200d",  # zero-width joiner
    "\u2060",  # word joiner
    "\ufeff",  # byte-order mark
    "\u00ad",  # soft hyphen
    "\x00",
    "\x0b",  # vertical tab
    "\x0c",  # form feed
    "\x1f",  # unit separator (str.isspace() says True)
    "\x85",  # next line
    "\u2028",  # line separator
    "\x7f",
]


@pytest.mark.parametrize("space", SPACE_LIKE)
def test_tabs_and_unicode_spaces_read_as_spaces(space):
    vocab = rl.DrugVocabulary(names=NAMES)
    for line in (
        f"insulin{space}glargine",
        f"{space}Warfarin{space}{space}",
        f"co{space}-trimoxazole",
    ):
        assert vocab.lookup(line) is not None, repr(line)
    ep = rl.parse_episode(
        f"Insulin{space}Glargine\n{space}heparin", task="add", initial=[], vocabulary=vocab
    )
    assert [(a.drug, a.kind) for a in ep.actions] == [
        (3, rl.ActionKind.ADD),
        (2, rl.ActionKind.ADD),
    ]


@pytest.mark.parametrize("char", NOT_SPACES)
def test_control_and_invisible_characters_make_an_invalid_step(char):
    vocab = rl.DrugVocabulary(names=NAMES)
    for line in (f"war{char}farin", f"warfarin{char}", f"{char}warfarin"):
        assert vocab.lookup(line) is None, repr(line)
    ep = rl.parse_episode(f"aspirin\nwar{char}farin\n", task="add", initial=[], vocabulary=vocab)
    assert [a.kind for a in ep.actions] == [rl.ActionKind.ADD, rl.ActionKind.INVALID]
    assert ep.states[-1] == frozenset({0})


def test_the_space_class_is_tab_plus_unicode_category_zs():
    """Exactly the characters the rule names are dropped, over the Basic Multilingual Plane."""
    hyphens = set("-\u2010\u2011\u2012\u2013\u2014")
    for code in range(0x10000):
        c = chr(code)
        if c in "\r\n" or c.lower() != c or 0xD800 <= code < 0xE000:
            continue  # line ends, characters lower() changes, surrogates
        dropped = rl.normalize_drug_name(f"a{c}b") == "ab"
        assert dropped == (c == "\t" or unicodedata.category(c) == "Zs" or c in hyphens), hex(code)


def test_vocabulary_rejects_collisions_and_bad_synonyms():
    with pytest.raises(ValueError, match="names drugs 0 and 1"):
        rl.DrugVocabulary(names=("Co-Trimoxazole", "cotrimoxazole"))
    with pytest.raises(ValueError, match="synonym 'x' points to drug 5"):
        rl.DrugVocabulary(names=("a",), synonyms={"x": 5})
    with pytest.raises(ValueError, match="empty string"):
        rl.DrugVocabulary(names=("a", " - "))
    # A synonym may repeat its own canonical name.
    assert rl.DrugVocabulary(names=("a",), synonyms={"A": 0}).lookup("a") == 0


def test_parse_rejects_bad_arguments():
    vocab = rl.DrugVocabulary(names=NAMES)
    # The annotation check (TypeError) or the explicit check (ValueError) rejects it.
    with pytest.raises((ValueError, TypeError), match="task"):
        rl.parse_episode("a", task="swap", initial=[], vocabulary=vocab)
    with pytest.raises(ValueError, match="initial drug 9"):
        rl.parse_episode("a", task="add", initial=[9], vocabulary=vocab)


def test_pad_episodes_flat_and_nested():
    vocab = rl.DrugVocabulary(names=NAMES)
    eps = [
        rl.parse_episode(t, task="add", initial=[0], vocabulary=vocab)
        for t in ["warfarin\nfoo\naspirin", "", "heparin\n", "foo"]
    ]
    flat = rl.pad_episodes(eps, max_steps=3)
    np.testing.assert_array_equal(flat.drug, [[1, 0, 0], [0, 0, 0], [2, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(flat.delta, [[1, 0, 0], [0, 0, 0], [1, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(flat.valid, [[1, 0, 1], [0, 0, 0], [1, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(flat.mask, [[1, 1, 1], [0, 0, 0], [1, 0, 0], [1, 0, 0]])
    nested = rl.pad_episodes([eps[:2], eps[2:]], max_steps=3)
    assert nested.drug.shape == (2, 2, 3)
    np.testing.assert_array_equal(nested.mask.reshape(4, 3), flat.mask)
    with pytest.raises(ValueError, match="3 steps, more than max_steps=2"):
        rl.pad_episodes(eps, max_steps=2)
    with pytest.raises(ValueError, match="equal sizes"):
        rl.pad_episodes([eps[:1], eps[1:]], max_steps=3)
