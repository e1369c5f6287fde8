"""Optimizers from a frozen config: an optax chain with gradient clipping, AdamW and a schedule.

Schedules (``step`` counts optimizer updates from 0; ``w`` = warmup steps, ``T`` = total steps,
``lr`` = peak learning rate):

* ``constant``:      lr after a linear warmup from 0;
* ``linear``:        warmup, then linear decay to ``final_fraction * lr`` at step T;
* ``cosine``:        warmup, then cosine decay to ``final_fraction * lr`` at step T
  (optax.warmup_cosine_decay_schedule);
* ``inverse_sqrt``:  warmup, then ``lr * sqrt(w / step)`` (the Hugging Face schedule FLAME's
  pi_cls and SFT stages use, with the timescale equal to the warmup); ``w = 0`` gives
  ``lr / sqrt(step + 1)``.

References:
    Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019 (AdamW).
"""

import dataclasses

import jax.numpy as jnp
import optax

__all__ = ["SCHEDULES", "OptimizerConfig", "make_optimizer", "make_schedule"]

SCHEDULES = ("constant", "linear", "cosine", "inverse_sqrt")


@dataclasses.dataclass(frozen=True, kw_only=True)
class OptimizerConfig:
    """AdamW with global-norm clipping and a warmup schedule.

    Attributes:
        learning_rate: peak learning rate.
        schedule: one of :data:`SCHEDULES`.
        warmup_steps: linear warmup from 0 over this many updates.
        total_steps: the decay horizon of "linear" and "cosine" (ignored otherwise).
        final_fraction: the learning rate at ``total_steps`` as a fraction of the peak.
        weight_decay, b1, b2, eps: AdamW.
        clip_norm: global gradient-norm clip; None disables clipping.
    """

    learning_rate: float = 1e-4
    schedule: str = "constant"
    warmup_steps: int = 0
    total_steps: int = 1000
    final_fraction: float = 0.0
    weight_decay: float = 0.0
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    clip_norm: float | None = 1.0

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(f"OptimizerConfig.schedule must be one of {SCHEDULES}, got "
                             f"{self.schedule!r}")  # fmt: skip
        if not self.learning_rate > 0:
            raise ValueError(f"OptimizerConfig.learning_rate must be > 0, got {self.learning_rate}")
        if self.warmup_steps < 0:
            raise ValueError(f"OptimizerConfig.warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.total_steps < 1 or self.total_steps < self.warmup_steps:
            raise ValueError(
                f"OptimizerConfig.total_steps must be >= max(1, warmup_steps), got "
                f"{self.total_steps} (warmup_steps {self.warmup_steps})"
            )
        if not 0 <= self.final_fraction <= 1:
            raise ValueError(
                f"OptimizerConfig.final_fraction must be in [0, 1], got {self.final_fraction}"
            )
        if self.clip_norm is not None and not self.clip_norm > 0:
            raise ValueError(f"OptimizerConfig.clip_norm must be > 0 or None, got {self.clip_norm}")


def make_schedule(config: OptimizerConfig) -> optax.Schedule:
    """The learning-rate schedule of ``config`` as a function of the update count.

    Examples:
        >>> s = make_schedule(OptimizerConfig(learning_rate=1.0, schedule="inverse_sqrt",
        ...                                   warmup_steps=4))
        >>> [round(float(s(t)), 4) for t in (0, 2, 4, 16)]
        [0.0, 0.5, 1.0, 0.5]
    """
    lr, w, total = config.learning_rate, config.warmup_steps, config.total_steps
    end = lr * config.final_fraction
    if config.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0, lr, w, total, end_value=end)
    warm = optax.linear_schedule(0.0, lr, w) if w else optax.constant_schedule(lr)
    if config.schedule == "constant":
        after = optax.constant_schedule(lr)
    elif config.schedule == "linear":
        after = optax.linear_schedule(lr, end, max(total - w, 1))
    else:  # inverse_sqrt

        def after(step):
            return lr * jnp.sqrt(max(w, 1) / jnp.maximum(step + max(w, 1), 1))

    return optax.join_schedules([warm, after], [w])


def make_optimizer(config: OptimizerConfig) -> optax.GradientTransformation:
    """``clip_by_global_norm`` (when set) followed by AdamW on ``make_schedule(config)``."""
    adam = optax.adamw(
        make_schedule(config),
        b1=config.b1,
        b2=config.b2,
        eps=config.eps,
        weight_decay=config.weight_decay,
    )
    if config.clip_norm is None:
        return adam
    return optax.chain(optax.clip_by_global_norm(config.clip_norm), adam)
