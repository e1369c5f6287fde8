"""Step checkpoints of a training state with Orbax, for exact resume after a kill.

A checkpoint holds a pytree of arrays (parameters, optimizer state, PRNG key data, counters) and a
small JSON record (where the data stream stands, the config's fingerprint). Orbax writes each step
into a temporary folder and renames it when complete, so a kill mid-save leaves the previous
checkpoint intact. Restoring needs a target tree of the same structure (built from the same
config), so no Python objects are unpickled.

Typed PRNG keys cannot be serialised; store ``jax.random.key_data(key)`` in the tree and rebuild
the key with ``jax.random.wrap_key_data`` after restoring.
"""

import os
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

__all__ = ["Checkpointer"]


class Checkpointer:
    """Saves and restores ``(state tree, record)`` at integer steps under one folder.

    Args:
        directory: the checkpoint folder (created on first save).
        keep: how many recent checkpoints to keep.

    Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, directory: str | os.PathLike, *, keep: int = 2):
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.directory = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, enable_async_checkpointing=False, create=True
        )
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=options,
            item_names=("state", "record"),
        )

    def __enter__(self) -> "Checkpointer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._manager.close()

    def latest_step(self) -> int | None:
        """The newest complete checkpoint's step, or None."""
        return self._manager.latest_step()

    def save(self, step: int | np.integer, state: Any, record: dict[str, Any]) -> None:
        """Writes the checkpoint of ``step`` and waits until it is on disk.

        Arrays that span several processes (``jax.distributed``) are written by Orbax shard by
        shard, every process its own; all processes must call ``save`` together.
        """
        state = jax.tree.map(_to_saveable, state)
        self._manager.save(
            int(step),
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), record=ocp.args.JsonSave(record)
            ),
            force=True,
        )
        self._manager.wait_until_finished()

    def restore(
        self, like: Any, *, step: int | None = None, shardings: Any = None
    ) -> tuple[int, Any, dict[str, Any]]:
        """Restores ``(step, state, record)``; ``state`` takes the structure of ``like``.

        Args:
            like: a tree of arrays (or ``jax.ShapeDtypeStruct``) of the expected structure.
            step: which checkpoint; None takes the latest.
            shardings: None (host arrays), or a tree like ``like`` of ``jax.sharding.Sharding``:
                each array is read straight into that placement, whatever mesh it was saved
                from (e.g. ``flame_jax.train.state_shardings(like, mesh)``).

        Raises:
            FileNotFoundError: there is no checkpoint.
            ValueError: the checkpoint does not match ``like`` (another config or model).
        """
        step = self.latest_step() if step is None else int(step)
        if step is None:
            raise FileNotFoundError(f"{self.directory}: no checkpoint to restore")
        abstract = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(np.shape(x), np.dtype(x.dtype)), like
        )
        if shardings is not None:
            abstract = jax.tree.map(
                lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                abstract,
                shardings,
            )
        try:
            out = self._manager.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract), record=ocp.args.JsonRestore()
                ),
            )
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(
                f"{self.directory}: checkpoint {step} does not match this run's state ({e})"
            ) from None
        for got, want in zip(jax.tree.leaves(out.state), jax.tree.leaves(abstract), strict=True):
            if np.shape(got) != want.shape:
                raise ValueError(
                    f"{self.directory}: checkpoint {step} has an array of shape "
                    f"{np.shape(got)} where this run has {want.shape}"
                )
        return step, out.state, dict(out.record)


def _to_saveable(x: Any) -> Any:
    # Host copies, except arrays other processes hold parts of: Orbax writes those per shard.
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return x
    return np.asarray(x)
