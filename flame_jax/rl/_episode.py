"""Host side of an episode: completion text -> lines -> actions -> set trajectory (pure Python).

A list-editing completion is split into lines; every non-empty line is one decision step. A line
names one drug (after normalising case, spaces and hyphens: :func:`flame_jax.data.drug_key`, the
product's one rule) or it is an invalid step. The task ("add" or "remove") turns the named drug
into a set update; adding a present drug or removing an absent one is a valid no-op.
The trajectory s_0..s_T starts at the pre-predicted list P0.

References:
    Fan et al., "Fine-grained List-wise Alignment for Generative Medication Recommendation"
    (FLAME), arXiv 2505.20218 (2025), list-editing episodes.
"""

import dataclasses
import enum
from collections.abc import Iterable, Sequence
from typing import Literal, NamedTuple

import numpy as np

from flame_jax.data import DrugVocabulary, drug_key

# The product's one lookup key for drug names, under the name rl has always exported.
normalize_drug_name = drug_key

__all__ = [
    "Action",
    "ActionKind",
    "DrugVocabulary",
    "Episode",
    "EpisodeArrays",
    "normalize_drug_name",
    "pad_episodes",
    "parse_episode",
    "split_steps",
]

Task = Literal["add", "remove"]


class ActionKind(enum.IntEnum):
    """What one line does to the set."""

    INVALID = 0  # names no drug of the vocabulary; the set is unchanged
    ADD = 1  # adds an absent drug
    REMOVE = 2  # removes a present drug
    NOOP = 3  # names a drug, but adding a present / removing an absent drug changes nothing


class Action(NamedTuple):
    """One decision step: the line, its drug (-1 when invalid) and what it did."""

    line: str
    drug: int
    kind: ActionKind


@dataclasses.dataclass(frozen=True, kw_only=True)
class Episode:
    """A parsed completion: actions a_1..a_T and sets s_0..s_T (``len(states) == T + 1``)."""

    task: Task
    actions: tuple[Action, ...]
    states: tuple[frozenset[int], ...]

    @property
    def num_steps(self) -> int:
        return len(self.actions)

    @property
    def num_invalid(self) -> int:
        return sum(a.kind == ActionKind.INVALID for a in self.actions)


def split_steps(completion: str) -> list[tuple[int, int]]:
    """Character spans of the decision steps of a completion.

    The completion is split on ``"\\n"``; a line is a step when it has a non-whitespace character.
    Empty or blank lines (including the one after a trailing newline) are not steps. Each span
    ``(start, end)`` covers the line and its terminating newline, if any.

    Args:
        completion: the decoded completion text.

    Returns:
        One ``(start, end)`` half-open character span per step, in order.

    Examples:
        >>> split_steps("aspirin\\n\\nwarfarin\\n")
        [(0, 8), (9, 18)]
    """
    spans = []
    start = 0
    for line in completion.split("\n"):
        end = start + len(line)
        if line.strip():
            spans.append((start, min(end + 1, len(completion))))
        start = end + 1
    return spans


def parse_episode(
    completion: str,
    *,
    task: Task,
    initial: Iterable[int],
    vocabulary: DrugVocabulary,
) -> Episode:
    """Parses a list-editing completion into actions and the set trajectory s_0..s_T.

    s_0 = P0; for each step t: an invalid line leaves s_t = s_{t-1}; for "add",
    s_t = s_{t-1} | {d}; for "remove", s_t = s_{t-1} - {d}; a step that does not change the set is
    a valid no-op.

    Args:
        completion: the decoded completion.
        task: ``"add"`` or ``"remove"``.
        initial: drug ids of the pre-predicted list P0.
        vocabulary: drug names and synonyms.

    Returns:
        The parsed episode.

    Examples:
        >>> vocab = DrugVocabulary(names=("aspirin", "warfarin", "heparin"))
        >>> ep = parse_episode("Warfarin\\nfoo\\nwarfarin\\n", task="add", initial=[0],
        ...                    vocabulary=vocab)
        >>> [a.kind.name for a in ep.actions], sorted(ep.states[-1])
        (['ADD', 'INVALID', 'NOOP'], [0, 1])

    References:
        FLAME, arXiv 2505.20218 (2025); DESIGN.md §5 (episode rules).
    """
    if task not in ("add", "remove"):
        raise ValueError(f"task must be 'add' or 'remove', got {task!r}")
    state = frozenset(int(d) for d in initial)
    for d in state:
        if not 0 <= d < len(vocabulary):
            raise ValueError(f"initial drug {d} is outside 0..{len(vocabulary) - 1}")
    states = [state]
    actions = []
    for start, end in split_steps(completion):
        line = completion[start:end].rstrip("\n")
        drug = vocabulary.lookup(line)
        if drug is None:
            actions.append(Action(line, -1, ActionKind.INVALID))
        elif task == "add":
            kind = ActionKind.NOOP if drug in state else ActionKind.ADD
            state = state | {drug}
            actions.append(Action(line, drug, kind))
        else:
            kind = ActionKind.REMOVE if drug in state else ActionKind.NOOP
            state = state - {drug}
            actions.append(Action(line, drug, kind))
        states.append(state)
    return Episode(task=task, actions=tuple(actions), states=tuple(states))


