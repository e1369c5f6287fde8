"""Knowledge fusion: entity-slot input embeddings replaced by MLP projections of external vectors.

FLAME (§7 of the spec) marks four kinds of entity slots in a prompt: patient (``[PatEmb]``),
diagnosis (``[DiasEmb]``), procedure (``[ProEmb]``) and drug (``[DrugEmb]``). Each slot's input
embedding is **overwritten** (no addition, gating or attention) by

    MLP_kind(table_kind[ref]) = W2 gelu(W1 x + b1) + b2    (d_in -> d_h -> dim)

where ``table_kind`` holds the frozen external vectors (RAREMed patient vectors, MICRON code
embeddings, Mole-BERT drug vectors) and ``ref`` is the slot's row in that table. Slots are given
per token as two integer arrays built on the host in slot order (spec §3): ``slot_kind[b, t]``
(``SlotKind``: 0 none, 1 patient, 2 diagnosis, 3 procedure, 4 drug) and ``slot_ref[b, t]``
(the table row; ignored where the kind is 0).

* ``KnowledgeProjectors`` (NNX) holds one projector per configured kind and fuses embeddings;
  its parameters are ordinary ``nnx.Param`` s, so an optimizer that trains LoRA together with the
  projectors uses ``wrt=nnx.Any(nnx.LoRAParam, nnx.PathContains("projectors"))`` or simply
  differentiates a state that holds both modules.
* ``inject`` is the pure substitution given already projected rows.
* ``bake`` writes projected rows into the embedding-table rows of added entity tokens
  (``<DrugEmb-17>`` ...) for export (spec §5.5); ``bake_into`` does it on a ``Decoder``. After
  baking, ``model.embed`` of the entity tokens equals the fused embedding (tested). With tied
  embeddings the same rows are also the output rows of those tokens; they must be banned from
  sampling either way (``banned`` of the generator).

GELU is the exact (erf) form, as PyTorch's ``nn.GELU()`` default.

References:
    FLAME, arXiv 2505.20218 (2025), §4 and §7 of the reproduction spec.
"""

import dataclasses
import enum
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from flame_jax.arraytypes import Array, Float, Int
from flame_jax.policy._model import Decoder

__all__ = [
    "EntityTokens",
    "FusionConfig",
    "KnowledgeProjector",
    "KnowledgeProjectors",
    "KnowledgeTables",
    "SlotKind",
    "bake",
    "bake_into",
    "inject",
]

KINDS = ("patient", "diagnosis", "procedure", "drug")


class SlotKind(enum.IntEnum):
    """Value of ``slot_kind`` at each token."""

    NONE = 0
    PATIENT = 1
    DIAGNOSIS = 2
    PROCEDURE = 3
    DRUG = 4


class KnowledgeTables(NamedTuple):
    """Frozen external vectors, one ``[items, d_in]`` table per kind (None: kind unused)."""

    patient: Float[Array, "_items _din"] | None = None
    diagnosis: Float[Array, "_items _din"] | None = None
    procedure: Float[Array, "_items _din"] | None = None
    drug: Float[Array, "_items _din"] | None = None


class EntityTokens(NamedTuple):
    """Token id of each table row's entity token (e.g. ``<DrugEmb-j>``), per kind (None: skip)."""

    patient: Int[Array, " _items"] | None = None
    diagnosis: Int[Array, " _items"] | None = None
    procedure: Int[Array, " _items"] | None = None
    drug: Int[Array, " _items"] | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class FusionConfig:
    """Projector sizes per kind, in the order patient, diagnosis, procedure, drug.

    Attributes:
        model_dim: the decoder's hidden size (projector output).
        input_dims: external vector size per kind; 0 disables that kind.
        hidden_dims: MLP hidden size per kind.
        param_dtype: projector parameter dtype ("float32" or "bfloat16").
    """

    model_dim: int
    input_dims: tuple[int, ...] | list[int]
    hidden_dims: tuple[int, ...] | list[int]
    param_dtype: str = "float32"

    def __post_init__(self):
        if self.model_dim < 1:
            raise ValueError(f"model_dim must be >= 1, got {self.model_dim}")
        for name in ("input_dims", "hidden_dims"):
            value = tuple(getattr(self, name))
            if len(value) != 4 or any(int(v) < 0 for v in value):
                raise ValueError(
                    f"{name} must be 4 sizes >= 0 (patient, diagnosis, procedure, drug), "
                    f"got {value}"
                )
            object.__setattr__(self, name, tuple(int(v) for v in value))
        for kind, d_in, d_h in zip(KINDS, self.input_dims, self.hidden_dims, strict=True):
            if d_in > 0 and d_h < 1:
                raise ValueError(
                    f"hidden_dims for {kind} must be >= 1 when its input_dim is {d_in}"
                )
        if self.param_dtype not in ("float32", "bfloat16"):
            raise ValueError(
                f"param_dtype must be 'float32' or 'bfloat16', got {self.param_dtype!r}"
            )

    @classmethod
    def paper(cls, model_dim: int = 4096) -> "FusionConfig":
        """FLAME's projectors: 512->1024, 64->512, 64->512, 300->1024, each then -> model_dim."""
        return cls(
            model_dim=model_dim, input_dims=(512, 64, 64, 300), hidden_dims=(1024, 512, 512, 1024)
        )

    @classmethod
    def tiny(cls, model_dim: int = 64) -> "FusionConfig":
        """Small projectors for tests and the synthetic default.

        Examples:
            >>> FusionConfig.tiny(32).input_dims
            (16, 8, 8, 12)
        """
        return cls(model_dim=model_dim, input_dims=(16, 8, 8, 12), hidden_dims=(32, 16, 16, 32))


