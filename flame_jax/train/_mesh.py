"""Device meshes with the named axes ``data``, ``fsdp`` and ``tp`` (Auto axis types).

* ``data``: pure data parallelism; batches are split over it, parameters are replicated.
* ``fsdp``: fully sharded data parallelism; batches are split over it *and* parameters and
  optimizer state are sharded over it (gathered on use by the compiler).
* ``tp``: tensor (model) parallelism; attention heads and MLP columns are split over it.

The mesh always has the three axes (an unused axis has size 1), so the partition rules of
``flame_jax.train._partition`` can name any of them. Axis types are ``AxisType.Auto``: shardings
are placed on the inputs and XLA's propagation decides the rest (no explicit-sharding types).
Across several processes (``jax.distributed``) the mesh spans every process's devices.
"""

import dataclasses
import math
import re
from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh

__all__ = ["AXES", "MeshConfig", "make_mesh"]

AXES = ("data", "fsdp", "tp")


@dataclasses.dataclass(frozen=True, kw_only=True)
class MeshConfig:
    """Sizes of the ``data``, ``fsdp`` and ``tp`` mesh axes; at most one may be -1 (the rest).

    Attributes:
        data: data-parallel ways (replicated parameters).
        fsdp: fully-sharded data-parallel ways (sharded parameters and optimizer state).
        tp: tensor-parallel ways (heads and MLP columns).

    Examples:
        >>> MeshConfig(data=2, fsdp=-1, tp=2).resolve(8)
        (2, 2, 2)
        >>> MeshConfig.parse("fsdp=4,tp=2")
        MeshConfig(data=1, fsdp=4, tp=2)
        >>> MeshConfig(data=3).resolve(8)
        Traceback (most recent call last):
        ...
        ValueError: MeshConfig(data=3, fsdp=1, tp=1) needs 3 devices, but 8 are available
    """

    data: int = -1
    fsdp: int = 1
    tp: int = 1

    def __post_init__(self):
        for name in AXES:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise ValueError(f"MeshConfig.{name} must be an integer, got {value!r}")
            if value < 1 and value != -1:
                raise ValueError(f"MeshConfig.{name} must be >= 1 or -1 (the rest), got {value}")
            object.__setattr__(self, name, int(value))
        rest = [name for name in AXES if getattr(self, name) == -1]
        if len(rest) > 1:
            raise ValueError(f"MeshConfig: only one axis may be -1 (the rest), got {rest}")

    @classmethod
    def parse(cls, text: str) -> "MeshConfig":
        """Parses ``"data=2,fsdp=2,tp=2"`` (axes not named have size 1).

        Raises:
            ValueError: an unknown axis, a repeated axis or a value that is not an integer.
        """
        sizes: dict[str, int] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            m = re.fullmatch(r"(\w+)\s*=\s*(-?\d+)", part)
            if m is None or m.group(1) not in AXES or m.group(1) in sizes:
                raise ValueError(
                    f"mesh {text!r}: expected comma-separated AXIS=SIZE with AXIS in {AXES} "
                    f"(each once), got {part!r}"
                )
            sizes[m.group(1)] = int(m.group(2))
        if not sizes:
            raise ValueError(f"mesh {text!r}: no axis given (e.g. 'data=2,fsdp=2,tp=2')")
        return cls(**{name: sizes.get(name, 1) for name in AXES})

    def resolve(self, num_devices: int) -> tuple[int, int, int]:
        """The three axis sizes for ``num_devices`` devices (-1 replaced by the rest).

        Raises:
            ValueError: the sizes do not multiply to ``num_devices``.
        """
        sizes = [getattr(self, name) for name in AXES]
        fixed = math.prod(s for s in sizes if s != -1)
        if -1 in sizes:
            if num_devices % fixed:
                raise ValueError(
                    f"{self} cannot use {num_devices} devices: the fixed axes take {fixed}, "
                    f"which does not divide {num_devices}"
                )
            sizes = [num_devices // fixed if s == -1 else s for s in sizes]
        elif fixed != num_devices:
            raise ValueError(f"{self} needs {fixed} devices, but {num_devices} are available")
        return tuple(sizes)


def make_mesh(config: MeshConfig, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A ``("data", "fsdp", "tp")`` mesh with Auto axis types over ``devices``.

    Args:
        config: the axis sizes.
        devices: the devices (default: ``jax.devices()``, every process's devices). With the
            default, ``jax.make_mesh`` orders them for the hardware's interconnect.

    Returns:
        The mesh.

    Raises:
        ValueError: the sizes do not fit the number of devices.

    Examples:
        >>> mesh = make_mesh(MeshConfig(data=-1), jax.devices()[:1])
        >>> dict(mesh.shape)
        {'data': 1, 'fsdp': 1, 'tp': 1}
    """
    auto = (AxisType.Auto,) * len(AXES)
    if devices is None:
        shape = config.resolve(jax.device_count())
        return jax.make_mesh(shape, AXES, axis_types=auto)
    devices = list(devices)
    shape = config.resolve(len(devices))
    return Mesh(np.asarray(devices, dtype=object).reshape(shape), AXES, axis_types=auto)
