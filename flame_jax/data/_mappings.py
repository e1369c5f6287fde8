"""Medication vocabularies: mapping-free (drug name, NDC product) and mapped (ATC-3, DrugBank).

* ``"name"``: the normalised generic name (:func:`normalise_drug_name`); needs nothing but the
  raw tables (the open demo, eICU). A quantity-first name, as eICU writes many ("5 ML VIAL :
  DILTIAZEM HCL 25 MG/5ML IV SOLN"), is read after the " : " (:func:`drug_name_part`); a row
  whose name still gives nothing takes the reader's fallback code where it has one (eICU:
  "HICL:<drughiclseqno>"). The rows each rule recovered are counted.
* ``"ndc"``: the NDC product code, i.e. the first 9 digits (labeler + product) of the 11-digit
  NDC; the package code is ignored, as in FLAME's NDC -> DrugBank join.
* ``"atc3"``: NDC -> RXCUI -> ATC, truncated to ATC level 3 (4 characters, e.g. "N02B"), the
  SafeDrug / GAMENet pipeline. Needs an NDC -> RXCUI table (CSV with NDC and RXCUI columns, or
  GAMENet's ``ndc2rxnorm_mapping.txt``, a Python dict literal read with ``ast.literal_eval``)
  and an RXCUI -> ATC table (CSV with RXCUI and ATC4 / ATC5 / ATC columns; the first row per
  RXCUI wins, as in SafeDrug).
* ``"drugbank"``: a user-supplied NDC -> drug id table (FLAME's ``ndc2db_all.csv``, 9-digit
  NDCs, or any table with an NDC column and an id column); 9-digit entries match the product code,
  11-digit entries the full NDC.

Rows that map to nothing are dropped and counted (rows and distinct source keys) in the report.
"""

import ast
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from flame_jax.data._tables import IngestError

__all__ = [
    "MED_VOCABS",
    "MedMapping",
    "drug_name_part",
    "load_drug_info",
    "map_medications",
    "normalise_drug_name",
    "normalise_ndc",
]

MED_VOCABS = ("name", "ndc", "atc3", "drugbank")
_ID_COLUMNS = ("DRUGBANK_ID", "DRUG_CODE", "DRUG_ID", "ID", "ATC3", "ATC")
_NAME_COLUMNS = ("DRUG_NAME", "NAME", "DRUG")
_SMILES_COLUMNS = ("SMILES", "MOLDB_SMILES")
_STRENGTH = re.compile(r"\d")
# QUANTITY UNIT CONTAINER : NAME STRENGTH FORM (eICU medication.drugname); the name may be absent.
_QUANTITY_FIRST = re.compile(r"\d[\d.,/]*(?:\s[^:]*)?\s:(?:\s+(?P<name>.*))?", re.DOTALL)
_AFTER_COLON = "med: names read after ' : ' (quantity first)"
_FROM_FALLBACK = "med: names from drughiclseqno (HICL:<number>)"


def normalise_drug_name(name: str) -> str:
    """A drug name reduced to its generic part: lower case, no parenthesised text, cut at the
    first token with a digit (strengths), punctuation to spaces, single spaces.

    Examples:
      >>> normalise_drug_name("Sodium Chloride 0.9%  Flush")
      'sodium chloride'
      >>> normalise_drug_name("PNEUMOcoccal Vac"), normalise_drug_name("Bisacodyl (Rectal)")
      ('pneumococcal vac', 'bisacodyl')
      >>> normalise_drug_name("METOPROLOL TARTRATE 25 MG PO TABS")
      'metoprolol tartrate'
    """
    text = re.sub(r"\([^)]*\)", " ", str(name).lower())
    text = re.sub(r"[^a-z0-9.%+ ]", " ", text)
    kept = []
    for token in text.split():
        if _STRENGTH.search(token):
            break
        kept.append(token.strip("."))
    return " ".join(t for t in kept if t)


def drug_name_part(name: str) -> str | None:
    """The name part of a quantity-first drug name, ``QUANTITY UNIT CONTAINER : NAME STRENGTH
    FORM`` (eICU's ``medication.drugname``), or None when ``name`` is not of that shape.

    Examples:
      >>> drug_name_part("5 ML VIAL : DILTIAZEM HCL 25 MG/5ML IV SOLN")
      'DILTIAZEM HCL 25 MG/5ML IV SOLN'
      >>> drug_name_part("1 EACH VIAL :"), drug_name_part("ASPIRIN 81 MG PO CHEW")
      ('', None)
    """
    match = _QUANTITY_FIRST.fullmatch(str(name).strip())
    return None if match is None else (match["name"] or "").strip()


