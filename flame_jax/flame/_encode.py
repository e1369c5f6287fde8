"""Prompts -> token ids with per-token entity slots, padded into fixed buckets for the device.

The rendered prompts (:mod:`flame_jax.flame._prompts`) carry ``[PatEmb]``-style placeholders;
the built-in tokenizer (``flame_jax.policy.build_tiny_tokenizer``) has one special token per slot
kind (``<patient> <diag> <proc> <drug>``). :class:`PromptEncoder` swaps the placeholder strings
for those tokens, tokenises, and gives every token its ``SlotKind`` code and table row (the k-th
placeholder of a kind takes the k-th slot of that kind, spec §3), so knowledge fusion can
overwrite the slot embeddings (``flame_jax.policy._fusion``).

Padding: prompts are left-padded (the answer starts at the right edge, as the sampler expects)
and completions right-padded, both to a power-of-two bucket, so each stage compiles a few
programs only.
"""

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from flame_jax.flame._prompts import PLACEHOLDERS, SLOT_KINDS, Prompt

__all__ = [
    "SLOT_TOKENS",
    "Encoded",
    "PaddedPrompts",
    "PromptEncoder",
    "bucket",
    "pad_prompts",
    "pad_right",
    "visit_drug_refs",
]

# Placeholder kind -> the built-in tokenizer's entity token.
SLOT_TOKENS = {
    "patient": "<patient>",
    "diagnosis": "<diag>",
    "procedure": "<proc>",
    "drug": "<drug>",
}
_KIND_CODE = {kind: i + 1 for i, kind in enumerate(SLOT_KINDS)}  # = flame_jax.policy SlotKind


def bucket(n: int | np.integer, minimum: int = 16) -> int:
    """The smallest power of two >= max(n, minimum).

    Examples:
        >>> bucket(3), bucket(17), bucket(64)
        (16, 32, 64)
    """
    return max(int(minimum), 1 << max(int(n) - 1, 0).bit_length())


class Encoded(NamedTuple):
    """One tokenised prompt: ids, the SlotKind code and table row of every token (int32 [n])."""

    tokens: np.ndarray
    kind: np.ndarray
    ref: np.ndarray


class PaddedPrompts(NamedTuple):
    """Left-padded prompts ``[batch, length]``: ids, real-token mask, slot kinds and rows."""

    tokens: np.ndarray
    mask: np.ndarray
    kind: np.ndarray
    ref: np.ndarray


class PromptEncoder:
    """Tokenises prompts and answers with a Hugging Face tokenizer that has the slot tokens.

    Args:
        tokenizer: a ``transformers`` fast tokenizer with ``<patient> <diag> <proc> <drug>``.
        bos: prepend the BOS token to every prompt (the same convention in every stage).
    """

    def __init__(self, tokenizer: Any, *, bos: bool = True):
        self.tokenizer = tokenizer
        self.bos = bos
        ids = tokenizer.convert_tokens_to_ids(list(SLOT_TOKENS.values()))
        if any(i is None or i == tokenizer.unk_token_id for i in ids):
            raise ValueError(f"the tokenizer lacks the slot tokens {list(SLOT_TOKENS.values())}")
        self.slot_ids = dict(zip(SLOT_KINDS, (int(i) for i in ids), strict=True))
        self.pad_id = int(tokenizer.pad_token_id)
        self.eos_id = int(tokenizer.eos_token_id)
        self.bos_id = int(tokenizer.bos_token_id)
        yes, no = self.text_ids("Yes"), self.text_ids("No")
        if len(yes) != 1 or len(no) != 1:
            raise ValueError(f"'Yes' and 'No' must be single tokens, got {yes} and {no}")
        self.yes_id, self.no_id = yes[0], no[0]

    def text_ids(self, text: str) -> list[int]:
        """Token ids of plain text (no special tokens added)."""
        return [int(i) for i in self.tokenizer.encode(text, add_special_tokens=False)]

    def encode(self, prompt: Prompt, *, bos: bool | None = None) -> Encoded:
        """Token ids of ``prompt`` with the slot kind and table row of each token.

        Raises:
            ValueError: the placeholders in the text and ``prompt.slots`` disagree.
        """
        text = prompt.text
        for kind, placeholder in PLACEHOLDERS.items():
            text = text.replace(placeholder, SLOT_TOKENS[kind])
        ids = self.text_ids(text)
        if self.bos if bos is None else bos:
            ids = [self.bos_id, *ids]
        tokens = np.asarray(ids, np.int32)
        kind = np.zeros(len(ids), np.int32)
        ref = np.zeros(len(ids), np.int32)
        for name in SLOT_KINDS:
            at = np.flatnonzero(tokens == self.slot_ids[name])
            refs = [r for k, r in prompt.slots if k == name]
            if len(at) != len(refs):
                raise ValueError(
                    f"prompt has {len(at)} {name} placeholder tokens but {len(refs)} {name} slots"
                )
            kind[at] = _KIND_CODE[name]
            ref[at] = np.asarray(refs, np.int32)
        return Encoded(tokens, kind, ref)

    def encode_target(self, text: str) -> np.ndarray:
        """Answer ids: the text's tokens then EOS (an empty answer is EOS alone)."""
        return np.asarray([*self.text_ids(text), self.eos_id], np.int32)

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """Text of generated ids without special tokens."""
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=True)

    def decode_with_offsets(self, ids: Sequence[int] | np.ndarray) -> tuple[str, list]:
        """Text of ``ids`` and the ``(start, end)`` character span of every token in it.

        Spans come from decoding growing prefixes, so a special token (EOS) covers no character.

        Examples:
            >>> import tempfile, pathlib
            >>> from flame_jax.policy import build_tiny_tokenizer, load_tokenizer
            >>> tok = load_tokenizer(build_tiny_tokenizer(["Aspirin"],
            ...                      pathlib.Path(tempfile.mkdtemp()) / "t"))
            >>> enc = PromptEncoder(tok)
            >>> ids = enc.text_ids("Aspirin\\nAspirin") + [enc.eos_id]
            >>> text, spans = enc.decode_with_offsets(ids)
            >>> text, spans[-1], spans[0]
            ('Aspirin\\nAspirin', (15, 15), (0, 7))
        """
        spans, prev = [], 0
        ids = [int(i) for i in ids]
        for k in range(len(ids)):
            end = len(self.decode(ids[: k + 1]))
            spans.append((prev, max(end, prev)))
            prev = max(end, prev)
        return self.decode(ids), spans


