"""Training infrastructure shared by the stages: optimizers, step checkpoints, metric logs."""

from flame_jax.train._checkpoint import Checkpointer
from flame_jax.train._log import MetricsLog, read_metrics, save_training_curves
from flame_jax.train._optim import SCHEDULES, OptimizerConfig, make_optimizer, make_schedule

__all__ = [
    "SCHEDULES",
    "Checkpointer",
    "MetricsLog",
    "OptimizerConfig",
    "make_optimizer",
    "make_schedule",
    "read_metrics",
    "save_training_curves",
]
