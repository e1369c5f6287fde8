"""Reading raw EHR tables (MIMIC-III, MIMIC-IV hosp, eICU) into one normalised layout.

Every reader returns a :class:`RawCohort` of four pandas frames with the same columns whatever the
source, plus code titles and the rows it dropped on the way (each drop counted by reason, so the
ingestion report can say what happened to every row). Tables are plain or gzipped CSV; column
names are matched case-insensitively (the full MIMIC-III uses upper case, the open demo and
MIMIC-IV lower case). Everything is read as strings first and converted explicitly, so a bad value
is reported with its file, column, line and value instead of a pandas traceback.

Values that are wrong but harmless to one row are dropped or repaired and counted, never silently
changed:

* **Ages.** Completed years at admission, capped at :data:`AGE_CAP` = 90: MIMIC-III shifts the
  date of birth of patients over 89 by about 300 years, MIMIC-IV writes 91 for them and eICU
  "> 89"; all become 90. A *negative* age (MIMIC-III: a date of birth after the admission date)
  is an error in the data: the visit is dropped with its diagnosis, procedure and drug rows, and
  each is counted ("... visits dropped for a negative age", "... rows of visits dropped for a
  negative age"). A birth on the admission day is age 0.
* **Control characters** in codes, drug names and titles (NUL and the other C0 controls, DEL,
  and the C1 controls U+0080-U+009F): tab, newline, vertical tab, form feed and carriage return
  inside a value become a space, the others are removed, and the values changed are counted per
  table and column in :attr:`RawCohort.cleaned`. A code that is nothing but control characters
  is left empty: its row is dropped ("rows whose code is only control characters"). Ids, dates
  and ages are not cleaned: a control character there makes the value unreadable, an error
  naming the file, column and line, like any other malformed value.

Normalised frames (``visit_id`` joins them):

* ``visits``: patient_id int64, visit_id int64, sort_key int64 (admission order within a
  patient), admit_time str (ISO 8601 or ""), age int32 (-1 unknown, capped at 90), gender str
  ("F", "M" or "").
* ``diag`` / ``proc``: visit_id int64, code str, seq float64 (order within the visit).
* ``med``: visit_id int64, order int64 (row order), drug_type str, drug str (the name as
  written), generic str (a generic name where the source has one, else the name), ndc str ("" when
  missing), fallback str (a code for rows whose name gives none in the mapping-free vocabulary,
  "" if none: eICU's "HICL:<drughiclseqno>").
"""

import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from flame_jax.data._format import DatasetError

__all__ = [
    "SOURCES",
    "IngestError",
    "RawCohort",
    "find_table",
    "read_eicu",
    "read_mimic3",
    "read_mimic4",
    "read_raw",
    "read_table",
]

SOURCES = ("mimic3", "mimic4", "eicu")
AGE_CAP = 90  # MIMIC shifts the dates of birth of patients older than 89; ages are capped here
# C0 controls, DEL and C1 controls; those of them that are white space become a space.
_CONTROL_CHARS = r"[\x00-\x1f\x7f-\x9f]"
_SPACE_CONTROLS = r"[\t\n\v\f\r]"


class IngestError(DatasetError):
    """Raw tables are missing, empty or malformed; the message names the file, column and value."""


@dataclasses.dataclass(frozen=True)
class RawCohort:
    """Raw tables of one source in the normalised layout (see the module docstring).

    Attributes:
      source: "mimic3", "mimic4" or "eicu".
      root: the folder the tables were read from.
      visits, diag, proc, med: pandas frames.
      diag_titles, proc_titles: code -> title from the dictionaries (empty when absent).
      drops: reason -> number of rows dropped while reading (duplicates, rows without an id or a
        code, rows of visits that are not in the admissions table, visits with a negative age,
        cancelled orders).
      cleaned: "TABLE: control characters removed from COLUMN" -> number of values changed
        (rows kept, unless the value was nothing but control characters).
    """

    source: str
    root: str
    visits: Any
    diag: Any
    proc: Any
    med: Any
    diag_titles: Mapping[str, str]
    proc_titles: Mapping[str, str]
    drops: Mapping[str, int]
    cleaned: Mapping[str, int] = dataclasses.field(default_factory=dict)


# --------------------------------------------------------------------------------------------------
# Files and columns


def find_table(root: str | os.PathLike, name: str, *, subdirs: Sequence[str] = ()) -> Path | None:
    """The file of table ``name`` under ``root`` (or one of ``subdirs``), or None.

    Tries ``NAME.csv.gz``, ``NAME.csv``, ``name.csv.gz`` and ``name.csv`` (any capitalisation of
    the table name is found, on case-sensitive file systems too).

    Examples:
      >>> import tempfile
      >>> d = Path(tempfile.mkdtemp())
      >>> _ = (d / "admissions.csv.gz").write_bytes(b"")
      >>> find_table(d, "ADMISSIONS").name, find_table(d, "PATIENTS")
      ('admissions.csv.gz', None)
    """
    root = Path(root)
    for folder in (root, *(root / s for s in subdirs)):
        if not folder.is_dir():
            continue
        by_lower = {p.name.lower(): p for p in sorted(folder.iterdir()) if p.is_file()}
        for suffix in (".csv.gz", ".csv"):
            hit = by_lower.get(name.lower() + suffix)
            if hit is not None:
                return hit
    return None


