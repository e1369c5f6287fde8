"""The baseline recommenders as NNX modules: LR, GAMENet-style and SafeDrug-style.

Every model maps a :class:`HistoryBatch` and the constant :class:`GraphContext` to
:class:`ModelOutput` (per-drug logits and the patient representation), and exposes
``drug_embeddings(context)``. Dropout takes an explicit ``key`` (None = deterministic), so a
jitted training step is a pure function of (parameters, batch, key).

References:
    Shang et al., "GAMENet: Graph Augmented MEmory Networks for Recommending Medication
    Combination", AAAI 2019. Yang et al., "SafeDrug: Dual Molecular Graph Encoders for
    Recommending Effective and Safe Drug Combinations", IJCAI 2021.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from flame_jax.arraytypes import Array, Bool, Float, PRNGKeyArray
from flame_jax.baselines._config import BaselineConfig
from flame_jax.baselines._history import HistoryBatch
from flame_jax.baselines._substructures import brics_substructures
from flame_jax.data import Dataset
from flame_jax.graph import GCN, GINEncoder, MoleculeBatch, molecule_batch

__all__ = [
    "GAMENet",
    "GraphContext",
    "HistoryEncoder",
    "LogisticRegression",
    "ModelOutput",
    "SafeDrug",
    "build_model",
    "graph_context",
]


class GraphContext(NamedTuple):
    """Constant graph inputs shared by every batch (a pytree; pass it to the jitted step).

    Attributes:
        ehr: [meds, meds] float32 co-prescription adjacency of the train split.
        ddi: [meds, meds] float32 interaction adjacency (zeros when the dataset has none).
        has_ddi: bool scalar, false when the dataset has no DDI table.
        molecules: the drugs' molecular graphs (SafeDrug), or None.
        substructures: [meds, substructures] float32 BRICS incidence (SafeDrug's local
            encoder), or None.
    """

    ehr: Float[Array, "meds meds"]
    ddi: Float[Array, "meds meds"]
    has_ddi: Bool[Array, ""]
    molecules: MoleculeBatch | None
    substructures: Float[Array, "meds subs"] | None = None


class ModelOutput(NamedTuple):
    """Logits [batch, meds] and the patient representation [batch, dim] of the current visits."""

    logits: Float[Array, "batch meds"]
    patient: Float[Array, "batch dim"]


def graph_context(
    dataset: Dataset, *, molecules: bool, substructures: bool = False
) -> GraphContext:
    """The graphs a model reads: EHR (train split) and DDI adjacencies, molecules if asked.

    ``substructures`` adds the BRICS incidence of :func:`brics_substructures`.

    Raises:
        GraphError (a ValueError): a drug's SMILES cannot be parsed.
    """
    m = dataset.num_meds
    ddi = np.zeros((m, m), np.float32) if dataset.ddi is None else dataset.ddi
    mol = None
    if molecules:
        mol = molecule_batch(dataset.med_vocab.smiles, names=dataset.med_vocab.titles)
    return GraphContext(
        ehr=jnp.asarray(dataset.ehr, jnp.float32),
        ddi=jnp.asarray(ddi, jnp.float32),
        has_ddi=jnp.asarray(dataset.ddi is not None),
        molecules=mol,
        substructures=None
        if not substructures
        else jnp.asarray(brics_substructures(dataset.med_vocab.smiles)[0]),
    )


def _dropout(x: jax.Array, rate: float, key: PRNGKeyArray | None) -> jax.Array:
    if key is None or rate == 0.0:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0)


def _as_jax(batch: HistoryBatch) -> HistoryBatch:
    return jax.tree.map(jnp.asarray, batch)


def _current(x: jax.Array, length: jax.Array) -> jax.Array:
    """x[b, length[b] - 1] for x of shape [batch, visits, ...] (row 0 for empty rows)."""
    idx = jnp.maximum(length - 1, 0)
    return jnp.take_along_axis(x, idx.reshape((-1,) + (1,) * (x.ndim - 1)), axis=1)[:, 0]


def _uniform(scale: float):
    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -scale, scale)

    return init


class LogisticRegression(nnx.Module):
    """Multi-hot logistic regression: ``logits = W [diag ; proc] + b`` on the current visit.

    One independent logistic regression per drug over the multi-hot diagnosis and procedure
    codes of the current visit (no history), as the LR baseline of GAMENet and SafeDrug. The
    patient representation is the multi-hot input itself; drug embeddings are the rows of W^T.

    Examples:
        >>> from flax import nnx
        >>> from flame_jax.data import SyntheticConfig, generate_cohort
        >>> from flame_jax.baselines import pad_histories
        >>> ds = generate_cohort(SyntheticConfig.tiny()).dataset
        >>> model = LogisticRegression(60, 24, 24, rngs=nnx.Rngs(0))
        >>> out = model(pad_histories(ds, np.arange(5)), graph_context(ds, molecules=False))
        >>> out.logits.shape, out.patient.shape
        ((8, 24), (8, 84))
    """

    def __init__(self, num_diag: int, num_proc: int, num_meds: int, *, rngs: nnx.Rngs):
        self.num_diag, self.num_proc = num_diag, num_proc
        self.linear = nnx.Linear(num_diag + num_proc, num_meds, rngs=rngs)

    def features(self, batch: HistoryBatch) -> Float[Array, "batch codes"]:
        """[batch, diag + proc] multi-hot codes of the current visit."""
        batch = _as_jax(batch)
        b = batch.diag.shape[0]
        rows = jnp.arange(b)[:, None]
        diag = _current(jnp.asarray(batch.diag), batch.length)
        diag_mask = _current(jnp.asarray(batch.diag_mask), batch.length)
        proc = _current(jnp.asarray(batch.proc), batch.length) + self.num_diag
        proc_mask = _current(jnp.asarray(batch.proc_mask), batch.length)
        x = jnp.zeros((b, self.num_diag + self.num_proc), jnp.float32)
        x = x.at[rows, diag].max(diag_mask.astype(jnp.float32))
        return x.at[rows, proc].max(proc_mask.astype(jnp.float32))

    def __call__(
        self, batch: HistoryBatch, context: GraphContext, *, key: PRNGKeyArray | None = None
    ) -> ModelOutput:
        x = self.features(_as_jax(batch))
        return ModelOutput(logits=self.linear(x), patient=x)

    def drug_embeddings(self, context: GraphContext) -> Float[Array, "meds dim"]:
        """W^T: each drug's weights over the diagnosis and procedure codes."""
        return self.linear.kernel[...].T


