"""Step-wise GRPO for pi_list (spec §6, DESIGN §5): rollouts on the host, one jitted update.

Per step: ``prompts_per_step`` list-editing prompts (add or remove, P0 from seeded synthetic
errors that follow pi_cls's profile) are chosen by ``(seed, step)``; the jitted KV-cache sampler
draws ``group_size`` completions each with the current policy (entity tokens banned). On the host
each completion is decoded, parsed into an episode (one line = one action), padded to the step
bucket, and its tokens are mapped to steps by character offsets. The jitted step then computes,
in one program: the potential-shaped step and outcome rewards (Jaccard, DDI with weight
lambda, refusal), the outcome and step-group advantages and their token mix, the policy's and the
reference policy's log-probs (the same module with its LoRA adapters off: no second weight copy),
and the clipped GRPO loss with the k3 KL penalty; the optax update follows. With
``LoopConfig.micro_batches`` K > 1 that program runs K groups of prompts at a time
(:func:`grpo_micro_batching`) and sums their gradients into the whole batch's.
"""

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from flame_jax.arraytypes import Array, Bool, Int
from flame_jax.flame._encode import PromptEncoder
from flame_jax.flame._loop import MicroBatching
from flame_jax.flame._policy import FlamePolicy
from flame_jax.flame._sft import ListExamples
from flame_jax.policy import (
    KnowledgeTables,
    SamplingConfig,
    TokenGrammar,
    completion_logprobs,
    make_generator,
)
from flame_jax.rl import (
    AdvantageConfig,
    DrugVocabulary,
    LossConfig,
    ShapingConfig,
    aggregation_weight,
    make_advantage_fn,
    make_grpo_loss,
    make_reward_fn,
    pad_episodes,
    parse_episode,
    potentials,
    segment_tokens,
)
from flame_jax.train import split_microbatches

__all__ = [
    "banned_tokens",
    "constrained_support",
    "edit_grammar",
    "grpo_loss_fn",
    "grpo_micro_batching",
    "make_rollout",
    "parse_completions",
]


def banned_tokens(encoder: PromptEncoder, vocab_size: int) -> np.ndarray:
    """Tokens never generated: padding, BOS, the entity slot tokens, unused vocabulary rows."""
    banned = np.zeros(vocab_size, bool)
    banned[len(encoder.tokenizer) :] = True
    banned[[encoder.pad_id, encoder.bos_id, *encoder.slot_ids.values()]] = True
    return banned


def edit_grammar(
    encoder: PromptEncoder, vocabulary: DrugVocabulary, vocab_size: int
) -> TokenGrammar:
    """The line grammar of a list-editing completion, for constrained decoding.

    A line is one drug name (or synonym) of the vocabulary followed by a newline; EOS may come at
    a line start or right after a name. Tokens outside every name, the newline and EOS are never
    generated (``FlameConfig.constrain_edits``). The grammar is first-order (the next token
    depends on the previous one), so two multi-token names that share a token could still be
    spliced into a line that names no drug: an invalid step, as without constraints.

    Returns:
        A :class:`~flame_jax.policy.TokenGrammar`; class 0 is "line start" (also the class of
        the newline, of the prompt's last token and of every token outside the names).
    """
    names = sorted({*vocabulary.names, *vocabulary.synonyms})
    newline = encoder.text_ids("\n")
    if len(newline) != 1:
        raise ValueError(f"the tokenizer splits a newline into {len(newline)} tokens")
    eos, nl = encoder.eos_id, newline[0]
    start = np.zeros(vocab_size, bool)
    start[eos] = True
    follow: dict[int, set[int]] = {}
    for name in names:
        ids = encoder.text_ids(name)
        start[ids[0]] = True
        for a, b in zip(ids, [*ids[1:], None], strict=True):
            follow.setdefault(a, set()).update({b} if b is not None else {nl, eos})
    rows, token_class = [start], np.zeros(vocab_size, np.int32)
    index: dict[frozenset[int], int] = {}
    for token, nxt in sorted(follow.items()):
        key = frozenset(nxt)
        if key not in index:
            index[key] = len(rows)
            row = np.zeros(vocab_size, bool)
            row[sorted(key)] = True
            rows.append(row)
        token_class[token] = index[key]
    return TokenGrammar(token_class, np.stack(rows))