def read_table(
    root: str | os.PathLike,
    name: str,
    columns: Sequence[str],
    *,
    optional: Sequence[str] = (),
    subdirs: Sequence[str] = (),
    required: bool = True,
    allow_empty: bool = False,
) -> Any:
    """Reads the ``columns`` (and those of ``optional`` that exist) of table ``name`` as strings.

    Column names are matched case-insensitively and returned in upper case; missing values are
    None-like (pandas NA). Only the requested columns are parsed, which keeps memory low on the
    full PRESCRIPTIONS table.

    Returns:
      A DataFrame, or None when the table is absent and not ``required``.

    Raises:
      IngestError: the table is missing (and required), cannot be parsed, lacks a column, or has
        no rows (unless ``allow_empty``).
    """
    import pandas as pd

    path = find_table(root, name, subdirs=subdirs)
    if path is None:
        if not required:
            return None
        where = ", ".join(str(Path(root) / s) for s in ("", *subdirs))
        raise IngestError(
            f"table {name} not found: expected {name}.csv.gz or {name}.csv (any case) in {where}"
        )
    try:
        header = pd.read_csv(path, nrows=0, dtype=str).columns
    except (ValueError, OSError, UnicodeDecodeError, EOFError) as e:
        if isinstance(e, pd.errors.EmptyDataError):
            raise IngestError(f"{path}: the file is empty (no header line)") from None
        raise IngestError(f"{path}: cannot be read as CSV ({type(e).__name__}: {e})") from None
    by_upper = {str(c).strip().upper(): c for c in header}
    missing = [c for c in columns if c.upper() not in by_upper]
    if missing:
        raise IngestError(
            f"{path}: missing column {missing[0]!r} (case-insensitive); the file has columns "
            f"{[str(c) for c in header]}"
        )
    wanted = [c.upper() for c in (*columns, *optional) if c.upper() in by_upper]
    source_names = [by_upper[c] for c in wanted]
    try:
        frame = pd.read_csv(
            path,
            usecols=source_names,
            dtype=str,
            keep_default_na=False,
            na_values=[""],
        )
    except (ValueError, OSError, UnicodeDecodeError, EOFError) as e:
        raise IngestError(f"{path}: cannot be read as CSV ({type(e).__name__}: {e})") from None
    frame = frame.rename(columns=dict(zip(source_names, wanted, strict=True)))[wanted]
    if not len(frame) and not allow_empty:
        raise IngestError(f"{path}: table {name} has a header but no rows")
    frame.attrs["path"] = str(path)
    return frame


def _where(frame: Any, column: str, row: int | np.integer) -> str:
    """'FILE: column C, line L' (line numbers count the header as line 1)."""
    return f"{frame.attrs.get('path', '?')}: column {column!r}, line {int(row) + 2}"


def _strings(frame: Any, column: str) -> np.ndarray:
    """The column as an object array of stripped strings, "" for missing values."""
    col = frame[column]
    return col.fillna("").astype(str).str.strip().to_numpy(dtype=object)


def _text(
    frame: Any, column: str, table: str, cleaned: dict[str, int]
) -> tuple[np.ndarray, np.ndarray]:
    """A code, name or title column as :func:`_strings`, control characters removed (tab,
    newline, vertical tab, form feed, carriage return become a space; see the module docstring).

    Returns:
      ``(values, only_control)``: the cleaned strings, and where a value was nothing but control
      characters (now ""). The number of values changed goes to ``cleaned``.
    """
    import pandas as pd

    values = _strings(frame, column)
    # Distinct values only: raw columns repeat a few thousand names over millions of rows.
    index, uniques = pd.factorize(pd.Series(values, dtype=object), use_na_sentinel=False)
    uniques = pd.Series(uniques, dtype=object)
    bad_unique = uniques.str.contains(_CONTROL_CHARS, regex=True).to_numpy(dtype=bool)
    bad = bad_unique[index] if len(values) else np.zeros(0, bool)
    if not bad.any():
        return values, bad
    fixed = (
        uniques.str.replace(_SPACE_CONTROLS, " ", regex=True)
        .str.replace(_CONTROL_CHARS, "", regex=True)
        .str.strip()
        .to_numpy(dtype=object)
    )
    values = np.where(bad, fixed[index], values).astype(object)
    cleaned[f"{table}: control characters removed from {column}"] = int(bad.sum())
    return values, bad & (values == "")


