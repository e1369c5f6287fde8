"""Every public name resolves, and every package directory is installed."""

import importlib
import pathlib
import tomllib

import pytest

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