def edit_bans(
    encoder: PromptEncoder,
    vocabulary: DrugVocabulary,
    examples: ListExamples,
    vocab_size: int,
) -> np.ndarray:
    """Per-example bans that keep a constrained edit to the drugs its task can act on.

    An "add" line may name one of the prompt's candidates (any drug outside P0 when the prompt
    lists none); a "remove" line may name a drug of P0. A name is banned through its first token,
    and only where that token starts no allowed name and continues no name (so the ban never cuts
    an allowed name short). Used with :func:`edit_grammar`; EOS is never banned.

    Returns:
        bool ``[examples, vocab_size]``, True where a token may not be generated.
    """
    first: dict[int, set[int]] = {}  # first token -> drugs whose name starts with it
    inner: set[int] = set()  # tokens inside a name (after its first)
    names = [(n, i) for i, n in enumerate(vocabulary.names)]
    names += [(n, i) for n, i in vocabulary.synonyms.items()]
    for name, drug in names:
        ids = encoder.text_ids(name)
        first.setdefault(ids[0], set()).add(drug)
        inner.update(ids[1:])
    bans = np.zeros((len(examples.tasks), vocab_size), bool)
    for k, (task, p0) in enumerate(zip(examples.tasks, examples.initial, strict=True)):
        if task == "add":
            cands = examples.candidates[k] if examples.candidates else ()
            ok = set(cands) if cands else set(range(len(vocabulary.names))) - set(p0)
        else:
            ok = set(p0)
        for token, drugs in first.items():
            if token not in inner and not drugs & ok:
                bans[k, token] = True
    bans[:, encoder.eos_id] = False
    return bans


def parse_completions(
    encoder: PromptEncoder,
    tokens: np.ndarray,
    lengths: np.ndarray,
    tasks: list[str],
    initial: list[tuple[int, ...]],
    vocabulary: DrugVocabulary,
) -> tuple[list, list[str], list]:
    """Episodes, texts and per-token character spans of generated completions."""
    episodes, texts, spans = [], [], []
    for i in range(len(tokens)):
        ids = tokens[i, : int(lengths[i])]
        text, offs = encoder.decode_with_offsets(ids)
        episodes.append(
            parse_episode(text, task=tasks[i], initial=initial[i], vocabulary=vocabulary)
        )
        texts.append(text)
        spans.append(offs)
    return episodes, texts, spans


