"""Meshes, partition rules, and sharded GRPO training / generation on 8 simulated CPU devices.

The sharded results are compared with the same computation on one device. Tolerances are float32
reassociation tolerances (a sharded reduction sums in another order): rtol 1e-4 / atol 1e-5 on
losses and metrics, atol 1e-5 on parameters after two AdamW steps at learning rate 1e-3, and
exact equality of sampled token ids.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from flame_jax.data import SyntheticConfig, generate_cohort
from flame_jax.flame import (
    EditTask,
    LoopConfig,
    PromptConfig,
    PromptEncoder,
    build_policy,
    list_examples,
    previous_visit_rows,
    to_knowledge_tables,
)
from flame_jax.flame._grpo import (
    banned_tokens,
    grpo_loss_fn,
    grpo_micro_batching,
    make_rollout,
)
from flame_jax.flame._loop import run_loop
from flame_jax.policy import (
    LoraConfig,
    SamplingConfig,
    add_lora,
    build_tiny_tokenizer,
    load_tokenizer,
    make_generator,
)
from flame_jax.rl import AdvantageConfig, DrugVocabulary, LossConfig, ShapingConfig
from flame_jax.train import (
    CacheSharding,
    Checkpointer,
    MeshConfig,
    OptimizerConfig,
    batch_sharding,
    make_mesh,
    partition_spec,
    shard_batch,
    shard_module,
    state_shardings,
)
from tests.flame.helpers import POLICY

# One layer keeps compile times (which dominate here) short.
TINY = dataclasses.replace(POLICY, num_layers=1)

MESHES = {
    "data8": MeshConfig(data=8),
    "d2f2t2": MeshConfig(data=2, fsdp=2, tp=2),
    "f4t2": MeshConfig(data=1, fsdp=4, tp=2),
}
LOOP = LoopConfig(
    steps=2,
    batch_size=4,
    checkpoint_every=1,
    optimizer=OptimizerConfig(learning_rate=1e-3, clip_norm=None),
)


def test_mesh_config_validation_and_axes():
    assert MeshConfig().resolve(8) == (8, 1, 1)
    assert MeshConfig(data=2, fsdp=2, tp=-1).resolve(8) == (2, 2, 2)
    mesh = make_mesh(MeshConfig(data=2, fsdp=2, tp=2))
    assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tp": 2}
    assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)
    with pytest.raises(ValueError, match=r"needs 12 devices, but 8"):
        make_mesh(MeshConfig(data=3, fsdp=2, tp=2))
    with pytest.raises(ValueError, match=r"fixed axes take 3, which does not divide 8"):
        make_mesh(MeshConfig(data=-1, fsdp=3))
    with pytest.raises(ValueError, match=r"only one axis may be -1"):
        MeshConfig(data=-1, tp=-1)
    with pytest.raises(ValueError, match=r"MeshConfig.tp must be >= 1"):
        MeshConfig(tp=0)
    with pytest.raises(ValueError, match=r"'pp=2'"):
        MeshConfig.parse("data=2,pp=2")
    assert MeshConfig.parse(" data=2, tp=4 ") == MeshConfig(data=2, fsdp=1, tp=4)


def test_rules_fit_or_fall_back_to_replication():
    mesh = make_mesh(MeshConfig(data=1, fsdp=4, tp=2))
    q = "decoder/layers/0/self_attn/q_proj/kernel/value"
    assert partition_spec(q, (16, 32), mesh) == P("fsdp", "tp")
    assert partition_spec(q, (6, 32), mesh) == P(None, "tp")  # 6 % 4 != 0
    assert partition_spec("1/0/mu/" + q, (16, 32), mesh) == P("fsdp", "tp")  # Adam moment
    assert partition_spec("1/0/count", (), mesh) == P()
    down_b = "decoder/layers/1/mlp/down_proj/lora/lora_b/value"
    assert partition_spec(down_b, (2, 16), mesh) == P(None, "fsdp")
    assert partition_spec("decoder/norm/weight/value", (16,), mesh) == P(None)
    # Batches: the longest prefix of (data, fsdp) that divides the leading axis.
    mesh = make_mesh(MeshConfig(data=2, fsdp=4, tp=1))
    assert batch_sharding((16, 3), mesh).spec == P(("data", "fsdp"), None)
    assert batch_sharding((6, 3), mesh).spec == P("data", None)
    assert batch_sharding((3,), mesh).spec == P(None)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny cohort, tokenizer, tables, list-editing examples and a GRPO rollout."""
    dataset = generate_cohort(SyntheticConfig.tiny(patients=30)).dataset
    words = [*list(dataset.med_vocab.titles), "Yes", "No", "Candidate", "drug:", "Answer:"]
    enc = PromptEncoder(load_tokenizer(build_tiny_tokenizer(words, tmp_path_factory.mktemp("t"))))
    rng = np.random.default_rng(0)
    tables = {
        "patient": rng.normal(size=(len(dataset.visits), 6)).astype(np.float32),
        "diagnosis": rng.normal(size=(len(dataset.diag_vocab), 4)).astype(np.float32),
        "procedure": rng.normal(size=(len(dataset.proc_vocab), 4)).astype(np.float32),
        "drug": rng.normal(size=(dataset.num_meds, 5)).astype(np.float32),
    }
    truth = dataset.visits.med.multi_hot(dataset.num_meds)
    tasks = []
    for r in range(6):
        have = np.flatnonzero(truth[r])
        pre = (*(int(d) for d in have[1:]), int(np.flatnonzero(~truth[r])[0]))
        add = (int(have[0]),) if len(have) else ()
        tasks.append(EditTask(row=r, pre_list=tuple(sorted(pre)), add=add, remove=pre[-1:]))
    config = PromptConfig(history=False, max_codes=1, code_names=False)
    ex = list_examples(
        dataset, enc, tasks, config=config, previous=previous_visit_rows(dataset), target_length=8
    )
    vocabulary = DrugVocabulary(names=tuple(dataset.med_vocab.titles))
    policy = build_policy(TINY, enc.tokenizer, tables, seed=0)
    add_lora(policy.decoder, LoraConfig(rank=2, alpha=4.0), rngs=nnx.Rngs(3))
    # Non-zero adapters: the policy differs from the reference, so the KL term has a gradient.
    lora = nnx.state(policy, nnx.LoRAParam)
    keys = iter(jax.random.split(jax.random.key(5), len(jax.tree.leaves(lora))))
    nnx.update(policy, jax.tree.map(lambda x: 0.3 * jax.random.normal(next(keys), x.shape), lora))
    rollout = make_rollout(
        ex,
        truth,
        enc,
        vocabulary,
        to_knowledge_tables(tables),
        group_size=2,
        prompts_per_step=LOOP.batch_size,
        temperature=1.0,
        seed=7,
        vocab_size=policy.decoder.config.vocab_size,
    )
    loss_fn = grpo_loss_fn(
        dataset.ddi.astype(bool),
        shaping=ShapingConfig(ddi_weight=1.0),
        advantage=AdvantageConfig(),
        loss=LossConfig(),
    )

    def draw(step):
        # A random tiny model writes no valid line, so every reward of a group is equal and the
        # advantages vanish. Synthetic episodes (seeded by the step) give the policy term a
        # gradient; the completions and their log-probs are a real rollout.
        batch, host = rollout(step, policy)
        b, g, lc = batch["completion"].shape
        rng = np.random.default_rng([11, step])
        mask = np.arange(3)[None, None] < rng.integers(1, 4, size=(b, g, 1))
        valid = mask & (rng.random((b, g, 3)) < 0.8)
        drug = np.where(valid, rng.integers(0, dataset.num_meds, (b, g, 3)), 0).astype(np.int32)
        delta = np.where(valid, rng.choice([-1, 1], (b, g, 3)), 0).astype(np.int32)
        steps = np.minimum(np.arange(lc) // 3, mask.sum(-1, keepdims=True) - 1).astype(np.int32)
        batch["episodes"] = (drug, delta, valid, mask)
        batch["token_steps"] = np.where(batch["completion_mask"], steps, -1).astype(np.int32)
        return jax.tree.map(np.asarray, batch), host

    # Rollouts are drawn once, on one device, with the initial policy (compiling the sampler for
    # every mesh would dominate the run time; sharded generation is tested on its own below).
    batches = {step: draw(step) for step in range(1, LOOP.steps + 1)}

    def batch_fn(step, module):
        batch, host = batches[step]
        return batch, dict(host)

    state = jax.tree.map(np.asarray, nnx.state(policy))
    return {"policy": policy, "state": state, "batch_fn": batch_fn, "loss_fn": loss_fn, "enc": enc}


def _train(setup, out, mesh=None, config=LOOP, **kw):
    policy = setup["policy"]
    nnx.update(policy, jax.tree.map(jnp.asarray, setup["state"]))
    rows = run_loop(
        policy,
        wrt=nnx.LoRAParam,
        loss_fn=setup["loss_fn"],
        batch_fn=setup["batch_fn"],
        config=config,
        out=out,
        record={"test": 1},
        progress=False,
        mesh=mesh,
        **kw,
    )
    lora = jax.tree.map(np.asarray, nnx.state(policy, nnx.LoRAParam))
    return rows, lora, policy


@pytest.fixture(scope="module")
def single(setup, tmp_path_factory):
    rows, lora, _ = _train(setup, tmp_path_factory.mktemp("single"))
    return rows, lora


_METRICS = ("loss", "grad_norm", "policy_loss", "kl", "reward", "completion_length")


def _assert_same_rows(rows, ref_rows):
    assert [r["step"] for r in rows] == [r["step"] for r in ref_rows]
    for got, want in zip(rows, ref_rows, strict=True):
        for k in _METRICS:
            np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-5, err_msg=k)


