"""Every public name resolves, every package directory is installed, and the extras add up."""

import importlib
import importlib.metadata
import pathlib
import re
import tomllib

import pytest

from flame_jax._extras import EXTRA_OF_MODULE

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = sorted(
    ".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "flame_jax").rglob("__init__.py")
)


@pytest.mark.parametrize("name", PACKAGES)
def test_public_names_resolve(name):
    module = importlib.import_module(name)
    assert hasattr(module, "__all__"), f"{name} has no __all__"
    for public in module.__all__:
        assert getattr(module, public, None) is not None, f"{name}.{public} does not resolve"


def test_every_package_is_listed_in_pyproject():
    listed = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    assert sorted(p for p in listed if p.startswith("flame_jax.") or p == "flame_jax") == PACKAGES
    assert "flame_jax_kernels" in listed


def test_kernels_installed_under_their_own_name():
    kernels = importlib.import_module("flame_jax_kernels")
    assert pathlib.Path(kernels.__file__).resolve().parent == ROOT / "kernels"


def _requirements(strings):
    """{normalised distribution name: specifier} of PEP 508 strings (no markers used here)."""
    parsed = {}
    for text in strings:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)(\[[^\]]*\])?\s*(.*)", text)
        assert match, f"unparsed requirement {text!r}"
        parsed[re.sub(r"[-_.]+", "-", match[1]).lower()] = (match[2] or "") + match[3]
    return parsed


PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
CORE = _requirements(PROJECT["dependencies"])
EXTRAS = {name: _requirements(reqs) for name, reqs in PROJECT["optional-dependencies"].items()}
LOCK = _requirements(
    line.strip() for line in (ROOT / "constraints.txt").read_text().splitlines() if line.strip()
)


def test_core_has_lower_bounds_and_no_edges():
    assert {"jax", "jaxlib", "flax", "optax", "numpy", "jaxtyping", "jraph"} <= set(CORE)
    for name, spec in CORE.items():
        assert spec.startswith(">=") or name == "jraph", f"{name}{spec}: core takes lower bounds"
    assert CORE["jraph"] == "==0.0.6.dev0"  # the last release, which the shim patches
    for extra in ("data", "serve", "plots"):
        assert not set(CORE) & set(EXTRAS[extra]), f"core repeats the [{extra}] extra"


def test_extras_exist_and_all_is_the_whole_command_line_stack():
    assert {"data", "serve", "plots", "bench", "all", "test"} <= set(EXTRAS)
    assert EXTRAS["all"] == {"flame-jax": "[data,serve,plots]"}
    assert EXTRAS["test"]["flame-jax"] == "[all]"
    for extra, requirements in EXTRAS.items():
        for name, spec in requirements.items():
            assert name == "flame-jax" or spec.startswith(">="), f"[{extra}] {name}{spec}"


def test_every_requirement_is_in_the_lock():
    for extra, requirements in [("core", CORE), *EXTRAS.items()]:
        missing = sorted(set(requirements) - set(LOCK) - {"flame-jax"})
        assert not missing, f"[{extra}] requirements missing from constraints.txt: {missing}"


def test_the_install_hints_match_the_extras():
    providers = importlib.metadata.packages_distributions()
    table = {}
    for module, extra in EXTRA_OF_MODULE.items():
        names = {re.sub(r"[-_.]+", "-", d).lower() for d in providers.get(module, [])}
        assert names & set(EXTRAS[extra]), f"{module}: no distribution of it in [{extra}]"
        for name in names & set(EXTRAS[extra]):
            table[name] = extra
    for extra in ("data", "serve", "plots"):
        for name in EXTRAS[extra]:
            assert table.get(name) == extra, f"[{extra}] {name} has no entry in _extras.py"
