"""The FLAME policy module: a decoder plus the knowledge-fusion projectors, and its weight files.

``FlamePolicy.embed`` turns token ids with entity slots into input embeddings: the token
embedding everywhere, overwritten at each slot by ``MLP_kind(table_kind[ref])`` (spec §7). The
tables are passed in as arrays (frozen; never part of the trained or checkpointed state).

Stage chaining follows the original (spec §4-§6): a stage that trains LoRA adapters merges them
into the base weights when it ends (``merge_lora``) and saves the merged policy
(``save_policy``: one ``.npz`` keyed by the state paths); the next stage loads it and attaches
fresh adapters. The GRPO reference policy is the loaded policy with its adapters off.
"""

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from flame_jax._io import write_npz_atomic
from flame_jax.arraytypes import Array, Float, Int
from flame_jax.policy import (
    Decoder,
    DecoderConfig,
    FusionConfig,
    KnowledgeProjectors,
    KnowledgeTables,
)

__all__ = [
    "FlamePolicy",
    "PolicyConfig",
    "build_policy",
    "load_policy",
    "resize_vocabulary",
    "save_policy",
    "to_knowledge_tables",
]


@dataclasses.dataclass(frozen=True, kw_only=True)
class PolicyConfig:
    """The decoder's shape (the built-in model trained from scratch) and the projectors.

    Attributes:
        hidden_size, intermediate_size, num_layers, num_heads, num_kv_heads: decoder shape
            (Llama layout, tied embeddings; the vocabulary comes from the tokenizer).
        projector_hidden: hidden width of every knowledge projector.
        fusion: use knowledge fusion (projectors over the external tables).
        param_dtype: "float32" or "bfloat16".
        pretrained: a local Hugging Face model folder (e.g. a Llama-3.1-8B-class checkpoint)
            to start from instead of a decoder built from scratch; its tokenizer is used with
            the four slot tokens added (the embedding table grows if needed; new rows are the
            mean of the old ones) and the shape fields above are ignored.
    """

    hidden_size: int = 64
    intermediate_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    projector_hidden: int = 64
    fusion: bool = True
    param_dtype: str = "float32"
    pretrained: str | None = None

    def __post_init__(self):
        for name in (
            "hidden_size",
            "intermediate_size",
            "num_layers",
            "num_heads",
            "num_kv_heads",
            "projector_hidden",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"PolicyConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.hidden_size % self.num_heads or self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"PolicyConfig: hidden_size {self.hidden_size} must divide by num_heads "
                f"{self.num_heads}, which must divide by num_kv_heads {self.num_kv_heads}"
            )

    def decoder_config(self, tokenizer) -> DecoderConfig:
        """The decoder config for ``tokenizer`` (vocabulary rounded up to a multiple of 64)."""
        return DecoderConfig.tiny(
            vocab_size=-(-len(tokenizer) // 64) * 64,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_layers=self.num_layers,
            num_heads=self.num_heads,
            num_kv_heads=self.num_kv_heads,
            head_dim=self.hidden_size // self.num_heads,
            param_dtype=self.param_dtype,
            pad_token_id=int(tokenizer.pad_token_id),
            bos_token_id=int(tokenizer.bos_token_id),
            eos_token_id=int(tokenizer.eos_token_id),
        )


class FlamePolicy(nnx.Module):
    """A decoder and (optionally) its knowledge projectors."""

    def __init__(self, decoder: Decoder, projectors: KnowledgeProjectors | None):
        self.decoder = decoder
        self.projectors = projectors

    def embed(
        self,
        tokens: Int[Array, "batch tokens"],
        kind: Int[Array, "batch tokens"],
        ref: Int[Array, "batch tokens"],
        tables: KnowledgeTables,
    ) -> Float[Array, "batch tokens dim"]:
        """Token embeddings with every entity slot replaced by its projected table row."""
        emb = self.decoder.embed(tokens)
        if self.projectors is None:
            return emb
        return self.projectors(emb, kind, ref, tables)


def to_knowledge_tables(tables: Mapping[str, np.ndarray] | None) -> KnowledgeTables:
    """Device copies of the four tables (an empty ``KnowledgeTables`` for None)."""
    if tables is None:
        return KnowledgeTables()
    return KnowledgeTables(**{k: jnp.asarray(v, jnp.float32) for k, v in tables.items()})


def build_policy(
    config: PolicyConfig,
    tokenizer,
    tables: Mapping[str, np.ndarray] | None,
    *,
    seed: int | np.integer,
) -> FlamePolicy:
    """A freshly initialised policy for ``tokenizer`` and the table widths (seeded)."""
    rngs = nnx.Rngs(int(seed))
    if config.pretrained is None:
        decoder = Decoder(config.decoder_config(tokenizer), rngs=rngs)
    else:
        from flame_jax.policy import from_pretrained

        decoder, _ = from_pretrained(config.pretrained, dtype=config.param_dtype)
        if len(tokenizer) > decoder.config.vocab_size:
            decoder = resize_vocabulary(decoder, -(-len(tokenizer) // 64) * 64, seed=seed)
    projectors = None
    if config.fusion:
        if tables is None:
            raise ValueError("PolicyConfig.fusion is on but no knowledge tables were given")
        dims = tuple(int(tables[k].shape[1]) for k in ("patient", "diagnosis", "procedure", "drug"))
        fusion = FusionConfig(
            model_dim=decoder.config.hidden_size,
            input_dims=dims,
            hidden_dims=(config.projector_hidden,) * 4,
            param_dtype=config.param_dtype,
        )
        projectors = KnowledgeProjectors(fusion, rngs=rngs)
    return FlamePolicy(decoder, projectors)


def resize_vocabulary(
    decoder: Decoder, vocab_size: int | np.integer, *, seed: int | np.integer = 0
) -> Decoder:
    """A copy of ``decoder`` with ``vocab_size`` embedding (and output) rows.

    Existing rows are kept, so the logits of the old tokens are unchanged; each new row is the
    mean of the old rows (the usual initialisation of added special tokens).

    Raises:
        ValueError: ``vocab_size`` is smaller than the current vocabulary.
    """
    old = decoder.config.vocab_size
    if vocab_size < old:
        raise ValueError(f"vocab_size {vocab_size} is smaller than the model's {old}")
    config = dataclasses.replace(decoder.config, vocab_size=int(vocab_size))
    new = Decoder(config, rngs=nnx.Rngs(int(seed)))
    src = dict(jax.tree_util.tree_flatten_with_path(nnx.state(decoder))[0])
    paths, treedef = jax.tree_util.tree_flatten_with_path(nnx.state(new))
    leaves = []
    for path, leaf in paths:
        value = src[path]
        if np.shape(value) != np.shape(leaf):  # embedding / lm_head: grow the vocabulary axis
            pairs = enumerate(zip(np.shape(value), np.shape(leaf), strict=True))
            axis = next(i for i, (a, b) in pairs if a != b)
            mean = jnp.mean(value, axis=axis, keepdims=True)
            extra = jnp.repeat(mean, np.shape(leaf)[axis] - np.shape(value)[axis], axis=axis)
            value = jnp.concatenate([value, extra.astype(value.dtype)], axis=axis)
        leaves.append(value)
    nnx.update(new, jax.tree_util.tree_unflatten(treedef, leaves))
    return new


def _flat(state) -> dict[str, np.ndarray]:
    leaves = jax.tree_util.tree_flatten_with_path(state)[0]
    return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves}


def save_policy(policy: FlamePolicy, path: str | os.PathLike) -> Path:
    """Writes every state array of ``policy`` to one ``.npz`` keyed by its state path.

    Under ``jax.distributed`` the arrays may span hosts: every process gathers them
    (``process_allgather``, a collective: call it on every process) and process 0 alone writes.
    """
    state = nnx.state(policy)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        state = multihost_utils.process_allgather(state, tiled=True)
        if jax.process_index() != 0:
            return Path(path)
    return write_npz_atomic(Path(path), _flat(state))


def load_policy(policy: FlamePolicy, path: str | os.PathLike) -> FlamePolicy:
    """Loads :func:`save_policy`'s arrays into ``policy`` (same structure), in place.

    Raises:
        ValueError: the file's arrays do not match the policy's state (another config).
    """
    state = nnx.state(policy)
    with np.load(Path(path)) as z:
        saved = {k: z[k] for k in z.files}
    paths, treedef = jax.tree_util.tree_flatten_with_path(state)
    leaves = []
    for p, leaf in paths:
        key = jax.tree_util.keystr(p)
        if key not in saved or saved[key].shape != np.shape(leaf):
            raise ValueError(f"{path}: no array {key} of shape {np.shape(leaf)} (another config?)")
        leaves.append(jnp.asarray(saved[key], dtype=jnp.asarray(leaf).dtype))
    if len(saved) != len(leaves):
        raise ValueError(f"{path}: {len(saved)} arrays, the policy has {len(leaves)}")
    nnx.update(policy, jax.tree_util.tree_unflatten(treedef, leaves))
    return policy
