"""Host side of an episode: completion text -> lines -> actions -> set trajectory (pure Python).

A list-editing completion is split into lines; every non-empty line is one decision step. A line
names one drug (after normalising case, spaces and hyphens: :func:`normalize_drug_name`) or it is
an invalid step. The task
("add" or "remove") turns the named drug into a set update; adding a present drug or removing an
absent one is a valid no-op. The trajectory s_0..s_T starts at the pre-predicted list P0.

References:
    Fan et al., "Fine-grained List-wise Alignment for Generative Medication Recommendation"
    (FLAME), arXiv 2505.20218 (2025), list-editing episodes.
"""

import dataclasses
import enum
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal, NamedTuple

import numpy as np

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

# What a reader sees as a space inside a line: tab and the Unicode space separators (category Zs:
# space, no-break space, the U+2000 block, narrow no-break, medium mathematical, ideographic).
_SPACES = "\t \u00a0\u1680\u2000-\u200a\u202f\u205f\u3000"
_HYPHENS = "\\-\u2010-\u2014"  # hyphen-minus, hyphen, non-breaking hyphen, figure / en / em dash
_SEPARATORS = re.compile(f"[{_SPACES}{_HYPHENS}]+")

Task = Literal["add", "remove"]


def normalize_drug_name(text: str) -> str:
    """Normalises a drug name for exact matching: lower-case, drop spaces and hyphens.

    Normative rule (extends DESIGN §5's "spaces"): a space is anything a reader sees as one,
    i.e. tab and every Unicode space separator (category Zs: U+0020, no-break space U+00A0,
    U+1680, U+2000-U+200A, narrow no-break space U+202F, U+205F, ideographic space U+3000);
    model outputs and tokenisers produce these, and the line reads the same. Hyphens are
    hyphen-minus and U+2010-U+2014. A line's CR / LF ends are stripped (CRLF text). Every other
    character stays in the key, so a line holding a control character (NUL, vertical tab, form
    feed, U+001C-U+001F, NEL, U+2028 / U+2029) or an invisible format character (zero-width space
    U+200B, zero-width (non-)joiner, word joiner U+2060, soft hyphen U+00AD, BOM U+FEFF) names no
    drug: an invalid step, never a silently valid name.

    Args:
        text: a drug name or one completion line.

    Returns:
        The key under which the name is looked up.

    Examples:
        >>> normalize_drug_name("  Acetylsalicylic-Acid ")
        'acetylsalicylicacid'
        >>> normalize_drug_name("Insulin\\tglargine\\u00a0"), normalize_drug_name("aspi\\u200brin")
        ('insulinglargine', 'aspi\\u200brin')

    References:
        FLAME, arXiv 2505.20218 (2025): the original parser strips, lower-cases and removes spaces
        and hyphens before an exact match.
    """
    return _SEPARATORS.sub("", text.strip("\r\n").lower())


@dataclasses.dataclass(frozen=True, kw_only=True)
class DrugVocabulary:
    """Canonical drug names (index = drug id) and synonyms, looked up after normalisation.

    Attributes:
        names: canonical names; ``names[i]`` is drug ``i``.
        synonyms: extra name -> drug id entries (brand names, abbreviations).

    Raises:
        ValueError: when two different drugs share a normalised name (the original code silently
            kept one of them), when a name normalises to the empty string, or a synonym points
            outside the vocabulary.

    Examples:
        >>> vocab = DrugVocabulary(names=("Aspirin", "Warfarin"), synonyms={"ASA": 0})
        >>> vocab.lookup("asa"), vocab.lookup("WARFARIN"), vocab.lookup("tea")
        (0, 1, None)
    """

    names: tuple[str, ...]
    synonyms: Mapping[str, int] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", tuple(self.names))
        object.__setattr__(self, "synonyms", dict(self.synonyms))
        index: dict[str, int] = {}
        entries = [(name, i) for i, name in enumerate(self.names)]
        for name, i in self.synonyms.items():
            if not 0 <= i < len(self.names):
                raise ValueError(
                    f"synonym {name!r} points to drug {i}, outside 0..{len(self.names) - 1}"
                )
            entries.append((name, i))
        for name, i in entries:
            key = normalize_drug_name(name)
            if not key:
                raise ValueError(f"drug name {name!r} normalises to the empty string")
            if index.setdefault(key, i) != i:
                raise ValueError(
                    f"normalised name {key!r} ({name!r}) names drugs {index[key]} and {i}"
                )
        object.__setattr__(self, "_index", index)

    def __len__(self) -> int:
        return len(self.names)

    def lookup(self, text: str) -> int | None:
        """Returns the drug id named by ``text`` (normalised), or None."""
        return self._index.get(normalize_drug_name(text))  # type: ignore[attr-defined]


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
