"""The numerical core works without any extra: the pure-function example on a core-only install.

``make check-core`` (run by CI before ``make test``) creates a fresh virtual environment, installs
the package without extras (``pip install -c constraints.txt .``) and runs this file as a script:
no extra's module may be importable there, every core subpackage must import, the extras' entry
points must say which extra to install, and README.md's pure-function example must print its
numbers. Under pytest the same script runs in a subprocess that hides the extras' modules from
the full test environment.
"""

import contextlib
import importlib
import importlib.abc
import importlib.util
import io
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
CORE_PACKAGES = (
    "flame_jax",
    "flame_jax.baselines",
    "flame_jax.cli",
    "flame_jax.config",
    "flame_jax.consensus",
    "flame_jax.data",
    "flame_jax.flame",
    "flame_jax.graph",
    "flame_jax.metrics",
    "flame_jax.plots",
    "flame_jax.policy",
    "flame_jax.rl",
    "flame_jax.train",
    "flame_jax_kernels",
)

# README.md's "The pure functions" example and what it prints.
EXAMPLE = r"""
import jax.numpy as jnp
import numpy as np

from flame_jax import rl
from flame_jax.consensus import vancouver
from flame_jax.metrics import jaccard


def show(x):  # rounded, for printing
    return np.round(np.asarray(x, np.float64), 3).tolist()


# One add prompt, a group of 2 completions; P0 = {aspirin}, truth = {aspirin, warfarin}.
vocab = rl.DrugVocabulary(names=("aspirin", "warfarin", "insulin"))
texts = ("warfarin\ninsulin", "insulin\nnot a drug")
eps = [rl.parse_episode(t, task="add", initial=[0], vocabulary=vocab) for t in texts]
drug, delta, valid, mask = (jnp.asarray(a) for a in rl.pad_episodes([eps], max_steps=2))
p0, truth = jnp.array([[True, False, False]]), jnp.array([[True, True, False]])
ddi = jnp.array([[0, 1, 0], [1, 0, 0], [0, 0, 0]], bool)  # aspirin-warfarin interact

phi = rl.potentials(p0, truth, ddi, drug, delta, valid, mask)  # Phi_J, Phi_D, Phi_F of s_0..s_T
r = rl.shaped_rewards(phi, mask, ddi_weight=0.5)  # lambda 0.5; steps telescope to the outcome
print("step rewards", show(r.steps), "outcome", show(r.outcome))
print("outcome advantages", show(rl.group_advantages(r.outcome)))
print("step advantages", show(rl.step_group_advantages(r.steps, mask)))
print("Jaccard of P0", show(jaccard(p0, truth)))

grades = jnp.array([[0.0, 0.8, 0.35], [0.9, 0.0, 0.30], [0.0, 0.0, 0.0]])  # reviewer 2 broken
res = vancouver(grades, ~jnp.eye(3, dtype=bool))  # mask: no self-review
print("consensus", show(res.grade), "reviewer quality", show(res.reviewer_quality))
"""
EXPECTED = """\
step rewards [[[0.0, 0.0], [-0.167, -0.2]]] outcome [[0.0, -0.367]]
outcome advantages [[0.707, -0.707]]
step advantages [[[0.859, 0.859], [-0.703, -1.015]]]
Jaccard of P0 [0.5]
consensus [0.896, 0.797, 0.328] reviewer quality [0.968, 0.96, 0.0]
"""


class _HideModules(importlib.abc.MetaPathFinder):
    """Makes the named top-level modules (and their submodules) unimportable."""

    def __init__(self, names):
        self.names = frozenset(names)

    def find_spec(self, fullname, path=None, target=None):
        if fullname.partition(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {fullname!r} (hidden)", name=fullname)
        return None


def _expect_import_error(call, text):
    try:
        call()
    except ImportError as error:
        assert text in str(error), f"{error!r} does not say {text!r}"
    else:
        raise AssertionError(f"expected an ImportError that says {text!r}")


def check_core_only(*, hide_extras: bool) -> str:
    """Runs every check; returns the example's output. ``hide_extras``: simulate a core install."""
    from flame_jax._extras import EXTRA_OF_MODULE

    if hide_extras:
        sys.meta_path.insert(0, _HideModules(EXTRA_OF_MODULE))
    else:
        present = [m for m in sorted(EXTRA_OF_MODULE) if importlib.util.find_spec(m) is not None]
        assert not present, f"the core install pulled in extras' modules: {present}"
    for name in CORE_PACKAGES:
        module = importlib.import_module(name)
        if not hide_extras:
            where = pathlib.Path(module.__file__).resolve()
            assert pathlib.Path(sys.prefix).resolve() in where.parents, f"{name}: not installed"

    from flame_jax.graph import smiles_to_graph

    _expect_import_error(lambda: importlib.import_module("flame_jax.serve"), "flame-jax[serve]")
    _expect_import_error(lambda: smiles_to_graph("CCO"), "flame-jax[data]")

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(EXAMPLE, "README.md pure-function example", "exec"), {"__name__": "example"})
    assert out.getvalue() == EXPECTED, f"the example printed\n{out.getvalue()}"
    return out.getvalue()


def test_the_pure_function_example_runs_without_any_extra():
    result = subprocess.run(
        [sys.executable, __file__, "--hide-extras"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.endswith("core-only checks passed\n"), result.stdout


if __name__ == "__main__":
    printed = check_core_only(hide_extras="--hide-extras" in sys.argv[1:])
    print(printed, end="")
    print("core-only checks passed")
