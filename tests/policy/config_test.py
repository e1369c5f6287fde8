"""DecoderConfig / RopeScaling: validation, presets, Hugging Face config.json round trips."""

import json

import pytest

from flame_jax.policy import DecoderConfig, RopeScaling


def test_tiny_preset_and_overrides():
    cfg = DecoderConfig.tiny()
    assert (cfg.vocab_size, cfg.hidden_size, cfg.num_layers, cfg.head_dim) == (512, 64, 2, 16)
    assert cfg.eos_token_ids == (2,)
    assert DecoderConfig.tiny(eos_token_id=(2, 5)).eos_token_ids == (2, 5)
    assert DecoderConfig.tiny(eos_token_id=None).eos_token_ids == ()
    assert (
        DecoderConfig.tiny(head_dim=None, hidden_size=48, num_heads=6, num_kv_heads=2).head_dim == 8
    )


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"architecture": "gpt2"}, "architecture"),
        ({"vocab_size": 0}, "vocab_size"),
        ({"num_layers": -1}, "num_layers"),
        ({"num_kv_heads": 3}, "num_kv_heads"),
        ({"head_dim": 7}, "head_dim"),
        ({"head_dim": None, "hidden_size": 66}, "head_dim"),
        ({"rope_theta": float("nan")}, "rope_theta"),
        ({"rms_norm_eps": 0.0}, "rms_norm_eps"),
        ({"pad_token_id": 512}, "pad_token_id"),
        ({"eos_token_id": (2, -1)}, "eos_token_id"),
        ({"param_dtype": "float16"}, "param_dtype"),
    ],
)
def test_invalid_fields_are_named(overrides, field):
    with pytest.raises(ValueError, match=f"DecoderConfig.{field}"):
        DecoderConfig.tiny(**overrides)


def test_rope_scaling_validation():
    with pytest.raises(ValueError, match="high_freq_factor"):
        RopeScaling(low_freq_factor=4.0, high_freq_factor=1.0)
    with pytest.raises(ValueError, match="original_max_position_embeddings"):
        RopeScaling(original_max_position_embeddings=0)


CONFIGS = {
    "llama": DecoderConfig.tiny(rope_scaling=RopeScaling(factor=32.0)),
    "llama_bias": DecoderConfig.tiny(qkv_bias=True, o_bias=True, tie_embeddings=False),
    "qwen2": DecoderConfig.tiny(architecture="qwen2", qkv_bias=True, param_dtype="bfloat16"),
    "qwen3": DecoderConfig.tiny(architecture="qwen3", qk_norm=True, eos_token_id=(2, 3)),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_hf_dict_round_trip(name, tmp_path):
    cfg = CONFIGS[name]
    d = cfg.to_hf_dict()
    json.dumps(d, allow_nan=False)  # JSON-serialisable
    assert (d["rope_scaling"] is None) == (cfg.rope_scaling is None)  # transformers-4 readers
    old_style = {k: v for k, v in d.items() if k != "rope_parameters"}
    assert DecoderConfig.from_hf_dict(old_style) == cfg
    assert DecoderConfig.from_hf_dict(d) == cfg
    (tmp_path / "config.json").write_text(json.dumps(d))
    assert DecoderConfig.from_pretrained_dir(tmp_path) == cfg


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_hf_dict_is_read_by_transformers(name):
    transformers = pytest.importorskip("transformers")
    cfg = CONFIGS[name]
    d = cfg.to_hf_dict()
    hf = transformers.AutoConfig.for_model(**d)
    assert type(hf).__name__.lower().startswith(cfg.architecture)
    assert hf.num_key_value_heads == cfg.num_kv_heads
    assert hf.head_dim == cfg.head_dim
    assert hf.rope_parameters["rope_theta"] == cfg.rope_theta
    back = DecoderConfig.from_hf_dict(hf.to_dict())
    assert back == cfg


def test_transformers4_rope_layout():
    old = {
        "model_type": "llama",
        "vocab_size": 100,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 4,
        "rope_theta": 500000.0,
        "rope_scaling": {
            "type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
        "torch_dtype": "bfloat16",
    }
    cfg = DecoderConfig.from_hf_dict(old)
    assert cfg.rope_theta == 500000.0
    assert cfg.rope_scaling == RopeScaling(factor=8.0)
    assert cfg.num_kv_heads == 4 and cfg.head_dim == 8
    assert cfg.param_dtype == "bfloat16"
    assert DecoderConfig.from_hf_dict(old, param_dtype="float32").param_dtype == "float32"
    no_rope = {k: v for k, v in old.items() if k not in ("rope_theta", "rope_scaling")}
    assert DecoderConfig.from_hf_dict(no_rope).rope_scaling is None


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"model_type": "mistral"}, "model_type"),
        ({"hidden_act": "gelu"}, "hidden_act"),
        ({"mlp_bias": True}, "mlp_bias"),
        ({"use_sliding_window": True}, "use_sliding_window"),
        ({"layer_types": ["sliding_attention", "full_attention"]}, "layer_types"),
        ({"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0}}, "yarn"),
        ({"vocab_size": None}, "vocab_size"),
    ],
)
def test_unsupported_hf_features_are_refused(change, match):
    d = {**DecoderConfig.tiny().to_hf_dict(), **change}
    if change.get("vocab_size", 0) is None:
        del d["vocab_size"]
        match = "missing key 'vocab_size'"
    with pytest.raises(ValueError, match=match):
        DecoderConfig.from_hf_dict(d)


def test_config_dir_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        DecoderConfig.from_pretrained_dir(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json: not valid JSON"):
        DecoderConfig.from_pretrained_dir(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ValueError, match="config.json: .*missing key"):
        DecoderConfig.from_pretrained_dir(tmp_path)


def test_to_hf_dict_refuses_inexpressible_switches():
    with pytest.raises(ValueError, match="qwen2 needs qkv_bias"):
        DecoderConfig.tiny(architecture="qwen2").to_hf_dict()
    with pytest.raises(ValueError, match="qk_norm"):
        DecoderConfig.tiny(qk_norm=True).to_hf_dict()
    with pytest.raises(ValueError, match="attention_bias"):
        DecoderConfig.tiny(qkv_bias=True).to_hf_dict()
