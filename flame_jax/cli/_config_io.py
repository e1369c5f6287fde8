"""YAML <-> frozen config dataclasses, strictly: unknown keys and wrong types are errors.

Library code never sees YAML or dicts; the CLI parses them here into the frozen configs and writes
the resolved config next to every run's outputs.
"""

import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from flame_jax.data._io import write_bytes_atomic

__all__ = ["ConfigError", "config_from_mapping", "dump_config", "load_config"]

C = TypeVar("C")


class ConfigError(ValueError):
    """A config file or override does not fit the config class; the message names the key."""


def _coerce(value: Any, annotation: Any, where: str) -> Any:
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
                return _coerce(value, arm, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: value {value!r} is not allowed")
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(annotation)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
        return tuple(
            _coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(args, value, strict=True))
        )
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if annotation is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if annotation is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    if dataclasses.is_dataclass(annotation):
        return config_from_mapping(annotation, value, where=where)
    raise ConfigError(f"{where}: unsupported config type {annotation!r}")


def config_from_mapping(cls: type[C], data: Any, *, where: str = "config") -> C:
    """Builds the frozen dataclass ``cls`` from a mapping, rejecting unknown keys.

    Missing keys take the class defaults; the class's own ``__post_init__`` validation runs, and its
    ``ValueError`` is re-raised as :class:`ConfigError` prefixed with ``where``.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping of {cls.__name__} fields, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key {unknown[0]!r} for {cls.__name__} (known: {', '.join(fields)})"
        )
    kwargs = {k: _coerce(v, hints[k], f"{where}: key {k!r}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except ValueError as e:
        raise ConfigError(f"{where}: {e}") from None


def load_config(
    cls: type[C], path: str | os.PathLike | None, overrides: Mapping[str, Any] | None = None
) -> C:
    """Reads ``cls`` from a YAML file (defaults when ``path`` is None), then applies overrides.

    Overrides are applied on top of the file (command-line flags win); ``None`` values are ignored.
    """
    data: dict[str, Any] = {}
    where = "config"
    if path is not None:
        where = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"{path}: cannot be read ({e.strerror})") from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({e})") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
        data.update(loaded or {})
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return config_from_mapping(cls, data, where=where)


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def dump_config(config: Any, path: str | os.PathLike) -> Path:
    """Writes the resolved ``config`` as YAML (atomically); :func:`load_config` reads it back."""
    text = yaml.safe_dump(_plain(config), sort_keys=False, allow_unicode=True)
    return write_bytes_atomic(path, f"# {type(config).__name__}\n{text}".encode())
