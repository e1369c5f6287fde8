"""One resumable training loop for every FLAME stage: a jitted step, Orbax checkpoints, JSONL.

Exact resume: the batch of step ``t`` is a pure function of ``(seed, t)`` (and, for GRPO, of the
parameters at step ``t``, which the checkpoint restores), and the step's PRNG key is
``fold_in(key(seed), t)``. So a run killed after its checkpoint at step ``k`` and resumed
re-computes steps ``k+1, ...`` exactly as the uninterrupted run did (tested). The metrics log is
cut back to step ``k`` on resume.

The trained parameters are the ``wrt`` filter's part of the module (``nnx.split``); the optimizer
state is an optax state over them. One ``jax.jit`` per step does forward, loss, gradient and
update.

Gradient accumulation: ``LoopConfig.micro_batches`` K > 1 computes each update's gradient K
micro-batches at a time (``flame_jax.train.accumulate_gradients``) inside the same program; the
stage says how to cut its batch and weigh the pieces (:class:`MicroBatching`), so that the
gradient is the whole batch's. Metrics are then the weighted means of the micro-batches'
(``MicroBatching.max_keys``: their maximum).

Sharded training: with a ``mesh`` (``flame_jax.train.make_mesh``), the trained parameters, the
frozen rest of the module and the optimizer state are placed by ``flame_jax.train``'s partition
rules, every batch has its leading axis split over ``data`` and ``fsdp``, and the jitted step
keeps the parameters' and optimizer state's shardings (``out_shardings``) so that their buffers
are donated in place. The module holds the sharded weights between steps, so rollouts drawn by
``batch_fn`` run sharded too. Checkpoints are restored straight into the mesh's placement,
whatever mesh wrote them.
"""

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np
import optax
from flax import nnx

from flame_jax.train import (
    Checkpointer,
    MetricsLog,
    OptimizerConfig,
    accumulate_gradients,
    make_optimizer,
    make_schedule,
    read_metrics,
)