class KnowledgeProjector(nnx.Module):
    """Linear(d_in -> d_h) -> GELU (exact) -> Linear(d_h -> dim)."""

    def __init__(
        self, d_in: int, d_hidden: int, d_out: int, *, param_dtype: str = "float32", rngs: nnx.Rngs
    ):
        dt = jnp.dtype(param_dtype)
        self.fc1 = nnx.Linear(d_in, d_hidden, param_dtype=dt, rngs=rngs)
        self.fc2 = nnx.Linear(d_hidden, d_out, param_dtype=dt, rngs=rngs)

    def __call__(self, x: Float[Array, "*lead din"]) -> Float[Array, "*lead dout"]:
        return self.fc2(jax.nn.gelu(self.fc1(x), approximate=False))


class KnowledgeProjectors(nnx.Module):
    """One ``KnowledgeProjector`` per configured kind (attributes ``patient`` ... ``drug``).

    Examples:
        >>> import jax.numpy as jnp
        >>> proj = KnowledgeProjectors(FusionConfig.tiny(4), rngs=nnx.Rngs(0))
        >>> emb = jnp.zeros((1, 3, 4))
        >>> kind = jnp.array([[0, SlotKind.DRUG, 0]])
        >>> tables = KnowledgeTables(drug=jnp.ones((5, 12)))
        >>> out = proj(emb, kind, jnp.array([[0, 2, 0]]), tables)
        >>> bool(jnp.allclose(out[0, 1], proj.drug(jnp.ones(12)))), bool((out[0, 0] == 0).all())
        (True, True)
    """

    def __init__(self, config: FusionConfig, *, rngs: nnx.Rngs):
        self.config = config
        for kind, d_in, d_h in zip(KINDS, config.input_dims, config.hidden_dims, strict=True):
            module = None
            if d_in > 0:
                module = KnowledgeProjector(
                    d_in, d_h, config.model_dim, param_dtype=config.param_dtype, rngs=rngs
                )
            setattr(self, kind, module)

    def project(self, kind: str, vectors: Float[Array, "*lead din"]) -> Float[Array, "*lead dim"]:
        """MLP_kind(vectors); ``kind`` is one of "patient", "diagnosis", "procedure", "drug"."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        module = getattr(self, kind)
        if module is None:
            raise ValueError(
                f"no projector for kind {kind!r}: its input_dim is 0 in the FusionConfig"
            )
        return module(vectors)

    def __call__(
        self,
        embeddings: Float[Array, "batch tokens dim"],
        slot_kind: Int[Array, "batch tokens"],
        slot_ref: Int[Array, "batch tokens"],
        tables: KnowledgeTables,
    ) -> Float[Array, "batch tokens dim"]:
        """Replace every slot's embedding by MLP_kind(table_kind[slot_ref]); others unchanged.

        Only kinds with both a projector and a table are fused; slots of any other kind keep
        their token embedding.
        Projection runs on every position's gathered row (cheap next to the decoder) and
        ``jnp.where`` keeps it only at that kind's slots, so shapes stay static.
        """
        out = embeddings
        for code, kind in enumerate(KINDS, start=1):
            table = getattr(tables, kind)
            module = getattr(self, kind)
            if table is None or module is None:
                continue
            rows = table[jnp.clip(slot_ref, 0, table.shape[0] - 1)]
            projected = module(rows).astype(embeddings.dtype)
            out = jnp.where((slot_kind == code)[..., None], projected, out)
        return out

    def project_tables(self, tables: KnowledgeTables) -> tuple[Array | None, ...]:
        """Every table row projected (the input of ``inject`` and ``bake``), per kind or None."""
        return tuple(
            None
            if getattr(tables, k) is None or getattr(self, k) is None
            else getattr(self, k)(getattr(tables, k))
            for k in KINDS
        )


def inject(
    embeddings: Float[Array, "batch tokens dim"],
    slot_kind: Int[Array, "batch tokens"],
    slot_ref: Int[Array, "batch tokens"],
    projected: Sequence[Float[Array, "_items dim"] | None],
) -> Float[Array, "batch tokens dim"]:
    """Pure substitution: ``out[b, t] = projected[kind - 1][slot_ref[b, t]]`` at slots, else input.

    Args:
        embeddings: ``[batch, tokens, dim]`` token embeddings.
        slot_kind: ``[batch, tokens]`` ``SlotKind`` codes (0: not a slot).
        slot_ref: ``[batch, tokens]`` row of the slot's table.
        projected: four ``[items_k, dim]`` already projected tables (patient, diagnosis,
            procedure, drug); None for unused kinds.

    Returns:
        ``[batch, tokens, dim]`` fused embeddings, in the dtype of ``embeddings``.

    Examples:
        >>> import jax.numpy as jnp
        >>> emb = jnp.zeros((1, 2, 2))
        >>> drug = jnp.array([[1.0, 2.0], [3.0, 4.0]])
        >>> inject(emb, jnp.array([[4, 0]]), jnp.array([[1, 0]]), (None, None, None, drug)).tolist()
        [[[3.0, 4.0], [0.0, 0.0]]]
    """
    if len(projected) != 4:
        raise ValueError(
            "projected must hold 4 tables (patient, diagnosis, procedure, drug), "
            f"got {len(projected)}"
        )
    out = embeddings
    for code, table in enumerate(projected, start=1):
        if table is None:
            continue
        rows = table[jnp.clip(slot_ref, 0, table.shape[0] - 1)].astype(embeddings.dtype)
        out = jnp.where((slot_kind == code)[..., None], rows, out)
    return out


def bake(
    embedding_table: Float[Array, "vocab dim"],
    token_ids: Int[Array, " items"],
    rows: Float[Array, "items dim"],
) -> Float[Array, "vocab dim"]:
    """Write ``rows`` into ``embedding_table[token_ids]`` (entity tokens) and return the new table.

    Examples:
        >>> import jax.numpy as jnp
        >>> bake(jnp.zeros((3, 2)), jnp.array([2]), jnp.array([[5.0, 6.0]])).tolist()
        [[0.0, 0.0], [0.0, 0.0], [5.0, 6.0]]
    """
    return embedding_table.at[token_ids].set(rows.astype(embedding_table.dtype))


def bake_into(
    model: Decoder,
    projectors: KnowledgeProjectors,
    tables: KnowledgeTables,
    token_ids: EntityTokens,
) -> None:
    """Bake every projected table row into the decoder's embedding rows of its entity token.

    ``token_ids`` holds, per kind, the ``[items]`` token id of each table row (e.g. the id of
    ``<DrugEmb-j>`` for drug row j); kinds that are None are skipped. The decoder's vocabulary
    must already contain the entity tokens. Mutates ``model`` in place.
    """
    table = model.embed_tokens.embedding[...]
    vocab = table.shape[0]
    for kind in KINDS:
        ids, vectors = getattr(token_ids, kind), getattr(tables, kind)
        if ids is None:
            continue
        if vectors is None:
            raise ValueError(f"bake_into: token_ids.{kind} is set but tables.{kind} is None")
        ids = jnp.asarray(ids, jnp.int32)
        if ids.shape != (vectors.shape[0],):
            raise ValueError(
                f"bake_into: token_ids.{kind} has shape {ids.shape}, "
                f"expected ({vectors.shape[0]},) "
                "(one token per table row)"
            )
        if int(ids.min()) < 0 or int(ids.max()) >= vocab:
            raise ValueError(
                f"bake_into: token_ids.{kind} has ids outside the vocabulary [0, {vocab})"
            )
        table = bake(table, ids, projectors.project(kind, vectors))
    model.embed_tokens.embedding[...] = table
