"""Prompt encoding: slot kinds and rows follow placeholder order; padding; character spans."""

import numpy as np
import pytest

from flame_jax.flame import (
    Encoded,
    Prompt,
    bucket,
    pad_prompts,
    pad_right,
    render_cls_prompt,
    render_list_prompt,
)
from flame_jax.policy._fusion import SlotKind

_CODE = {"patient": SlotKind.PATIENT, "diagnosis": SlotKind.DIAGNOSIS,
         "procedure": SlotKind.PROCEDURE, "drug": SlotKind.DRUG}  # fmt: skip


@pytest.mark.parametrize("row", [0, 3, 11])
def test_slots_follow_placeholders(dataset, encoder, prompt_config, previous, row):
    prompts = [
        render_cls_prompt(dataset, row, 2, prev=previous[row], config=prompt_config),
        render_list_prompt(
            dataset, row, [1, 4, 0], "add", prev=previous[row], config=prompt_config
        ),
    ]
    for p in prompts:
        e = encoder.encode(p)
        assert e.tokens[0] == encoder.bos_id
        at = np.flatnonzero(e.kind)
        # one slot token per placeholder, in text order, with its kind and row
        assert [(int(e.kind[i]), int(e.ref[i])) for i in at] == [
            (int(_CODE[k]), r) for k, r in p.slots
        ]
        slot_ids = set(encoder.slot_ids.values())
        assert all(int(t) in slot_ids for t in e.tokens[at])
        assert not any(int(t) in slot_ids for t in np.delete(e.tokens, at))


def test_mismatched_slots_raise(encoder):
    with pytest.raises(ValueError, match="drug placeholder"):
        encoder.encode(Prompt("a [DrugEmb] b [DrugEmb]", (("drug", 1),)))


def test_padding_round_trips(encoder):
    rng = np.random.default_rng(0)
    enc = [Encoded(*(rng.integers(1, 50, n).astype(np.int32) for _ in range(3)))
           for n in (1, 5, 9)]  # fmt: skip
    p = pad_prompts(enc, length=bucket(9), pad_id=encoder.pad_id)
    assert p.tokens.shape == (3, 16)
    for i, e in enumerate(enc):
        np.testing.assert_array_equal(p.tokens[i][p.mask[i]], e.tokens)
        np.testing.assert_array_equal(p.kind[i][p.mask[i]], e.kind)
        np.testing.assert_array_equal(p.ref[i][p.mask[i]], e.ref)
        assert not p.mask[i][: 16 - len(e.tokens)].any()  # left padding
    with pytest.raises(ValueError, match="bucket"):
        pad_prompts(enc, length=4)
    t, m = pad_right([np.array([3, 4]), np.array([], np.int32)], length=3)
    assert t.tolist() == [[3, 4, 0], [0, 0, 0]] and m.sum() == 2


def test_target_and_spans(dataset, encoder):
    names = dataset.med_vocab.titles
    text = f"{names[0]}\n{names[3]}"
    ids = encoder.encode_target(text)
    assert ids[-1] == encoder.eos_id
    decoded, spans = encoder.decode_with_offsets(ids)
    assert decoded == text
    assert "".join(decoded[s:e] for s, e in spans) == text  # spans tile the text
    assert spans[-1][0] == spans[-1][1]  # EOS covers no character
    assert encoder.encode_target("").tolist() == [encoder.eos_id]
