"""Array annotations shared across flame_jax.

Axis vocabulary (use these words in jaxtyping shape strings and in docstrings): ``batch``,
``group``, ``steps``, ``tokens``, ``vocab``, ``meds``, ``codes``, ``visits``, ``models``,
``items``, ``dim``, ``rounds``.
"""

from jaxtyping import Array, ArrayLike, Bool, Float, Int, Num, PRNGKeyArray, Scalar

__all__ = ["Array", "ArrayLike", "Bool", "Float", "Int", "Num", "PRNGKeyArray", "Scalar"]
