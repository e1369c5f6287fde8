"""flame_jax: LLM-based medication recommendation research in JAX.

Subpackages (import them directly; this top level stays light so the CLI starts fast):

* ``flame_jax.data``: the dataset format, its loader and validator, the synthetic cohort, padding.
* ``flame_jax.metrics``: set metrics (Jaccard, F1, PRAUC, DDI rate, #Med) and the bootstrap
  protocol.
* ``flame_jax.graph``: the single entry point to jraph (with its compatibility shim).
* ``flame_jax.cli``: the ``flame-jax`` command.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
