"""pi_cls and SFT losses against float64 references from separate full-sequence forward passes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from flame_jax.flame import (
    EditTask,
    build_policy,
    cls_batch,
    cls_data,
    cls_loss,
    final_sets,
    list_examples,
    score_visits,
    sft_batch,
    sft_loss,
    to_knowledge_tables,
)
from tests.flame.helpers import POLICY


def reference_logprobs(policy, tables, tokens, kind, ref):
    """float64 log-softmax of the next-token logits of one unpadded sequence."""
    kt = to_knowledge_tables(tables)
    t = jnp.asarray(tokens, jnp.int32)[None]
    emb = policy.embed(t, jnp.asarray(kind, jnp.int32)[None], jnp.asarray(ref, jnp.int32)[None], kt)
    n = len(tokens)
    hidden, _ = policy.decoder(emb, jnp.arange(n)[None], kv_mask=jnp.ones((1, n), bool))
    z = np.asarray(policy.decoder.logits(hidden)[0], np.float64)
    return (
        z
        - np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1, keepdims=True))
        - z.max(-1, keepdims=True)
    )


def _unpad(padded, i):
    m = padded.mask[i]
    return padded.tokens[i][m], padded.kind[i][m], padded.ref[i][m]


@pytest.mark.slow  # builds and scores FLAME policies
@pytest.mark.parametrize(("rows", "evidence"), [([0], False), ([2, 5, 9], False), ([4, 1], True)])
def test_cls_loss_matches_reference(
    dataset, encoder, tables, prompt_config, previous, policy, rows, evidence
):
    if evidence:  # drug table with per-visit evidence rows, as knowledge_tables(evidence=True)
        m, v = dataset.num_meds, len(dataset.visits)
        extra = np.random.default_rng(1).normal(size=(m * v, tables["drug"].shape[1]))
        tables = dict(tables, drug=np.concatenate([tables["drug"], extra]).astype(np.float32))
        policy = build_policy(POLICY, encoder.tokenizer, tables, seed=0)
    data = cls_data(dataset, encoder, config=prompt_config, previous=previous, evidence=evidence)
    kt = to_knowledge_tables(tables)
    rows = np.asarray(rows)
    batch = cls_batch(data, rows, kt)
    loss_fn = cls_loss(encoder.yes_id, encoder.no_id)
    loss, _ = loss_fn(policy, batch)
    jitted, _ = nnx.jit(loss_fn)(policy, batch)
    s_tok, s_mask, s_kind, s_ref = (np.asarray(x) for x in batch["suffix"])
    if evidence:  # the candidate slot points at (visit, drug) rows
        at = s_kind == 4
        assert (s_ref[at] >= dataset.num_meds).all()
    nll, p_ref = [], np.zeros((len(rows), dataset.num_meds))
    for i, r in enumerate(rows):
        pt, pk, pr = _unpad(data.prefixes, r)
        for d in range(dataset.num_meds):
            m = s_mask[i, d]
            parts = (s_tok[i, d], s_kind[i, d], s_ref[i, d])
            seq = [np.concatenate([a, b[m]]) for a, b in zip((pt, pk, pr), parts, strict=True)]
            lp = reference_logprobs(policy, tables, *seq)[-1]
            y = data.truth[r, d]
            nll.append(-(lp[encoder.yes_id] if y else lp[encoder.no_id]))
            p_ref[i, d] = 1 / (1 + np.exp(lp[encoder.no_id] - lp[encoder.yes_id]))
    np.testing.assert_allclose(float(loss), np.mean(nll), rtol=2e-4)
    np.testing.assert_allclose(float(jitted), np.mean(nll), rtol=2e-4)
    # scoring in padded batches gives the same p_yes as the reference, whatever the batch size
    for bs in (1, 4):
        p = score_visits(policy, data, rows, kt, yes_id=encoder.yes_id, no_id=encoder.no_id,
                         batch_size=bs)  # fmt: skip
        np.testing.assert_allclose(p, p_ref, rtol=1e-4, atol=1e-5)


@pytest.mark.slow  # builds and scores FLAME policies
def test_sft_loss_matches_reference(dataset, encoder, tables, prompt_config, previous, policy):
    tasks = [EditTask(row=1, pre_list=(0, 3), add=(5,), remove=(3,)),
             EditTask(row=7, pre_list=(2,), add=(), remove=())]  # fmt: skip
    ex = list_examples(dataset, encoder, tasks, config=prompt_config, previous=previous)
    assert ex.tasks == ("add", "remove", "add", "remove")
    kt = to_knowledge_tables(tables)
    idx = np.arange(4)
    loss, aux = sft_loss(policy, sft_batch(ex, idx, kt))
    total, count = 0.0, 0
    for i in idx:
        pt, pk, pr = _unpad(ex.prompts, i)
        target = ex.targets[i][ex.target_mask[i]]
        seq = np.concatenate([pt, target])
        lp = reference_logprobs(policy, tables, seq, np.concatenate([pk, 0 * target]),
                                np.concatenate([pr, 0 * target]))  # fmt: skip
        for k, tok in enumerate(target):
            total -= lp[len(pt) - 1 + k, tok]
            count += 1
    assert int(aux["target_tokens"]) == count
    np.testing.assert_allclose(float(loss), total / count, rtol=2e-4)
    grads = nnx.grad(lambda m: sft_loss(m, sft_batch(ex, idx, kt))[0])(policy)
    assert all(bool(jnp.isfinite(g).all()) for g in jax.tree.leaves(grads))


def reference_final(p0, added, removed):
    out = set(p0)
    out |= set(added)
    for d in set(p0):
        if d not in removed:
            out.discard(d)
    return out


def test_final_sets_against_sets():
    rng = np.random.default_rng(0)
    p0 = [sorted(set(rng.integers(0, 9, 4).tolist())) for _ in range(20)]
    added = [frozenset(set(p) | set(rng.integers(0, 9, 2).tolist())) for p in p0]
    removed = [frozenset(d for d in p if rng.random() < 0.6) for p in p0]
    got = final_sets(p0, added, removed, 9)
    for i in range(20):
        assert set(np.flatnonzero(got[i])) == reference_final(p0[i], added[i], removed[i])


def _edit_batch(dataset, encoder, tables, previous, policy, *, constrained, seed, rows,
                target_length, group_size, rollout_seed):  # fmt: skip
    """One GRPO rollout batch over random add prompts (3 candidates, interaction notes), with the
    edit grammar and bans when ``constrained``."""
    from flame_jax.flame import (
        PromptConfig,
        edit_bans,
        edit_grammar,
        make_rollout,
        with_candidates,
    )
    from flame_jax.rl import DrugVocabulary

    truth = dataset.visits.med.multi_hot(dataset.num_meds)
    rng = np.random.default_rng(seed)
    tasks = [EditTask(row=r, pre_list=tuple(sorted(rng.choice(dataset.num_meds, 3, replace=False)
                                                   .tolist())), add=(), remove=())
             for r in range(rows)]  # fmt: skip
    tasks = with_candidates(tasks, rng.random((len(dataset.visits), dataset.num_meds)), 3)
    config = PromptConfig(history=False, candidates=3, interaction_notes=True)
    ex = list_examples(dataset, encoder, tasks, config=config, previous=previous,
                       target_length=target_length)  # fmt: skip
    vocab = DrugVocabulary(names=tuple(dataset.med_vocab.titles))
    size = policy.decoder.config.vocab_size
    grammar = edit_grammar(encoder, vocab, size) if constrained else None
    bans = edit_bans(encoder, vocab, ex, size) if constrained else None
    batch_fn = make_rollout(ex, truth, encoder, vocab, to_knowledge_tables(tables),
                            group_size=group_size, prompts_per_step=4, temperature=1.0,
                            seed=rollout_seed, vocab_size=size, grammar=grammar,
                            bans=bans)  # fmt: skip
    batch, _ = batch_fn(0, policy)
    assert ("allowed" in batch) == constrained
    return batch


@pytest.mark.slow  # builds and scores FLAME policies
@pytest.mark.parametrize("constrained", [False, True])
def test_grpo_rollouts_and_loss_use_one_policy(dataset, encoder, tables, previous, policy,
                                               constrained):  # fmt: skip
    """With constrained decoding, the rollout's old log-probs are the constrained policy's
    (float64 reference over the tokens the grammar and bans allowed) and the loss scores the
    completions the same way, so the ratio is 1 before the update; without, both are the base
    policy's."""
    from flame_jax.flame import constrained_support, grpo_loss_fn
    from flame_jax.rl import AdvantageConfig, LossConfig, ShapingConfig

    batch = _edit_batch(dataset, encoder, tables, previous, policy, constrained=constrained,
                        seed=2, rows=6, target_length=24, group_size=3, rollout_seed=1)  # fmt: skip
    old = np.asarray(batch["old_logp"]).reshape(12, -1)
    comp = np.asarray(batch["completion"]).reshape(12, -1)
    cmask = np.asarray(batch["completion_mask"]).reshape(12, -1)
    tokens, pmask, kind, ref = (np.asarray(x) for x in batch["prompt"])
    if constrained:
        allowed = np.asarray(constrained_support(jnp.asarray(tokens[:, -1]), jnp.asarray(comp),
                                                 *batch["allowed"]))  # fmt: skip
    for i in range(12):
        real = pmask[i]
        n = int(cmask[i].sum())
        seq = np.concatenate([tokens[i][real], comp[i, :n]])
        zeros = np.zeros(len(seq), np.int32)
        logp = reference_logprobs(
            policy, tables, seq, np.concatenate([kind[i][real], zeros[: n]]),
            np.concatenate([ref[i][real], zeros[: n]]),
        )  # fmt: skip
        start = int(real.sum()) - 1
        for t in range(n):
            z = logp[start + t]
            if constrained:
                z = z - np.log(np.exp(z[allowed[i, t]]).sum())
            np.testing.assert_allclose(old[i, t], z[comp[i, t]], atol=3e-5)
    loss_fn = grpo_loss_fn(dataset.ddi.astype(bool), shaping=ShapingConfig(),
                           advantage=AdvantageConfig(), loss=LossConfig())  # fmt: skip
    _, aux = nnx.jit(loss_fn)(policy, batch)
    np.testing.assert_allclose(float(aux["ratio_mean"]), 1.0, atol=1e-4)
    assert float(aux["kl"]) < 1e-6  # no adapters: the reference is the policy itself


