"""Hugging Face model directories: ``config.json`` + (sharded) safetensors, in and out.

``from_pretrained`` reads a local directory written by transformers (``LlamaForCausalLM``,
``Qwen2ForCausalLM``, ``Qwen3ForCausalLM``) into a ``Decoder``; ``save_pretrained`` writes the
same layout back, so that ``transformers.AutoModelForCausalLM.from_pretrained`` loads it.
Nothing is downloaded.

Parameter names are Hugging Face's (``model.layers.3.self_attn.q_proj.weight``, ...). HF stores
linear weights [out, in]; the decoder's projection kernels are [in, out], so they are transposed
on the way in and out. Embedding and ``lm_head`` tables are [vocab, dim] on both sides. With
tied embeddings no ``lm_head.weight`` is written, and one found on reading is ignored.

The model is first built abstractly (``nnx.eval_shape``), so reading an 8B checkpoint does not
allocate a random initialisation first; each tensor is read from its memory-mapped shard, cast
to the parameter dtype and placed on the device one at a time.
"""

import dataclasses
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors import safe_open
from safetensors.numpy import save_file

from flame_jax._io import atomic_directory
from flame_jax.policy._config import DecoderConfig
from flame_jax.policy._model import Decoder, Projection

__all__ = ["from_pretrained", "hf_parameter_names", "save_pretrained", "shard_largest_axis"]

_INDEX = "model.safetensors.index.json"
_SINGLE = "model.safetensors"
# Buffers some older checkpoints carry; recomputed from the config, so ignored on reading.
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


def _named_variables(model: Decoder) -> dict[str, tuple[nnx.Variable, Projection | None]]:
    """HF name -> (variable, the Projection it is the kernel of, else None)."""
    out: dict[str, tuple[nnx.Variable, Projection | None]] = {
        "model.embed_tokens.weight": (model.embed_tokens.embedding, None)
    }
    for i, layer in enumerate(model.layers):
        p = f"model.layers.{i}."
        out[p + "input_layernorm.weight"] = (layer.input_layernorm.weight, None)
        out[p + "post_attention_layernorm.weight"] = (layer.post_attention_layernorm.weight, None)
        attn = layer.self_attn
        for group, module, names in (
            ("self_attn", attn, ("q_proj", "k_proj", "v_proj", "o_proj")),
            ("mlp", layer.mlp, ("gate_proj", "up_proj", "down_proj")),
        ):
            for name in names:
                proj = getattr(module, name)
                out[f"{p}{group}.{name}.weight"] = (proj.kernel, proj)
                if proj.bias is not None:
                    out[f"{p}{group}.{name}.bias"] = (proj.bias, None)
        if attn.q_norm is not None:
            out[p + "self_attn.q_norm.weight"] = (attn.q_norm.weight, None)
            out[p + "self_attn.k_norm.weight"] = (attn.k_norm.weight, None)
    out["model.norm.weight"] = (model.norm.weight, None)
    if model.lm_head is not None:
        out["lm_head.weight"] = (model.lm_head, None)
    return out


def hf_parameter_names(config: DecoderConfig) -> list[str]:
    """The Hugging Face tensor names of a model with this config, in write order.

    Examples:
      >>> names = hf_parameter_names(DecoderConfig.tiny(num_layers=1))
      >>> names[:2], len(names)
      (['model.embed_tokens.weight', 'model.layers.0.input_layernorm.weight'], 11)
    """
    abstract = nnx.eval_shape(lambda: Decoder(config, rngs=nnx.Rngs(0)))
    return list(_named_variables(abstract))


def shard_largest_axis(
    mesh: jax.sharding.Mesh, axis: str
) -> Callable[[str, tuple[int, ...]], jax.sharding.NamedSharding]:
    """A ``sharding`` rule for ``from_pretrained``: split each parameter along its largest
    dimension divisible by the size of mesh axis ``axis`` (FSDP-style); replicate the rest.

    Examples:
      >>> mesh = jax.make_mesh((1,), ("fsdp",), axis_types=(jax.sharding.AxisType.Auto,))
      >>> shard_largest_axis(mesh, "fsdp")("model.layers.0.mlp.up_proj.weight", (64, 128)).spec
      P(None, 'fsdp')
    """
    if axis not in mesh.shape:
        raise ValueError(f"shard_largest_axis: mesh has no axis {axis!r} (axes {mesh.axis_names})")
    n = mesh.shape[axis]

    def rule(name: str, shape: tuple[int, ...]) -> jax.sharding.NamedSharding:
        dims = [d for d in sorted(range(len(shape)), key=lambda d: -shape[d]) if shape[d] % n == 0]
        spec = [None] * len(shape)
        if dims and len(shape) > 1:
            spec[dims[0]] = axis
        return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(*spec))

    return rule


