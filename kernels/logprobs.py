"""Fused per-token log-probabilities over vocabulary chunks (log-sum-exp + gather).

logp[n] = x[n, y_n] - logsumexp_v x[n, v], computed chunk by chunk over the vocabulary with an
online log-sum-exp, so the float32 ``[tokens, vocab]`` log-softmax is never materialised. The
backward pass, d logp / d x[n, v] = g_n (1[v = y_n] - softmax(x_n)_v), is a second kernel that
recomputes the softmax chunk by chunk from the saved log-sum-exp (``jax.custom_vjp``).

References:
    Milakov & Gimelshein, "Online normalizer calculation for softmax", arXiv 1805.02867 (2018).
"""

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from flame_jax_kernels._dispatch import kernel_backend_available

__all__ = ["pallas_token_logprobs", "reference_token_logprobs", "token_logprobs"]


def reference_token_logprobs(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """log softmax(logits)[labels] with plain jnp (float32 accumulation).

    Args:
        logits: ``[..., vocab]``.
        labels: ``[...]`` int token ids.

    Returns:
        ``[...]`` float32 log-probabilities.

    Examples:
        >>> import jax.numpy as jnp
        >>> reference_token_logprobs(jnp.zeros((2, 4)), jnp.array([0, 3])).tolist()
        [-1.3862943649291992, -1.3862943649291992]
    """
    x = logits.astype(jnp.float32)
    picked = jnp.take_along_axis(x, labels[..., None].astype(jnp.int32), axis=-1)[..., 0]
    return picked - jax.nn.logsumexp(x, axis=-1)


def _forward_kernel(x_ref, y_ref, logp_ref, lse_ref, *, chunk, num_chunks):
    rows = x_ref.shape[0]
    labels = y_ref[...]

    def body(j, carry):
        m, s, picked = carry
        x = x_ref[:, pl.ds(j * chunk, chunk)].astype(jnp.float32)
        cols = j * chunk + jax.lax.broadcasted_iota(jnp.int32, (rows, chunk), 1)
        m_new = jnp.maximum(m, x.max(axis=1))
        s = s * jnp.exp(m - m_new) + jnp.exp(x - m_new[:, None]).sum(axis=1)
        picked = picked + jnp.where(cols == labels[:, None], x, 0.0).sum(axis=1)
        return m_new, s, picked

    init = (
        jnp.full((rows,), -jnp.inf, jnp.float32),
        jnp.zeros((rows,), jnp.float32),
        jnp.zeros((rows,), jnp.float32),
    )
    m, s, picked = jax.lax.fori_loop(0, num_chunks, body, init)
    lse = m + jnp.log(s)
    lse_ref[...] = lse
    logp_ref[...] = picked - lse


def _backward_kernel(x_ref, y_ref, lse_ref, g_ref, dx_ref, *, chunk, num_chunks):
    rows = x_ref.shape[0]
    labels = y_ref[...]
    lse = lse_ref[...]
    g = g_ref[...]

    def body(j, carry):
        x = x_ref[:, pl.ds(j * chunk, chunk)].astype(jnp.float32)
        cols = j * chunk + jax.lax.broadcasted_iota(jnp.int32, (rows, chunk), 1)
        onehot = (cols == labels[:, None]).astype(jnp.float32)
        dx = g[:, None] * (onehot - jnp.exp(x - lse[:, None]))
        dx_ref[:, pl.ds(j * chunk, chunk)] = dx.astype(dx_ref.dtype)
        return carry

    jax.lax.fori_loop(0, num_chunks, body, 0)


def _pad(logits, labels, block_rows, chunk):
    n, vocab = logits.shape
    n_pad = pl.cdiv(n, block_rows) * block_rows
    v_pad = pl.cdiv(vocab, chunk) * chunk
    # Padded vocabulary columns hold the dtype's lowest value: exp() of them is exactly 0.
    low = jnp.finfo(logits.dtype).min
    logits = jnp.pad(logits, ((0, n_pad - n), (0, v_pad - vocab)), constant_values=low)
    labels = jnp.pad(labels.astype(jnp.int32), (0, n_pad - n))
    return logits, labels


def _forward(logits, labels, block_rows, chunk, interpret):
    n = logits.shape[0]
    x, y = _pad(logits, labels, block_rows, chunk)
    n_pad, v_pad = x.shape
    kernel = functools.partial(_forward_kernel, chunk=chunk, num_chunks=v_pad // chunk)
    logp, lse = pl.pallas_call(
        kernel,
        grid=(n_pad // block_rows,),
        in_specs=[
            pl.BlockSpec((block_rows, v_pad), lambda i: (i, 0)),
            pl.BlockSpec((block_rows,), lambda i: (i,)),
        ],
        out_specs=[
            pl.BlockSpec((block_rows,), lambda i: (i,)),
            pl.BlockSpec((block_rows,), lambda i: (i,)),
        ],
        out_shape=[
            jax.ShapeDtypeStruct((n_pad,), jnp.float32),
            jax.ShapeDtypeStruct((n_pad,), jnp.float32),
        ],
        interpret=interpret,
        name="token_logprobs_fwd",
    )(x, y)
    return logp[:n], lse[:n]


def _backward(logits, labels, lse, g, block_rows, chunk, interpret):
    n, vocab = logits.shape
    x, y = _pad(logits, labels, block_rows, chunk)
    n_pad, v_pad = x.shape
    lse = jnp.pad(lse, (0, n_pad - n))
    g = jnp.pad(g.astype(jnp.float32), (0, n_pad - n))
    kernel = functools.partial(_backward_kernel, chunk=chunk, num_chunks=v_pad // chunk)
    dx = pl.pallas_call(
        kernel,
        grid=(n_pad // block_rows,),
        in_specs=[
            pl.BlockSpec((block_rows, v_pad), lambda i: (i, 0)),
            pl.BlockSpec((block_rows,), lambda i: (i,)),
            pl.BlockSpec((block_rows,), lambda i: (i,)),
            pl.BlockSpec((block_rows,), lambda i: (i,)),
        ],
        out_specs=pl.BlockSpec((block_rows, v_pad), lambda i: (i, 0)),
        out_shape=jax.ShapeDtypeStruct((n_pad, v_pad), logits.dtype),
        interpret=interpret,
        name="token_logprobs_bwd",
    )(x, y, lse, g)
    return dx[:n, :vocab]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _token_logprobs_2d(logits, labels, block_rows, chunk, interpret):
    return _forward(logits, labels, block_rows, chunk, interpret)[0]


def _fwd(logits, labels, block_rows, chunk, interpret):
    logp, lse = _forward(logits, labels, block_rows, chunk, interpret)
    return logp, (logits, labels, lse)


def _bwd(block_rows, chunk, interpret, residuals, g):
    logits, labels, lse = residuals
    return _backward(logits, labels, lse, g, block_rows, chunk, interpret), None


_token_logprobs_2d.defvjp(_fwd, _bwd)


@functools.partial(jax.jit, static_argnames=("block_rows", "chunk", "interpret"))
def pallas_token_logprobs(
    logits: jax.Array,
    labels: jax.Array,
    *,
    block_rows: int = 16,
    chunk: int = 1024,
    interpret: bool = False,
) -> jax.Array:
    """Pallas kernel for ``reference_token_logprobs`` (differentiable in ``logits``).

    Args:
        logits: ``[..., vocab]`` (any float dtype; accumulation in float32).
        labels: ``[...]`` int token ids in ``[0, vocab)``.
        block_rows: tokens per program (a power of two on GPU).
        chunk: vocabulary columns per inner iteration (a power of two on GPU).
        interpret: run the kernel in the Pallas interpreter (CPU tests).

    Returns:
        ``[...]`` float32 log-probabilities.

    Examples:
        >>> import jax.numpy as jnp
        >>> out = pallas_token_logprobs(jnp.zeros((2, 4)), jnp.array([0, 3]), chunk=2,
        ...                             interpret=True)
        >>> [round(v, 4) for v in out.tolist()]
        [-1.3863, -1.3863]
    """
    lead = labels.shape
    vocab = logits.shape[-1]
    flat = _token_logprobs_2d(
        logits.reshape(-1, vocab), labels.reshape(-1), block_rows, chunk, interpret
    )
    return flat.reshape(lead)


def token_logprobs(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-token log-probabilities: the Pallas kernel on GPU, the jnp reference elsewhere.

    Args:
        logits: ``[..., vocab]``.
        labels: ``[...]`` int token ids.

    Returns:
        ``[...]`` float32 log softmax(logits)[labels].

    Examples:
        >>> import jax.numpy as jnp
        >>> [round(v, 4) for v in token_logprobs(jnp.zeros((1, 2)), jnp.array([1])).tolist()]
        [-0.6931]
    """
    if kernel_backend_available():
        return pallas_token_logprobs(logits, labels)
    return reference_token_logprobs(logits, labels)