def _ints(frame: Any, column: str, *, allow_missing: bool = False) -> np.ndarray:
    """The column as int64; missing values become -1 when ``allow_missing``.

    Raises:
      IngestError: a value is not an integer (the first one is named), or one is missing.
    """
    import pandas as pd

    text = _strings(frame, column)
    missing = text == ""
    if missing.any() and not allow_missing:
        raise IngestError(
            f"{_where(frame, column, int(np.flatnonzero(missing)[0]))}: missing value"
        )
    # Integers, or floats with an integral value ("123.0" as some exports write them).
    number = pd.to_numeric(pd.Series(np.where(missing, "0", text)), errors="coerce").to_numpy(
        dtype=np.float64, na_value=np.nan
    )
    bad = ~np.isfinite(number) | (number != np.round(number)) | (np.abs(number) > 2.0**53)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise IngestError(f"{_where(frame, column, i)}: {text[i]!r} is not an integer")
    out = number.astype(np.int64)
    out[missing] = -1
    return out


def _seconds(frame: Any, column: str, *, allow_missing: bool = False) -> np.ndarray:
    """'YYYY-MM-DD[ HH:MM[:SS]]' strings as int64 seconds since 1970 (missing: INT64 min).

    Raises:
      IngestError: naming the first value that is not such a date.
    """
    text = _strings(frame, column)
    missing = text == ""
    if missing.any() and not allow_missing:
        raise IngestError(f"{_where(frame, column, int(np.flatnonzero(missing)[0]))}: missing date")
    filled = np.where(missing, "1970-01-01", text)
    try:
        stamps = np.asarray(filled.astype(str), dtype="datetime64[s]")
    except ValueError:
        for i, s in enumerate(filled.tolist()):
            try:
                np.datetime64(s, "s")
            except ValueError:
                raise IngestError(
                    f"{_where(frame, column, i)}: cannot parse {s!r} as a date "
                    "(expected YYYY-MM-DD HH:MM:SS)"
                ) from None
        raise  # unreachable: some value failed above
    out = stamps.astype(np.int64)
    out[missing] = np.iinfo(np.int64).min
    return out


def _iso(seconds: np.ndarray) -> np.ndarray:
    """ISO 'YYYY-MM-DD HH:MM:SS' strings (object array), "" for missing."""
    missing = seconds == np.iinfo(np.int64).min
    text = np.datetime_as_string(np.where(missing, 0, seconds).astype("datetime64[s]"), unit="s")
    text = np.char.replace(text, "T", " ").astype(object)
    text[missing] = ""
    return text


def _gender(values: np.ndarray) -> np.ndarray:
    first = np.asarray([str(v)[:1].upper() for v in values], dtype=object)
    return np.where(np.isin(first, ["F", "M"]), first, "").astype(object)