def _weight_files(path: Path) -> dict[str, Path]:
    """Tensor name -> shard file, from the index, ``model.safetensors`` or all ``*.safetensors``."""
    index = path / _INDEX
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{index}: not a safetensors index with a weight_map ({e})") from None
        files = {name: path / file for name, file in weight_map.items()}
        for file in set(files.values()):
            if not file.is_file():
                raise FileNotFoundError(f"{index}: names shard {file.name}, which is missing")
        return files
    shards = [path / _SINGLE] if (path / _SINGLE).is_file() else sorted(path.glob("*.safetensors"))
    if not shards:
        raise FileNotFoundError(f"{path}: no {_SINGLE}, {_INDEX} or *.safetensors file")
    files = {}
    for file in shards:
        with safe_open(str(file), framework="numpy") as f:
            for name in f.keys():  # noqa: SIM118 (safe_open is not iterable)
                if name in files:
                    raise ValueError(f"{file}: tensor {name!r} also in {files[name].name}")
                files[name] = file
    return files


def from_pretrained(
    path: str | os.PathLike,
    *,
    dtype: str | None = None,
    sharding: jax.sharding.Sharding | Callable[[str, tuple[int, ...]], Any] | None = None,
) -> tuple[Decoder, DecoderConfig]:
    """Loads a local Hugging Face model directory into a ``Decoder``.

    Args:
      path: a directory with ``config.json`` and ``model.safetensors`` (or shards with
        ``model.safetensors.index.json``).
      dtype: parameter dtype, "float32" or "bfloat16"; None: bfloat16 when the checkpoint is
        stored in bfloat16 or float16, else float32.
      sharding: where each parameter goes as it is read: one ``jax.sharding.Sharding`` for all,
        or a function (HF tensor name, parameter shape in the decoder's layout) -> Sharding
        (e.g. ``shard_largest_axis(mesh, "fsdp")``), so a large checkpoint never sits whole on
        one device; None: the default device.

    Returns:
      (model, config).

    Raises:
      FileNotFoundError: no config or no weights.
      ValueError: naming the file and tensor, for a missing, unexpected or misshapen tensor.
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: not a model directory")
    config = DecoderConfig.from_pretrained_dir(path, param_dtype=dtype)
    model = nnx.eval_shape(lambda: Decoder(config, rngs=nnx.Rngs(0)))
    targets = _named_variables(model)
    files = _weight_files(path)
    unexpected = [
        n
        for n in files
        if n not in targets
        and not n.endswith(_IGNORED_SUFFIXES)
        and not (n == "lm_head.weight" and config.tie_embeddings)
    ]
    if unexpected:
        raise ValueError(
            f"{path}: tensors this {config.architecture} config has no place for: "
            f"{sorted(unexpected)[:5]}"
        )
    missing = [n for n in targets if n not in files]
    if missing:
        raise ValueError(f"{path}: missing tensors {missing[:5]}")
    param_dtype = jnp.dtype(config.param_dtype)
    by_file: dict[Path, list[str]] = {}
    for name in targets:
        by_file.setdefault(files[name], []).append(name)
    for file, names in by_file.items():
        with safe_open(str(file), framework="numpy") as f:
            for name in names:
                var, proj = targets[name]
                arr = f.get_tensor(name)
                if proj is not None:
                    arr = arr.T
                if tuple(arr.shape) != tuple(var.get_value().shape):
                    raise ValueError(
                        f"{file}: tensor {name!r} has shape {tuple(f.get_tensor(name).shape)}, "
                        f"the config needs {tuple(var.get_value().shape[:: -1 if proj else 1])}"
                    )
                value = np.ascontiguousarray(arr).astype(param_dtype, copy=False)
                target = sharding(name, value.shape) if callable(sharding) else sharding
                var.set_value(jax.device_put(value, target))
    return model, config


def _effective_kernel(proj: Projection, lora: bool) -> jax.Array:
    kernel = proj.kernel[...]
    if lora and proj.lora is not None:
        a = proj.lora.lora_a[...].astype(jnp.float32)
        b = proj.lora.lora_b[...].astype(jnp.float32)
        kernel = (kernel.astype(jnp.float32) + proj.lora_scale * (a @ b)).astype(kernel.dtype)
    return kernel


def write_weights(
    model: Decoder,
    config: DecoderConfig,
    directory: Path,
    *,
    lora: bool = True,
    max_shard_bytes: int = 5 * 2**30,
) -> None:
    """Writes config.json, generation_config.json and the safetensors into an existing folder."""
    m = model.config
    same = dataclasses.replace(
        config,
        param_dtype=m.param_dtype,
        bos_token_id=m.bos_token_id,
        eos_token_id=m.eos_token_id,
        pad_token_id=m.pad_token_id,
    )
    if same != m:
        raise ValueError(
            "save_pretrained: config differs from the model's in more than dtype and token ids"
        )
    dtype = jnp.dtype(config.param_dtype)
    tensors: dict[str, np.ndarray] = {}
    for name, (var, proj) in _named_variables(model).items():
        value = _effective_kernel(proj, lora).T if proj is not None else var[...]
        tensors[name] = np.ascontiguousarray(np.asarray(value.astype(dtype)))
    shards: list[dict[str, np.ndarray]] = [{}]
    size = 0
    for name, arr in tensors.items():
        if shards[-1] and size + arr.nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = arr
        size += arr.nbytes
    meta = {"format": "pt"}
    if len(shards) == 1:
        save_file(shards[0], str(directory / _SINGLE), metadata=meta)
    else:
        weight_map = {}
        for i, shard in enumerate(shards):
            file = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            save_file(shard, str(directory / file), metadata=meta)
            weight_map.update(dict.fromkeys(shard, file))
        index = {
            "metadata": {"total_size": int(sum(a.nbytes for a in tensors.values()))},
            "weight_map": weight_map,
        }
        (directory / _INDEX).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    (directory / "config.json").write_text(
        json.dumps(config.to_hf_dict(), indent=2, sort_keys=True) + "\n"
    )
    generation = {
        "bos_token_id": config.bos_token_id,
        "eos_token_id": config.to_hf_dict()["eos_token_id"],
        "pad_token_id": config.pad_token_id,
    }
    (directory / "generation_config.json").write_text(
        json.dumps(generation, indent=2, sort_keys=True) + "\n"
    )


def save_pretrained(
    model: Decoder,
    config: DecoderConfig | None,
    path: str | os.PathLike,
    *,
    lora: bool = True,
    max_shard_bytes: int = 5 * 2**30,
    tokenizer: Any = None,
    overwrite: bool = False,
) -> Path:
    """Writes ``model`` as a Hugging Face directory (config.json + safetensors), atomically.

    Args:
      model: the decoder. LoRA adapters, if attached, are merged into the written kernels
        (W + alpha / rank * A B) without changing ``model``; ``lora=False`` writes the base
        weights only.
      config: the config to write (its ``param_dtype`` decides the stored dtype, its token ids
        the special ids); None: ``model.config``. Its shapes must be the model's.
      path: the output folder; replaced only when everything was written.
      max_shard_bytes: above this total, shards ``model-0000i-of-0000n.safetensors`` plus
        ``model.safetensors.index.json`` are written.
      tokenizer: a Hugging Face tokenizer (``load_tokenizer(...)``) to save alongside, so the
        folder is complete for ``transformers``; None: weights and config only.
      overwrite: replace an existing non-empty folder.

    Returns:
      the folder.

    Examples:
      >>> import tempfile, pathlib
      >>> model = Decoder(DecoderConfig.tiny(num_layers=1), rngs=nnx.Rngs(0))
      >>> out = save_pretrained(model, None, pathlib.Path(tempfile.mkdtemp()) / "tiny")
      >>> sorted(p.name for p in out.iterdir())
      ['config.json', 'generation_config.json', 'model.safetensors']
      >>> again, _ = from_pretrained(out)
      >>> bool(jnp.array_equal(again.unembedding(), model.unembedding()))
      True
    """
    config = model.config if config is None else config
    path = Path(path)
    with atomic_directory(path, overwrite=overwrite) as tmp:
        write_weights(model, config, tmp, lora=lora, max_shard_bytes=max_shard_bytes)
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
    return path