class EpisodeArrays(NamedTuple):
    """Padded step arrays for the device, leading shape ``[...]`` of the episodes, then ``steps``.

    Attributes:
        drug: int32, the drug of each step (0 for invalid and padded steps).
        delta: int32 in {-1, 0, +1}: the change of the drug's membership (0 for no-ops, invalid and
            padded steps), so that s_t = s_{t-1} + delta_t * onehot(drug_t).
        valid: bool, the line named a drug of the vocabulary.
        mask: bool, the step exists (False on padding).
    """

    drug: np.ndarray
    delta: np.ndarray
    valid: np.ndarray
    mask: np.ndarray


def pad_episodes(
    episodes: Sequence[Episode] | Sequence[Sequence[Episode]], *, max_steps: int
) -> EpisodeArrays:
    """Pads episodes to ``max_steps`` steps; a nested ``[batch][group]`` list gives 3-D arrays.

    Args:
        episodes: a flat list of episodes (``[n]``) or a list of equal-length groups
            (``[batch][group]``).
        max_steps: the static step bucket; must be >= every episode's number of steps.

    Returns:
        ``EpisodeArrays`` of shape ``[n, max_steps]`` or ``[batch, group, max_steps]``.

    Raises:
        ValueError: an episode has more steps than ``max_steps`` (pick a larger bucket; truncating
            would change the outcome reward), or the groups have unequal sizes.

    Examples:
        >>> vocab = DrugVocabulary(names=("a", "b"))
        >>> ep = parse_episode("b\\nzz\\na", task="add", initial=[0], vocabulary=vocab)
        >>> pad_episodes([ep], max_steps=4).delta.tolist()
        [[1, 0, 0, 0]]
    """
    if max_steps < 0:
        raise ValueError(f"max_steps must be >= 0, got {max_steps}")
    nested = bool(episodes) and not isinstance(episodes[0], Episode)
    groups = [list(g) for g in episodes] if nested else [list(episodes)]
    sizes = {len(g) for g in groups}
    if len(sizes) > 1:
        raise ValueError(f"groups must have equal sizes, got sizes {sorted(sizes)}")
    flat = [ep for g in groups for ep in g]
    n = len(flat)
    drug = np.zeros((n, max_steps), np.int32)
    delta = np.zeros((n, max_steps), np.int32)
    valid = np.zeros((n, max_steps), bool)
    mask = np.zeros((n, max_steps), bool)
    for i, ep in enumerate(flat):
        if ep.num_steps > max_steps:
            raise ValueError(
                f"episode {i} has {ep.num_steps} steps, more than max_steps={max_steps}"
            )
        for t, action in enumerate(ep.actions):
            mask[i, t] = True
            if action.kind != ActionKind.INVALID:
                valid[i, t] = True
                drug[i, t] = action.drug
            if action.kind == ActionKind.ADD:
                delta[i, t] = 1
            elif action.kind == ActionKind.REMOVE:
                delta[i, t] = -1
    shape = (len(groups), sizes.pop() if sizes else 0) if nested else (n,)
    return EpisodeArrays(*(a.reshape(*shape, max_steps) for a in (drug, delta, valid, mask)))
