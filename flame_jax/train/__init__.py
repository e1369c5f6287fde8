"""Training infrastructure shared by the stages: optimizers, checkpoints, logs, meshes, hosts."""

from flame_jax.train._accumulate import accumulate_gradients, split_microbatches
from flame_jax.train._checkpoint import Checkpointer
from flame_jax.train._distributed import (
    DistributedConfig,
    host_shard,
    initialize_distributed,
    make_global_batch,
    process_rows,
    resolve_distributed,
)
from flame_jax.train._log import MetricsLog, read_metrics, save_training_curves
from flame_jax.train._mesh import AXES, MeshConfig, make_mesh
from flame_jax.train._optim import SCHEDULES, OptimizerConfig, make_optimizer, make_schedule
from flame_jax.train._partition import (
    BATCH_AXES,
    KV_CACHE_RULES,
    PARAM_RULES,
    CacheSharding,
    batch_sharding,
    host_to_global,
    partition_spec,
    shard_batch,
    shard_module,
    shard_state,
    state_shardings,
    tree_paths,
)

__all__ = [
    "AXES",
    "BATCH_AXES",
    "KV_CACHE_RULES",
    "PARAM_RULES",
    "SCHEDULES",
    "CacheSharding",
    "Checkpointer",
    "DistributedConfig",
    "MeshConfig",
    "MetricsLog",
    "OptimizerConfig",
    "accumulate_gradients",
    "batch_sharding",
    "host_shard",
    "host_to_global",
    "initialize_distributed",
    "make_global_batch",
    "make_mesh",
    "make_optimizer",
    "make_schedule",
    "partition_spec",
    "process_rows",
    "read_metrics",
    "resolve_distributed",
    "save_training_curves",
    "shard_batch",
    "shard_module",
    "shard_state",
    "split_microbatches",
    "state_shardings",
    "tree_paths",
]
