"""Performance histories: the per-member log rows of collaboration rounds, and chemistry from them.

One row per participating model per round, in the schema of (C)'s run logs (consensus_spec §1.1):
``trial, model, temperature, latency, elapsed, id, result, quality, generation_accuracy,
variance, review_accuracy, accuracy, strategy, created`` (plus an optional ``task``). Rows are
stored as JSON Lines, one object per line; reading is strict (unknown or missing fields, wrong
types and out-of-range values are errors naming the file, line, field and value).

:func:`recommend_from_history` turns a history into the CHEMISTRY strategy's ensemble: per-model
profiles (:func:`model_profiles`), the subset cost table, pairwise chemistry and the exhaustive,
deterministic recommendation of :mod:`flame_jax.consensus._chemistry`.

References:
    Sanchez & Hitaj, "LLM Chemistry Estimation for Multi-LLM Recommendation", arXiv:2510.03930
    (2025), ``load_trial_data``; Sanchez et al., arXiv:2512.05066 (2025).
"""

import dataclasses
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np

from flame_jax._io import write_bytes_atomic
from flame_jax.consensus._chemistry import (
    Chemistry,
    host_subset_costs,
    pairwise_chemistry,
    recommend_ensemble,
)

__all__ = [
    "HistoryError",
    "HistoryRow",
    "ModelProfiles",
    "chemistry_from_history",
    "model_profiles",
    "read_history",
    "recommend_from_history",
    "write_history",
]


class HistoryError(ValueError):
    """A performance-history row or file is malformed; the message says where and what."""


