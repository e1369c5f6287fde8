"""Inference of pi_list and the final sets: greedy add and remove edits on pi_cls's P0 (spec §8).

The add and the remove prompt of a visit run independently on the same P0 (as in the original);
each completion is decoded greedily, parsed line by line, and the final set is
``(P0 | Added) - Removed``, where Added are the drugs the add episode put into the set and Removed
the drugs of P0 that the remove episode took out.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from flame_jax.flame._encode import PromptEncoder
from flame_jax.flame._grpo import _embed, banned_tokens, parse_completions
from flame_jax.flame._policy import FlamePolicy
from flame_jax.flame._sft import ListExamples
from flame_jax.policy import KnowledgeTables, SamplingConfig, TokenGrammar, make_generator
from flame_jax.rl import DrugVocabulary

__all__ = ["final_sets", "greedy_edits", "greedy_generator"]


def greedy_generator(encoder: PromptEncoder, examples: ListExamples, *, batch_size: int = 64):
    """A greedy generator for the prompt and target buckets of ``examples`` (reusable)."""
    return make_generator(
        SamplingConfig(
            max_new_tokens=examples.targets.shape[1],
            temperature=0.0,
            eos_ids=(encoder.eos_id,),
            pad_id=encoder.pad_id,
            min_batch_bucket=batch_size,
            min_length_bucket=examples.prompts.tokens.shape[1],
        )
    )


def greedy_edits(
    policy: FlamePolicy,
    examples: ListExamples,
    encoder: PromptEncoder,
    vocabulary: DrugVocabulary,
    tables: KnowledgeTables,
    *,
    batch_size: int = 64,
    generate=None,
    grammar: TokenGrammar | None = None,
    bans: np.ndarray | None = None,
) -> list[frozenset[int]]:
    """The final state of every example's greedy episode (same order as ``examples``).

    ``generate``: a greedy generator from an earlier call (``greedy_generator``) to reuse its
    compiled programs; None builds one. ``grammar``: optional constrained decoding
    (``edit_grammar``); ``bans``: optional per-example token bans (``edit_bans``).
    """
    n = examples.prompts.tokens.shape[0]
    if generate is None:
        generate = greedy_generator(encoder, examples, batch_size=batch_size)
    vocab = policy.decoder.config.vocab_size
    banned = jnp.asarray(banned_tokens(encoder, vocab))
    graphdef, state = nnx.split(policy)
    out: list[frozenset[int]] = []
    for start in range(0, n, batch_size):
        idx = np.arange(start, min(start + batch_size, n))
        tokens, mask, kind, ref = (x[idx] for x in examples.prompts)
        emb = _embed(
            graphdef, state, jnp.asarray(tokens), jnp.asarray(kind), jnp.asarray(ref), tables
        )
        gen = generate(
            policy.decoder,
            tokens,
            mask,
            key=jax.random.key(0),
            banned=banned if bans is None else bans[idx] | banned[None, :],
            prompt_embeddings=emb,
            grammar=grammar,
        )
        episodes, _, _ = parse_completions(
            encoder,
            np.asarray(gen.tokens),
            np.asarray(gen.lengths),
            [examples.tasks[i] for i in idx],
            [examples.initial[i] for i in idx],
            vocabulary,
        )
        out.extend(ep.states[-1] for ep in episodes)
    return out


def final_sets(
    initial: Sequence[Sequence[int]],
    added: Sequence[frozenset[int]],
    removed: Sequence[frozenset[int]],
    num_meds: int,
) -> np.ndarray:
    """``(P0 | Added) - Removed`` as bool ``[visits, meds]``.

    Args:
        initial: P0 per visit.
        added: the add episode's final state per visit (P0 plus what it added).
        removed: the remove episode's final state per visit (P0 minus what it removed).
        num_meds: the vocabulary size.

    Examples:
        >>> final_sets([[0, 1]], [frozenset({0, 1, 2})], [frozenset({1})], 4).astype(int).tolist()
        [[0, 1, 1, 0]]
    """
    out = np.zeros((len(initial), num_meds), bool)
    for i, (p0, a, r) in enumerate(zip(initial, added, removed, strict=True)):
        p0 = {int(d) for d in p0}
        gone = p0 - set(r)
        final = (p0 | set(a)) - gone
        out[i, sorted(final)] = True
    return out