class HistoryEncoder(nnx.Module):
    """Dual GRU over a patient's visits (GAMENet, SafeDrug): one query vector per visit.

    Each visit's diagnosis and procedure codes are embedded (uniform(-0.1, 0.1) init as in
    SafeDrug), dropped out, and summed; two GRUs run over the visits; the query of visit ``t`` is
    ``q_t = W ReLU([h^diag_t ; h^proc_t]) + b``. Padding visits leave the GRU states unchanged.
    """

    def __init__(self, num_diag: int, num_proc: int, *, dim: int, dropout: float, rngs: nnx.Rngs):
        self.dropout = dropout
        init = _uniform(0.1)
        self.diag_embed = nnx.Embed(num_diag, dim, embedding_init=init, rngs=rngs)
        self.proc_embed = nnx.Embed(num_proc, dim, embedding_init=init, rngs=rngs)
        self.diag_gru = nnx.GRUCell(dim, dim, rngs=rngs)
        self.proc_gru = nnx.GRUCell(dim, dim, rngs=rngs)
        self.query = nnx.Linear(2 * dim, dim, rngs=rngs)

    def _visit_sums(self, embed, ids, mask, key) -> jax.Array:
        e = _dropout(embed(jnp.asarray(ids)), self.dropout, key)
        return jnp.sum(jnp.where(jnp.asarray(mask)[..., None], e, 0.0), axis=2)

    def _gru(self, cell, x_btd: jax.Array, mask_bt: jax.Array) -> jax.Array:
        h0 = jnp.zeros((x_btd.shape[0], x_btd.shape[2]), x_btd.dtype)

        def step(h, inputs):
            x, m = inputs
            new, _ = cell(h, x)
            h = jnp.where(m[:, None], new, h)
            return h, h

        _, hs = jax.lax.scan(step, h0, (x_btd.swapaxes(0, 1), mask_bt.swapaxes(0, 1)))
        return hs.swapaxes(0, 1)

    def __call__(
        self, batch: HistoryBatch, *, key: PRNGKeyArray | None = None
    ) -> Float[Array, "batch visits dim"]:
        """Queries ``q_t`` of every visit position (padding positions repeat the last state)."""
        batch = _as_jax(batch)
        k1, k2 = (None, None) if key is None else jax.random.split(key)
        mask = jnp.asarray(batch.visit_mask)
        h_diag = self._gru(
            self.diag_gru, self._visit_sums(self.diag_embed, batch.diag, batch.diag_mask, k1), mask
        )
        h_proc = self._gru(
            self.proc_gru, self._visit_sums(self.proc_embed, batch.proc, batch.proc_mask, k2), mask
        )
        return self.query(jax.nn.relu(jnp.concatenate([h_diag, h_proc], axis=-1)))