_STR_FIELDS = ("trial", "model", "id", "result", "strategy", "created", "task")
_FLOAT_FIELDS = (
    "temperature",
    "latency",
    "elapsed",
    "quality",
    "generation_accuracy",
    "variance",
    "review_accuracy",
    "accuracy",
)
_RANGES = {
    "temperature": (0.0, math.inf),
    "latency": (0.0, math.inf),
    "elapsed": (0.0, math.inf),
    "quality": (0.0, 10.0),
    "generation_accuracy": (0.0, 1.0),
    "variance": (0.0, math.inf),
    "review_accuracy": (0.0, 1.0),
    "accuracy": (0.0, 1.0),
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class HistoryRow:
    """One model's record of one collaboration round (consensus_spec §1.1).

    Attributes:
        trial: vignette and repetition, e.g. ``"vignette_3 0"``; shared by the round's rows.
        model: the member's name.
        temperature: sampling temperature (0 for deterministic members).
        latency: the member's own generation time, seconds.
        elapsed: wall time of the whole round, seconds.
        id: anonymised item label of the member's answer.
        result: the answer (e.g. its canonical drug list as text).
        quality: consensus grade of the member's item on the 0-10 scale.
        generation_accuracy: correctness against the gold answer, [0, 1].
        variance: the member's Vancouver reviewer variance in squared 0-10 units.
        review_accuracy: the member's reviewer quality rho, [0, 1].
        accuracy: compound accuracy, [0, 1].
        strategy: the strategy that formed the ensemble (REMOTE, LOCAL, RANDOM, CHEMISTRY, ...).
        created: timestamp text.
        task: task / prototype label (optional; one history usually holds one task).
    """

    trial: str
    model: str
    temperature: float
    latency: float
    elapsed: float
    id: str
    result: str
    quality: float
    generation_accuracy: float
    variance: float
    review_accuracy: float
    accuracy: float
    strategy: str
    created: str
    task: str = ""

    def __post_init__(self) -> None:
        for name in ("trial", "model", "strategy"):
            if not getattr(self, name):
                raise HistoryError(f"field {name!r} must be a non-empty string")
        for name in _FLOAT_FIELDS:
            value = getattr(self, name)
            lo, hi = _RANGES[name]
            if not (math.isfinite(value) and lo <= value <= hi):
                raise HistoryError(f"field {name!r} must be finite in [{lo}, {hi}], got {value}")

    @classmethod
    def from_mapping(cls, row: Any, *, where: str = "") -> "HistoryRow":
        """Validates a mapping (e.g. a JSON object); ``where`` prefixes error messages.

        Examples:
            >>> row = dict(trial="t 0", model="a", temperature=0.0, latency=1.0, elapsed=2.0,
            ...            id="Item_0", result="x", quality=7.5, generation_accuracy=1.0,
            ...            variance=0.1, review_accuracy=0.9, accuracy=0.975,
            ...            strategy="REMOTE", created="")
            >>> HistoryRow.from_mapping(row).quality
            7.5
            >>> HistoryRow.from_mapping({**row, "quality": 11}, where="log.jsonl:3")
            Traceback (most recent call last):
            ...
            flame_jax.consensus._history.HistoryError: log.jsonl:3: field 'quality' must be ...
        """
        prefix = f"{where}: " if where else ""
        if not isinstance(row, Mapping):
            raise HistoryError(f"{prefix}a history row must be an object, got {type(row).__name__}")
        known = set(_STR_FIELDS) | set(_FLOAT_FIELDS)
        unknown = sorted(set(row) - known)
        if unknown:
            raise HistoryError(f"{prefix}unknown field(s) {unknown}")
        missing = sorted(known - {"task"} - set(row))
        if missing:
            raise HistoryError(f"{prefix}missing field(s) {missing}")
        values: dict[str, Any] = {}
        for name in _STR_FIELDS:
            if name not in row:
                continue
            if not isinstance(row[name], str):
                raise HistoryError(f"{prefix}field {name!r} must be a string, got {row[name]!r}")
            values[name] = row[name]
        for name in _FLOAT_FIELDS:
            value = row[name]
            if isinstance(value, bool) or not isinstance(value, int | float | np.number):
                raise HistoryError(f"{prefix}field {name!r} must be a number, got {value!r}")
            values[name] = float(value)
        try:
            return cls(**values)
        except HistoryError as e:
            raise HistoryError(f"{prefix}{e}") from None

    def to_json(self) -> dict[str, Any]:
        """The row as a JSON-ready dict (``task`` omitted when empty)."""
        out = dataclasses.asdict(self)
        if not out["task"]:
            del out["task"]
        return out


def _as_rows(rows: Iterable[Mapping[str, Any] | HistoryRow]) -> list[HistoryRow]:
    out = []
    for k, row in enumerate(rows):
        out.append(
            row if isinstance(row, HistoryRow) else HistoryRow.from_mapping(row, where=f"row {k}")
        )
    return out


def write_history(
    path: str | os.PathLike,
    rows: Iterable[Mapping[str, Any] | HistoryRow],
    *,
    append: bool = False,
) -> Path:
    """Validates ``rows`` and writes them as JSON Lines, atomically.

    With ``append`` the existing file (validated too) is kept in front of the new rows; the file
    is still replaced in one rename, so a failure leaves the old content intact.

    Examples:
        >>> import tempfile, pathlib
        >>> row = dict(trial="t 0", model="a", temperature=0.0, latency=1.0, elapsed=2.0,
        ...            id="Item_0", result="x", quality=7.5, generation_accuracy=1.0,
        ...            variance=0.1, review_accuracy=0.9, accuracy=0.975,
        ...            strategy="REMOTE", created="")
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "history.jsonl"
        >>> _ = write_history(path, [row])
        >>> _ = write_history(path, [{**row, "model": "b"}], append=True)
        >>> [r.model for r in read_history(path)]
        ['a', 'b']
    """
    new = _as_rows(rows)
    old = read_history(path) if append and Path(path).exists() else []
    lines = [json.dumps(r.to_json(), ensure_ascii=False, allow_nan=False) for r in old + new]
    return write_bytes_atomic(path, "".join(line + "\n" for line in lines).encode("utf-8"))


def read_history(path: str | os.PathLike) -> list[HistoryRow]:
    """Reads a JSON Lines history strictly; blank lines are skipped.

    Raises:
        FileNotFoundError: no such file.
        HistoryError: a line is not a JSON object of the schema (file, line and field named).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"performance history not found: {path}")
    rows = []
    with path.open("r", encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise HistoryError(f"{path}:{number}: not valid JSON ({e.msg})") from None
            rows.append(HistoryRow.from_mapping(obj, where=f"{path}:{number}"))
    return rows


class ModelProfiles(NamedTuple):
    """Per-model attributes aggregated from a history, in the order of ``names``.

    Attributes:
        names: the pool.
        quality: ``q_m`` (0-10) of the kept record (max) or the mean (mean); 0 without rows.
        accuracy: ``a_m = max(min_accuracy, accuracy)`` likewise; ``min_accuracy`` without rows.
        latency: median latency, seconds (``inf`` without rows).
        count: number of rows used.
    """

    names: tuple[str, ...]
    quality: np.ndarray
    accuracy: np.ndarray
    latency: np.ndarray
    count: np.ndarray


def model_profiles(
    history: Iterable[Mapping[str, Any] | HistoryRow],
    names: Sequence[str],
    *,
    aggregate: Literal["max", "mean"] = "max",
    exclude_strategies: Sequence[str] = ("CHEMISTRY",),
    min_accuracy: float = 0.1,
) -> ModelProfiles:
    """Aggregates each model's rows into ``(q_m, a_m)`` (consensus_spec §3.1).

    * ``"max"`` (the released code): the record with the highest accuracy (the first such row
      in file order on ties) gives both ``q_m`` and ``a_m``.
    * ``"mean"`` (recommended): the mean quality and the mean accuracy.

    Rows of ``exclude_strategies`` are dropped first (chemistry is never estimated from its own
    recommendations), and ``a_m = max(min_accuracy, ·)`` as in the released loader.

    Examples:
        >>> base = dict(trial="t 0", temperature=0.0, latency=1.0, elapsed=2.0, id="Item_0",
        ...             result="x", generation_accuracy=1.0, variance=0.1,
        ...             review_accuracy=0.9, strategy="REMOTE", created="")
        >>> rows = [{**base, "model": "a", "quality": 6.0, "accuracy": 0.5},
        ...         {**base, "model": "a", "quality": 9.0, "accuracy": 0.9}]
        >>> p = model_profiles(rows, ["a", "b"])
        >>> p.quality.tolist(), p.accuracy.tolist(), p.count.tolist()
        ([9.0, 0.0], [0.9, 0.1], [2, 0])
        >>> model_profiles(rows, ["a"], aggregate="mean").accuracy.round(4).tolist()
        [0.7]
    """
    if aggregate not in ("max", "mean"):
        raise ValueError(f"aggregate must be 'max' or 'mean', got {aggregate!r}")
    names = tuple(names)
    if len(set(names)) != len(names):
        raise ValueError(f"model names must be unique, got {list(names)}")
    index = {name: k for k, name in enumerate(names)}
    per_model: list[list[HistoryRow]] = [[] for _ in names]
    for row in _as_rows(history):
        if row.strategy in exclude_strategies or row.model not in index:
            continue
        per_model[index[row.model]].append(row)
    n = len(names)
    quality, accuracy = np.zeros(n), np.full(n, float(min_accuracy))
    latency, count = np.full(n, np.inf), np.zeros(n, dtype=np.int64)
    for k, rows in enumerate(per_model):
        if not rows:
            continue
        count[k] = len(rows)
        latency[k] = float(np.median([r.latency for r in rows]))
        if aggregate == "max":
            best = max(rows, key=lambda r: r.accuracy)  # first maximum in file order
            quality[k], acc = best.quality, best.accuracy
        else:
            quality[k] = float(np.mean([r.quality for r in rows]))
            acc = float(np.mean([r.accuracy for r in rows]))
        accuracy[k] = max(float(min_accuracy), acc)
    return ModelProfiles(names, quality, accuracy, latency, count)


def chemistry_from_history(
    history: Iterable[Mapping[str, Any] | HistoryRow],
    names: Sequence[str],
    *,
    mode: Literal["replicate", "informative"] = "replicate",
    aggregate: Literal["max", "mean"] | None = None,
    usage_threshold: float = 0.5,
) -> tuple[Chemistry, ModelProfiles]:
    """Pairwise chemistry of the pool ``names`` from a performance history.

    ``aggregate`` defaults to ``"max"`` for the replicate mode and ``"mean"`` for the informative
    mode (consensus_spec §5). The subset costs come from :func:`host_subset_costs`: the per-model
    penalties are computed in float64, so an accuracy of ``1 - 1e-9`` keeps a non-zero cost (in
    float32 it would round to 1 and the replicate chemistry would skip the model).

    Examples:
        >>> base = dict(trial="t 0", temperature=0.0, latency=1.0, elapsed=2.0, id="Item_0",
        ...             result="x", generation_accuracy=1.0, variance=0.1,
        ...             review_accuracy=0.9, strategy="REMOTE", created="")
        >>> rows = [{**base, "model": m, "quality": q, "accuracy": a}
        ...         for m, q, a in [("a", 9, 0.9), ("b", 6, 0.7), ("c", 4, 0.6), ("d", 8, 0.4)]]
        >>> chem, _ = chemistry_from_history(rows, ["a", "b", "c", "d"])
        >>> chem.value.tolist()[0]
        [0.0, 1.0, 1.0, 0.0]
    """
    if aggregate is None:
        aggregate = "max" if mode == "replicate" else "mean"
    profiles = model_profiles(history, names, aggregate=aggregate)
    # The penalties (1 - a, the quality factor) in float64 on the host: in float32 an accuracy
    # within 6e-8 of 1 would cost exactly 0, and the replicate chemistry skips zero costs.
    costs = host_subset_costs(profiles.quality, profiles.accuracy, usage_threshold=usage_threshold)
    chem = pairwise_chemistry(
        costs.cost, costs.defined if mode == "informative" else None, mode=mode
    )
    return chem, profiles


def recommend_from_history(
    history: Sequence[Mapping[str, Any] | HistoryRow],
    names: Sequence[str],
    size: int,
    *,
    mode: Literal["replicate", "informative"] = "replicate",
    aggregate: Literal["max", "mean"] | None = None,
    usage_threshold: float = 0.5,
    alpha: float = 0.5,
    beta: float = 0.5,
) -> tuple[str, ...]:
    """The CHEMISTRY strategy's ensemble of exactly ``size`` members of ``names``.

    Profiles, chemistry (:func:`chemistry_from_history`), then :func:`recommend_ensemble` with
    ``size`` fixed and ties broken by mean accuracy, median latency, then pool order. Returns the
    members in pool order. Deterministic: independent of ``PYTHONHASHSEED`` and row order.

    Examples:
        >>> base = dict(trial="t 0", temperature=0.0, latency=1.0, elapsed=2.0, id="Item_0",
        ...             result="x", generation_accuracy=1.0, variance=0.1,
        ...             review_accuracy=0.9, strategy="REMOTE", created="")
        >>> rows = [{**base, "model": m, "quality": q, "accuracy": a}
        ...         for m, q, a in [("a", 9, 0.9), ("b", 6, 0.7), ("c", 4, 0.6), ("d", 8, 0.4)]]
        >>> recommend_from_history(rows, ["a", "b", "c", "d"], 2)
        ('a', 'b')
    """
    names = tuple(names)
    if not 1 <= size <= len(names):
        raise ValueError(f"CHEMISTRY: ensemble size {size} must be in 1..{len(names)}")
    if len(names) == 1:
        return names
    chem, profiles = chemistry_from_history(
        history, names, mode=mode, aggregate=aggregate, usage_threshold=usage_threshold
    )
    rec = recommend_ensemble(
        chem,
        size=size,
        alpha=alpha,
        beta=beta,
        accuracy=np.asarray(profiles.accuracy, np.float32),
        latency=np.asarray(profiles.latency, np.float32),
    )
    members = np.asarray(rec.members)
    return tuple(name for name, keep in zip(names, members, strict=True) if keep)