@pytest.mark.slow  # builds and scores FLAME policies
@pytest.mark.parametrize("constrained", [False, True])
def test_grpo_micro_batches_give_the_whole_batch_gradient(dataset, encoder, tables, previous,
                                                          policy, constrained):  # fmt: skip
    """``grpo_micro_batching`` cuts a rollout batch (grammar tables included) into whole prompt
    groups whose weighted gradients sum to the whole batch's, for 2 and 4 micro-batches."""
    from flame_jax.flame import grpo_loss_fn, grpo_micro_batching
    from flame_jax.policy import LoraConfig, add_lora
    from flame_jax.rl import AdvantageConfig, LossConfig, ShapingConfig
    from flame_jax.train import accumulate_gradients

    batch = _edit_batch(dataset, encoder, tables, previous, policy, constrained=constrained,
                        seed=4, rows=8, target_length=16, group_size=2, rollout_seed=3)  # fmt: skip
    rng = np.random.default_rng(4)
    # Synthetic episodes give the groups different rewards (a random model writes no valid line).
    b, g, lc = batch["completion"].shape
    mask = np.arange(3)[None, None] < rng.integers(1, 4, size=(b, g, 1))
    valid = mask & (rng.random((b, g, 3)) < 0.8)
    drug = np.where(valid, rng.integers(0, dataset.num_meds, (b, g, 3)), 0).astype(np.int32)
    delta = np.where(valid, rng.choice([-1, 1], (b, g, 3)), 0).astype(np.int32)
    steps = np.minimum(np.arange(lc) // 3, mask.sum(-1, keepdims=True) - 1).astype(np.int32)
    batch["episodes"] = tuple(jnp.asarray(a) for a in (drug, delta, valid, mask))
    batch["token_steps"] = jnp.asarray(np.where(batch["completion_mask"], steps, -1), jnp.int32)
    add_lora(policy.decoder, LoraConfig(rank=2, alpha=4.0), rngs=nnx.Rngs(1))
    lora = nnx.state(policy, nnx.LoRAParam)
    nnx.update(policy, jax.tree.map(lambda x: x + 0.05, lora))  # the reference differs: KL > 0
    loss = LossConfig(aggregation="token_mean")
    loss_fn = grpo_loss_fn(dataset.ddi.astype(bool), shaping=ShapingConfig(ddi_weight=1.0),
                           advantage=AdvantageConfig(), loss=loss)  # fmt: skip
    graphdef, params, rest = nnx.split(policy, nnx.LoRAParam, ...)

    def f(p, batch):
        return loss_fn(nnx.merge(graphdef, p, rest), batch)

    (want, want_aux), want_grads = jax.jit(jax.value_and_grad(f, has_aux=True))(params, batch)
    assert want_aux["advantage_abs_max"] > 0 and want_aux["kl"] > 0
    micro = grpo_micro_batching(loss)
    for k in (2, 4):

        @jax.jit
        def accumulated(params, batch, k=k):
            stacked, shared = micro.split(batch, k)
            return accumulate_gradients(
                lambda p, m: f(p, micro.merge(m, shared)),
                params,
                stacked,
                weight_fn=micro.weight,
                max_keys=micro.max_keys,
            )

        got, aux, grads = accumulated(params, batch)
        np.testing.assert_allclose(float(got), float(want), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(aux["advantage_abs_max"], want_aux["advantage_abs_max"])
        jax.tree.map(
            lambda a, w: np.testing.assert_allclose(a, w, rtol=1e-4, atol=1e-7), grads, want_grads
        )