def pad_prompts(
    encoded: Sequence[Encoded], *, length: int | np.integer, pad_id: int | np.integer = 0
) -> PaddedPrompts:
    """Left-pads encoded prompts to ``length``.

    Raises:
        ValueError: a prompt is longer than ``length`` (raise the bucket; never truncated).

    Examples:
        >>> e = Encoded(np.array([5, 6], np.int32), np.array([0, 4], np.int32),
        ...             np.array([0, 3], np.int32))
        >>> p = pad_prompts([e], length=3)
        >>> p.tokens.tolist(), p.mask.tolist(), p.kind.tolist(), p.ref.tolist()
        ([[0, 5, 6]], [[False, True, True]], [[0, 0, 4]], [[0, 0, 3]])
    """
    length = int(length)
    n = len(encoded)
    tokens = np.full((n, length), int(pad_id), np.int32)
    mask = np.zeros((n, length), bool)
    kind = np.zeros((n, length), np.int32)
    ref = np.zeros((n, length), np.int32)
    for i, e in enumerate(encoded):
        m = len(e.tokens)
        if m > length:
            raise ValueError(f"prompt {i} has {m} tokens, more than the bucket {length}")
        if m:
            tokens[i, -m:], kind[i, -m:], ref[i, -m:] = e.tokens, e.kind, e.ref
            mask[i, -m:] = True
    return PaddedPrompts(tokens, mask, kind, ref)


def pad_right(
    rows: Sequence[np.ndarray], *, length: int | np.integer, pad_id: int | np.integer = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Right-pads token rows to ``length``: ``(tokens [n, length], mask [n, length])``.

    Examples:
        >>> t, m = pad_right([np.array([7, 2])], length=3)
        >>> t.tolist(), m.tolist()
        ([[7, 2, 0]], [[True, True, False]])
    """
    length = int(length)
    tokens = np.full((len(rows), length), int(pad_id), np.int32)
    mask = np.zeros((len(rows), length), bool)
    for i, r in enumerate(rows):
        if len(r) > length:
            raise ValueError(f"row {i} has {len(r)} tokens, more than the bucket {length}")
        tokens[i, : len(r)] = r
        mask[i, : len(r)] = True
    return tokens, mask


def visit_drug_refs(encoded: Encoded, row: int | np.integer, num_meds: int | np.integer) -> Encoded:
    """Points every drug slot of a prompt about visit ``row`` at its per-visit evidence row.

    Drug ``d`` becomes row ``num_meds + row * num_meds + d`` of a drug table built with
    ``knowledge_tables(..., evidence=True)``.

    Examples:
        >>> e = Encoded(np.array([9, 9]), np.array([4, 1], np.int32), np.array([2, 5], np.int32))
        >>> visit_drug_refs(e, 3, 10).ref.tolist()
        [42, 5]
    """
    drug = encoded.kind == _KIND_CODE["drug"]
    m = int(num_meds)
    ref = np.where(drug, m + int(row) * m + encoded.ref, encoded.ref).astype(np.int32)
    return Encoded(encoded.tokens, encoded.kind, ref)