def normalise_ndc(ndc: str) -> str:
    """An NDC as 11 digits, or "" when it is missing, "0" or not an 11-digit code.

    Examples:
      >>> normalise_ndc("00006494300"), normalise_ndc("0"), normalise_ndc("6494300.0")
      ('00006494300', '', '00006494300')
    """
    s = str(ndc).strip()
    if s.endswith(".0"):
        s = s[:-2]
    if not s.isdigit() or int(s) == 0 or len(s) > 11:
        return ""
    return s.zfill(11)


class MedMapping:
    """How raw medication rows become vocabulary codes (one of :data:`MED_VOCABS`).

    Args:
      mode: the vocabulary.
      ndc_map: ``drugbank`` mode: the NDC -> id table.
      ndc_rxcui: ``atc3`` mode: the NDC -> RXCUI table.
      rxcui_atc: ``atc3`` mode: the RXCUI -> ATC table.
    """

    def __init__(
        self,
        mode: str,
        *,
        ndc_map: str | os.PathLike | None = None,
        ndc_rxcui: str | os.PathLike | None = None,
        rxcui_atc: str | os.PathLike | None = None,
    ):
        if mode not in MED_VOCABS:
            raise IngestError(f"med_vocab must be one of {MED_VOCABS}, got {mode!r}")
        self.mode = mode
        self.names: dict[str, str] = {}  # code -> title from the mapping table, when it has one
        self.table: dict[str, str] = {}
        if mode == "drugbank":
            if ndc_map is None:
                raise IngestError("med_vocab 'drugbank' needs an NDC -> drug id table (ndc_map)")
            self._load_ndc_map(Path(ndc_map))
        elif mode == "atc3":
            if ndc_rxcui is None or rxcui_atc is None:
                raise IngestError(
                    "med_vocab 'atc3' needs an NDC -> RXCUI table (ndc_rxcui) and an RXCUI -> ATC "
                    "table (rxcui_atc)"
                )
            self._load_atc(Path(ndc_rxcui), Path(rxcui_atc))

    def _load_ndc_map(self, path: Path) -> None:
        frame = _read_csv(path)
        ndc_col = _column(frame, path, ("NDC",))
        id_col = _column(frame, path, _ID_COLUMNS)
        name_col = _column(frame, path, _NAME_COLUMNS, required=False)
        for i, (ndc, code) in enumerate(zip(frame[ndc_col], frame[id_col], strict=True)):
            key = _ndc_key(ndc)
            code = str(code).strip() if code is not None else ""
            if not key or not code:
                continue
            if self.table.setdefault(key, code) != code:
                raise IngestError(
                    f"{path}: NDC {ndc!r} maps to both {self.table[key]!r} and {code!r} "
                    f"(line {i + 2})"
                )
            if name_col is not None and frame[name_col][i]:
                self.names.setdefault(code, str(frame[name_col][i]))

    def _load_atc(self, ndc_rxcui: Path, rxcui_atc: Path) -> None:
        if not ndc_rxcui.is_file():
            raise IngestError(f"{ndc_rxcui}: NDC -> RXCUI table not found")
        if ndc_rxcui.suffix == ".txt":
            try:
                mapping = ast.literal_eval(ndc_rxcui.read_text(encoding="utf-8"))
            except (ValueError, SyntaxError) as e:
                raise IngestError(f"{ndc_rxcui}: not a Python dict literal ({e})") from None
            if not isinstance(mapping, dict):
                raise IngestError(f"{ndc_rxcui}: must hold a dict NDC -> RXCUI")
            pairs = list(mapping.items())
        else:
            frame = _read_csv(ndc_rxcui)
            pairs = list(
                zip(
                    frame[_column(frame, ndc_rxcui, ("NDC",))],
                    frame[_column(frame, ndc_rxcui, ("RXCUI",))],
                    strict=True,
                )
            )
        rx_to_ndc: dict[str, list[str]] = {}
        for ndc, rx in pairs:
            key, rx = normalise_ndc(str(ndc)), str(rx or "").strip()
            if key and rx:
                rx_to_ndc.setdefault(_int_text(rx), []).append(key)
        frame = _read_csv(rxcui_atc)
        rx_col = _column(frame, rxcui_atc, ("RXCUI",))
        atc_col = _column(frame, rxcui_atc, ("ATC4", "ATC5", "ATC", "ATC_CODE"))
        seen: set[str] = set()
        for rx, atc in zip(frame[rx_col], frame[atc_col], strict=True):
            rx = _int_text(str(rx or "").strip())
            atc = str(atc or "").strip()
            if not rx or rx in seen or len(atc) < 4:
                continue
            seen.add(rx)  # first row per RXCUI, as SafeDrug's drop_duplicates(subset=RXCUI)
            for ndc in rx_to_ndc.get(rx, ()):
                self.table[ndc] = atc[:4]

    def keys(self, med: Any) -> tuple[np.ndarray, np.ndarray]:
        """(source key, vocabulary code) per medication row; code "" where unmapped."""
        if self.mode == "name":
            keys = _name_keys(med)[0]
            return keys, keys
        ndc = _per_unique(med["ndc"].to_numpy(dtype=object), normalise_ndc)
        if self.mode == "ndc":
            return ndc, _per_unique(ndc, lambda n: n[:9])
        table = self.table
        codes = _per_unique(ndc, lambda n: table.get(n, table.get(n[:9], "")) if n else "")
        return ndc, codes


