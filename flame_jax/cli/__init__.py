"""The ``flame-jax`` command line (thin: it parses arguments and calls library functions)."""

from flame_jax.cli.main import build_parser, main
from flame_jax.config import ConfigError, config_from_mapping, dump_config, load_config

__all__ = [
    "ConfigError",
    "build_parser",
    "config_from_mapping",
    "dump_config",
    "load_config",
    "main",
]
