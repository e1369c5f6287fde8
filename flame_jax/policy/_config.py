"""Configuration of the decoder: one frozen dataclass for the Llama, Qwen2 and Qwen3 layouts.

``DecoderConfig`` reads and writes Hugging Face ``config.json`` dictionaries (``from_hf_dict`` /
``to_hf_dict``), both the transformers-5 form (``rope_parameters``) and the older one
(``rope_theta`` + ``rope_scaling``). Features this decoder does not implement (sliding-window
attention, MLP biases, RoPE types other than default and ``llama3``, activations other than
SiLU) are refused with a ``ValueError`` that names the field, never silently ignored.
"""

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ARCHITECTURES", "DecoderConfig", "RopeScaling"]

ARCHITECTURES = ("llama", "qwen2", "qwen3")
_HF_CLASS = {
    "llama": "LlamaForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
}
_DTYPES = ("float32", "bfloat16")


def _is_int(x: object) -> bool:
    return isinstance(x, int | np.integer) and not isinstance(x, bool)


@dataclasses.dataclass(frozen=True, kw_only=True)
class RopeScaling:
    """Llama-3 ("llama3") RoPE frequency scaling (Llama 3.1 / 3.2 checkpoints).

    With base inverse frequencies f_i and wavelengths w_i = 2 pi / f_i, L = the original
    context length: f_i is kept when w_i < L / high_freq_factor, divided by ``factor`` when
    w_i > L / low_freq_factor, and otherwise interpolated with
    s = (L / w_i - low) / (high - low): (1 - s) f_i / factor + s f_i.

    Examples:
      >>> RopeScaling(factor=8.0).original_max_position_embeddings
      8192
      >>> RopeScaling(factor=0.0)
      Traceback (most recent call last):
      ...
      ValueError: RopeScaling.factor must be a finite number > 0, got 0.0
    """

    factor: float = 8.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192

    def __post_init__(self):
        for name in ("factor", "low_freq_factor", "high_freq_factor"):
            v = getattr(self, name)
            if not isinstance(v, int | float | np.number) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"RopeScaling.{name} must be a finite number > 0, got {v!r}")
        if self.high_freq_factor <= self.low_freq_factor:
            raise ValueError(
                "RopeScaling.high_freq_factor must be > low_freq_factor, got "
                f"{self.high_freq_factor!r} <= {self.low_freq_factor!r}"
            )
        v = self.original_max_position_embeddings
        if not _is_int(v) or v < 1:
            raise ValueError(
                f"RopeScaling.original_max_position_embeddings must be an integer >= 1, got {v!r}"
            )


