"""Token -> step ids from character offsets, against a per-character plain-Python reference."""

import itertools
import random

import numpy as np
import pytest

from flame_jax import rl


def _reference_char_steps(text):
    """Step id of every character: the line's non-blank index; a newline belongs to its line."""
    out, step, line_start = [], 0, 0
    lines = text.split("\n")
    for k, line in enumerate(lines):
        is_step = line.strip() != ""
        width = len(line) + (1 if k < len(lines) - 1 else 0)
        out.extend([step if is_step else -1] * width)
        step += is_step
        line_start += width
    return out


def _random_tokens(rng, text):
    """Random BPE-like boundaries, including newlines merged with neighbours, plus an EOS."""
    cuts = sorted(rng.sample(range(1, len(text)), min(max(len(text) - 1, 0), rng.randrange(0, 12))))
    bounds = [0, *cuts, len(text)] if text else [0]
    offsets = list(itertools.pairwise(bounds))
    return [*offsets, (len(text), len(text))]


@pytest.mark.parametrize("seed", range(8))
def test_matches_character_reference(seed):
    rng = random.Random(seed)
    pieces = ["aspirin", "warfarin)", "", "  ", "xyz", "heparin"]
    for _ in range(30):
        text = "\n".join(rng.choice(pieces) for _ in range(rng.randrange(0, 6)))
        if rng.random() < 0.5:
            text += "\n"
        offsets = _random_tokens(rng, text)
        chars = _reference_char_steps(text)
        want = [chars[a] if b > a else -1 for a, b in offsets]
        got = rl.token_step_ids(text, offsets)
        assert got.tolist() == want, (text, offsets)
        assert got.max(initial=-1) < len(rl.split_steps(text))


def test_merged_newlines_and_tail():
    text = "aspirin)\n\nwarfarin\nfoo"
    # ")\n\n" ends step 0; "\nw" starts with the blank line's newline (no step); "foo" is step 2.
    offsets = [(0, 7), (7, 10), (10, 18), (18, 19), (19, 22), (22, 22)]
    assert rl.token_step_ids(text, offsets).tolist() == [0, 0, 1, 1, 2, -1]
    assert rl.token_step_ids("", [(0, 0)]).tolist() == [-1]
    assert rl.token_step_ids("a\n", [(0, 1), (1, 2)]).tolist() == [0, 0]


def test_segment_tokens_pads_and_validates():
    ids = rl.segment_tokens(
        ["a\nb", "", "c"], [[(0, 2), (2, 3)], [], [(0, 1)]], max_tokens=3, max_steps=2
    )
    np.testing.assert_array_equal(ids, [[0, 1, -1], [-1, -1, -1], [0, -1, -1]])
    assert ids.dtype == np.int32
    with pytest.raises(ValueError, match="more than 1"):
        rl.segment_tokens(["a\nb"], [[(0, 2), (2, 3)]], max_tokens=1, max_steps=2)
    with pytest.raises(ValueError, match="2 steps, more than 1"):
        rl.segment_tokens(["a\nb"], [[(0, 2), (2, 3)]], max_tokens=2, max_steps=1)