class GAMENet(nnx.Module):
    """GAMENet-style recommender: dual GRU queries + graph memory + dynamic memory.

    With the current query ``q`` and the past visits' queries ``q_1..q_{t-1}`` and medications
    ``m_1..m_{t-1}`` (multi-hot):

    - graph memory ``M = GCN_ehr(A_ehr, I) - beta GCN_ddi(A_ddi, I)``, ``[meds, dim]``;
    - fact 1 ``o_1 = softmax(q M^T) M``;
    - fact 2 ``o_2 = softmax_t(q q_t^T) [m_t] M`` (``o_2 = o_1`` on a first visit);
    - ``logits = W_2 ReLU(W_1 ReLU([q ; o_1 ; o_2]))``.

    Differences from the paper's code: the GCNs use the symmetric normalisation of Kipf &
    Welling (GAMENet: row normalisation) and no dropout between their layers; training uses
    batches of visits instead of one patient at a time, and no DDI-annealing variant.

    Examples:
        >>> from flax import nnx
        >>> from flame_jax.data import SyntheticConfig, generate_cohort
        >>> from flame_jax.baselines import pad_histories
        >>> ds = generate_cohort(SyntheticConfig.tiny()).dataset
        >>> model = GAMENet(60, 24, 24, dim=8, gcn_layers=2, dropout=0.4, rngs=nnx.Rngs(0))
        >>> out = model(pad_histories(ds, np.arange(5)), graph_context(ds, molecules=False))
        >>> out.logits.shape, model.drug_embeddings(graph_context(ds, molecules=False)).shape
        ((8, 24), (24, 8))
    """

    def __init__(
        self,
        num_diag: int,
        num_proc: int,
        num_meds: int,
        *,
        dim: int,
        gcn_layers: int,
        dropout: float,
        rngs: nnx.Rngs,
    ):
        self.num_meds = num_meds
        self.encoder = HistoryEncoder(num_diag, num_proc, dim=dim, dropout=dropout, rngs=rngs)
        self.ehr_gcn = GCN(in_dim=num_meds, dim=dim, layers=gcn_layers, rngs=rngs)
        self.ddi_gcn = GCN(in_dim=num_meds, dim=dim, layers=gcn_layers, rngs=rngs)
        self.inter = nnx.Param(_uniform(0.1)(rngs.params(), ()))
        self.hidden = nnx.Linear(3 * dim, 2 * dim, rngs=rngs)
        self.out = nnx.Linear(2 * dim, num_meds, rngs=rngs)

    def drug_embeddings(self, context: GraphContext) -> Float[Array, "meds dim"]:
        """The graph memory ``M = GCN_ehr - beta GCN_ddi``, ``[meds, dim]``."""
        eye = jnp.eye(self.num_meds, dtype=jnp.float32)
        memory = self.ehr_gcn(context.ehr, eye)
        ddi_memory = self.ddi_gcn(context.ddi, eye)
        return memory - self.inter[...] * jnp.where(context.has_ddi, ddi_memory, 0.0)

    def __call__(
        self, batch: HistoryBatch, context: GraphContext, *, key: PRNGKeyArray | None = None
    ) -> ModelOutput:
        batch = _as_jax(batch)
        queries = self.encoder(batch, key=key)  # [b, t, d]
        length = jnp.asarray(batch.length)
        q = _current(queries, length)  # [b, d]
        memory = self.drug_embeddings(context)  # [m, d]
        fact1 = jax.nn.softmax(q @ memory.T, axis=-1) @ memory
        t = jnp.arange(queries.shape[1])
        past = jnp.asarray(batch.visit_mask) & (t[None, :] < (length - 1)[:, None])
        scores = jnp.einsum("bd,btd->bt", q, queries)
        weights = jax.nn.softmax(jnp.where(past, scores, -jnp.inf), axis=-1, where=past)
        weights = jnp.where(past, weights, 0.0)
        read = jnp.einsum("bt,btm->bm", weights, jnp.asarray(batch.past_meds, jnp.float32))
        fact2 = jnp.where(jnp.any(past, axis=1)[:, None], read @ memory, fact1)
        h = jax.nn.relu(self.hidden(jax.nn.relu(jnp.concatenate([q, fact1, fact2], axis=-1))))
        return ModelOutput(logits=self.out(h), patient=q)


