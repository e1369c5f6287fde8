"""Pallas kernels for flame_jax (installed under the import name ``flame_jax_kernels``).

Each module exports the kernel op (``pallas_*``, with ``interpret=`` for CPU tests), a pure-jnp
``reference_*`` with the same signature, and a dispatcher that runs the compiled kernel on GPU
(TPU and CPU use the reference).
"""

from flame_jax_kernels.logprobs import (
    pallas_token_logprobs,
    reference_token_logprobs,
    token_logprobs,
)
from flame_jax_kernels.segments import (
    pallas_segment_broadcast,
    pallas_segment_sum,
    reference_segment_broadcast,
    reference_segment_sum,
    segment_broadcast,
    segment_sum,
)

__all__ = [
    "pallas_segment_broadcast",
    "pallas_segment_sum",
    "pallas_token_logprobs",
    "reference_segment_broadcast",
    "reference_segment_sum",
    "reference_token_logprobs",
    "segment_broadcast",
    "segment_sum",
    "token_logprobs",
]