__all__ = ["LoopConfig", "MicroBatching", "run_loop"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class LoopConfig:
    """Length, batch and optimisation of one training stage.

    Attributes:
        steps: optimizer updates.
        batch_size: examples (prompts) per update.
        optimizer: the optax AdamW config (learning rate, schedule, warmup).
        checkpoint_every: save an Orbax checkpoint every this many steps (and at the end).
        micro_batches: compute each update's gradient over this many micro-batches of
            ``batch_size / micro_batches`` examples (gradient accumulation: less memory, the
            same update); must divide ``batch_size``. Stages that support it: GRPO.
    """

    steps: int = 100
    batch_size: int = 16
    optimizer: OptimizerConfig = dataclasses.field(default_factory=lambda: OptimizerConfig())
    checkpoint_every: int = 50
    micro_batches: int = 1

    def __post_init__(self):
        for name in ("steps", "batch_size", "checkpoint_every", "micro_batches"):
            if getattr(self, name) < 1:
                raise ValueError(f"LoopConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_size % self.micro_batches:
            raise ValueError(
                f"LoopConfig.micro_batches ({self.micro_batches}) must divide batch_size "
                f"({self.batch_size})"
            )


@dataclasses.dataclass(frozen=True, kw_only=True)
class MicroBatching:
    """How a stage's batch is cut into micro-batches and how they weigh in its loss.

    Attributes:
        split: ``(batch, k) -> (stacked, shared)``: the per-example part of the batch with every
            leaf stacked ``[k, ...]`` (``flame_jax.train.split_microbatches``), and the part
            every micro-batch sees whole.
        merge: ``(micro, shared) -> batch``: the batch ``loss_fn`` takes, from one micro-batch
            and the shared part.
        weight: ``micro -> scalar``: its weight in the whole batch's loss (None: equal).
        max_keys: metrics reduced by their maximum over the micro-batches.
    """

    split: Callable[[Any, int], tuple[Any, Any]]
    merge: Callable[[Any, Any], Any]
    weight: Callable[[Any], jax.Array] | None = None
    max_keys: tuple[str, ...] = ()


def run_loop(
    module: nnx.Module,
    *,
    wrt: Any,
    loss_fn: Callable[[nnx.Module, Any], tuple[jax.Array, dict[str, jax.Array]]],
    batch_fn: Callable[[int, nnx.Module], tuple[Any, dict[str, float]]],
    config: LoopConfig,
    out: Path,
    record: dict[str, Any],
    resume: bool = True,
    stop_after: int | None = None,
    progress: bool = True,
    desc: str = "train",
    mesh: jax.sharding.Mesh | None = None,
    micro_batching: MicroBatching | None = None,
) -> list[dict[str, Any]]:
    """Trains ``module`` in place for ``config.steps`` updates, resuming from ``out/checkpoints``.

    Args:
        module: the model; its ``wrt`` part is trained.
        wrt: an ``nnx`` filter of the trained variables (e.g. ``nnx.Param``, ``nnx.LoRAParam``).
        loss_fn: ``(module, batch) -> (loss, aux metrics)``, traced under ``jit``.
        batch_fn: ``(step, module) -> (device batch, host metrics)`` for the 1-based ``step``;
            must be a pure function of the step and the module's current weights.
        config: steps, optimizer, checkpoint interval.
        out: the stage folder (``checkpoints/``, ``metrics.jsonl``).
        record: JSON data stored with each checkpoint; a resumed run must have the same.
        resume: continue from the latest checkpoint if any (else start over).
        stop_after: stop after this step without a final checkpoint (a simulated kill; tests).
        progress: show a tqdm bar.
        desc: the bar's label.
        mesh: run sharded on this mesh (None: the default device).
        micro_batching: how to cut the batch when ``config.micro_batches`` > 1 (required then).

    Returns:
        The metric rows logged by this call.
    """
    from tqdm.auto import tqdm

    k = config.micro_batches
    if k > 1 and micro_batching is None:
        raise ValueError(f"{desc}: this stage does not support micro_batches > 1 (got {k})")
    out.mkdir(parents=True, exist_ok=True)
    tx = make_optimizer(config.optimizer)
    schedule = make_schedule(config.optimizer)
    graphdef, params, rest = nnx.split(module, wrt, ...)
    opt_state = tx.init(params)
    shardings = None
    if mesh is not None:
        from flame_jax.train import shard_batch, shard_state, state_shardings

        params, rest = shard_state(params, mesh), shard_state(rest, mesh)
        nnx.update(module, params, rest)
        opt_state = shard_state(opt_state, mesh)
        shardings = (state_shardings(params, mesh), state_shardings(opt_state, mesh))

    def step_fn(params, opt_state, rest, batch):
        if k == 1:

            def f(p):
                return loss_fn(nnx.merge(graphdef, p, rest), batch)

            (loss, aux), grads = jax.value_and_grad(f, has_aux=True)(params)
        else:
            stacked, shared = micro_batching.split(batch, k)

            def f(p, micro):
                return loss_fn(nnx.merge(graphdef, p, rest), micro_batching.merge(micro, shared))

            loss, aux, grads = accumulate_gradients(
                f,
                params,
                stacked,
                weight_fn=micro_batching.weight,
                max_keys=micro_batching.max_keys,
            )
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return params, opt_state, {**aux, "loss": loss, "grad_norm": optax.tree.norm(grads)}

    if mesh is None:
        jit_step = jax.jit(step_fn, donate_argnums=(0, 1))
    else:
        replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
        jit_step = jax.jit(step_fn, donate_argnums=(0, 1), out_shardings=(*shardings, replicated))
    start = 0
    # Several processes (jax.distributed) share ``out``: process 0 owns metrics.jsonl.
    index = jax.process_index()
    log_name = "metrics.jsonl" if index == 0 else f"metrics.process{index}.jsonl"
    progress = progress and index == 0
    with Checkpointer(out / "checkpoints") as ckpt:
        if resume and ckpt.latest_step() is not None:
            start, tree, saved = ckpt.restore((params, opt_state), shardings=shardings)
            if saved.get("record") != record:
                raise ValueError(
                    f"{out}: the checkpoint was written by another configuration; "
                    "use a new folder or --overwrite"
                )
            params, opt_state = tree if mesh is not None else jax.tree.map(jax.numpy.asarray, tree)
            log = MetricsLog.open(out / log_name, resume_step=start)
        else:
            log = MetricsLog.open(out / log_name)
        rows = []
        last = config.steps if stop_after is None else min(config.steps, int(stop_after))
        bar = tqdm(total=config.steps, initial=start, desc=desc, disable=not progress)
        for step in range(start + 1, last + 1):
            nnx.update(module, params)
            t0 = time.perf_counter()
            batch, host = batch_fn(step, module)
            if mesh is not None:
                batch = shard_batch(batch, mesh)
            params, opt_state, aux = jit_step(params, opt_state, rest, batch)
            aux = jax.device_get(aux)
            seconds = time.perf_counter() - t0
            tokens = host.pop("tokens", None)
            metrics = {k: float(np.asarray(v)) for k, v in aux.items()}
            metrics.update(host)
            metrics["lr"] = float(schedule(step - 1))
            metrics["seconds"] = seconds
            if tokens is not None:
                metrics["tokens_per_s"] = float(tokens) / max(seconds, 1e-9)
            rows.append(log.write(step, metrics))
            bar.update(1)
            bar.set_postfix(loss=f"{metrics['loss']:.4f}")
            if step % config.checkpoint_every == 0 or step == config.steps:
                ckpt.save(step, (params, opt_state), {"record": record})
        bar.close()
    nnx.update(module, params)
    return rows


def completed(out: Path, steps: int) -> bool:
    """True when ``out``'s metrics log has reached ``steps``."""
    path = out / "metrics.jsonl"
    return path.is_file() and any(r.get("step") == steps for r in read_metrics(path))