def _assert_split(array, spec):
    """``array`` has ``spec`` and really is split: a shard is smaller than the whole."""
    assert array.sharding.spec == spec
    assert not array.sharding.is_fully_replicated
    assert array.addressable_shards[0].data.size < array.size


def test_sharded_grpo_steps_and_resume_on_another_mesh(setup, single, tmp_path):
    ref_rows, ref_lora = single
    assert ref_rows[0]["advantage_abs_max"] > 0 and ref_rows[0]["kl"] > 0  # not a trivial step
    rows, _, policy = _train(setup, tmp_path, make_mesh(MESHES["d2f2t2"]), stop_after=1)
    _assert_same_rows(rows, ref_rows[:1])
    q = policy.decoder.layers[0].self_attn.q_proj
    _assert_split(q.kernel[...], P("fsdp", "tp"))
    _assert_split(q.lora.lora_b[...], P(None, "tp"))
    # The step-1 checkpoint was written from a 2x2x2 mesh; resume it on fsdp=4, tp=2.
    rows, lora, policy = _train(setup, tmp_path, make_mesh(MESHES["f4t2"]))
    _assert_same_rows(rows, ref_rows[1:])
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), lora, ref_lora
    )
    down = policy.decoder.layers[0].mlp.down_proj
    _assert_split(down.kernel[...], P("tp", "fsdp"))
    _assert_split(down.lora.lora_b[...], P(None, "fsdp"))
    _assert_split(policy.decoder.embed_tokens.embedding[...], P(("tp", "fsdp"), None))