@dataclasses.dataclass(frozen=True, kw_only=True)
class DecoderConfig:
    """Shape and numerics of a decoder-only transformer in the Llama / Qwen2 / Qwen3 layout.

    ``architecture`` only decides the Hugging Face class name written to ``config.json``; the
    layout differences are the explicit switches ``qkv_bias`` (Qwen2), ``o_bias`` (Llama or
    Qwen3 with ``attention_bias``), ``qk_norm`` (Qwen3) and ``tie_embeddings``.

    Raises:
      ValueError: naming the field, when a value is out of range or inconsistent.

    Examples:
      >>> cfg = DecoderConfig.tiny()
      >>> cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
      (64, 4, 2, 16)
      >>> DecoderConfig.tiny(num_kv_heads=3)
      Traceback (most recent call last):
      ...
      ValueError: DecoderConfig.num_kv_heads must divide num_heads=4, got 3
      >>> DecoderConfig.from_hf_dict(cfg.to_hf_dict()) == cfg
      True
    """

    architecture: str = "llama"
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int | None = None  # None: hidden_size // num_heads
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling | None = None
    rms_norm_eps: float = 1e-6
    tie_embeddings: bool = False
    qkv_bias: bool = False  # biases on q, k, v (Qwen2; Llama/Qwen3 with attention_bias)
    o_bias: bool = False  # bias on o (Llama/Qwen3 with attention_bias)
    qk_norm: bool = False  # RMSNorm of each query/key head before RoPE (Qwen3)
    max_position_embeddings: int = 2048
    bos_token_id: int | None = None
    eos_token_id: int | tuple[int, ...] | None = None
    pad_token_id: int | None = None
    param_dtype: str = "float32"  # or "bfloat16"; softmax and norms always in float32

    def __post_init__(self):
        if self.architecture not in ARCHITECTURES:
            raise ValueError(
                f"DecoderConfig.architecture must be one of {ARCHITECTURES}, "
                f"got {self.architecture!r}"
            )
        if self.head_dim is None and _is_int(self.hidden_size) and _is_int(self.num_heads):
            if self.num_heads > 0 and self.hidden_size % self.num_heads == 0:
                object.__setattr__(self, "head_dim", self.hidden_size // self.num_heads)
            else:
                raise ValueError(
                    f"DecoderConfig.head_dim is None and hidden_size={self.hidden_size!r} is not "
                    f"a multiple of num_heads={self.num_heads!r}"
                )
        for name in (
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_layers",
            "num_heads",
            "num_kv_heads",
            "head_dim",
            "max_position_embeddings",
        ):
            v = getattr(self, name)
            if not _is_int(v) or v < 1:
                raise ValueError(f"DecoderConfig.{name} must be an integer >= 1, got {v!r}")
            object.__setattr__(self, name, int(v))
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"DecoderConfig.num_kv_heads must divide num_heads={self.num_heads}, "
                f"got {self.num_kv_heads}"
            )
        if self.head_dim % 2:
            raise ValueError(f"DecoderConfig.head_dim must be even (RoPE), got {self.head_dim}")
        for name in ("rope_theta", "rms_norm_eps"):
            v = getattr(self, name)
            if not isinstance(v, int | float | np.number) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"DecoderConfig.{name} must be a finite number > 0, got {v!r}")
            object.__setattr__(self, name, float(v))
        if self.rope_scaling is not None and not isinstance(self.rope_scaling, RopeScaling):
            raise ValueError(
                f"DecoderConfig.rope_scaling must be a RopeScaling or None, "
                f"got {self.rope_scaling!r}"
            )
        for name in ("tie_embeddings", "qkv_bias", "o_bias", "qk_norm"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(
                    f"DecoderConfig.{name} must be a bool, got {getattr(self, name)!r}"
                )
        for name in ("bos_token_id", "pad_token_id"):
            v = getattr(self, name)
            if v is not None and (not _is_int(v) or not 0 <= v < self.vocab_size):
                raise ValueError(
                    f"DecoderConfig.{name} must be None or an integer in [0, {self.vocab_size}), "
                    f"got {v!r}"
                )
        eos = self.eos_token_id
        if isinstance(eos, list):
            eos = tuple(eos)
            object.__setattr__(self, "eos_token_id", eos)
        ids = () if eos is None else eos if isinstance(eos, tuple) else (eos,)
        if not all(_is_int(i) and 0 <= i < self.vocab_size for i in ids):
            raise ValueError(
                f"DecoderConfig.eos_token_id must be None, an integer or a tuple of integers in "
                f"[0, {self.vocab_size}), got {self.eos_token_id!r}"
            )
        if self.param_dtype not in _DTYPES:
            raise ValueError(
                f"DecoderConfig.param_dtype must be one of {_DTYPES}, got {self.param_dtype!r}"
            )

    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        """The end-of-sequence ids as a tuple (empty when there is none)."""
        eos = self.eos_token_id
        return () if eos is None else eos if isinstance(eos, tuple) else (eos,)

    @classmethod
    def tiny(cls, **overrides: Any) -> "DecoderConfig":
        """A 2-layer, 64-wide Llama-layout model for tests and the synthetic default.

        Examples:
          >>> DecoderConfig.tiny(vocab_size=300, architecture="qwen3", qk_norm=True).vocab_size
          300
        """
        base = {
            "architecture": "llama",
            "vocab_size": 512,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_layers": 2,
            "num_heads": 4,
            "num_kv_heads": 2,
            "head_dim": 16,
            "rope_theta": 10000.0,
            "max_position_embeddings": 2048,
            "tie_embeddings": True,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "pad_token_id": 0,
        }
        base.update(overrides)
        return cls(**base)

    @classmethod
    def from_hf_dict(cls, d: dict, *, param_dtype: str | None = None) -> "DecoderConfig":
        """Builds a config from a Hugging Face ``config.json`` dictionary.

        Args:
          d: the parsed ``config.json`` (``model_type`` llama, qwen2 or qwen3).
          param_dtype: "float32" or "bfloat16"; None: bfloat16 when the checkpoint's ``dtype``
            (or ``torch_dtype``) is bfloat16 or float16, else float32.

        Raises:
          ValueError: naming the key, for a missing key or a feature this decoder lacks.
        """
        if not isinstance(d, dict):
            raise ValueError(f"config must be a JSON object, got {type(d).__name__}")
        arch = d.get("model_type")
        if arch not in ARCHITECTURES:
            raise ValueError(
                f"config.json: model_type must be one of {ARCHITECTURES}, got {arch!r}"
            )

        def need(key):
            if key not in d:
                raise ValueError(f"config.json: missing key {key!r}")
            return d[key]

        act = d.get("hidden_act", "silu")
        if act != "silu":
            raise ValueError(f"config.json: hidden_act must be 'silu', got {act!r}")
        if d.get("mlp_bias", False):
            raise ValueError("config.json: mlp_bias=true is not supported")
        if d.get("use_sliding_window", False):
            raise ValueError("config.json: use_sliding_window=true is not supported")
        layer_types = d.get("layer_types")
        if layer_types is not None and any(t != "full_attention" for t in layer_types):
            raise ValueError(f"config.json: only full_attention layer_types, got {layer_types!r}")
        if d.get("partial_rotary_factor", 1.0) != 1.0:
            raise ValueError("config.json: partial_rotary_factor != 1 is not supported")

        rope = d.get("rope_parameters")
        if rope is None:  # transformers 4 layout
            rope = dict(d.get("rope_scaling") or {})
            rope.setdefault("rope_theta", d.get("rope_theta", 10000.0))
        if not isinstance(rope, dict):
            raise ValueError(f"config.json: rope_parameters must be an object, got {rope!r}")
        if "rope_type" not in rope and "type" not in rope:
            rope = {**rope, "rope_type": "default"}
        rope_type = rope.get("rope_type", rope.get("type"))
        scaling = None
        if rope_type == "llama3":
            scaling = RopeScaling(
                factor=float(rope["factor"]),
                low_freq_factor=float(rope["low_freq_factor"]),
                high_freq_factor=float(rope["high_freq_factor"]),
                original_max_position_embeddings=int(rope["original_max_position_embeddings"]),
            )
        elif rope_type != "default":
            raise ValueError(f"config.json: rope type {rope_type!r} is not supported")
        theta = rope.get("rope_theta", d.get("rope_theta", 10000.0))

        attention_bias = bool(d.get("attention_bias", False))
        if param_dtype is None:
            stored = d.get("dtype", d.get("torch_dtype"))
            param_dtype = "bfloat16" if stored in ("bfloat16", "float16") else "float32"
        hidden = int(need("hidden_size"))
        heads = int(need("num_attention_heads"))
        return cls(
            architecture=arch,
            vocab_size=need("vocab_size"),
            hidden_size=hidden,
            intermediate_size=need("intermediate_size"),
            num_layers=need("num_hidden_layers"),
            num_heads=heads,
            num_kv_heads=d.get("num_key_value_heads") or heads,
            head_dim=d.get("head_dim") or hidden // heads,
            rope_theta=float(theta),
            rope_scaling=scaling,
            rms_norm_eps=float(d.get("rms_norm_eps", 1e-6)),
            tie_embeddings=bool(d.get("tie_word_embeddings", False)),
            qkv_bias=True if arch == "qwen2" else attention_bias,
            o_bias=False if arch == "qwen2" else attention_bias,
            qk_norm=arch == "qwen3",
            max_position_embeddings=d.get("max_position_embeddings", 2048),
            bos_token_id=d.get("bos_token_id"),
            eos_token_id=tuple(eos) if isinstance(eos := d.get("eos_token_id"), list) else eos,
            pad_token_id=d.get("pad_token_id"),
            param_dtype=param_dtype,
        )

    @classmethod
    def from_pretrained_dir(
        cls, path: str | os.PathLike, *, param_dtype: str | None = None
    ) -> "DecoderConfig":
        """Reads ``path/config.json`` (a Hugging Face model directory)."""
        file = Path(path) / "config.json"
        if not file.is_file():
            raise FileNotFoundError(f"{file}: no config.json in the model directory")
        try:
            d = json.loads(file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{file}: not valid JSON ({e})") from None
        try:
            return cls.from_hf_dict(d, param_dtype=param_dtype)
        except ValueError as e:
            raise ValueError(f"{file}: {e}") from None

    def to_hf_dict(self) -> dict:
        """The Hugging Face ``config.json`` dictionary (transformers-5 ``rope_parameters`` form).

        Raises:
          ValueError: when the switches cannot be expressed by the architecture's HF class
            (Qwen2 always has q/k/v biases and no o bias; only Qwen3 has q/k norms).
        """
        arch = self.architecture
        if arch == "qwen2" and (not self.qkv_bias or self.o_bias):
            raise ValueError("DecoderConfig: qwen2 needs qkv_bias=True and o_bias=False")
        if arch != "qwen2" and self.qkv_bias != self.o_bias:
            raise ValueError(f"DecoderConfig: {arch} needs qkv_bias == o_bias (attention_bias)")
        if self.qk_norm != (arch == "qwen3"):
            raise ValueError(f"DecoderConfig: qk_norm={self.qk_norm} does not fit {arch!r}")
        rope: dict[str, Any] = {"rope_theta": self.rope_theta, "rope_type": "default"}
        if self.rope_scaling is not None:
            rope.update(dataclasses.asdict(self.rope_scaling), rope_type="llama3")
        eos = self.eos_token_id
        d: dict[str, Any] = {
            "architectures": [_HF_CLASS[arch]],
            "model_type": arch,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "rms_norm_eps": self.rms_norm_eps,
            "rope_parameters": rope,
            # transformers-4 readers (rope_theta + rope_scaling); transformers 5 reads the above.
            "rope_theta": self.rope_theta,
            "rope_scaling": None
            if self.rope_scaling is None
            else {k: v for k, v in rope.items() if k != "rope_theta"},
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_embeddings,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": list(eos) if isinstance(eos, tuple) else eos,
            "pad_token_id": self.pad_token_id,
            "dtype": self.param_dtype,
            "use_cache": True,
            "attention_dropout": 0.0,
            "initializer_range": 0.02,
        }
        if arch == "qwen2":
            d.update(use_sliding_window=False, sliding_window=None)
        else:
            d["attention_bias"] = self.o_bias
        if arch == "llama":
            d["mlp_bias"] = False
        if arch in ("qwen2", "qwen3"):
            d["layer_types"] = ["full_attention"] * self.num_layers
            d.update(use_sliding_window=False, sliding_window=None)
        return d
