"""Multi-host runs: ``jax.distributed`` from the environment, and per-host data loading.

Every host (process) runs the same program on its own devices; ``jax.distributed.initialize``
connects them, after which ``jax.devices()`` lists every process's devices and a mesh built
from it (``flame_jax.train.make_mesh``) spans them all. Collectives run over the accelerator
interconnect (TPU ICI, NCCL between GPUs) or, on CPU, over gloo (TCP), which is how the
two-process test runs on one machine.

Where the coordinates come from (first match wins):

1. explicit arguments, or the variables ``FLAME_JAX_COORDINATOR`` (``host:port`` of process
   0), ``FLAME_JAX_NUM_PROCESSES`` and ``FLAME_JAX_PROCESS_ID``: all three, or none;
2. SLURM (``srun`` sets ``SLURM_JOB_ID``, ``SLURM_NTASKS``, ``SLURM_PROCID`` ...): JAX's own
   SLURM detection, when the step has more than one task;
3. a TPU pod slice: JAX's own detection (from the TPU VM's metadata) when
   ``TPU_WORKER_HOSTNAMES`` names more than one worker, or when ``FLAME_JAX_DISTRIBUTED=auto``
   asks for JAX's cluster detection (any cluster type JAX knows);
4. otherwise one process: nothing to do.

Per-host data: :func:`host_shard` splits ``n`` items into contiguous, disjoint per-process
ranges whose union is everything; :func:`process_rows` gives the rows of a global batch that
this process's devices hold; :func:`make_global_batch` assembles the global arrays from each
process's own rows (``jax.make_array_from_process_local_data``).
"""

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from flame_jax.train._partition import batch_sharding

__all__ = [
    "DistributedConfig",
    "host_shard",
    "initialize_distributed",
    "make_global_batch",
    "process_rows",
    "resolve_distributed",
]

_EXPLICIT = ("FLAME_JAX_COORDINATOR", "FLAME_JAX_NUM_PROCESSES", "FLAME_JAX_PROCESS_ID")


@dataclasses.dataclass(frozen=True, kw_only=True)
class DistributedConfig:
    """How this process joins a multi-process run.

    Attributes:
        source: "explicit", "slurm", "tpu" or "auto" (JAX's cluster detection fills the rest).
        coordinator: ``host:port`` of process 0 (None: detected by JAX).
        num_processes: how many processes (None: detected).
        process_id: this process's index in ``[0, num_processes)`` (None: detected).
    """

    source: str
    coordinator: str | None = None
    num_processes: int | None = None
    process_id: int | None = None

    def __post_init__(self):
        if self.source not in ("explicit", "slurm", "tpu", "auto"):
            raise ValueError(f"DistributedConfig.source: unknown {self.source!r}")
        if self.source == "explicit":
            if not self.coordinator or ":" not in self.coordinator:
                raise ValueError(
                    f"DistributedConfig.coordinator must be 'host:port', got {self.coordinator!r}"
                )
            if self.num_processes is None or self.num_processes < 1:
                raise ValueError(
                    f"DistributedConfig.num_processes must be >= 1, got {self.num_processes!r}"
                )
            if self.process_id is None or not 0 <= self.process_id < self.num_processes:
                raise ValueError(
                    f"DistributedConfig.process_id must be in [0, {self.num_processes}), "
                    f"got {self.process_id!r}"
                )


def _int(environ: Mapping[str, str], name: str) -> int:
    try:
        return int(environ[name])
    except ValueError:
        raise ValueError(f"{name}={environ[name]!r} is not an integer") from None


