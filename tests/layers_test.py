"""The package layers of DESIGN §3, enforced on every import in the library (AST, so imports inside
functions count too)."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "flame_jax"

# The bottom: modules of the top-level package that every layer may use.
BOTTOM = {"config", "arraytypes", "plots", "_io", "_records", "_rows", "_extras"}
# package -> the packages it may import (besides itself and the bottom).
ALLOWED = {
    "data": set(),
    "metrics": set(),
    "policy": set(),
    "train": set(),
    "rl": {"data"},
    "graph": {"data"},
    "baselines": {"data", "graph", "metrics", "train"},
    "consensus": {"data", "baselines", "metrics"},
    "flame": {"data", "graph", "baselines", "metrics", "policy", "rl", "train", "consensus"},
    "serve": {"policy", "consensus"},
}
ANYTHING = {"cli", "integrations"}  # the bottom itself imports no package


def _package(path: pathlib.Path) -> str:
    rel = path.relative_to(ROOT).parts
    return rel[0].removesuffix(".py") if len(rel) == 1 else rel[0]


def _imports(path: pathlib.Path):
    """(line, dotted name) of every absolute flame_jax import in ``path``, at any depth."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            base = node.module
            if base == "flame_jax":  # from flame_jax import rl, plots
                for alias in node.names:
                    yield node.lineno, f"flame_jax.{alias.name}"
            else:
                yield node.lineno, base
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level:
            pytest.fail(f"{path}:{node.lineno}: relative import; the house uses absolute ones")


def _violations():
    out = []
    for path in sorted(ROOT.rglob("*.py")):
        pkg = _package(path)
        for line, name in _imports(path):
            parts = name.split(".")
            if parts[0] != "flame_jax" or len(parts) < 2:
                continue
            target = parts[1]
            where = f"{path.relative_to(ROOT.parent)}:{line}: {name}"
            if target == pkg:
                continue
            if len(parts) > 2 and parts[2].startswith("_"):
                out.append(f"{where} (private module of another package)")
            if pkg in ANYTHING or (target in BOTTOM and pkg not in BOTTOM):
                continue
            if pkg in BOTTOM and target in BOTTOM:
                continue
            if target not in ALLOWED.get(pkg, set()):
                out.append(f"{where} ({pkg} -> {target} is outside DESIGN §3's map)")
    return out


def test_imports_follow_the_layer_map():
    assert _violations() == []


def test_every_package_is_in_the_map():
    packages = {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()}
    assert packages <= set(ALLOWED) | ANYTHING, packages - set(ALLOWED) - ANYTHING


def test_the_walker_sees_imports_inside_functions(tmp_path, monkeypatch):
    # A check that cannot fail is a defect: plant a hidden edge and a private import.
    fake = tmp_path / "flame_jax"
    (fake / "metrics").mkdir(parents=True)
    (fake / "metrics" / "__init__.py").write_text("")
    (fake / "metrics" / "_x.py").write_text(
        "def f():\n    from flame_jax.flame import run_demo\n    import flame_jax.rl._episode\n"
    )
    monkeypatch.setitem(globals(), "ROOT", fake)
    found = _violations()
    assert any("metrics -> flame" in v for v in found), found
    assert any("flame_jax.rl._episode (private" in v for v in found), found