def _age_years(birth: np.ndarray, when: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Completed years between two second stamps, capped at :data:`AGE_CAP`.

    Returns:
      ``(age, negative)``: int32 ages (-1 if unknown or negative) and where ``when`` falls on an
      earlier calendar day than ``birth``.
    """
    low = np.iinfo(np.int64).min
    known = (birth != low) & (when != low)

    def ymd(seconds: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        d = np.where(known, seconds, 0).astype("datetime64[s]").astype("datetime64[D]")
        y, m = d.astype("datetime64[Y]"), d.astype("datetime64[M]")
        month = (m - y.astype("datetime64[M]")).astype(np.int64)
        return y.astype(np.int64), month, (d - m.astype("datetime64[D]")).astype(np.int64)

    by, bm, bd = ymd(birth)
    wy, wm, wd = ymd(when)
    before = (wm < bm) | ((wm == bm) & (wd < bd))  # birthday not reached yet that year
    years = wy - by - before.astype(np.int64)
    negative = known & (years < 0)
    age = np.where(known & ~negative, np.minimum(years, AGE_CAP), -1).astype(np.int32)
    return age, negative


def _drop_duplicates(frame: Any, key: Sequence[str], what: str, drops: dict[str, int]) -> Any:
    """Drops exact duplicate rows (counted); rows that share ``key`` but differ are an error."""
    dup = frame.duplicated()
    if dup.any():
        drops[f"{what}: duplicate rows"] = drops.get(f"{what}: duplicate rows", 0) + int(dup.sum())
        frame = frame[~dup]
    clash = frame.duplicated(subset=list(key), keep=False)
    if clash.any():
        rows = np.flatnonzero(clash.to_numpy())
        values = ", ".join(f"{k}={frame.iloc[rows[0]][k]}" for k in key)
        raise IngestError(
            f"{frame.attrs.get('path', what)}: {values} appears in {int(clash.sum())} rows "
            f"with different values (lines {int(frame.index[rows[0]]) + 2} and "
            f"{int(frame.index[rows[1]]) + 2})"
        )
    return frame


def _visits_frame(patient, visit, sort_key, admit_time, age, gender) -> Any:
    import pandas as pd

    frame = pd.DataFrame(
        {
            "patient_id": np.asarray(patient, np.int64),
            "visit_id": np.asarray(visit, np.int64),
            "sort_key": np.asarray(sort_key, np.int64),
            "admit_time": pd.array(list(admit_time), dtype=object),
            "age": np.asarray(age, np.int32),
            "gender": pd.array(list(gender), dtype=object),
        }
    )
    return frame.sort_values(["patient_id", "sort_key", "visit_id"], kind="stable").reset_index(
        drop=True
    )


def _events(
    frame: Any,
    visit: np.ndarray,
    code: np.ndarray,
    only_control: np.ndarray,
    seq: np.ndarray,
    what: str,
    drops: dict[str, int],
) -> Any:
    """A (visit_id, code, seq) frame; rows without a visit id or a code are dropped (counted,
    codes that were only control characters apart: see :func:`_text`)."""
    import pandas as pd

    keep = (visit >= 0) & (code != "")
    has_visit = visit >= 0
    for reason, bad in (
        ("rows with no visit id", ~has_visit),
        ("rows with no code", has_visit & (code == "") & ~only_control),
        ("rows whose code is only control characters", has_visit & (code == "") & only_control),
    ):
        if bad.any():
            drops[f"{what}: {reason}"] = int(bad.sum())
    return pd.DataFrame(
        {
            "visit_id": visit[keep],
            "code": pd.array(code[keep].tolist(), dtype=object),
            "seq": np.asarray(seq, np.float64)[keep],
        }
    )


def _seq(frame: Any, column: str) -> np.ndarray:
    """A sequence-number column as float (missing: +inf, so those rows sort last)."""
    ints = _ints(frame, column, allow_missing=True).astype(np.float64)
    missing = _strings(frame, column) == ""
    ints[missing] = np.inf
    return ints


def _titles(
    frame: Any,
    code_col: str,
    title_col: str,
    table: str,
    cleaned: dict[str, int],
    prefix: np.ndarray | None = None,
) -> dict:
    if frame is None:
        return {}
    codes, _ = _text(frame, code_col, table, cleaned)
    if prefix is not None:
        codes = np.asarray([f"{p}{c}" for p, c in zip(prefix, codes, strict=True)], dtype=object)
    titles, _ = _text(frame, title_col, table, cleaned)
    return {c: t for c, t in zip(codes.tolist(), titles.tolist(), strict=True) if c and t}


def _orphans(raw: dict[str, Any], visits: Any, drops: dict[str, int]) -> None:
    """Drops event rows of visits that are not in the visit table (counted per table)."""
    known = visits["visit_id"].to_numpy()
    for name in ("diag", "proc", "med"):
        frame = raw[name]
        ok = np.isin(frame["visit_id"].to_numpy(), known)
        if not ok.all():
            drops[f"{name}: rows of visits missing from the admissions table"] = int((~ok).sum())
            raw[name] = frame[ok].reset_index(drop=True)


def _drop_negative_ages(
    visits: Any, negative: np.ndarray, raw: dict[str, Any], reason: str, drops: dict[str, int]
) -> Any:
    """Drops the visits whose ids are ``negative`` and their event rows (each counted)."""
    gone = np.isin(visits["visit_id"].to_numpy(), negative)
    if not gone.any():
        return visits
    drops[reason] = int(gone.sum())
    for name in ("diag", "proc", "med"):
        frame = raw[name]
        ok = ~np.isin(frame["visit_id"].to_numpy(), negative)
        if not ok.all():
            drops[f"{name}: rows of visits dropped for a negative age"] = int((~ok).sum())
            raw[name] = frame[ok].reset_index(drop=True)
    return visits[~gone].reset_index(drop=True)


def _med_frame(
    visit, drug_type, drug, generic, ndc, what: str, drops: dict[str, int], fallback=None
) -> Any:
    import pandas as pd

    if fallback is None:
        fallback = np.full(len(visit), "", dtype=object)
    keep = visit >= 0
    if not keep.all():
        drops[f"{what}: rows with no visit id"] = int((~keep).sum())
    return pd.DataFrame(
        {
            "visit_id": visit[keep],
            "order": np.arange(int(keep.sum()), dtype=np.int64),
            "drug_type": pd.array(drug_type[keep].tolist(), dtype=object),
            "drug": pd.array(drug[keep].tolist(), dtype=object),
            "generic": pd.array(generic[keep].tolist(), dtype=object),
            "ndc": pd.array(ndc[keep].tolist(), dtype=object),
            "fallback": pd.array(fallback[keep].tolist(), dtype=object),
        }
    )


def _nonempty_or(primary: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    return np.where(primary != "", primary, fallback).astype(object)


# --------------------------------------------------------------------------------------------------
# MIMIC-III


def read_mimic3(root: str | os.PathLike) -> RawCohort:
    """Reads MIMIC-III v1.4 tables (full database or the open demo) from ``root``.

    Tables: ADMISSIONS, PATIENTS, DIAGNOSES_ICD, PROCEDURES_ICD, PRESCRIPTIONS, and the optional
    D_ICD_DIAGNOSES / D_ICD_PROCEDURES dictionaries (titles). Age is completed years between DOB
    and ADMITTIME, capped at 90 (MIMIC-III shifts the DOB of patients over 89 by about 300
    years); an admission before the DOB is dropped and counted (see the module docstring).

    Raises:
      IngestError: a table or column is missing, a table is empty, an id is not an integer, a
        date cannot be parsed, or an admission or patient id appears twice with different values.
    """
    drops: dict[str, int] = {}
    cleaned: dict[str, int] = {}
    adm = read_table(root, "ADMISSIONS", ("SUBJECT_ID", "HADM_ID", "ADMITTIME"))
    adm = _drop_duplicates(adm, ("HADM_ID",), "ADMISSIONS", drops)
    pat = read_table(root, "PATIENTS", ("SUBJECT_ID", "GENDER", "DOB"))
    pat = _drop_duplicates(pat, ("SUBJECT_ID",), "PATIENTS", drops)
    diag = read_table(root, "DIAGNOSES_ICD", ("SUBJECT_ID", "HADM_ID", "SEQ_NUM", "ICD9_CODE"))
    proc = read_table(root, "PROCEDURES_ICD", ("SUBJECT_ID", "HADM_ID", "SEQ_NUM", "ICD9_CODE"))
    med = read_table(
        root,
        "PRESCRIPTIONS",
        ("SUBJECT_ID", "HADM_ID", "DRUG_TYPE", "DRUG", "NDC"),
        optional=("DRUG_NAME_GENERIC",),
    )

    admit = _seconds(adm, "ADMITTIME")
    subject = _ints(adm, "SUBJECT_ID")
    pat_id = _ints(pat, "SUBJECT_ID")
    dob = _seconds(pat, "DOB", allow_missing=True)
    gender = _gender(_strings(pat, "GENDER"))
    where = {int(p): i for i, p in enumerate(pat_id.tolist())}
    idx = np.asarray([where.get(int(s), -1) for s in subject.tolist()], np.int64)
    if (idx < 0).any():
        drops["ADMISSIONS: patients missing from PATIENTS (age, gender unknown)"] = int(
            (idx < 0).sum()
        )
    low = np.iinfo(np.int64).min
    birth = np.where(idx >= 0, dob[np.maximum(idx, 0)], low)
    hadm = _ints(adm, "HADM_ID")
    age, negative = _age_years(birth, admit)
    visits = _visits_frame(
        subject,
        hadm,
        admit,
        _iso(admit),
        age,
        np.where(idx >= 0, gender[np.maximum(idx, 0)], ""),
    )
    drug, _ = _text(med, "DRUG", "PRESCRIPTIONS", cleaned)
    generic = (
        _text(med, "DRUG_NAME_GENERIC", "PRESCRIPTIONS", cleaned)[0]
        if "DRUG_NAME_GENERIC" in med
        else drug
    )
    raw = {
        "diag": _events(
            diag,
            _ints(diag, "HADM_ID", allow_missing=True),
            *_text(diag, "ICD9_CODE", "DIAGNOSES_ICD", cleaned),
            _seq(diag, "SEQ_NUM"),
            "DIAGNOSES_ICD",
            drops,
        ),
        "proc": _events(
            proc,
            _ints(proc, "HADM_ID", allow_missing=True),
            *_text(proc, "ICD9_CODE", "PROCEDURES_ICD", cleaned),
            _seq(proc, "SEQ_NUM"),
            "PROCEDURES_ICD",
            drops,
        ),
        "med": _med_frame(
            _ints(med, "HADM_ID", allow_missing=True),
            _strings(med, "DRUG_TYPE"),
            drug,
            _nonempty_or(generic, drug),
            _text(med, "NDC", "PRESCRIPTIONS", cleaned)[0],
            "PRESCRIPTIONS",
            drops,
        ),
    }
    _orphans(raw, visits, drops)
    visits = _drop_negative_ages(
        visits,
        hadm[negative],
        raw,
        "ADMISSIONS: visits dropped for a negative age (DOB after ADMITTIME)",
        drops,
    )
    d_diag = read_table(root, "D_ICD_DIAGNOSES", ("ICD9_CODE", "LONG_TITLE"), required=False)
    d_proc = read_table(root, "D_ICD_PROCEDURES", ("ICD9_CODE", "LONG_TITLE"), required=False)
    return RawCohort(
        source="mimic3",
        root=str(root),
        visits=visits,
        diag=raw["diag"],
        proc=raw["proc"],
        med=raw["med"],
        diag_titles=_titles(d_diag, "ICD9_CODE", "LONG_TITLE", "D_ICD_DIAGNOSES", cleaned),
        proc_titles=_titles(d_proc, "ICD9_CODE", "LONG_TITLE", "D_ICD_PROCEDURES", cleaned),
        drops=drops,
        cleaned=cleaned,
    )


# --------------------------------------------------------------------------------------------------
# MIMIC-IV (hosp module)


def _versioned(frame: Any, table: str, cleaned: dict[str, int]):
    """'ICD9:4019' / 'ICD10:I10': the ICD version is kept in the code (both occur in MIMIC-IV).

    Returns:
      ``(codes, only_control)``: see :func:`_text`.
    """
    codes, only_control = _text(frame, "ICD_CODE", table, cleaned)
    prefix = _icd_prefix(frame)
    out = np.asarray([p + c if c else "" for c, p in zip(codes, prefix, strict=True)], dtype=object)
    return out, only_control


def _icd_prefix(frame: Any) -> np.ndarray:
    """'ICD9:' / 'ICD10:' per row, from ICD_VERSION."""
    return np.asarray([f"ICD{v}:" for v in _strings(frame, "ICD_VERSION")], dtype=object)


def read_mimic4(root: str | os.PathLike) -> RawCohort:
    """Reads MIMIC-IV hosp tables from ``root`` or ``root/hosp``.

    Tables: admissions, patients, diagnoses_icd, procedures_icd, prescriptions, and the optional
    d_icd_diagnoses / d_icd_procedures. Codes carry their ICD version ("ICD9:4019",
    "ICD10:I10"). Age is ``anchor_age + (admission year - anchor_year)``, capped at 90; an
    admission where it is negative is dropped and counted (see the module docstring).

    Raises:
      IngestError: as :func:`read_mimic3`.
    """
    sub = ("hosp",)
    drops: dict[str, int] = {}
    cleaned: dict[str, int] = {}
    adm = read_table(root, "admissions", ("SUBJECT_ID", "HADM_ID", "ADMITTIME"), subdirs=sub)
    adm = _drop_duplicates(adm, ("HADM_ID",), "admissions", drops)
    pat = read_table(
        root, "patients", ("SUBJECT_ID", "GENDER", "ANCHOR_AGE", "ANCHOR_YEAR"), subdirs=sub
    )
    pat = _drop_duplicates(pat, ("SUBJECT_ID",), "patients", drops)
    cols = ("SUBJECT_ID", "HADM_ID", "SEQ_NUM", "ICD_CODE", "ICD_VERSION")
    diag = read_table(root, "diagnoses_icd", cols, subdirs=sub)
    proc = read_table(root, "procedures_icd", cols, subdirs=sub)
    med = read_table(
        root, "prescriptions", ("SUBJECT_ID", "HADM_ID", "DRUG_TYPE", "DRUG", "NDC"), subdirs=sub
    )

    admit = _seconds(adm, "ADMITTIME")
    subject = _ints(adm, "SUBJECT_ID")
    pat_id = _ints(pat, "SUBJECT_ID")
    anchor_age = _ints(pat, "ANCHOR_AGE", allow_missing=True)
    anchor_year = _ints(pat, "ANCHOR_YEAR", allow_missing=True)
    gender = _gender(_strings(pat, "GENDER"))
    where = {int(p): i for i, p in enumerate(pat_id.tolist())}
    idx = np.asarray([where.get(int(s), -1) for s in subject.tolist()], np.int64)
    if (idx < 0).any():
        drops["admissions: patients missing from patients (age, gender unknown)"] = int(
            (idx < 0).sum()
        )
    j = np.maximum(idx, 0)
    year = admit.astype("datetime64[s]").astype("datetime64[Y]").astype(np.int64) + 1970
    known = (idx >= 0) & (anchor_age[j] >= 0) & (anchor_year[j] >= 0)
    years = anchor_age[j] + year - anchor_year[j]
    negative = known & (years < 0)
    age = np.where(known & ~negative, np.minimum(years, AGE_CAP), -1)
    hadm = _ints(adm, "HADM_ID")
    visits = _visits_frame(
        subject,
        hadm,
        admit,
        _iso(admit),
        age,
        np.where(idx >= 0, gender[j], ""),
    )
    diag_codes, diag_control = _versioned(diag, "diagnoses_icd", cleaned)
    proc_codes, proc_control = _versioned(proc, "procedures_icd", cleaned)
    drug, _ = _text(med, "DRUG", "prescriptions", cleaned)
    raw = {
        "diag": _events(
            diag,
            _ints(diag, "HADM_ID", allow_missing=True),
            diag_codes,
            diag_control,
            _seq(diag, "SEQ_NUM"),
            "diagnoses_icd",
            drops,
        ),
        "proc": _events(
            proc,
            _ints(proc, "HADM_ID", allow_missing=True),
            proc_codes,
            proc_control,
            _seq(proc, "SEQ_NUM"),
            "procedures_icd",
            drops,
        ),
        "med": _med_frame(
            _ints(med, "HADM_ID", allow_missing=True),
            _strings(med, "DRUG_TYPE"),
            drug,
            drug,
            _text(med, "NDC", "prescriptions", cleaned)[0],
            "prescriptions",
            drops,
        ),
    }
    _orphans(raw, visits, drops)
    visits = _drop_negative_ages(
        visits,
        hadm[negative],
        raw,
        "admissions: visits dropped for a negative age (anchor_age + year - anchor_year < 0)",
        drops,
    )
    titles = {}
    for kind, table in (("diag", "d_icd_diagnoses"), ("proc", "d_icd_procedures")):
        d = read_table(
            root, table, ("ICD_CODE", "ICD_VERSION", "LONG_TITLE"), subdirs=sub, required=False
        )
        titles[kind] = (
            {}
            if d is None
            else _titles(d, "ICD_CODE", "LONG_TITLE", table, cleaned, _icd_prefix(d))
        )
    return RawCohort(
        source="mimic4",
        root=str(root),
        visits=visits,
        diag=raw["diag"],
        proc=raw["proc"],
        med=raw["med"],
        diag_titles=titles["diag"],
        proc_titles=titles["proc"],
        drops=drops,
        cleaned=cleaned,
    )


# --------------------------------------------------------------------------------------------------
# eICU


EICU_PROCEDURE_TABLES = ("treatment", "physicalExam")


def _eicu_patient_ids(pids: np.ndarray, frame: Any) -> np.ndarray:
    """uniquepid '002-34851' -> 234851 (the digits); distinct strings must give distinct ids."""
    out = np.empty(len(pids), np.int64)
    seen: dict[int, str] = {}
    for i, s in enumerate(pids.tolist()):
        digits = s.replace("-", "")
        if not digits.isdigit():
            raise IngestError(
                f"{_where(frame, 'UNIQUEPID', i)}: {s!r} is not a uniquepid (digits and '-')"
            )
        value = int(digits)
        if seen.setdefault(value, s) != s:
            raise IngestError(
                f"{_where(frame, 'UNIQUEPID', i)}: {s!r} and {seen[value]!r} give the same id"
            )
        out[i] = value
    return out


def _eicu_age(frame: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(age, negative)`` as :func:`_age_years`, from eICU's age strings ("> 89" is the cap)."""
    text = _strings(frame, "AGE")
    out = np.full(len(text), -1, np.int32)
    negative = np.zeros(len(text), bool)
    for i, s in enumerate(text.tolist()):
        if not s:
            continue
        if s.startswith(">"):
            out[i] = AGE_CAP
            continue
        try:
            years = float(s)
        except ValueError:
            raise IngestError(f"{_where(frame, 'AGE', i)}: {s!r} is not an age") from None
        if not np.isfinite(years):
            raise IngestError(f"{_where(frame, 'AGE', i)}: {s!r} is not an age")
        if years < 0:
            negative[i] = True
        else:
            out[i] = min(int(years), AGE_CAP)
    return out, negative


def _hicl_codes(frame: Any) -> np.ndarray:
    """'HICL:<n>' from medication.drughiclseqno (the integer, without leading zeros), "" where
    the column is absent, empty or not positive.

    Raises:
      IngestError: a value is not an integer (file, column, line).
    """
    if "DRUGHICLSEQNO" not in frame:
        return np.full(len(frame), "", dtype=object)
    number = _ints(frame, "DRUGHICLSEQNO", allow_missing=True)
    return np.asarray([f"HICL:{n}" if n > 0 else "" for n in number.tolist()], dtype=object)


def _undot_icd9(text: str) -> str:
    """'428.0, I50.9' -> '4280': the first (ICD-9) code, dots removed as in MIMIC."""
    first = text.split(",")[0].strip()
    return first.replace(".", "")


def read_eicu(root: str | os.PathLike, *, procedures: str = "treatment") -> RawCohort:
    """Reads eICU-CRD tables from ``root``: patient, diagnosis, medication and ``procedures``.

    A visit is an ICU stay (patientunitstayid); a patient is a uniquepid (its digits as the
    integer id). Visits are ordered by hospital discharge year, hospital stay id and unit visit
    number (eICU has no absolute dates; ``admit_time`` holds the discharge year). Diagnoses are
    the first ICD-9 code of ``icd9code`` with the dots removed (MIMIC style; rows without one
    are dropped and counted). Procedures are ``treatmentstring`` (treatment) or
    ``physicalexampath`` (physicalExam). Medications are ``drugname`` (cancelled orders
    dropped); eICU has no NDC, so only the mapping-free name vocabulary applies. Its rule reads
    quantity-first names ("5 ML VIAL : DILTIAZEM HCL 25 MG/5ML IV SOLN") after the " : ", and a
    row whose name still gives nothing falls back to ``drughiclseqno`` as the code "HICL:<n>"
    (the ``fallback`` column; see :func:`flame_jax.data._mappings.map_medications`). Ages are
    eICU's strings ("> 89" becomes 90); a negative age drops the stay (counted).

    Raises:
      IngestError: as :func:`read_mimic3`; also for an unknown ``procedures`` table.
    """
    if procedures not in EICU_PROCEDURE_TABLES:
        raise IngestError(
            f"eICU procedures must be one of {EICU_PROCEDURE_TABLES}, got {procedures!r}"
        )
    drops: dict[str, int] = {}
    cleaned: dict[str, int] = {}
    pat = read_table(
        root,
        "patient",
        (
            "PATIENTUNITSTAYID",
            "PATIENTHEALTHSYSTEMSTAYID",
            "UNIQUEPID",
            "GENDER",
            "AGE",
            "HOSPITALDISCHARGEYEAR",
            "UNITVISITNUMBER",
        ),
    )
    pat = _drop_duplicates(pat, ("PATIENTUNITSTAYID",), "patient", drops)
    diag = read_table(root, "diagnosis", ("PATIENTUNITSTAYID", "ICD9CODE"))
    proc_col = "TREATMENTSTRING" if procedures == "treatment" else "PHYSICALEXAMPATH"
    proc = read_table(root, procedures, ("PATIENTUNITSTAYID", proc_col))
    med = read_table(
        root,
        "medication",
        ("PATIENTUNITSTAYID", "DRUGNAME"),
        optional=("DRUGORDERCANCELLED", "DRUGHICLSEQNO"),
    )

    year = _ints(pat, "HOSPITALDISCHARGEYEAR", allow_missing=True)
    stay = _ints(pat, "PATIENTHEALTHSYSTEMSTAYID")
    unit_no = _ints(pat, "UNITVISITNUMBER", allow_missing=True)
    # Order key: year, then hospital stay id, then unit visit number (each fits its field).
    sort_key = (np.maximum(year, 0) * 10**12 + stay % 10**10) * 100 + np.clip(unit_no, 0, 99)
    unit_stay = _ints(pat, "PATIENTUNITSTAYID")
    age, negative = _eicu_age(pat)
    visits = _visits_frame(
        _eicu_patient_ids(_strings(pat, "UNIQUEPID"), pat),
        unit_stay,
        sort_key,
        np.asarray([str(y) if y >= 0 else "" for y in year.tolist()], dtype=object),
        age,
        _gender(_strings(pat, "GENDER")),
    )
    icd9, icd9_control = _text(diag, "ICD9CODE", "diagnosis", cleaned)
    icd = np.asarray([_undot_icd9(s) for s in icd9.tolist()], dtype=object)
    drug, _ = _text(med, "DRUGNAME", "medication", cleaned)
    hicl = _hicl_codes(med)
    visit = _ints(med, "PATIENTUNITSTAYID", allow_missing=True)
    if "DRUGORDERCANCELLED" in med:
        cancelled = np.asarray(
            [s.lower() in ("yes", "true", "1") for s in _strings(med, "DRUGORDERCANCELLED")]
        )
        if cancelled.any():
            drops["medication: cancelled orders"] = int(cancelled.sum())
        visit = np.where(cancelled, -2, visit)
    keep = visit != -2
    n = len(drug)
    raw = {
        "diag": _events(
            diag,
            _ints(diag, "PATIENTUNITSTAYID", allow_missing=True),
            icd,
            icd9_control,
            np.arange(len(icd), dtype=np.float64),
            "diagnosis",
            drops,
        ),
        "proc": _events(
            proc,
            _ints(proc, "PATIENTUNITSTAYID", allow_missing=True),
            *_text(proc, proc_col, procedures, cleaned),
            np.arange(len(proc), dtype=np.float64),
            procedures,
            drops,
        ),
        "med": _med_frame(
            visit[keep],
            np.full(n, "", dtype=object)[keep],
            drug[keep],
            drug[keep],
            np.full(n, "", dtype=object)[keep],
            "medication",
            drops,
            fallback=hicl[keep],
        ),
    }
    _orphans(raw, visits, drops)
    visits = _drop_negative_ages(
        visits, unit_stay[negative], raw, "patient: visits dropped for a negative age", drops
    )
    return RawCohort(
        source="eicu",
        root=str(root),
        visits=visits,
        diag=raw["diag"],
        proc=raw["proc"],
        med=raw["med"],
        diag_titles={},
        proc_titles={},
        drops=drops,
        cleaned=cleaned,
    )


def read_raw(source: str, root: str | os.PathLike, **kwargs: Any) -> RawCohort:
    """Dispatches to :func:`read_mimic3`, :func:`read_mimic4` or :func:`read_eicu`."""
    readers = {"mimic3": read_mimic3, "mimic4": read_mimic4, "eicu": read_eicu}
    if source not in readers:
        raise IngestError(f"source must be one of {SOURCES}, got {source!r}")
    if not Path(root).is_dir():
        raise IngestError(f"{root}: not a folder of raw {source} tables")
    return readers[source](root, **kwargs)
