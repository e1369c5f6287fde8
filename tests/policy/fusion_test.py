"""Knowledge fusion: projector MLP vs float64, injection vs a loop, baking round trip, training."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from flame_jax.policy._fusion import (
    EntityTokens,
    FusionConfig,
    KnowledgeProjectors,
    KnowledgeTables,
    SlotKind,
    bake,
    bake_into,
    inject,
)
from flame_jax.policy._lora import LoraConfig, add_lora, split_lora
from flame_jax.policy._scoring import completion_logprobs
from tests.policy.lm_helpers import random_model

KINDS = ("patient", "diagnosis", "procedure", "drug")
DIM = 32


def reference_mlp(projector, x):
    w1 = np.asarray(projector.fc1.kernel[...], np.float64)
    b1 = np.asarray(projector.fc1.bias[...], np.float64)
    w2 = np.asarray(projector.fc2.kernel[...], np.float64)
    b2 = np.asarray(projector.fc2.bias[...], np.float64)
    a = np.asarray(x, np.float64) @ w1 + b1
    gelu = np.vectorize(lambda v: 0.5 * v * (1.0 + math.erf(v / math.sqrt(2.0))))
    return gelu(a) @ w2 + b2


def random_tables(seed, config, sizes=(3, 10, 7, 12)):
    rng = np.random.default_rng(seed)
    return KnowledgeTables(
        *(
            jnp.asarray(rng.normal(size=(n, d)), jnp.float32)
            for n, d in zip(sizes, config.input_dims, strict=True)
        )
    )


def random_slots(seed, batch, tokens, sizes=(3, 10, 7, 12)):
    rng = np.random.default_rng(seed)
    kind = rng.integers(0, 5, (batch, tokens))
    ref = np.zeros((batch, tokens), np.int64)
    for k in range(1, 5):
        ref[kind == k] = rng.integers(0, sizes[k - 1], (kind == k).sum())
    return kind, ref


@pytest.fixture(scope="module")
def projectors():
    # Abstract init, then NumPy draws: no eager initializer compiles.
    proj = nnx.eval_shape(lambda: KnowledgeProjectors(FusionConfig.tiny(DIM), rngs=nnx.Rngs(0)))
    leaves, treedef = jax.tree.flatten(nnx.state(proj, nnx.Param))
    rng = np.random.default_rng(0)
    new = [jnp.asarray(rng.normal(size=x.shape) / np.sqrt(x.shape[0]), x.dtype) for x in leaves]
    nnx.update(proj, jax.tree.unflatten(treedef, new))
    return proj


@pytest.mark.parametrize(("shape", "use_jit"), [((1, 1), False), ((2, 9), True), ((3, 16), True)])
def test_projectors_match_float64_and_inject(projectors, shape, use_jit):
    config = projectors.config
    tables = random_tables(shape[1], config)
    kind, ref = random_slots(shape[0] * 7 + shape[1], *shape)
    emb = np.random.default_rng(1).normal(size=(*shape, DIM)).astype(np.float32)
    fn = nnx.jit(lambda p, e, k, r, t: p(e, k, r, t)) if use_jit else (lambda p, *a: p(*a))
    got = np.asarray(fn(projectors, jnp.asarray(emb), jnp.asarray(kind), jnp.asarray(ref), tables))
    projected = [reference_mlp(getattr(projectors, k), getattr(tables, k)) for k in KINDS]
    want = emb.astype(np.float64).copy()
    for b, t in np.ndindex(*shape):
        if kind[b, t]:
            want[b, t] = projected[kind[b, t] - 1][ref[b, t]]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # The pure substitution with pre-projected tables gives the same result.
    injected = inject(
        jnp.asarray(emb), jnp.asarray(kind), jnp.asarray(ref), projectors.project_tables(tables)
    )
    np.testing.assert_allclose(np.asarray(injected), got, atol=1e-6)


def test_inject_without_slots_is_identity_and_skips_unused_kinds():
    emb = jnp.arange(12.0).reshape(1, 3, 4)
    kind = jnp.array([[SlotKind.NONE, SlotKind.DRUG, SlotKind.PATIENT]])
    ref = jnp.array([[0, 1, 0]])
    drug = jnp.full((2, 4), 9.0)
    out = inject(emb, kind, ref, (None, None, None, drug))
    assert out[0, 1].tolist() == [9.0] * 4
    assert out[0, 0].tolist() == emb[0, 0].tolist() and out[0, 2].tolist() == emb[0, 2].tolist()
    none = jnp.zeros((1, 3), jnp.int32)
    assert (inject(emb, none, ref, (drug, drug, drug, drug)) == emb).all()
    with pytest.raises(ValueError, match="4 tables"):
        inject(emb, kind, ref, (drug,))


def test_bake_round_trip_equals_placeholder_fusion(projectors):
    """Entity tokens with baked rows give the same hidden states as placeholders + fusion."""
    model = random_model(1, hidden_size=DIM, vocab_size=128)
    tables = random_tables(2, projectors.config, sizes=(2, 4, 3, 5))
    # Entity tokens occupy the top of the vocabulary: 14 rows from id 100.
    ids = EntityTokens(
        patient=jnp.arange(100, 102),
        diagnosis=jnp.arange(102, 106),
        procedure=jnp.arange(106, 109),
        drug=jnp.arange(109, 114),
    )
    placeholder = 60  # one [XEmb] placeholder id for all kinds (its own row is irrelevant)
    text = [5, 6, placeholder, 7, placeholder, placeholder, 8, placeholder, 9]
    kind = [0, 0, 1, 0, 2, 4, 0, 3, 0]
    ref = [0, 0, 1, 0, 3, 4, 0, 2, 0]
    entity = [
        int(getattr(ids, KINDS[k - 1])[r]) if k else t
        for t, k, r in zip(text, kind, ref, strict=True)
    ]
    tokens = jnp.asarray([text])
    fuse = nnx.jit(lambda p, m, k, r: p(m.embed(tokens), k, r, tables))
    fused = fuse(projectors, model, jnp.asarray([kind]), jnp.asarray([ref]))
    positions = jnp.arange(len(text))[None, :]
    full = jnp.ones((1, len(text)), bool)
    forward = nnx.jit(lambda m, e: m(e, positions, kv_mask=full)[0])
    want = forward(model, fused)
    bake_into(model, projectors, tables, ids)
    baked = model.embed(jnp.asarray([entity]))
    np.testing.assert_allclose(np.asarray(baked), np.asarray(fused), atol=1e-6)
    got = forward(model, baked)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)
    table = model.embed_tokens.embedding[...]
    assert np.asarray(bake(table, jnp.array([3]), table[3:4] + 1.0) != table).sum() == DIM
    with pytest.raises(ValueError, match="outside the vocabulary"):
        bake_into(model, projectors, tables, EntityTokens(drug=jnp.arange(125, 130)))


def test_projectors_train_together_with_lora(projectors):
    model = random_model(2, hidden_size=DIM)
    add_lora(model, LoraConfig(rank=2, targets=("q", "v")), rngs=nnx.Rngs(3))
    graphdef, lora, base = split_lora(model)
    pdef, pstate = nnx.split(projectors)
    tables = random_tables(4, projectors.config)
    prompt = jnp.asarray([[5, 60, 7, 60, 8]])
    pmask = jnp.ones((1, 5), bool)
    kind = jnp.asarray([[0, SlotKind.DRUG, 0, SlotKind.PATIENT, 0]])
    ref = jnp.asarray([[0, 3, 0, 1, 0]])
    answer = jnp.asarray([[30, 31]])

    @jax.jit
    def loss(lora, pstate):
        m = nnx.merge(graphdef, lora, base)
        p = nnx.merge(pdef, pstate)
        emb = p(m.embed(prompt), kind, ref, tables)
        lp = completion_logprobs(
            m, prompt, pmask, answer, jnp.ones((1, 2), bool), prompt_embeddings=emb, chunk_size=64
        )
        return -lp.sum()

    g_lora, g_proj = jax.grad(loss, argnums=(0, 1))(lora, pstate)
    norms = lambda tree: [float(jnp.abs(x).sum()) for x in jax.tree.leaves(tree)]
    assert all(np.isfinite(norms(g_lora))) and sum(norms(g_lora)) > 0
    assert sum(norms(g_proj["drug"])) > 0 and sum(norms(g_proj["patient"])) > 0
    # Kinds without a slot in the prompt get exactly zero gradient.
    assert sum(norms(g_proj["diagnosis"])) == 0


def test_config_validation():
    assert FusionConfig.paper().input_dims == (512, 64, 64, 300)
    with pytest.raises(ValueError, match="input_dims"):
        FusionConfig(model_dim=8, input_dims=(1, 2, 3), hidden_dims=(1, 1, 1, 1))
    with pytest.raises(ValueError, match="hidden_dims for drug"):
        FusionConfig(model_dim=8, input_dims=(1, 2, 3, 4), hidden_dims=(1, 1, 1, 0))
    with pytest.raises(ValueError, match="param_dtype"):
        FusionConfig(
            model_dim=8, input_dims=(1, 2, 3, 4), hidden_dims=(1, 1, 1, 1), param_dtype="float16"
        )
    partial = KnowledgeProjectors(
        FusionConfig(model_dim=8, input_dims=(0, 0, 0, 4), hidden_dims=(0, 0, 0, 3)),
        rngs=nnx.Rngs(0),
    )
    assert partial.patient is None
    with pytest.raises(ValueError, match="no projector for kind 'patient'"):
        partial.project("patient", jnp.ones((1, 4)))
