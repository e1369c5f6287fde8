"""Host side: which decision step each completion token belongs to, by character offsets.

BPE tokenisers can merge a newline with neighbouring characters (``")\\n"``, ``"\\n\\n"``), so the
token -> step map is computed from character offsets, never from token ids.

Rule: a token belongs to the step whose span contains the token's first character; a line's
terminating newline belongs to the line it terminates. Tokens that start in a blank line (not a
step), after the last step, or that cover no character (EOS, special tokens with an empty span)
get step id -1 and later receive the outcome advantage alone.

References:
    FLAME, arXiv 2505.20218 (2025), step-wise GRPO token-to-line mapping.
"""

from collections.abc import Sequence

import numpy as np

from flame_jax.rl._episode import split_steps

__all__ = ["segment_tokens", "token_step_ids"]


def token_step_ids(completion: str, offsets: Sequence[tuple[int, int]]) -> np.ndarray:
    """Step id of every token of one completion (-1: no step).

    Args:
        completion: the decoded completion text.
        offsets: ``(start, end)`` character span of each token in ``completion``.

    Returns:
        int32 array ``[len(offsets)]``.

    Examples:
        >>> text = "aspirin)\\nwarfarin\\n"
        >>> token_step_ids(text, [(0, 7), (7, 9), (9, 17), (17, 18), (18, 18)]).tolist()
        [0, 0, 1, 1, -1]
    """
    spans = split_steps(completion)
    starts = np.array([s for s, _ in spans], np.int64)
    ends = np.array([e for _, e in spans], np.int64)
    out = np.full(len(offsets), -1, np.int32)
    for k, (start, end) in enumerate(offsets):
        if end <= start or start >= len(completion):
            continue
        step = int(np.searchsorted(starts, start, side="right")) - 1
        if step >= 0 and start < ends[step]:
            out[k] = step
    return out


def segment_tokens(
    completions: Sequence[str],
    offsets: Sequence[Sequence[tuple[int, int]]],
    *,
    max_tokens: int,
    max_steps: int,
) -> np.ndarray:
    """Padded token -> step ids for a batch of completions.

    Args:
        completions: ``n`` decoded completions.
        offsets: per completion, the character span of each of its tokens.
        max_tokens: the static token bucket (pad value -1).
        max_steps: the static step bucket; every step id must be below it.

    Returns:
        int32 array ``[n, max_tokens]``; -1 for padding and for tokens outside every step.

    Raises:
        ValueError: a completion has more tokens than ``max_tokens`` or more steps than
            ``max_steps``.

    Examples:
        >>> segment_tokens(["a\\nb"], [[(0, 2), (2, 3)]], max_tokens=4, max_steps=2).tolist()
        [[0, 1, -1, -1]]
    """
    if len(completions) != len(offsets):
        raise ValueError(f"{len(completions)} completions but {len(offsets)} offset lists")
    out = np.full((len(completions), max_tokens), -1, np.int32)
    for i, (text, offs) in enumerate(zip(completions, offsets, strict=True)):
        if len(offs) > max_tokens:
            raise ValueError(f"completion {i} has {len(offs)} tokens, more than {max_tokens}")
        num_steps = len(split_steps(text))
        if num_steps > max_steps:
            raise ValueError(f"completion {i} has {num_steps} steps, more than {max_steps}")
        out[i, : len(offs)] = token_step_ids(text, offs)
    return out