def make_rollout(
    examples: ListExamples,
    truth: np.ndarray,
    encoder: PromptEncoder,
    vocabulary: DrugVocabulary,
    tables: KnowledgeTables,
    *,
    group_size: int,
    prompts_per_step: int,
    temperature: float,
    seed: int,
    vocab_size: int,
    grammar: TokenGrammar | None = None,
    bans: np.ndarray | None = None,
):
    """``batch_fn(step, policy) -> (device batch, host metrics)`` drawing GRPO rollouts.

    ``grammar``: optional constrained decoding (:func:`edit_grammar`). The policy is then the
    constrained one: the old log-probs are the sampler's ``constrained_logprobs`` (banned tokens,
    grammar and bans removed, renormalised), and the batch carries what :func:`grpo_loss_fn`
    needs to compute the policy's and the reference's log-probs the same way (``"allowed"``:
    the grammar's tables and each row's banned tokens). A token the grammar forces then has
    log-prob 0 under every policy: no gradient, ratio 1, KL 0. ``bans``: optional per-example
    token bans ``[examples, vocab]`` (:func:`edit_bans`).
    """
    n, lp = examples.prompts.tokens.shape
    lc = examples.targets.shape[1]
    num_meds = truth.shape[1]
    sampling = SamplingConfig(
        max_new_tokens=lc,
        temperature=temperature,
        eos_ids=(encoder.eos_id,),
        pad_id=encoder.pad_id,
        min_batch_bucket=group_size * prompts_per_step,
        min_length_bucket=lp,
        constrained_logprobs=grammar is not None,
    )
    generate = make_generator(sampling)
    banned = jnp.asarray(banned_tokens(encoder, vocab_size))
    if grammar is not None:
        token_class = jnp.asarray(grammar.token_class, jnp.int32)
        class_allowed = jnp.asarray(grammar.allowed, bool)

    def batch_fn(step: int, policy: FlamePolicy) -> tuple[dict[str, Any], dict[str, float]]:
        rng = np.random.default_rng([int(seed), int(step)])
        idx = rng.choice(n, size=prompts_per_step, replace=prompts_per_step > n)
        rep = np.repeat(idx, group_size)
        p = examples.prompts
        tokens, mask, kind, ref = (x[rep] for x in p)
        graphdef, state = nnx.split(policy)
        emb = _embed(
            graphdef, state, jnp.asarray(tokens), jnp.asarray(kind), jnp.asarray(ref), tables
        )
        key = jax.random.fold_in(jax.random.key(int(seed)), int(step))
        row_banned = banned[None, :] if bans is None else bans[rep] | banned[None, :]
        gen = generate(
            policy.decoder,
            tokens,
            mask,
            key=key,
            banned=banned if bans is None else row_banned,
            prompt_embeddings=emb,
            grammar=grammar,
        )
        ctok, logp, lengths = (np.asarray(x) for x in gen)
        tasks = [examples.tasks[i] for i in rep]
        initial = [examples.initial[i] for i in rep]
        episodes, texts, spans = parse_completions(
            encoder, ctok, lengths, tasks, initial, vocabulary
        )
        nested = [episodes[k * group_size : (k + 1) * group_size] for k in range(len(idx))]
        arrays = pad_episodes(nested, max_steps=lc)
        token_steps = segment_tokens(texts, spans, max_tokens=lc, max_steps=lc)
        init = np.zeros((len(idx), num_meds), bool)
        for k, i in enumerate(idx):
            init[k, list(examples.initial[i])] = True
        cmask = np.arange(lc)[None, :] < lengths[:, None]
        shape = (len(idx), group_size, lc)
        batch = {
            "prompt": tuple(jnp.asarray(x) for x in (tokens, mask, kind, ref)),
            "completion": jnp.asarray(ctok.reshape(shape)),
            "completion_mask": jnp.asarray(cmask.reshape(shape)),
            "old_logp": jnp.asarray(logp.reshape(shape)),
            "token_steps": jnp.asarray(token_steps.reshape(shape)),
            "initial": jnp.asarray(init),
            "truth": jnp.asarray(truth[examples.rows[idx]]),
            "episodes": tuple(jnp.asarray(a) for a in arrays),
            "tables": tables,
        }
        if grammar is not None:
            rows_banned = jnp.broadcast_to(jnp.asarray(row_banned), (len(rep), vocab_size))
            batch["allowed"] = (token_class, class_allowed, rows_banned)
        host = {
            "tokens": float(lengths.sum() + mask.sum()),
            "completion_length": float(lengths.mean()),
        }
        return batch, host

    return batch_fn


@functools.partial(jax.jit, static_argnums=(0,))
def _embed(graphdef, state, tokens, kind, ref, tables):
    return nnx.merge(graphdef, state).embed(tokens, kind, ref, tables)


def constrained_support(
    last_prompt_token: Int[Array, " batch"],
    completion: Int[Array, "batch completion"],
    token_class: Int[Array, " vocab"],
    class_allowed: Bool[Array, "classes vocab"],
    row_banned: Bool[Array, "batch vocab"],
) -> Bool[Array, "batch completion vocab"]:
    """The tokens constrained decoding could draw at each completion position: those the grammar
    allows after the previous token (the prompt's last one for the first), minus the row's
    banned tokens (the sampler's rule, ``flame_jax.policy.make_generator``)."""
    prev = jnp.concatenate([last_prompt_token[:, None], completion[:, :-1]], axis=1)
    return class_allowed[token_class[prev]] & ~row_banned[:, None, :]