def _per_unique(values: np.ndarray, fn: Any) -> np.ndarray:
    """``fn`` applied to each distinct value once (raw columns repeat a few thousand values)."""
    import pandas as pd

    codes, uniques = pd.factorize(pd.Series(values, dtype=object), use_na_sentinel=False)
    mapped = np.asarray([fn(u) for u in uniques], dtype=object)
    return mapped[codes] if len(values) else np.zeros(0, dtype=object)


def _name_keys(med: Any) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """The mapping-free name key per row, with the name each came from and the rows recovered.

    The rules, in order: the normalised generic name; for a quantity-first name, the normalised
    part after " : " (:func:`drug_name_part`); where that gives nothing, the row's ``fallback``
    code (eICU: "HICL:<drughiclseqno>", whose name is the code itself).

    Returns:
      ``(keys, names, recovered)``: keys ("" where every rule gives nothing), the names the keys
      came from (the titles' source), and the rows each later rule recovered (nonzero only).
    """
    generic = med["generic"].to_numpy(dtype=object)
    part = _per_unique(generic, drug_name_part)
    quantity_first = np.asarray([p is not None for p in part], bool)
    names = np.where(quantity_first, part, generic).astype(object)
    keys = _per_unique(names, normalise_drug_name)
    n = len(keys)
    fallback = med["fallback"].to_numpy(dtype=object) if "fallback" in med else np.full(n, "")
    from_fallback = (keys == "") & (fallback != "")
    keys = np.where(from_fallback, fallback, keys).astype(object)
    names = np.where(from_fallback, fallback, names).astype(object)
    counts = {
        _AFTER_COLON: int((quantity_first & (keys != "") & ~from_fallback).sum()),
        _FROM_FALLBACK: int(from_fallback.sum()),
    }
    return keys, names, {k: v for k, v in counts.items() if v}


def map_medications(med: Any, mapping: MedMapping) -> tuple[Any, dict[str, int], dict[str, int]]:
    """Maps medication rows to vocabulary codes.

    Args:
      med: the normalised medication frame (:class:`~flame_jax.data._tables.RawCohort`).
      mapping: the vocabulary.

    Returns:
      ``(frame, drops, recovered)``: rows with a code (columns visit_id, order, code, name: the
      raw name the code came from), the counts of unmapped rows and distinct unmapped source
      keys, and (``"name"`` vocabulary) the rows recovered by the quantity-first and fallback
      rules (see :func:`_name_keys`; only those that recovered any).
    """
    recovered: dict[str, int] = {}
    if mapping.mode == "name":
        keys, names, recovered = _name_keys(med)
        codes = keys
    else:
        keys, codes = mapping.keys(med)
        names = med["generic"].to_numpy(dtype=object)
    ok = codes != ""
    what = "name" if mapping.mode == "name" else "NDC"
    no_key = keys == ""
    absent = ~no_key & ~ok
    drops = {}
    if no_key.any():
        drops[f"med: rows with no usable {what}"] = int(no_key.sum())
    if absent.any():
        drops[f"med: rows whose {what} is not in the mapping"] = int(absent.sum())
        drops[f"med: distinct {what}s not in the mapping"] = len(set(keys[absent].tolist()))
    out = med[ok].copy()
    out["code"] = codes[ok]
    out["name"] = names[ok]
    return out.reset_index(drop=True), drops, recovered


