"""Strict parsing of plain data (JSON, YAML) into frozen dataclasses.

One parser for every typed record read from a file: configs given on the command line and the
records of a synthetic cohort's ``rules.json``. Unknown keys, missing required keys and values of
the wrong type are errors that name the path of the field, e.g. ``classes[2].members[0]``; the
dataclass's own ``__post_init__`` validation runs last. Only plain values are accepted, so
parsing never executes anything.
"""

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

__all__ = ["RecordError", "record_from_mapping", "record_to_plain"]

R = TypeVar("R")


class RecordError(ValueError):
    """Plain data does not fit a record type; the message names the field path."""


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _coerce(value: Any, annotation: Any, path: str) -> Any:
    where = path or "value"
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arm in typing.get_args(annotation):
            if arm is type(None):
                if value is None:
                    return None
                continue
            try:
                return _coerce(value, arm, path)
            except RecordError as e:
                errors.append(str(e))
        raise RecordError(errors[0] if errors else f"{where}: value {value!r} is not allowed")
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise RecordError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(annotation)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{path}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise RecordError(f"{where}: expected {len(args)} items, got {len(value)}")
        return tuple(
            _coerce(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True))
        )
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise RecordError(f"{where}: expected true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise RecordError(f"{where}: expected an integer, got {value!r}")
    if annotation is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise RecordError(f"{where}: expected a number, got {value!r}")
    if annotation is str:
        if isinstance(value, str):
            return value
        raise RecordError(f"{where}: expected a string, got {value!r}")
    if dataclasses.is_dataclass(annotation):
        return _build(annotation, value, path)
    raise RecordError(f"{where}: unsupported field type {annotation!r}")


def _build(cls: type[R], data: Any, path: str) -> R:
    where = path or "value"
    if not isinstance(data, Mapping):
        raise RecordError(f"{where}: expected a mapping of {cls.__name__} fields, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise RecordError(
            f"{_join(path, unknown[0])}: unknown key for {cls.__name__} "
            f"(known: {', '.join(fields)})"
        )
    for name, f in fields.items():
        no_default = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if no_default and name not in data:
            raise RecordError(f"{_join(path, name)}: missing")
    kwargs = {k: _coerce(v, hints[k], _join(path, k)) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except ValueError as e:
        raise RecordError(f"{path}: {e}" if path else str(e)) from None


def record_from_mapping(cls: type[R], data: Any, *, where: str = "") -> R:
    """Builds the frozen dataclass ``cls`` from plain data, strictly.

    Fields with defaults may be left out; unknown keys, missing required keys and wrong types are
    errors. Supported field types: bool, int, float, str, ``X | None``, ``tuple[X, ...]``, fixed
    tuples and nested dataclasses (also inside tuples).

    Args:
      cls: the dataclass.
      data: a mapping (parsed JSON or YAML).
      where: prefix of every error message, e.g. the file name.

    Raises:
      RecordError: naming ``where`` and the field path.

    Examples:
      >>> @dataclasses.dataclass(frozen=True)
      ... class Pair:
      ...     a: int
      ...     b: tuple[float, ...] = ()
      >>> record_from_mapping(Pair, {"a": 1, "b": [2, 3.5]})
      Pair(a=1, b=(2.0, 3.5))
      >>> record_from_mapping(Pair, {"a": 1, "b": [2, "x"]}, where="pair.json")
      Traceback (most recent call last):
      ...
      flame_jax._records.RecordError: pair.json: b[1]: expected a number, got 'x'
    """
    try:
        return _build(cls, data, "")
    except RecordError as e:
        raise RecordError(f"{where}: {e}" if where else str(e)) from None


def record_to_plain(record: Any) -> Any:
    """The inverse of :func:`record_from_mapping`: dataclasses to dicts, tuples to lists."""
    if dataclasses.is_dataclass(record) and not isinstance(record, type):
        return {
            f.name: record_to_plain(getattr(record, f.name)) for f in dataclasses.fields(record)
        }
    if isinstance(record, tuple | list):
        return [record_to_plain(v) for v in record]
    return record
