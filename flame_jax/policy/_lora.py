"""LoRA adapters on the decoder's projections, trained alone, merged for export.

``add_lora`` attaches an ``nnx.LoRA`` (parameters ``lora_a`` [in, rank], ``lora_b`` [rank, out],
both ``nnx.LoRAParam``, kept in float32 even over bfloat16 weights) to each chosen projection, so
that it computes x W + (alpha / rank) x A B. B starts at zero, so a fresh adapter changes nothing.

Training only the adapters: ``nnx.LoRAParam`` is a subclass of ``nnx.Param``, so the filter for
"trainable" is ``nnx.LoRAParam`` and the filter for "frozen base weights" is
``nnx.All(nnx.Param, nnx.Not(nnx.LoRAParam))``. Either use ``make_lora_optimizer`` (an
``nnx.Optimizer`` with ``wrt=nnx.LoRAParam``) with ``nnx.grad(..., argnums=nnx.DiffState(0,
nnx.LoRAParam))``, or the functional form: ``graphdef, lora, base = split_lora(model)``, take
gradients with respect to ``lora`` only and update it with plain optax.

Reference policy: the same model called with ``lora=False`` (see ``flame_jax.policy.Decoder``);
there is no second copy of the base weights.

Export: ``merge_lora`` folds the adapters into the kernels in place; ``save_pretrained`` writes
merged kernels without touching the model.

References:
  Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", ICLR 2022 (arXiv 2106.09685).
"""

import dataclasses
import math

import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from flame_jax.policy._model import Decoder, Projection

__all__ = [
    "LORA_TARGETS",
    "LoraConfig",
    "add_lora",
    "has_lora",
    "lora_projections",
    "make_lora_optimizer",
    "merge_lora",
    "split_lora",
]

LORA_TARGETS = ("q", "k", "v", "o", "gate", "up", "down")
_ATTRIBUTE = {
    "q": ("self_attn", "q_proj"),
    "k": ("self_attn", "k_proj"),
    "v": ("self_attn", "v_proj"),
    "o": ("self_attn", "o_proj"),
    "gate": ("mlp", "gate_proj"),
    "up": ("mlp", "up_proj"),
    "down": ("mlp", "down_proj"),
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class LoraConfig:
    """Which projections get adapters, their rank and alpha (scale = alpha / rank).

    Examples:
      >>> LoraConfig(rank=4, alpha=8.0, targets=("q", "v")).scale
      2.0
      >>> LoraConfig(targets=("q", "x"))
      Traceback (most recent call last):
      ...
      ValueError: LoraConfig.targets must be a non-empty subset of ... got ('q', 'x')
    """

    rank: int = 8
    alpha: float = 16.0
    targets: tuple[str, ...] = ("q", "k", "v", "o", "gate", "up", "down")

    def __post_init__(self):
        if isinstance(self.rank, bool) or not isinstance(self.rank, int | np.integer):
            raise ValueError(f"LoraConfig.rank must be an integer >= 1, got {self.rank!r}")
        if self.rank < 1:
            raise ValueError(f"LoraConfig.rank must be an integer >= 1, got {self.rank!r}")
        a = self.alpha
        if (
            isinstance(a, bool)
            or not isinstance(a, int | float | np.number)
            or not math.isfinite(a)
        ):
            raise ValueError(f"LoraConfig.alpha must be a finite number, got {a!r}")
        if a <= 0:
            raise ValueError(f"LoraConfig.alpha must be > 0, got {a!r}")
        targets = tuple(self.targets) if isinstance(self.targets, list | tuple) else None
        if (
            not targets
            or any(t not in LORA_TARGETS for t in targets)
            or len(set(targets)) != len(targets)
        ):
            raise ValueError(
                f"LoraConfig.targets must be a non-empty subset of {LORA_TARGETS} without "
                f"repeats, got {self.targets!r}"
            )
        object.__setattr__(self, "targets", targets)

    @property
    def scale(self) -> float:
        """alpha / rank."""
        return float(self.alpha) / int(self.rank)


def lora_projections(model: Decoder, targets: tuple[str, ...] = LORA_TARGETS) -> list[Projection]:
    """The projections of ``targets`` in every layer, in layer order."""
    out = []
    for layer in model.layers:
        for t in targets:
            group, name = _ATTRIBUTE[t]
            out.append(getattr(getattr(layer, group), name))
    return out


def has_lora(model: Decoder) -> bool:
    """Whether any projection carries an adapter."""
    return any(p.lora is not None for p in lora_projections(model))


def add_lora(model: Decoder, config: LoraConfig, *, rngs: nnx.Rngs) -> Decoder:
    """Attaches fresh adapters (A ~ He-uniform, B = 0) in place; returns ``model``.

    Raises:
      ValueError: when the model already has adapters.

    Examples:
      >>> import jax
      >>> from flame_jax.policy import DecoderConfig
      >>> model = Decoder(DecoderConfig.tiny(num_layers=1), rngs=nnx.Rngs(0))
      >>> model = add_lora(model, LoraConfig(rank=2, targets=("q", "v")), rngs=nnx.Rngs(1))
      >>> sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.LoRAParam)))
      448
    """
    if has_lora(model):
        raise ValueError("add_lora: the model already has LoRA adapters (merge_lora them first)")
    for proj in lora_projections(model, config.targets):
        proj.lora = nnx.LoRA(
            proj.in_features, config.rank, proj.out_features, param_dtype=jnp.float32, rngs=rngs
        )
        proj.lora_scale = config.scale
    return model


def merge_lora(model: Decoder) -> Decoder:
    """Folds every adapter into its kernel (W + alpha / rank * A B, rounded to the kernel dtype)
    and removes the adapters, in place; returns ``model``.
    """
    for proj in lora_projections(model):
        if proj.lora is None:
            continue
        kernel = proj.kernel[...]
        delta = proj.lora.lora_a[...].astype(jnp.float32) @ proj.lora.lora_b[...].astype(
            jnp.float32
        )
        proj.kernel.set_value(
            (kernel.astype(jnp.float32) + proj.lora_scale * delta).astype(kernel.dtype)
        )
        proj.lora = None
        proj.lora_scale = 1.0
    return model


def split_lora(model: Decoder) -> tuple:
    """``nnx.split(model, nnx.LoRAParam, ...)``: (graphdef, adapter state, everything else)."""
    return nnx.split(model, nnx.LoRAParam, ...)


def make_lora_optimizer(model: Decoder, tx: optax.GradientTransformation) -> nnx.Optimizer:
    """An ``nnx.Optimizer`` that holds state for, and updates, only the ``LoRAParam``s.

    Raises:
      ValueError: when the model has no adapters.
    """
    if not has_lora(model):
        raise ValueError("make_lora_optimizer: the model has no LoRA adapters (add_lora first)")
    return nnx.Optimizer(model, tx, wrt=nnx.LoRAParam)
