"""Logit parity with Hugging Face PyTorch (LlamaForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM).

Each test builds a random tiny HF model (every tensor random, biases and norms included), saves it,
loads it with ``from_pretrained`` and compares float32 logits on random tokens, with and without
left padding; and the reverse direction through ``save_pretrained``.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from flame_jax.policy import (
    Decoder,
    DecoderConfig,
    from_pretrained,
    save_pretrained,
    shard_largest_axis,
)

pytestmark = pytest.mark.slow  # parity with PyTorch reference models (make test-fast skips them)

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

torch.set_num_threads(1)

_COMMON = {
    "vocab_size": 97,
    "hidden_size": 32,
    "intermediate_size": 48,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 64,
    "rms_norm_eps": 1e-5,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 0,
}

# name -> (HF class, config kwargs)
CASES = {
    "llama": (
        "LlamaForCausalLM",
        "LlamaConfig",
        {
            "tie_word_embeddings": False,
            "rope_parameters": {"rope_type": "default", "rope_theta": 500.0},
        },
    ),
    "llama3_scaled_bias_tied": (
        "LlamaForCausalLM",
        "LlamaConfig",
        {
            "tie_word_embeddings": True,
            "attention_bias": True,
            "rope_parameters": {
                "rope_type": "llama3",
                "rope_theta": 10000.0,
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 16,
            },
        },
    ),
    "qwen2": (
        "Qwen2ForCausalLM",
        "Qwen2Config",
        {
            "tie_word_embeddings": True,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1000.0},
        },
    ),
    "qwen3": (
        "Qwen3ForCausalLM",
        "Qwen3Config",
        {"tie_word_embeddings": False, "head_dim": 16, "num_key_value_heads": 1},
    ),
}


def _randomise_torch(model, seed):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.3 * noise)
            else:
                p.copy_(0.3 * noise)


def _hf_model(name, seed=0):
    cls_name, cfg_name, extra = CASES[name]
    cfg = getattr(transformers, cfg_name)(**{**_COMMON, **extra})
    torch.manual_seed(seed)
    model = getattr(transformers, cls_name)(cfg).to(torch.float32).eval()
    _randomise_torch(model, seed)
    return model


def _hf_logits(model, tokens, mask):
    positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
    with torch.no_grad():
        out = model(
            input_ids=torch.tensor(tokens, dtype=torch.long),
            attention_mask=torch.tensor(mask, dtype=torch.long),
            position_ids=torch.tensor(positions, dtype=torch.long),
        )
    return out.logits.numpy().astype(np.float64)


def _logits_traced(model, tokens, mask):
    positions = jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0)
    hidden, _ = model(model.embed(tokens), positions, kv_mask=mask)
    return model.logits(hidden)


_jit_logits = nnx.jit(_logits_traced)


def _our_logits(model, tokens, mask, *, eager=False):
    fn = _logits_traced if eager else _jit_logits
    return np.asarray(fn(model, jnp.asarray(tokens), jnp.asarray(mask, dtype=bool)), np.float64)


def _batch(seed, batch=3, tokens=11, vocab=97):
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, vocab, size=(batch, tokens))
    mask = np.ones((batch, tokens), dtype=bool)
    for b, pad in enumerate(rng.integers(0, tokens - 2, size=batch)):
        mask[b, :pad] = False  # left padding
    mask[0] = True  # one full row
    ids = np.where(mask, ids, 0)
    return ids, mask


def _assert_close(ours, theirs, mask):
    # Logits here reach |6-8|; HF's own float32 logits differ from its float64 ones by ~5e-6,
    # a wrong RoPE scaling, bias or norm by > 1e-2.
    m = np.broadcast_to(mask[:, :, None], ours.shape)
    assert np.abs(theirs[m]).max() > 1.0  # the comparison is not trivially of near-zero logits
    np.testing.assert_allclose(ours[m], theirs[m], rtol=1e-5, atol=3e-5)


@pytest.mark.parametrize("name", sorted(CASES))
def test_from_pretrained_matches_hf(name, tmp_path):
    hf = _hf_model(name, seed=1)
    hf.save_pretrained(tmp_path / "hf")
    model, config = from_pretrained(tmp_path / "hf")
    hf_class = CASES[name][0]
    assert (
        config.architecture
        == {
            "LlamaForCausalLM": "llama",
            "Qwen2ForCausalLM": "qwen2",
            "Qwen3ForCausalLM": "qwen3",
        }[hf_class]
    )
    assert config.param_dtype == "float32"
    tokens, mask = _batch(2)
    want = _hf_logits(hf, tokens, mask)
    _assert_close(_our_logits(model, tokens, mask), want, mask)
    if name == "llama3_scaled_bias_tied":  # eager once (op-by-op dispatch is slow to warm up)
        _assert_close(_our_logits(model, tokens, mask, eager=True), want, mask)
    full = np.ones_like(mask)
    _assert_close(_our_logits(model, tokens, full), _hf_logits(hf, tokens, full), full)


def _randomise_ours(model, seed):
    rng = np.random.default_rng(seed)
    new = jax.tree.map(
        lambda x: jnp.asarray(0.3 * rng.normal(size=x.shape) + (x == 1).all(), x.dtype),
        nnx.state(model, nnx.Param),
    )
    nnx.update(model, new)


@pytest.mark.parametrize("name", sorted(CASES))
def test_save_pretrained_loads_in_hf(name, tmp_path):
    hf0 = _hf_model(name, seed=3)
    hf0.save_pretrained(tmp_path / "hf")
    _, config = from_pretrained(tmp_path / "hf")
    ours = Decoder(config, rngs=nnx.Rngs(4))
    _randomise_ours(ours, 5)
    shard = 20_000 if name == "qwen2" else 5 * 2**30  # one case written as several shards
    out = save_pretrained(ours, config, tmp_path / "ours", max_shard_bytes=shard)
    if name == "qwen2":
        index = json.loads((out / "model.safetensors.index.json").read_text())
        assert len(set(index["weight_map"].values())) > 1
        assert not (out / "model.safetensors").exists()
    hf = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert type(hf).__name__ == CASES[name][0]
    tokens, mask = _batch(6)
    _assert_close(_our_logits(ours, tokens, mask), _hf_logits(hf, tokens, mask), mask)
    again, _ = from_pretrained(out)
    for x, y in zip(
        jax.tree.leaves(nnx.state(again)), jax.tree.leaves(nnx.state(ours)), strict=True
    ):
        np.testing.assert_array_equal(x, y)


def test_bfloat16_checkpoints(tmp_path):
    hf = _hf_model("qwen3", seed=7).to(torch.bfloat16)
    hf.save_pretrained(tmp_path / "hf")
    model, config = from_pretrained(tmp_path / "hf")
    assert config.param_dtype == "bfloat16"
    want = hf.model.layers[1].self_attn.k_proj.weight.detach().float().numpy()
    got = np.asarray(model.layers[1].self_attn.k_proj.kernel[...].astype(jnp.float32))
    np.testing.assert_array_equal(got.T, want)  # bitwise: no rounding on the way in
    tokens, mask = _batch(8)
    theirs = _hf_logits(hf.float(), tokens, mask)
    ours = _our_logits(model, tokens, mask)
    m = np.broadcast_to(mask[:, :, None], ours.shape)
    assert np.abs(ours - theirs)[m].max() < 0.05 * np.abs(theirs[m]).max()
    out = save_pretrained(model, None, tmp_path / "ours")
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    back = transformers.AutoModelForCausalLM.from_pretrained(out, dtype="auto")
    assert back.model.layers[1].self_attn.k_proj.weight.dtype == torch.bfloat16
    np.testing.assert_array_equal(
        back.model.layers[1].self_attn.k_proj.weight.detach().float().numpy(), want
    )
    as32, cfg32 = from_pretrained(out, dtype="float32")
    assert cfg32.param_dtype == "float32" and as32.norm.weight.dtype == jnp.float32


def test_bad_checkpoints_are_named(tmp_path):
    from safetensors.numpy import load_file, save_file

    hf = _hf_model("llama", seed=9)
    hf.save_pretrained(tmp_path / "ok")
    tensors = load_file(tmp_path / "ok" / "model.safetensors")
    config = (tmp_path / "ok" / "config.json").read_text()

    def write(name, tensors):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(config)
        save_file(tensors, tmp_path / name / "model.safetensors", metadata={"format": "pt"})
        return tmp_path / name

    missing = {k: v for k, v in tensors.items() if k != "model.layers.1.mlp.up_proj.weight"}
    with pytest.raises(ValueError, match="missing tensors.*layers.1.mlp.up_proj"):
        from_pretrained(write("missing", missing))
    extra = {**tensors, "model.layers.9.self_attn.q_proj.weight": tensors["lm_head.weight"]}
    with pytest.raises(ValueError, match="no place for.*layers.9"):
        from_pretrained(write("extra", extra))
    bad = {**tensors, "model.norm.weight": np.ones(31, np.float32)}
    with pytest.raises(ValueError, match="model.safetensors: tensor 'model.norm.weight' has shape"):
        from_pretrained(write("shape", bad))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text(config)
    with pytest.raises(FileNotFoundError, match="no model.safetensors"):
        from_pretrained(tmp_path / "empty")
    with pytest.raises(FileExistsError, match="not empty"):
        model, _ = from_pretrained(tmp_path / "ok")
        save_pretrained(model, None, tmp_path / "ok")


def test_sharded_loading_on_eight_devices(tmp_path):
    devices = jax.devices()
    assert len(devices) >= 8, "tests/conftest.py provides 8 simulated CPU devices"
    config = DecoderConfig.tiny(vocab_size=64, hidden_size=32, intermediate_size=48, head_dim=8)
    graphdef, state = nnx.split(nnx.eval_shape(lambda: Decoder(config, rngs=nnx.Rngs(0))))
    rng = np.random.default_rng(0)
    state = jax.tree.map(lambda x: jnp.asarray(0.3 * rng.normal(size=x.shape), x.dtype), state)
    plain = nnx.merge(graphdef, state)
    out = save_pretrained(plain, None, tmp_path / "m")
    mesh = jax.make_mesh((8,), ("fsdp",), axis_types=(jax.sharding.AxisType.Auto,))
    model, _ = from_pretrained(out, sharding=shard_largest_axis(mesh, "fsdp"))
    up = model.layers[0].mlp.up_proj.kernel[...]  # [32, 48]: 48 is the largest, 48 % 8 == 0
    assert up.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp")
    assert {s.data.shape for s in up.addressable_shards} == {(32, 6)}
    emb = model.embed_tokens.embedding[...]
    assert emb.sharding.spec == jax.sharding.PartitionSpec("fsdp", None)
    assert model.norm.weight[...].sharding.is_fully_replicated
    tokens, mask = _batch(3, vocab=64)
    logits = _jit_logits(model, jnp.asarray(tokens), jnp.asarray(mask))
    want = _jit_logits(plain, jnp.asarray(tokens), jnp.asarray(mask))
    np.testing.assert_allclose(logits, want, atol=2e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="no axis 'tp'"):
        shard_largest_axis(mesh, "tp")
