"""Drug-drug interaction adjacency from user-supplied tables.

* ``"pairs"`` (FLAME / DrugBank style): a table of interacting pairs keyed by the medication
  vocabulary's codes (DrugBank ids, synthetic drug codes, ...), two id columns and an optional
  interaction-type column; ``types`` keeps only the listed types (FLAME's adverse set is
  :data:`FLAME_ADVERSE_TYPES`).
* ``"twosides"`` (GAMENet / SafeDrug): TWOSIDES rows (``STITCH 1``, ``STITCH 2``, ``Polypharmacy
  Side Effect``, ``Side Effect Name``) plus a CID -> ATC table (``drug-atc.csv``: each line a CID
  then its ATC codes). Side effects are ranked by their number of rows; ``top_k`` of them are
  kept. SafeDrug and GAMENet keep ``iloc[-40:]`` of the descending ranking, i.e. the 40 *least*
  frequent side effects; ``side_effects="least-frequent"`` reproduces that and
  ``"most-frequent"`` takes the head instead. Pairs map to ATC-3 codes of the vocabulary.
"""

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from flame_jax.data._tables import IngestError

__all__ = ["DDI_FORMATS", "FLAME_ADVERSE_TYPES", "ddi_from_pairs", "ddi_from_twosides"]

DDI_FORMATS = ("pairs", "twosides")
# DrugBank interaction types FLAME counts as adverse (spec section 2.1; type 9 is synergistic).
FLAME_ADVERSE_TYPES = ("112", "73", "41", "29", "23", "63", "98", "95", "111")
_PAIR_COLUMNS = (
    ("DRUG_CODE_1", "DRUG_CODE_2"),
    ("DRUG1", "DRUG2"),
    ("DRUGBANK_ID_1", "DRUGBANK_ID_2"),
    ("ID1", "ID2"),
    ("STITCH_1", "STITCH_2"),
)
_TYPE_COLUMNS = ("INTERACTION_TYPE", "TYPE", "LABEL")


def _read(path: str | os.PathLike):
    from flame_jax.data._mappings import _read_csv

    return _read_csv(Path(path))


def ddi_from_pairs(
    codes: Sequence[str],
    path: str | os.PathLike,
    *,
    types: Sequence[str] | None = None,
) -> tuple[np.ndarray, dict[str, int]]:
    """[meds, meds] uint8 symmetric adjacency (zero diagonal) from a pair table.

    Args:
      codes: the medication vocabulary's codes, index order.
      path: the CSV of pairs.
      types: interaction types to keep (compared as strings); None keeps every row.

    Returns:
      ``(adjacency, counts)``: counts of rows kept, of rows whose drugs are not both in the
      vocabulary, and of rows of other types.
    """
    path = Path(path)
    frame = _read(path)
    upper = {c.upper().replace(" ", "_"): c for c in frame.columns}
    cols = next(((upper[a], upper[b]) for a, b in _PAIR_COLUMNS if a in upper and b in upper), None)
    if cols is None:
        raise IngestError(
            f"{path}: needs two drug columns, one of {[list(p) for p in _PAIR_COLUMNS]}; it has "
            f"{list(frame.columns)}"
        )
    type_col = next((upper[t] for t in _TYPE_COLUMNS if t in upper), None)
    if types is not None and type_col is None:
        raise IngestError(f"{path}: ddi types were given but the table has no type column")
    index = {c: i for i, c in enumerate(codes)}
    adj = np.zeros((len(codes), len(codes)), np.uint8)
    wanted = None if types is None else {str(t) for t in types}
    counts = {"pairs kept": 0, "pairs outside the vocabulary": 0, "other types": 0}
    for k, (a, b) in enumerate(zip(frame[cols[0]], frame[cols[1]], strict=True)):
        if wanted is not None and str(frame[type_col][k] or "").strip() not in wanted:
            counts["other types"] += 1
            continue
        i, j = index.get(str(a or "").strip()), index.get(str(b or "").strip())
        if i is None or j is None:
            counts["pairs outside the vocabulary"] += 1
            continue
        if i != j:
            adj[i, j] = adj[j, i] = 1
            counts["pairs kept"] += 1
    return adj, counts


def ddi_from_twosides(
    codes: Sequence[str],
    path: str | os.PathLike,
    cid_atc: str | os.PathLike,
    *,
    top_k: int = 40,
    side_effects: str = "least-frequent",
) -> tuple[np.ndarray, dict[str, int]]:
    """[meds, meds] uint8 adjacency over ATC-3 ``codes`` from TWOSIDES (GAMENet / SafeDrug).

    Args:
      codes: ATC-3 codes of the medication vocabulary.
      path: the TWOSIDES CSV (``drug-DDI.csv``).
      cid_atc: ``drug-atc.csv``: lines ``CID,ATC,ATC,...``.
      top_k: number of side effects kept.
      side_effects: "least-frequent" (what the SafeDrug / GAMENet code does) or
        "most-frequent".

    Returns:
      ``(adjacency, counts)``.
    """
    if side_effects not in ("least-frequent", "most-frequent"):
        raise IngestError(
            f"side_effects must be 'least-frequent' or 'most-frequent', got {side_effects!r}"
        )
    if top_k < 1:
        raise IngestError(f"ddi top_k must be >= 1, got {top_k}")
    path, cid_atc = Path(path), Path(cid_atc)
    frame = _read(path)
    upper = {c.upper().replace(" ", "_"): c for c in frame.columns}
    need = ("STITCH_1", "STITCH_2", "SIDE_EFFECT_NAME")
    for n in need:
        if n not in upper:
            raise IngestError(
                f"{path}: missing TWOSIDES column {n.replace('_', ' ')!r}; it has "
                f"{list(frame.columns)}"
            )
    names = frame[upper["SIDE_EFFECT_NAME"]].tolist()
    count: dict[str, int] = {}
    for n in names:
        count[n] = count.get(n, 0) + 1
    # Descending by count; ties by name so the ranking is deterministic.
    ranking = sorted(count, key=lambda n: (-count[n], str(n)))
    chosen = set(ranking[-top_k:] if side_effects == "least-frequent" else ranking[:top_k])

    atc3 = set(codes)
    if not cid_atc.is_file():
        raise IngestError(f"{cid_atc}: CID -> ATC table not found")
    cid_to: dict[str, set[str]] = {}
    for line in cid_atc.read_text(encoding="utf-8").splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 2:
            continue
        hits = {a[:4] for a in parts[1:] if a[:4] in atc3}
        if hits:
            cid_to.setdefault(parts[0], set()).update(hits)
    index = {c: i for i, c in enumerate(codes)}
    adj = np.zeros((len(codes), len(codes)), np.uint8)
    counts = {"side effects kept": len(chosen), "pairs kept": 0}
    pairs = {
        (a, b)
        for a, b, n in zip(frame[upper["STITCH_1"]], frame[upper["STITCH_2"]], names, strict=True)
        if n in chosen
    }
    for a, b in sorted(pairs, key=str):
        for x in cid_to.get(str(a), ()):
            for y in cid_to.get(str(b), ()):
                if x != y:
                    adj[index[x], index[y]] = adj[index[y], index[x]] = 1
                    counts["pairs kept"] += 1
    return adj, counts
