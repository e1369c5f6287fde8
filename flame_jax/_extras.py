"""Which optional extra provides each third-party module outside the core, for install hints.

``pip install flame-jax`` installs the numerical core only; the edges (tables, molecules,
datasets, tokenizers, the server, plots) come with extras. A function that needs an extra imports
it where it is used, so a core-only install fails there, with a message that names the extra,
rather than on ``import flame_jax``. ``tests/api_test.py`` checks this table against
pyproject's extras.
"""

__all__ = ["EXTRA_OF_MODULE", "missing_extra"]

# Top-level import name -> the extra whose distributions provide it.
EXTRA_OF_MODULE = {
    "array_record": "data",
    "grain": "data",
    "pandas": "data",
    "pyarrow": "data",
    "rdkit": "data",
    "tensorflow_datasets": "data",
    "tokenizers": "data",
    "transformers": "data",
    "fastapi": "serve",
    "h11": "serve",
    "httpx": "serve",
    "pydantic": "serve",
    "starlette": "serve",
    "uvicorn": "serve",
    "matplotlib": "plots",
}


def missing_extra(error: ImportError) -> str | None:
    """The extra that provides the module missing in ``error`` (or in its cause), or None.

    Examples:
        >>> missing_extra(ModuleNotFoundError("No module named 'pandas'", name="pandas"))
        'data'
        >>> missing_extra(ModuleNotFoundError("No module named 'jax'", name="jax")) is None
        True
    """
    while error is not None:
        if isinstance(error, ModuleNotFoundError) and error.name:
            return EXTRA_OF_MODULE.get(error.name.partition(".")[0])
        error = error.__cause__
    return None
