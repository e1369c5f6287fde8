"""Tiny random decoders with weights large enough that greedy decoding does not just repeat."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from flame_jax.policy._config import DecoderConfig
from flame_jax.policy._model import Decoder


def tiny_config(**overrides) -> DecoderConfig:
    base = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_layers": 2,
        "num_heads": 4,
        "num_kv_heads": 2,
        "head_dim": 8,
        "vocab_size": 128,
        "tie_embeddings": False,
    }
    base.update(overrides)
    return DecoderConfig.tiny(**base)


def random_model(seed: int = 0, **overrides) -> Decoder:
    """A tiny decoder whose parameters are redrawn with O(1) logits (not 0.02-std init)."""
    # Abstract init (no initializer compiles), then every parameter drawn with NumPy.
    model = nnx.eval_shape(lambda: Decoder(tiny_config(**overrides), rngs=nnx.Rngs(seed)))
    state = nnx.state(model, nnx.Param)
    leaves, treedef = jax.tree.flatten(state)
    rng = np.random.default_rng(seed + 1000)
    new = []
    for leaf in leaves:  # drawn with NumPy: one eager jax.random call per shape is slow
        if leaf.ndim == 1:  # norm scales and biases
            value = 1.0 + 0.1 * rng.normal(size=leaf.shape)
        else:
            scale = (
                1.0 if leaf.shape[0] == model.config.vocab_size else 0.5 / np.sqrt(leaf.shape[0])
            )
            value = scale * rng.normal(size=leaf.shape)
        new.append(jnp.asarray(value, leaf.dtype))
    nnx.update(model, jax.tree.unflatten(treedef, new))
    return model


_FORWARD = {}


def full_logits(model: Decoder, seq, width: int = 16) -> np.ndarray:
    """float64 log-softmax of the plain forward (no cache, no left padding) of one sequence.

    The sequence is right-padded to ``width``; causality makes the padding invisible to the
    real positions, and one jitted program per model serves every sequence. Returns
    ``[len(seq), vocab]``.
    """
    n = len(seq)
    assert n <= width
    if id(model) not in _FORWARD:

        @nnx.jit
        def forward(m, tokens):
            hidden, _ = m(
                m.embed(tokens),
                jnp.arange(width)[None, :],
                kv_mask=jnp.ones((1, width), bool),
            )
            return m.logits(hidden)[0]

        _FORWARD[id(model)] = forward
    tokens = jnp.asarray([[*seq] + [0] * (width - n)], jnp.int32)
    z = np.asarray(_FORWARD[id(model)](model, tokens), np.float64)[:n]
    m = z.max(-1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(-1, keepdims=True))
