"""Drug names in model output: the lookup key, the vocabulary type, and its one builder.

One rule for the whole product (FLAME's episodes and the consensus protocol alike): a line or
an answer names a drug when its :func:`drug_key` key (case, spaces and hyphens
removed) equals the key of a drug's title or of one of its synonyms. This is *matching*; it is not
:func:`~flame_jax.data.normalise_drug_name`, which makes vocabulary *codes* from raw
prescription strings during ingestion (dropping strengths and parenthesised text).

References:
    Fan et al., "Fine-grained List-wise Alignment for Generative Medication Recommendation"
    (FLAME), arXiv 2505.20218 (2025): the original parser strips, lower-cases and removes spaces
    and hyphens before an exact match.
"""

import dataclasses
import re
from collections.abc import Mapping

from flame_jax.data._format import Vocabulary

__all__ = ["DrugVocabulary", "drug_key", "drug_vocabulary"]

# What a reader sees as a space inside a line: tab and the Unicode space separators (category Zs:
# space, no-break space, the U+2000 block, narrow no-break, medium mathematical, ideographic).
_SPACES = "\t \u00a0\u1680\u2000-\u200a\u202f\u205f\u3000"
_HYPHENS = "\\-\u2010-\u2014"  # hyphen-minus, hyphen, non-breaking hyphen, figure / en / em dash
_SEPARATORS = re.compile(f"[{_SPACES}{_HYPHENS}]+")


def drug_key(text: str) -> str:
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
        >>> drug_key("  Acetylsalicylic-Acid ")
        'acetylsalicylicacid'
        >>> drug_key("Insulin\\tglargine\\u00a0"), drug_key("aspi\\u200brin")
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
            key = drug_key(name)
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
        return self._index.get(drug_key(text))  # type: ignore[attr-defined]


def drug_vocabulary(med_vocab: Vocabulary, *, codes: bool = True) -> DrugVocabulary:
    """The lookup table of a dataset's medications: titles, then synonyms (and codes).

    The titles are the canonical names (index = drug id). A synonym (or code) whose key already
    names another drug is left out: the title, or the earlier entry, wins, so a messy vocabulary
    never makes a name ambiguous and never raises.

    Args:
        med_vocab: the dataset's medication vocabulary.
        codes: also accept each drug's code (e.g. an ATC-3 code) as a name. The consensus protocol
            does (free-text answers may cite codes); FLAME's edit lines do not.

    Examples:
      >>> v = Vocabulary(kind="med", codes=("A01", "B02"), titles=("Aspirin", "Warfarin"),
      ...                synonyms=(("ASA",), ()))
      >>> dv = drug_vocabulary(v)
      >>> dv.lookup("asa"), dv.lookup("b02"), dv.lookup("WAR-FARIN")
      (0, 1, 1)
      >>> drug_vocabulary(v, codes=False).lookup("b02") is None
      True
    """
    if med_vocab.kind != "med":
        raise ValueError(f"drug_vocabulary needs the med vocabulary, got kind {med_vocab.kind!r}")
    taken = {drug_key(t): i for i, t in enumerate(med_vocab.titles)}
    synonyms: dict[str, int] = {}
    for i in range(len(med_vocab)):
        extra = list(med_vocab.synonyms[i]) if med_vocab.synonyms else []
        for name in [*extra, *((med_vocab.codes[i],) if codes else ())]:
            key = drug_key(name)
            if key and taken.setdefault(key, i) == i:
                synonyms[name] = i
    return DrugVocabulary(names=tuple(med_vocab.titles), synonyms=synonyms)
