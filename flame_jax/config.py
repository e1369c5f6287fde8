"""YAML <-> frozen config dataclasses, strictly: unknown keys and wrong types are errors.

The product's one config reader and writer (the bottom layer: every package may use it). Library
functions take frozen configs, never YAML or dicts; the CLI and the run drivers parse files here
and write the resolved config next to every run's outputs.
"""

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from flame_jax._io import write_bytes_atomic
from flame_jax._records import RecordError, record_from_mapping, record_to_plain

__all__ = ["ConfigError", "config_from_mapping", "dump_config", "load_config"]

C = TypeVar("C")


# Config files are parsed by the project's one strict record parser; its error is the CLI's.
ConfigError = RecordError


def config_from_mapping(cls: type[C], data: Any, *, where: str = "config") -> C:
    """Builds the frozen config dataclass ``cls`` from a mapping (see ``record_from_mapping``).

    Missing keys take the class defaults; unknown keys and wrong types are errors, and the class's
    own ``__post_init__`` validation runs. Errors are :class:`ConfigError` prefixed with ``where``.
    """
    return record_from_mapping(cls, data, where=where)


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


def dump_config(config: Any, path: str | os.PathLike) -> Path:
    """Writes the resolved ``config`` as YAML (atomically); :func:`load_config` reads it back."""
    text = yaml.safe_dump(record_to_plain(config), sort_keys=False, allow_unicode=True)
    return write_bytes_atomic(path, f"# {type(config).__name__}\n{text}".encode())