def grpo_loss_fn(
    ddi: np.ndarray,
    *,
    shaping: ShapingConfig,
    advantage: AdvantageConfig,
    loss: LossConfig,
):
    """``loss_fn(policy, batch) -> (loss, aux)``: rewards, advantages, log-probs, GRPO loss."""
    reward_fn = make_reward_fn(shaping)
    adv_fn = make_advantage_fn(advantage)
    grpo = make_grpo_loss(loss)
    ddi = jnp.asarray(ddi, bool)

    def loss_fn(policy: FlamePolicy, batch: dict):
        b, g, lc = batch["completion"].shape
        tokens, mask, kind, ref = batch["prompt"]
        comp = batch["completion"].reshape(b * g, lc)
        cmask = batch["completion_mask"].reshape(b * g, lc)
        emb = policy.embed(tokens, kind, ref, batch["tables"])
        allowed = None
        if "allowed" in batch:  # constrained decoding: the constrained policy's log-probs
            allowed = constrained_support(tokens[:, -1], comp, *batch["allowed"])
        logp = completion_logprobs(
            policy.decoder,
            tokens,
            mask,
            comp,
            cmask,
            prompt_embeddings=emb,
            lora=True,
            allowed=allowed,
        ).reshape(b, g, lc)
        ref_logp = completion_logprobs(
            policy.decoder,
            tokens,
            mask,
            comp,
            cmask,
            prompt_embeddings=jax.lax.stop_gradient(emb),
            lora=False,
            allowed=allowed,
        ).reshape(b, g, lc)
        ref_logp = jax.lax.stop_gradient(ref_logp)
        drug, delta, valid, step_mask = batch["episodes"]
        args = (batch["initial"], batch["truth"], ddi, drug, delta, valid, step_mask)
        rewards = reward_fn(*args)
        adv = adv_fn(rewards.outcome, rewards.steps, step_mask, batch["token_steps"])
        value, aux = grpo(logp, adv.tokens, batch["completion_mask"], batch["old_logp"], ref_logp)
        phi = potentials(*args)
        m = batch["completion_mask"].astype(jnp.float32)
        tok_adv = jnp.sum(adv.tokens * m) / jnp.maximum(jnp.sum(m), 1.0)
        return value, {
            "policy_loss": aux.policy_loss,
            "kl": aux.kl,
            "clip_fraction": aux.clip_fraction,
            "ratio_mean": aux.ratio_mean,
            "reward": jnp.mean(rewards.outcome),
            "reward_std": jnp.mean(jnp.std(rewards.outcome, axis=1)),
            "reward_jaccard": jnp.mean(phi.jaccard[..., -1] - phi.jaccard[..., 0]),
            "reward_ddi": jnp.mean(phi.ddi[..., 0] - phi.ddi[..., -1]),
            "reward_refusal": jnp.mean(phi.refusal[..., -1] - phi.refusal[..., 0]),
            "steps_per_completion": jnp.mean(jnp.sum(step_mask, axis=-1)),
            "invalid_steps": jnp.mean(jnp.sum(step_mask & ~valid, axis=-1)),
            "advantage_mean": tok_adv,
            "advantage_std": jnp.std(adv.outcome),
            "advantage_abs_max": jnp.max(jnp.abs(adv.tokens)),
        }

    return loss_fn


# Entries of a rollout batch (``make_rollout``) with one row per prompt; "prompt" and the rows of
# "allowed" have one row per completion (group_size per prompt); the rest is shared.
_PER_PROMPT = (
    "completion",
    "completion_mask",
    "old_logp",
    "token_steps",
    "initial",
    "truth",
    "episodes",
)


def grpo_micro_batching(loss: LossConfig) -> MicroBatching:
    """How ``run_loop`` cuts a rollout batch into micro-batches of whole prompt groups.

    Groups stay whole (the advantages are per group), micro-batches are weighed by
    ``flame_jax.rl.aggregation_weight`` of ``loss.aggregation`` so that the accumulated gradient
    is the whole batch's, and ``advantage_abs_max`` is the maximum over the micro-batches. The
    other batch-level metrics become weighted means of the micro-batches' (``advantage_std``, for
    one, is then a mean of per-micro-batch standard deviations).
    """

    def split(batch: dict, k: int) -> tuple[dict, dict]:
        group = batch["completion"].shape[1]
        stacked = {name: split_microbatches(batch[name], k) for name in _PER_PROMPT}
        stacked["prompt"] = split_microbatches(batch["prompt"], k, group=group)
        shared = {"tables": batch["tables"]}
        if "allowed" in batch:
            token_class, class_allowed, rows_banned = batch["allowed"]
            stacked["rows_banned"] = split_microbatches(rows_banned, k, group=group)
            shared["grammar"] = (token_class, class_allowed)
        return stacked, shared

    def merge(micro: dict, shared: dict) -> dict:
        batch = {name: micro[name] for name in (*_PER_PROMPT, "prompt")}
        batch["tables"] = shared["tables"]
        if "grammar" in shared:
            batch["allowed"] = (*shared["grammar"], micro["rows_banned"])
        return batch

    def weight(micro: dict) -> Array:
        return aggregation_weight(micro["completion_mask"], loss.aggregation)

    return MicroBatching(split=split, merge=merge, weight=weight, max_keys=("advantage_abs_max",))