@pytest.mark.parametrize(("k", "mesh"), [(2, None), (4, "d2f2t2")])
def test_micro_batched_grpo_steps_match_the_whole_batch(setup, single, tmp_path, k, mesh):
    """Gradient accumulation over k micro-batches of whole prompt groups makes the whole batch's
    updates, on one device and sharded: the same loss, gradient norm, policy loss, rewards and
    adapters. (The token-mean metrics, kl for one, become means of micro-batch means.)"""
    ref_rows, ref_lora = single
    config = dataclasses.replace(LOOP, micro_batches=k)
    rows, lora, _ = _train(
        setup,
        tmp_path,
        mesh and make_mesh(MESHES[mesh]),
        config=config,
        micro_batching=grpo_micro_batching(LossConfig()),
    )
    for got, want in zip(rows, ref_rows, strict=True):
        for key in ("loss", "grad_norm", "policy_loss", "reward", "advantage_abs_max"):
            np.testing.assert_allclose(got[key], want[key], rtol=1e-4, atol=1e-6, err_msg=key)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), lora, ref_lora
    )


def test_micro_batches_need_a_stage_that_cuts_its_batch(setup, tmp_path):
    config = dataclasses.replace(LOOP, micro_batches=2)
    with pytest.raises(ValueError, match=r"does not support micro_batches > 1 \(got 2\)"):
        _train(setup, tmp_path, config=config)
    with pytest.raises(ValueError, match=r"micro_batches \(3\) must divide batch_size \(4\)"):
        dataclasses.replace(LOOP, micro_batches=3)
    with pytest.raises(ValueError, match=r"micro_batches must be >= 1"):
        dataclasses.replace(LOOP, micro_batches=0)