def resolve_distributed(
    environ: Mapping[str, str] | None = None,
    *,
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> DistributedConfig | None:
    """How to join a multi-process run, from arguments and the environment (None: one process).

    Args:
        environ: the environment (default ``os.environ``).
        coordinator, num_processes, process_id: explicit coordinates (override the
            ``FLAME_JAX_*`` variables; give all three or none).

    Returns:
        The ``DistributedConfig``, or None for a single-process run.

    Raises:
        ValueError: only some of the three coordinates are set, or one is malformed.

    Examples:
        >>> env = {"FLAME_JAX_COORDINATOR": "10.0.0.1:1234", "FLAME_JAX_NUM_PROCESSES": "2",
        ...        "FLAME_JAX_PROCESS_ID": "1"}
        >>> resolve_distributed(env).process_id
        1
        >>> resolve_distributed({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "4"}).source
        'slurm'
        >>> resolve_distributed({}) is None
        True
        >>> resolve_distributed({"FLAME_JAX_COORDINATOR": "10.0.0.1:1234"})
        Traceback (most recent call last):
        ...
        ValueError: FLAME_JAX_COORDINATOR is set but ... set all three or none
    """
    env = os.environ if environ is None else environ
    given = {
        "FLAME_JAX_COORDINATOR": coordinator,
        "FLAME_JAX_NUM_PROCESSES": num_processes,
        "FLAME_JAX_PROCESS_ID": process_id,
    }
    values: dict[str, Any] = {}
    for name in _EXPLICIT:
        if given[name] is not None:
            values[name] = given[name]
        elif env.get(name, "") != "":
            values[name] = env[name] if name == "FLAME_JAX_COORDINATOR" else _int(env, name)
    if values:
        missing = [n for n in _EXPLICIT if n not in values]
        if missing:
            raise ValueError(
                f"{', '.join(values)} {'is' if len(values) == 1 else 'are'} set but "
                f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not: "
                "set all three or none"
            )
        config = DistributedConfig(
            source="explicit",
            coordinator=str(values["FLAME_JAX_COORDINATOR"]),
            num_processes=int(values["FLAME_JAX_NUM_PROCESSES"]),
            process_id=int(values["FLAME_JAX_PROCESS_ID"]),
        )
        return None if config.num_processes == 1 else config
    mode = env.get("FLAME_JAX_DISTRIBUTED", "")
    if mode not in ("", "auto", "off"):
        raise ValueError(f"FLAME_JAX_DISTRIBUTED must be 'auto' or 'off', got {mode!r}")
    if mode == "off":
        return None
    if mode == "auto":
        return DistributedConfig(source="auto")
    if "SLURM_JOB_ID" in env:
        tasks = env.get("SLURM_STEP_NUM_TASKS") or env.get("SLURM_NTASKS") or "1"
        if int(tasks) > 1:
            return DistributedConfig(source="slurm")
        return None
    hosts = [h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h.strip()]
    if len(hosts) > 1:
        return DistributedConfig(source="tpu")
    return None


def initialize_distributed(
    *,
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    local_device_ids: list[int] | None = None,
    environ: Mapping[str, str] | None = None,
    timeout_s: int = 300,
) -> DistributedConfig | None:
    """Joins the multi-process run the environment describes; a no-op for one process.

    Call it first thing, before any JAX computation (JAX requires it). Calling it again after a
    successful initialisation does nothing.

    Args:
        coordinator, num_processes, process_id: explicit coordinates (see
            :func:`resolve_distributed`).
        local_device_ids: restrict this process to these local devices (e.g. one GPU per
            process).
        environ: the environment (default ``os.environ``).
        timeout_s: how long to wait for every process to connect.

    Returns:
        The ``DistributedConfig`` used, or None for a single-process run.

    Raises:
        ValueError: half-set coordinates (see :func:`resolve_distributed`).
    """
    config = resolve_distributed(
        environ, coordinator=coordinator, num_processes=num_processes, process_id=process_id
    )
    if config is None or jax.distributed.is_initialized():
        return config
    jax.distributed.initialize(
        coordinator_address=config.coordinator,
        num_processes=config.num_processes,
        process_id=config.process_id,
        local_device_ids=local_device_ids,
        initialization_timeout=int(timeout_s),
    )
    return config


def host_shard(
    n: int,
    *,
    process_index: int | None = None,
    process_count: int | None = None,
) -> range:
    """This process's contiguous share of ``n`` items (shares differ by at most one item).

    The shares of processes ``0 .. count - 1`` are disjoint and cover ``range(n)`` in order.

    Args:
        n: how many items (examples, files, prompts).
        process_index: this process (default ``jax.process_index()``).
        process_count: how many processes (default ``jax.process_count()``).

    Examples:
        >>> [list(host_shard(5, process_index=i, process_count=2)) for i in range(2)]
        [[0, 1, 2], [3, 4]]
    """
    index = jax.process_index() if process_index is None else int(process_index)
    count = jax.process_count() if process_count is None else int(process_count)
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"host_shard: process_index {index} is not in [0, {count})")
    if n < 0:
        raise ValueError(f"host_shard: n must be >= 0, got {n}")
    base, extra = divmod(int(n), count)
    start = index * base + min(index, extra)
    return range(start, start + base + (index < extra))


def process_rows(global_batch: int, mesh: Mesh) -> np.ndarray:
    """The rows of a ``[global_batch, ...]`` batch whose shards live on this process's devices.

    These are the rows a process must load for :func:`make_global_batch`: the batch is split
    over ``data`` and ``fsdp`` (``flame_jax.train.batch_sharding``), so different processes get
    disjoint rows (several devices of one process may share rows when ``tp`` > 1).
    """
    sharding = batch_sharding((int(global_batch),), mesh)
    rows = set()
    for index in sharding.addressable_devices_indices_map((int(global_batch),)).values():
        rows.update(range(global_batch)[index[0]])
    return np.asarray(sorted(rows), np.int64)


def make_global_batch(local: Any, mesh: Mesh, global_batch: int) -> Any:
    """Global batch arrays from each process's own rows (:func:`process_rows`, in order).

    Args:
        local: a pytree of host arrays ``[len(process_rows(global_batch, mesh)), ...]``.
        mesh: the (global) mesh.
        global_batch: the leading size of the assembled arrays.

    Returns:
        The pytree of global ``jax.Array`` s, leading axis split over ``data`` and ``fsdp``.
    """

    def one(x):
        x = np.asarray(x)
        shape = (int(global_batch), *x.shape[1:])
        return jax.make_array_from_process_local_data(batch_sharding(shape, mesh), x, shape)

    return jax.tree.map(one, local)
