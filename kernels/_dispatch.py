"""Backend check shared by the kernels: compiled Pallas on GPU, the reference elsewhere.

TPU is deliberately routed to the reference: the kernels' 1-D label blocks have not been checked
against Mosaic's block-shape rules, and no TPU was available to test them.
"""

import jax


def kernel_backend_available() -> bool:
    """True when the default backend runs the compiled Pallas kernels (GPU)."""
    return jax.default_backend() == "gpu"