class SafeDrug(nnx.Module):
    """SafeDrug-style recommender: dual GRU query + global molecular encoder (+ local layer).

    ``q`` is the current visit's query from :class:`HistoryEncoder`; ``E = GIN(molecules)`` the
    drugs' global molecular embeddings ``[meds, dim]`` (several SMILES per drug averaged);

    - global: ``g = LayerNorm(s + W_g s)`` with ``s = sigmoid(q E^T)``;
    - local: ``l = (W_out * H^T) sigmoid(W_in q) + b``, with ``H`` the ``[meds, substructures]``
      BRICS incidence (``context.substructures``; SafeDrug's ``ddi_mask_H``), so drug ``j``
      reads only the substructures it contains; with ``local="dense"`` there is no mask;
    - ``logits = l * g`` (element-wise).

    Simplifications: SafeDrug's global encoder is an MPNN; here it is a GIN with bond features
    (:class:`~flame_jax.graph.GINEncoder`). The local encoder keeps SafeDrug's masked bipartite
    layer, but does not embed the substructures with their own molecular encoder (SafeDrug's
    local branch also only uses the mask and the query, so the outputs have the same form).

    Examples:
        >>> from flax import nnx
        >>> from flame_jax.data import SyntheticConfig, generate_cohort
        >>> from flame_jax.baselines import pad_histories
        >>> ds = generate_cohort(SyntheticConfig.tiny()).dataset
        >>> ctx = graph_context(ds, molecules=True, substructures=True)
        >>> subs = ctx.substructures.shape[1]
        >>> model = SafeDrug(60, 24, 24, dim=8, gin_layers=2, substructures=subs, dropout=0.5,
        ...                  rngs=nnx.Rngs(0))
        >>> model(pad_histories(ds, np.arange(5)), ctx).logits.shape
        (8, 24)
    """

    def __init__(
        self,
        num_diag: int,
        num_proc: int,
        num_meds: int,
        *,
        dim: int,
        gin_layers: int,
        substructures: int,
        dropout: float,
        masked: bool = True,
        rngs: nnx.Rngs,
    ):
        self.masked = masked
        self.encoder = HistoryEncoder(num_diag, num_proc, dim=dim, dropout=dropout, rngs=rngs)
        self.molecular = GINEncoder(dim=dim, layers=gin_layers, rngs=rngs)
        self.global_out = nnx.Linear(num_meds, num_meds, rngs=rngs)
        self.global_norm = nnx.LayerNorm(num_meds, rngs=rngs)
        self.local_in = nnx.Linear(dim, substructures, rngs=rngs)
        self.local_out = nnx.Linear(substructures, num_meds, rngs=rngs)

    def drug_embeddings(self, context: GraphContext) -> Float[Array, "meds dim"]:
        """The global molecular embeddings ``E = GIN(molecules)``, ``[meds, dim]``."""
        if context.molecules is None:
            raise ValueError("SafeDrug needs the molecules: graph_context(..., molecules=True)")
        return self.molecular(context.molecules)

    def __call__(
        self, batch: HistoryBatch, context: GraphContext, *, key: PRNGKeyArray | None = None
    ) -> ModelOutput:
        batch = _as_jax(batch)
        q = _current(self.encoder(batch, key=key), batch.length)
        match = jax.nn.sigmoid(q @ self.drug_embeddings(context).T)  # [b, m]
        glob = self.global_norm(match + self.global_out(match))
        s = jax.nn.sigmoid(self.local_in(q))
        if self.masked:
            if context.substructures is None:
                raise ValueError("masked SafeDrug needs graph_context(..., substructures=True)")
            kernel = self.local_out.kernel[...] * context.substructures.T
            local = s @ kernel + self.local_out.bias[...][None, :]
        else:
            local = self.local_out(s)
        return ModelOutput(logits=local * glob, patient=q)


def build_model(
    config: BaselineConfig,
    num_diag: int,
    num_proc: int,
    num_meds: int,
    *,
    key: PRNGKeyArray,
    num_substructures: int | None = None,
) -> LogisticRegression | GAMENet | SafeDrug:
    """The model named by ``config.model``, initialised from ``key``.

    SafeDrug with ``config.local_encoder == "brics"`` needs ``num_substructures`` (the columns of
    ``GraphContext.substructures``).
    """
    # GCN layers own a dropout stream (unused: their rate is 0; dropout here takes explicit keys).
    rngs = nnx.Rngs(params=key, dropout=jax.random.fold_in(key, 1))
    if config.model == "lr":
        return LogisticRegression(num_diag, num_proc, num_meds, rngs=rngs)
    if config.model == "gamenet":
        return GAMENet(
            num_diag,
            num_proc,
            num_meds,
            dim=config.dim,
            gcn_layers=config.gcn_layers,
            dropout=config.dropout,
            rngs=rngs,
        )
    masked = config.local_encoder == "brics"
    if masked and num_substructures is None:
        raise ValueError("SafeDrug with local_encoder='brics' needs num_substructures")
    return SafeDrug(
        num_diag,
        num_proc,
        num_meds,
        dim=config.dim,
        gin_layers=config.gin_layers,
        substructures=num_substructures if masked else config.substructures,
        dropout=config.dropout,
        masked=masked,
        rngs=rngs,
    )