def test_checkpointer_restores_onto_another_mesh_shape(tmp_path):
    a, b = make_mesh(MESHES["d2f2t2"]), make_mesh(MeshConfig(data=1, fsdp=8, tp=1))
    rng = np.random.default_rng(1)
    state = {
        "layers": {"mlp": {"up_proj": {"kernel": rng.normal(size=(16, 32)).astype(np.float32)}}},
        "count": np.int32(3),
    }
    placed = jax.tree.map(jax.device_put, state, state_shardings(state, a))
    assert placed["layers"]["mlp"]["up_proj"]["kernel"].sharding.spec == P("fsdp", "tp")
    with Checkpointer(tmp_path / "c") as ckpt:
        ckpt.save(5, placed, {"k": 1})
        target = state_shardings(state, b)
        step, got, record = ckpt.restore(state, shardings=target)
    kernel = got["layers"]["mlp"]["up_proj"]["kernel"]
    assert step == 5 and record == {"k": 1}
    assert kernel.sharding == target["layers"]["mlp"]["up_proj"]["kernel"]
    assert kernel.sharding.spec == P("fsdp", "tp")  # tp has size 1 here
    assert kernel.addressable_shards[0].data.shape == (2, 32)
    np.testing.assert_array_equal(np.asarray(kernel), state["layers"]["mlp"]["up_proj"]["kernel"])
    assert int(got["count"]) == 3


@pytest.fixture(scope="module")
def generation_case(setup):
    """Prompts, ban and the one-device generation they are compared with."""
    policy = setup["policy"]
    nnx.update(policy, jax.tree.map(jnp.asarray, setup["state"]))
    rng = np.random.default_rng(2)
    tokens = rng.integers(3, 40, size=(8, 16)).astype(np.int32)
    mask = np.ones((8, 16), bool)
    mask[:, :3] = np.arange(3)[None] >= rng.integers(0, 4, size=(8, 1))
    banned = jnp.asarray(banned_tokens(setup["enc"], policy.decoder.config.vocab_size))
    config = SamplingConfig(max_new_tokens=6, temperature=1.0, min_length_bucket=16)
    want = make_generator(config)(
        policy.decoder, tokens, mask, key=jax.random.key(4), banned=banned
    )
    return tokens, mask, banned, config, want


@pytest.mark.parametrize("name", ["d2f2t2", "data8"])
def test_sharded_generation_matches_one_device(setup, generation_case, name):
    tokens, mask, banned, config, want = generation_case
    policy = setup["policy"]
    nnx.update(policy, jax.tree.map(jnp.asarray, setup["state"]))
    mesh = make_mesh(MESHES[name])
    model = shard_module(policy.decoder, mesh)
    if name == "d2f2t2":
        _assert_split(model.layers[0].mlp.up_proj.kernel[...], P("fsdp", "tp"))
    toks, msk = shard_batch((jnp.asarray(tokens), jnp.asarray(mask)), mesh)
    lead = NamedSharding(mesh, P(("data", "fsdp") if name == "d2f2t2" else "data", None))
    assert toks.sharding.is_equivalent_to(lead, 2)
    got = make_generator(config)(
        model, toks, msk, key=jax.random.key(4), banned=banned, cache_sharding=CacheSharding(mesh)
    )
    np.testing.assert_array_equal(np.asarray(got.tokens), np.asarray(want.tokens))
    np.testing.assert_array_equal(np.asarray(got.lengths), np.asarray(want.lengths))
    np.testing.assert_allclose(got.logprobs, want.logprobs, rtol=1e-5, atol=1e-5)
    # The completions come back split over the batch (the compiler may pick fewer axes).
    assert got.tokens.sharding.spec[0] is not None and got.tokens.sharding.spec[1:] in ((), (None,))
    assert got.tokens.addressable_shards[0].data.shape[0] < got.tokens.shape[0]


def test_cli_mesh_flag_sets_the_config():
    import argparse

    from flame_jax.cli._flame import _config

    args = argparse.Namespace(config=None, seed=None, mesh="data=2,tp=4")
    assert _config(args).mesh == MeshConfig(data=2, fsdp=1, tp=4)
    with pytest.raises(ValueError, match="AXIS=SIZE"):
        _config(argparse.Namespace(config=None, seed=None, mesh="x=2"))
