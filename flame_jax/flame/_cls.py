"""pi_cls: the drug-level Yes/No classifier, trained and scored with a shared visit prefix.

Each (visit, candidate drug) prompt is ``prefix(visit) + suffix(drug)``: the suffix is the
"Candidate drug: <name> [DrugEmb]." line and the answer header. The prefix runs once into a KV
cache that every candidate's suffix reads (``flame_jax.policy._scoring.yes_no_scores``), both in
training and in prediction, so one visit with all its candidates costs one prefix pass.

Loss (spec §4): cross-entropy of the answer's first token over the full vocabulary,
``-[y log p(Yes) + (1 - y) log p(No)]`` averaged over the batch's (visit, drug) pairs (the
original also trains on the trailing ``.`` and EOS, which carry no information; left out).
Prediction: ``p_yes = p(Yes) / (p(Yes) + p(No))``, P0 = ``p_yes > threshold``.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from flame_jax.data import Dataset
from flame_jax.flame._encode import (
    Encoded,
    PaddedPrompts,
    PromptEncoder,
    bucket,
    pad_prompts,
    visit_drug_refs,
)
from flame_jax.flame._policy import FlamePolicy
from flame_jax.flame._prompts import Prompt, PromptConfig, render_cls_prompt
from flame_jax.policy import KnowledgeTables, yes_no_scores

__all__ = ["ClsData", "cls_batch", "cls_data", "cls_loss", "score_visits"]

_SPLIT = "Candidate drug: "
_DRUG = 4  # SlotKind.DRUG


class ClsData:
    """Encoded pi_cls inputs: one prefix per visit row, one suffix per drug (host NumPy).

    Attributes:
        prefixes: left-padded prefixes of every visit row ``[visits, length]``.
        suffix: right-padded candidate suffixes ``[meds, suffix]`` (tokens, mask, kind, ref).
        truth: bool ``[visits, meds]`` ground-truth sets.
    """

    def __init__(
        self, prefixes: PaddedPrompts, suffix: tuple, truth: np.ndarray, evidence: bool = False
    ):
        self.prefixes, self.suffix, self.truth = prefixes, suffix, truth
        self.evidence = evidence


def _split(dataset, row, prev, drug, config, encoder) -> tuple[Encoded, Encoded]:
    p = render_cls_prompt(dataset, row, drug, prev=prev, config=config)
    cut = p.text.rindex(_SPLIT)
    k = len(p.slots) - (1 if config.entity_slots else 0)  # the candidate is the last slot
    pre = encoder.encode(Prompt(p.text[:cut], p.slots[:k]))
    suf = encoder.encode(Prompt(p.text[cut:], p.slots[k:]), bos=False)
    return pre, suf


def cls_data(
    dataset: Dataset,
    encoder: PromptEncoder,
    *,
    config: PromptConfig,
    previous: np.ndarray,
    evidence: bool = False,
) -> ClsData:
    """Encodes every visit's prefix and every drug's suffix.

    Args:
        dataset: the dataset.
        encoder: the prompt encoder.
        config: prompt rendering.
        previous: previous-visit row per row (``previous_visit_rows``).
        evidence: drug slots point at per-visit evidence rows (``visit_drug_refs``).
    """
    m = dataset.num_meds
    prefixes = [
        _split(dataset, r, previous[r], 0, config, encoder)[0] for r in range(len(dataset.visits))
    ]
    if evidence:
        prefixes = [visit_drug_refs(e, r, m) for r, e in enumerate(prefixes)]
    suffixes = [_split(dataset, 0, -1, d, config, encoder)[1] for d in range(dataset.num_meds)]
    length = bucket(max(len(e.tokens) for e in prefixes))
    s_len = max(len(e.tokens) for e in suffixes)
    suffix = (
        np.stack([np.pad(e.tokens, (0, s_len - len(e.tokens))) for e in suffixes]),
        np.stack([np.arange(s_len) < len(e.tokens) for e in suffixes]),
        np.stack([np.pad(e.kind, (0, s_len - len(e.tokens))) for e in suffixes]),
        np.stack([np.pad(e.ref, (0, s_len - len(e.tokens))) for e in suffixes]),
    )
    truth = dataset.visits.med.multi_hot(dataset.num_meds)
    padded = pad_prompts(prefixes, length=length, pad_id=encoder.pad_id)
    return ClsData(padded, suffix, truth, evidence)


def cls_batch(data: ClsData, rows: np.ndarray, tables: KnowledgeTables) -> dict:
    """The device batch of visit ``rows`` (every drug a candidate)."""
    p = data.prefixes
    rows = np.asarray(rows)
    tok, mask, kind, ref = (np.broadcast_to(x[None], (len(rows), *x.shape)) for x in data.suffix)
    if data.evidence:
        m = data.truth.shape[1]
        ref = np.where(kind == _DRUG, m + rows[:, None, None] * m + ref, ref)
    return {
        "prefix": tuple(jnp.asarray(x[rows]) for x in p),
        "suffix": tuple(jnp.asarray(x) for x in (tok, mask, kind, ref)),
        "labels": jnp.asarray(data.truth[rows], jnp.float32),
        "tables": tables,
    }


def _scores(policy: FlamePolicy, batch: dict, yes_id: int, no_id: int):
    tokens, mask, kind, ref = batch["prefix"]
    s_tok, s_mask, s_kind, s_ref = batch["suffix"]
    b, m, s = s_tok.shape
    pre = policy.embed(tokens, kind, ref, batch["tables"])
    flat = (x.reshape(b * m, s) for x in (s_tok, s_kind, s_ref))
    suf = policy.embed(*flat, batch["tables"]).reshape(b, m, s, -1)
    return yes_no_scores(
        policy.decoder,
        tokens,
        mask,
        s_tok,
        s_mask,
        yes_id=yes_id,
        no_id=no_id,
        prefix_embeddings=pre,
        suffix_embeddings=suf,
    )


def cls_loss(yes_id: int, no_id: int):
    """``loss_fn(policy, batch) -> (loss, aux)`` of pi_cls (see the module docstring)."""

    def loss_fn(policy: FlamePolicy, batch: dict):
        sc = _scores(policy, batch, yes_id, no_id)
        y = batch["labels"]
        nll = -(y * sc.logp_yes + (1.0 - y) * sc.logp_no)
        pred = sc.p_yes > 0.5
        acc = jnp.mean((pred == (y > 0.5)).astype(jnp.float32))
        return jnp.mean(nll), {"accuracy": acc, "p_yes_mean": jnp.mean(sc.p_yes)}

    return loss_fn


def score_visits(
    policy: FlamePolicy,
    data: ClsData,
    rows: Sequence[int] | np.ndarray,
    tables: KnowledgeTables,
    *,
    yes_id: int,
    no_id: int,
    batch_size: int = 32,
) -> np.ndarray:
    """p_yes ``[len(rows), meds]`` of every candidate drug of every visit in ``rows``."""
    from flax import nnx

    rows = np.asarray(rows, np.int64)
    graphdef, state = nnx.split(policy)

    @jax.jit
    def run(state, batch):
        return _scores(nnx.merge(graphdef, state), batch, yes_id, no_id).p_yes

    out = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        padded = np.concatenate([chunk, np.repeat(chunk[-1:], batch_size - len(chunk))])
        out.append(np.asarray(run(state, cls_batch(data, padded, tables)))[: len(chunk)])
    return np.concatenate(out) if out else np.zeros((0, data.truth.shape[1]), np.float32)
