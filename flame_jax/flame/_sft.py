"""pi_list supervised fine-tuning on synthetic add / remove edit tasks (spec §5.3-§5.4).

Every :class:`~flame_jax.flame.EditTask` gives two examples: the "add" prompt (target: the missed
drugs, one name per line) and the "remove" prompt (target: the extra drugs), each target followed
by EOS (an empty target is EOS alone). Names are in index order, except that an "add" prompt that
lists candidates gets its candidates first, in the listed order (best-scored first: the most
likely right add is the first line). Loss: the mean token cross-entropy of the targets
(teacher-forced, prompt tokens masked out).
"""

from collections.abc import Sequence
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from flame_jax.data import Dataset
from flame_jax.flame._edit_tasks import EditTask
from flame_jax.flame._encode import (
    PaddedPrompts,
    PromptEncoder,
    bucket,
    pad_prompts,
    pad_right,
    visit_drug_refs,
)
from flame_jax.flame._policy import FlamePolicy
from flame_jax.flame._prompts import PromptConfig, list_target, render_list_prompt
from flame_jax.policy import KnowledgeTables, completion_logprobs

__all__ = ["ListExamples", "list_examples", "sft_batch", "sft_loss"]


class ListExamples(NamedTuple):
    """Encoded list-editing examples (host NumPy).

    Attributes:
        prompts: left-padded prompts ``[n, length]``.
        targets: right-padded target ids ``[n, target]`` and their mask.
        target_mask: bool ``[n, target]``.
        rows: visit row per example; tasks: "add" / "remove"; initial: P0 per example.
        candidates: the candidates each example's prompt lists (empty for "remove" and for the
            paper's prompt).
    """

    prompts: PaddedPrompts
    targets: np.ndarray
    target_mask: np.ndarray
    rows: np.ndarray
    tasks: tuple[str, ...]
    initial: tuple[tuple[int, ...], ...]
    candidates: tuple[tuple[int, ...], ...] = ()


def list_examples(
    dataset: Dataset,
    encoder: PromptEncoder,
    tasks: Sequence[EditTask],
    *,
    config: PromptConfig,
    previous: np.ndarray,
    kinds: Sequence[str] = ("add", "remove"),
    length: int | None = None,
    target_length: int | None = None,
    evidence: bool = False,
) -> ListExamples:
    """Encodes the add and remove example of every task (in that order per task).

    Args:
        dataset: the dataset.
        encoder: the prompt encoder.
        tasks: edit tasks (pre-list and both targets).
        config: prompt rendering.
        previous: previous-visit row per row.
        kinds: which of "add" / "remove" to emit.
        length: prompt bucket (None: the power of two above the longest prompt).
        target_length: target bucket (None: likewise).
        evidence: drug slots point at per-visit evidence rows (``visit_drug_refs``).
    """
    prompts, targets, rows, kinds_out, initial, cands = [], [], [], [], [], []
    for t in tasks:
        for kind in kinds:
            p = render_list_prompt(
                dataset,
                t.row,
                t.pre_list,
                kind,
                prev=previous[t.row],
                config=config,
                candidates=t.candidates,
            )
            e = encoder.encode(p)
            prompts.append(visit_drug_refs(e, t.row, dataset.num_meds) if evidence else e)
            drugs = getattr(t, kind)
            if kind == "add" and t.candidates:
                wanted = set(drugs)
                listed = [d for d in t.candidates if d in wanted]
                drugs = listed + sorted(wanted - set(listed))
                target = list_target(dataset, drugs, keep_order=True)
            else:
                target = list_target(dataset, drugs)
            targets.append(encoder.encode_target(target))
            rows.append(t.row)
            kinds_out.append(kind)
            initial.append(tuple(t.pre_list))
            cands.append(tuple(t.candidates) if kind == "add" else ())
    length = bucket(max(len(e.tokens) for e in prompts)) if length is None else length
    if target_length is None:
        target_length = bucket(max(len(x) for x in targets), 8)
    ctok, cmask = pad_right(targets, length=target_length, pad_id=encoder.pad_id)
    return ListExamples(
        pad_prompts(prompts, length=length, pad_id=encoder.pad_id),
        ctok,
        cmask,
        np.asarray(rows, np.int64),
        tuple(kinds_out),
        tuple(initial),
        tuple(cands),
    )


def select_examples(examples: ListExamples, idx: np.ndarray) -> ListExamples:
    """The examples ``idx`` of ``examples`` (in that order).

    Raises:
        ValueError: when ``idx`` is empty or out of range.
    """
    idx = np.asarray(idx, np.int64)
    n = len(examples.tasks)
    if idx.size == 0 or idx.min() < 0 or idx.max() >= n:
        raise ValueError(f"select_examples: need 1+ indices in [0, {n}), got {idx.tolist()[:8]}")
    pick = idx.tolist()
    return ListExamples(
        type(examples.prompts)(*(x[idx] for x in examples.prompts)),
        examples.targets[idx],
        examples.target_mask[idx],
        examples.rows[idx],
        tuple(examples.tasks[i] for i in pick),
        tuple(examples.initial[i] for i in pick),
        tuple(examples.candidates[i] for i in pick) if examples.candidates else (),
    )


def sft_batch(examples: ListExamples, idx: np.ndarray, tables: KnowledgeTables) -> dict:
    """The device batch of examples ``idx``."""
    return {
        "prompt": tuple(jnp.asarray(x[idx]) for x in examples.prompts),
        "target": jnp.asarray(examples.targets[idx]),
        "target_mask": jnp.asarray(examples.target_mask[idx]),
        "tables": tables,
    }


def sft_loss(policy: FlamePolicy, batch: dict):
    """Mean target-token cross-entropy; aux: token accuracy is not computed (cheap loss only)."""
    tokens, mask, kind, ref = batch["prompt"]
    emb = policy.embed(tokens, kind, ref, batch["tables"])
    logp = completion_logprobs(
        policy.decoder,
        tokens,
        mask,
        batch["target"],
        batch["target_mask"],
        prompt_embeddings=emb,
    )
    m = batch["target_mask"].astype(jnp.float32)
    nll = -jnp.sum(logp * m) / jnp.maximum(jnp.sum(m), 1.0)
    return nll, {"target_tokens": jnp.sum(m)}
