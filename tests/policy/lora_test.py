"""LoRA: the adapter math against float64, training touches only LoRAParam, the reference policy
(lora=False) is the untouched base model, merge and export (incl. loading the export in HF)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from flame_jax.policy import (
    Decoder,
    DecoderConfig,
    LoraConfig,
    add_lora,
    from_pretrained,
    has_lora,
    lora_projections,
    make_lora_optimizer,
    merge_lora,
    save_pretrained,
    split_lora,
)

CONFIG = DecoderConfig.tiny(
    vocab_size=53, hidden_size=32, intermediate_size=48, head_dim=8, tie_embeddings=False
)


def random_decoder(config, seed):
    """A decoder with every parameter random (fast: no eager initialisers)."""
    graphdef, state = nnx.split(nnx.eval_shape(lambda: Decoder(config, rngs=nnx.Rngs(0))))
    rng = np.random.default_rng(seed)
    state = jax.tree.map(
        lambda x: jnp.asarray(0.3 * rng.normal(size=x.shape) + 1.0 * (len(x.shape) == 1), x.dtype),
        state,
    )
    return nnx.merge(graphdef, state)


def _randomise_lora(model, seed):
    rng = np.random.default_rng(seed)
    nnx.update(
        model,
        jax.tree.map(
            lambda x: jnp.asarray(0.2 * rng.normal(size=x.shape), x.dtype),
            nnx.state(model, nnx.LoRAParam),
        ),
    )


def _batch(seed=0, batch=2, length=6):
    rng = np.random.default_rng(seed)
    tokens = jnp.asarray(rng.integers(1, CONFIG.vocab_size, size=(batch, length)))
    mask = jnp.asarray(np.arange(length)[None, :] >= rng.integers(0, 3, size=(batch, 1)))
    return tokens, mask


@nnx.jit(static_argnames="lora")
def _logits(model, tokens, mask, lora=True):
    positions = jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0)
    hidden, _ = model(model.embed(tokens), positions, kv_mask=mask, lora=lora)
    return model.logits(hidden)


def test_projection_lora_against_float64():
    model = random_decoder(CONFIG, 0)
    add_lora(model, LoraConfig(rank=3, alpha=6.0, targets=("q",)), rngs=nnx.Rngs(1))
    _randomise_lora(model, 2)
    proj = model.layers[0].self_attn.q_proj
    x = np.random.default_rng(3).normal(size=(2, 5, 32))
    w = np.asarray(proj.kernel[...], np.float64)
    a = np.asarray(proj.lora.lora_a[...], np.float64)
    b = np.asarray(proj.lora.lora_b[...], np.float64)
    ref = x @ w + 2.0 * (x @ a) @ b
    xj = jnp.asarray(x, jnp.float32)
    np.testing.assert_allclose(proj(xj), ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(proj(xj, lora=False), x @ w, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(nnx.jit(lambda p, v: p(v))(proj, xj), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("targets", [("k", "o", "up")])
def test_add_lora_targets_and_fresh_adapter_is_identity(targets):
    model = random_decoder(CONFIG, 1)
    tokens, mask = _batch()
    base = _logits(model, tokens, mask)
    add_lora(model, LoraConfig(rank=2, alpha=4.0, targets=targets), rngs=nnx.Rngs(0))
    chosen = {id(p) for p in lora_projections(model, targets)}
    for p in lora_projections(model):
        assert (p.lora is not None) == (id(p) in chosen)
        if p.lora is not None:
            assert p.lora.lora_a.shape == (p.in_features, 2)
            assert p.lora.lora_b.shape == (2, p.out_features)
            assert p.lora_scale == 2.0
    np.testing.assert_array_equal(_logits(model, tokens, mask), base)  # B = 0
    np.testing.assert_array_equal(_logits(model, tokens, mask, lora=False), base)
    with pytest.raises(ValueError, match="already has LoRA"):
        add_lora(model, LoraConfig(targets=("q",)), rngs=nnx.Rngs(0))


def _loss(model, tokens, mask):
    positions = jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0)
    hidden, _ = model(model.embed(tokens), positions, kv_mask=mask)
    logits = model.logits(hidden)[:, :-1]
    logp = jax.nn.log_softmax(logits, axis=-1)
    target = jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[..., 0]
    weight = mask[:, 1:].astype(jnp.float32)
    return -(target * weight).sum() / weight.sum()


def test_optimizer_trains_only_lora_and_reference_is_base():
    model = random_decoder(CONFIG, 4)
    tokens, mask = _batch(5)
    base_logits = _logits(model, tokens, mask)
    base_params = jax.tree.map(jnp.copy, nnx.state(model, nnx.Param))
    add_lora(model, LoraConfig(rank=4, alpha=8.0), rngs=nnx.Rngs(2))
    optimizer = make_lora_optimizer(model, optax.adam(1e-2))

    @nnx.jit
    def train_step(model, optimizer, tokens, mask):
        loss, grads = nnx.value_and_grad(_loss, argnums=nnx.DiffState(0, nnx.LoRAParam))(
            model, tokens, mask
        )
        optimizer.update(model, grads)
        return loss

    losses = [float(train_step(model, optimizer, tokens, mask)) for _ in range(5)]
    assert losses[-1] < losses[0] - 0.05
    after = nnx.state(model, nnx.All(nnx.Param, nnx.Not(nnx.LoRAParam)))
    for x, y in zip(jax.tree.leaves(after), jax.tree.leaves(base_params), strict=True):
        np.testing.assert_array_equal(x, y)  # base weights bitwise untouched
    assert any(
        float(jnp.abs(b).max()) > 0 for b in jax.tree.leaves(nnx.state(model, nnx.LoRAParam))
    )
    # Reference policy: same model, adapters off, equals the base model exactly.
    np.testing.assert_array_equal(_logits(model, tokens, mask, lora=False), base_logits)
    assert np.abs(np.asarray(_logits(model, tokens, mask) - base_logits)).max() > 1e-3


def test_functional_split_trains_only_lora():
    model = random_decoder(CONFIG, 6)
    add_lora(model, LoraConfig(rank=2, targets=("q", "v", "down")), rngs=nnx.Rngs(3))
    graphdef, lora, base = split_lora(model)
    assert {
        type(v) for v in jax.tree.leaves(lora, is_leaf=lambda x: isinstance(x, nnx.Variable))
    } == {nnx.LoRAParam}
    tx = optax.sgd(1e-3)
    opt_state = tx.init(lora)
    tokens, mask = _batch(7)

    @jax.jit
    def step(lora, opt_state, base):
        def loss_fn(lora):
            return _loss(nnx.merge(graphdef, lora, base), tokens, mask)

        loss, grads = jax.value_and_grad(loss_fn)(lora)
        updates, opt_state = tx.update(grads, opt_state)
        return optax.apply_updates(lora, updates), opt_state, loss

    lora1, opt_state, loss0 = step(lora, opt_state, base)
    _, _, loss1 = step(lora1, opt_state, base)
    assert float(loss1) < float(loss0)


def test_merge_and_export(tmp_path):
    model = random_decoder(CONFIG, 8)
    tokens, mask = _batch(9)
    base_logits = _logits(model, tokens, mask)
    add_lora(model, LoraConfig(rank=2, alpha=3.0, targets=("q", "k", "o", "up")), rngs=nnx.Rngs(4))
    _randomise_lora(model, 10)
    adapted = _logits(model, tokens, mask)
    assert np.abs(np.asarray(adapted - base_logits)).max() > 1e-2
    merged_dir = save_pretrained(model, None, tmp_path / "merged")
    base_dir = save_pretrained(model, None, tmp_path / "base", lora=False)
    assert has_lora(model)  # exporting does not merge in place
    loaded, _ = from_pretrained(merged_dir)
    np.testing.assert_allclose(_logits(loaded, tokens, mask), adapted, atol=3e-5, rtol=1e-5)
    loaded_base, _ = from_pretrained(base_dir)
    np.testing.assert_array_equal(_logits(loaded_base, tokens, mask), base_logits)
    merge_lora(model)
    assert not has_lora(model) and not jax.tree.leaves(nnx.state(model, nnx.LoRAParam))
    np.testing.assert_allclose(_logits(model, tokens, mask), adapted, atol=3e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="no LoRA adapters"):
        make_lora_optimizer(model, optax.sgd(0.1))


@pytest.mark.slow  # parity with the PyTorch reference model
def test_export_loads_in_hugging_face(tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.set_num_threads(1)
    model = random_decoder(CONFIG, 11)
    add_lora(model, LoraConfig(rank=2, targets=("v", "gate")), rngs=nnx.Rngs(5))
    _randomise_lora(model, 12)
    tokens = jnp.asarray(np.random.default_rng(13).integers(1, 53, size=(2, 7)))
    mask = jnp.ones((2, 7), bool)
    ours = np.asarray(_logits(model, tokens, mask))
    out = save_pretrained(model, None, tmp_path / "m")
    hf = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    with torch.no_grad():
        theirs = hf(input_ids=torch.tensor(np.asarray(tokens))).logits.numpy()
    np.testing.assert_allclose(ours, theirs, atol=3e-5, rtol=1e-5)


def test_bfloat16_base_with_float32_adapters():
    model = random_decoder(dataclasses.replace(CONFIG, param_dtype="bfloat16"), 14)
    add_lora(model, LoraConfig(rank=2), rngs=nnx.Rngs(6))
    assert {x.dtype for x in jax.tree.leaves(nnx.state(model, nnx.LoRAParam))} == {
        jnp.dtype(jnp.float32)
    }
    _randomise_lora(model, 15)
    tokens, mask = _batch(16)
    logits = _logits(model, tokens, mask)
    assert logits.dtype == jnp.float32 and np.isfinite(np.asarray(logits)).all()
    merge_lora(model)
    assert model.layers[0].self_attn.q_proj.kernel.dtype == jnp.bfloat16


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rank": 0}, "rank"),
        ({"alpha": float("inf")}, "alpha"),
        ({"alpha": -1.0}, "alpha"),
        ({"targets": ()}, "targets"),
        ({"targets": ("q", "q")}, "targets"),
    ],
)
def test_lora_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=f"LoraConfig.{match}"):
        LoraConfig(**kwargs)
