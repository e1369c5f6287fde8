"""Backend check shared by the kernels: compiled Pallas on GPU / TPU, the reference elsewhere."""

import jax


def kernel_backend_available() -> bool:
    """True when the default backend can run the compiled Pallas kernels (GPU or TPU)."""
    return jax.default_backend() in ("gpu", "tpu")