def med_titles(mapped: Any, mapping: MedMapping, info: Mapping[str, Any]) -> dict[str, str]:
    """A title per code: the mapping table's or drug info's name, else the most frequent raw name
    (ties: alphabetical)."""
    counts = mapped.groupby(["code", "name"], sort=False).size().reset_index(name="n")
    counts = counts.sort_values(["code", "n", "name"], ascending=[True, False, True])
    best = counts.drop_duplicates("code")
    titles = {}
    for code, name in zip(best["code"].tolist(), best["name"].tolist(), strict=True):
        titles[code] = info.get("names", {}).get(code) or mapping.names.get(code) or name
    return titles


def load_drug_info(path: str | os.PathLike | None) -> dict[str, Any]:
    """Drug id -> name and SMILES from a table (FLAME's ``drugbank_drugs_info.csv`` or the
    synthetic ``drug_smiles.csv.gz``: an id column, optional name and SMILES columns).

    Returns:
      ``{"names": {id: name}, "smiles": {id: [smiles, ...]}, "by_name": {normalised name:
      [smiles, ...]}}`` (empty dicts when ``path`` is None).
    """
    out: dict[str, Any] = {"names": {}, "smiles": {}, "by_name": {}}
    if path is None:
        return out
    path = Path(path)
    frame = _read_csv(path)
    id_col = _column(frame, path, _ID_COLUMNS, required=False)
    name_col = _column(frame, path, _NAME_COLUMNS, required=False)
    smiles_col = _column(frame, path, _SMILES_COLUMNS, required=False)
    if id_col is None and name_col is None:
        raise IngestError(f"{path}: needs an id column {_ID_COLUMNS} or a name column")
    n = len(frame)
    ids = frame[id_col].tolist() if id_col else [None] * n
    names = frame[name_col].tolist() if name_col else [None] * n
    smiles = frame[smiles_col].tolist() if smiles_col else [None] * n
    for code, name, smi in zip(ids, names, smiles, strict=True):
        if code and name:
            out["names"].setdefault(str(code), str(name))
        if smi:
            if code:
                out["smiles"].setdefault(str(code), []).append(str(smi))
            if name:
                out["by_name"].setdefault(normalise_drug_name(str(name)), []).append(str(smi))
    return out


def med_smiles(
    codes: Sequence[str], mapped: Any, info: Mapping[str, Any], *, limit: int = 3
) -> dict[str, tuple[str, ...]]:
    """SMILES per code: by id in the drug info table, else through the raw drug names mapped to
    the code (as SafeDrug's ATC-3 -> names -> SMILES, at most ``limit`` per code)."""
    out = {}
    names_of: dict[str, list[str]] = {}
    if info["by_name"]:
        pairs = mapped[["code", "name"]].drop_duplicates()
        for code, name in zip(pairs["code"].tolist(), pairs["name"].tolist(), strict=True):
            names_of.setdefault(code, []).append(name)
    for code in codes:
        smiles = list(info["smiles"].get(code, []))
        if not smiles:
            for name in dict.fromkeys(sorted(set(names_of.get(code, [])))):
                smiles += info["by_name"].get(normalise_drug_name(name), [])
        out[code] = tuple(dict.fromkeys(smiles))[:limit]
    return out


# --------------------------------------------------------------------------------------------------


def _read_csv(path: Path) -> Any:
    import pandas as pd

    if not path.is_file():
        raise IngestError(f"{path}: mapping table not found")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except (ValueError, OSError, UnicodeDecodeError, EOFError) as e:
        raise IngestError(f"{path}: cannot be read as CSV ({type(e).__name__}: {e})") from None
    frame = frame.astype(object).where(frame.notna(), None)
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def _column(frame: Any, path: Path, names: Sequence[str], *, required: bool = True) -> str | None:
    by_upper = {c.upper().replace(" ", "_"): c for c in frame.columns}
    for name in names:
        if name in by_upper:
            return by_upper[name]
    if required:
        raise IngestError(
            f"{path}: needs a column named one of {list(names)} (case-insensitive); it has "
            f"{list(frame.columns)}"
        )
    return None


def _ndc_key(ndc: Any) -> str:
    """A mapping-table NDC: 11 digits, or 9 digits (labeler + product) kept as the product key."""
    s = str(ndc or "").strip().replace("-", "")
    if s.endswith(".0"):
        s = s[:-2]
    if not s.isdigit() or int(s) == 0:
        return ""
    return s.zfill(9) if len(s) <= 9 else s.zfill(11)


def _int_text(s: str) -> str:
    return s[:-2] if s.endswith(".0") else s
