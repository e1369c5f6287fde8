"""Orbax checkpoints of a baseline run: the last epoch (for resuming) and the best one.

A checkpoint holds the flattened leaves of the parameters and of the optimiser state, plus the
training progress (epoch, best validation Jaccard and its epoch, epochs without improvement). The
tree structures come from a freshly built model and optimiser of the same config, so restoring
needs no pickled Python objects. Orbax writes into a temporary folder and renames it when done.
"""

import os
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np
import orbax.checkpoint as ocp

__all__ = ["Progress", "latest_epoch", "restore_checkpoint", "save_checkpoint"]


class Progress(NamedTuple):
    """Where training stands after ``epoch`` completed epochs."""

    epoch: int
    best_jaccard: float
    best_epoch: int
    bad_epochs: int


def _manager(directory: Path) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=1, enable_async_checkpointing=False, create=True
    )
    return ocp.CheckpointManager(directory.absolute(), options=options)


def _payload(params: Any, opt_state: Any, progress: Progress) -> dict[str, Any]:
    return {
        "params": [np.asarray(x) for x in jax.tree.leaves(params)],
        "opt_state": [np.asarray(x) for x in jax.tree.leaves(opt_state)],
        "progress": {
            "epoch": np.asarray(progress.epoch, np.int64),
            "best_jaccard": np.asarray(progress.best_jaccard, np.float64),
            "best_epoch": np.asarray(progress.best_epoch, np.int64),
            "bad_epochs": np.asarray(progress.bad_epochs, np.int64),
        },
    }


def save_checkpoint(
    directory: str | os.PathLike, params: Any, opt_state: Any, progress: Progress
) -> None:
    """Saves one checkpoint under ``directory`` (step = epoch), replacing the previous one."""
    with _manager(Path(directory)) as manager:
        manager.save(
            progress.epoch, args=ocp.args.StandardSave(_payload(params, opt_state, progress))
        )
        manager.wait_until_finished()


def latest_epoch(directory: str | os.PathLike) -> int | None:
    """The epoch of the checkpoint in ``directory``, or None when there is none."""
    directory = Path(directory)
    if not directory.is_dir():
        return None
    with _manager(directory) as manager:
        return manager.latest_step()


def restore_checkpoint(
    directory: str | os.PathLike, params_like: Any, opt_state_like: Any
) -> tuple[Any, Any, Progress]:
    """Restores ``(params, opt_state, progress)`` into the structures of the ``*_like`` trees.

    Raises:
        FileNotFoundError: ``directory`` holds no checkpoint.
        ValueError: the checkpoint does not fit the given structures (another config).
    """
    directory = Path(directory)
    epoch = latest_epoch(directory)
    if epoch is None:
        raise FileNotFoundError(f"{directory}: no checkpoint to restore")
    p_leaves, p_def = jax.tree.flatten(params_like)
    o_leaves, o_def = jax.tree.flatten(opt_state_like)
    target = _payload(p_leaves, o_leaves, Progress(0, 0.0, 0, 0))
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype), target
    )
    with _manager(directory) as manager:
        try:
            restored = manager.restore(epoch, args=ocp.args.StandardRestore(abstract))
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{directory}: the checkpoint does not fit this model ({e})") from None
    for got, want in zip(restored["params"], p_leaves, strict=True):
        if np.shape(got) != np.shape(want):
            raise ValueError(f"{directory}: parameter shape {np.shape(got)} != {np.shape(want)}")
    params = jax.tree.unflatten(p_def, [jax.numpy.asarray(x) for x in restored["params"]])
    opt_state = jax.tree.unflatten(o_def, [jax.numpy.asarray(x) for x in restored["opt_state"]])
    pr = restored["progress"]
    progress = Progress(
        epoch=int(pr["epoch"]),
        best_jaccard=float(pr["best_jaccard"]),
        best_epoch=int(pr["best_epoch"]),
        bad_epochs=int(pr["bad_epochs"]),
    )
    return params, opt_state, progress
